"""GELU closed-form moments against the 50-digit mpmath reference on the full grid, mu in
{-40, -8, -3, -1, 0, 0.5, 2, 8, 40} x var in {1e-8, 1e-4, 0.01, 1, 25, 1e4} (about 30 s of
mpmath; ``moment_engine/test_gelu_closed_form.py`` checks one point per branch)."""
from helpers import GELU_GRID, check_gelu


def test_full_grid_matches_mpmath():
    check_gelu(GELU_GRID)
