"""Shared plotting setup: headless matplotlib, one look for every benchmark figure."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

os.environ.setdefault("MPLBACKEND", "Agg")

INIT_COLORS = {"keras_default": "#7f7f7f", "he_normal": "#ff7f0e", "lecun_normal": "#2ca02c",
               "autoinit": "#1f77b4"}


def new_figure(nrows: int = 1, ncols: int = 1, panel_size: tuple[float, float] = (4.6, 3.4)):
    """A figure with an ``nrows x ncols`` grid of axes (always a 2-D array)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(nrows, ncols, squeeze=False,
                             figsize=(panel_size[0] * ncols, panel_size[1] * nrows))
    return fig, axes


def save(fig: Any, out_dir: Path, name: str) -> str:
    """Write ``out_dir/name`` at a readable resolution, close the figure, return the file name."""
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out_dir / name, dpi=110)
    plt.close(fig)
    return name
