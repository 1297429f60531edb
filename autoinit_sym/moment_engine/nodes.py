"""Quadrature nodes, built in one place and cached: Gauss-Hermite nodes for expectations over
a standard normal."""
from __future__ import annotations

from functools import lru_cache

import numpy as np


@lru_cache(maxsize=None)
def standard_normal_nodes(points: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Hermite nodes and probability weights for E[g(Z)], Z ~ N(0, 1): E[g(Z)] ~ weights @ g(nodes)
    (exact for polynomials of degree < 2 points). Cached; the arrays are read-only."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(points)
    weights = weights / weights.sum()
    nodes.setflags(write=False)
    weights.setflags(write=False)
    return nodes, weights
