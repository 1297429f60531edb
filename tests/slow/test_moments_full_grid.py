"""moments() against the mpmath reference at every point of both grids, for every case
(``moment_engine/test_moments.py`` checks a rotating sample of points per case)."""
import pytest

from autoinit_sym import moments
from helpers import MOMENT_CASE_IDS, MOMENT_CASES, all_points, assert_matches_reference


@pytest.mark.parametrize("index", range(len(MOMENT_CASES)), ids=MOMENT_CASE_IDS)
def test_accuracy_on_full_grid(index):
    name, params = MOMENT_CASES[index]
    m = moments(name, **params)
    for (mu, var), rtol in all_points():
        assert_matches_reference(m, mu, var, rtol)
