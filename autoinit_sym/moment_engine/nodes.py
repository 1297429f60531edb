"""Quadrature nodes, built in one place and cached, as read-only arrays: Gauss-Legendre nodes on
[-1, 1] (the engine's panel quadrature, GELU's split form) and Gauss-Hermite nodes for expectations
over a standard normal (GELU's left tail; the statistics' Gaussian averages)."""
from __future__ import annotations

from functools import lru_cache

import numpy as np


def _read_only(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    for array in arrays:
        array.setflags(write=False)
    return arrays


@lru_cache(maxsize=None)
def gauss_legendre(points: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre nodes and weights on [-1, 1]: int_{-1}^{1} g ~ weights @ g(nodes) (exact for
    polynomials of degree < 2 points). Cached; the arrays are read-only."""
    return _read_only(*np.polynomial.legendre.leggauss(points))


@lru_cache(maxsize=None)
def standard_normal_nodes(points: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Hermite nodes and probability weights for E[g(Z)], Z ~ N(0, 1): E[g(Z)] ~ weights @ g(nodes)
    (exact for polynomials of degree < 2 points). Cached; the arrays are read-only."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(points)
    return _read_only(nodes, weights / weights.sum())
