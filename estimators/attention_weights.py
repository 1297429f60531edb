"""Statistics of softmax attention weights over n keys, shared by the attention rules and the Softmax
layer's: E[sum_j a_j^2] for iid Gaussian logits (``statistics.softmax``), averaged over the queries of a
causal mask, and what the record of a 0/1 attention mask says about the keys each query sees."""
from __future__ import annotations

import numpy as np

from autoinit_sym.statistics.softmax import mean_sum_of_squares
from autoinit_sym.statistics.state import TensorState

from .shapes import bernoulli_rate

CAUSAL_POINTS = 12
"""Key counts (log-spaced) at which a causal mask's E[sum a^2] is evaluated, then interpolated."""


def causal_square_sum(logit_var: float, length: int) -> tuple[float, str]:
    """E[sum_j a_j^2] averaged over queries i = 1..length that see i keys each.

    n * E[sum a^2] is smooth in log n, so it is evaluated at CAUSAL_POINTS log-spaced
    key counts and interpolated linearly in log n in between."""
    points = np.unique(np.round(np.geomspace(1, length, CAUSAL_POINTS)).astype(int))
    values, methods = zip(*(mean_sum_of_squares(logit_var, int(n)) for n in points))
    keys = np.arange(1, length + 1)
    scaled = np.interp(np.log(keys), np.log(points), np.asarray(values) * points)
    return float(np.mean(scaled / keys)), methods[-1]


def square_sum(logit_var: float, n: int, causal: bool = False) -> tuple[float, str]:
    """E[sum_j a_j^2] for n keys (averaged over the queries under a causal mask)."""
    return causal_square_sum(logit_var, n) if causal else mean_sum_of_squares(logit_var, n)


def weight_statistics(squares: float, n: int, dropout: float = 0.0) -> tuple[float, float]:
    """(mean, var) over all elements of the (n-key) attention weights: mean 1/n, second
    moment E[sum_j a_j^2] / n (masked weights are zeros), times 1/(1 - p) after dropout."""
    return 1.0 / n, squares / (n * (1.0 - dropout)) - 1.0 / n**2


def keys_seen(mask: TensorState | None, n: int, causal: bool) -> tuple[bool, int]:
    """(causal, keys per query) under a 0/1 attention ``mask`` whose record has mean f (the fraction
    of (query, key) pairs allowed) and variance f (1 - f): causal where f = (n + 1) / 2n (keras_hub's
    decoders pass a causal mask combined with an all-ones padding mask), otherwise every query
    seeing round(f n) keys. Without a mask (or with another kind of mask): ``causal``, n."""
    if mask is None or causal:
        return causal, n
    f = bernoulli_rate(mask)
    if not f:
        return causal, n
    if abs(f - (n + 1) / (2.0 * n)) < 0.25 / n:
        return True, n
    return False, max(1, int(round(f * n)))


def masked_weights(logit_var: float, n: int, mask: TensorState) -> tuple[float, float, str] | None:
    """(mean, var, method) over all elements of softmax weights over n keys of logits with variance
    ``logit_var`` under a 0/1 ``mask`` that hides some keys (:func:`keys_seen`); None where the mask
    hides none (or is not a 0/1 mask)."""
    causal, seen = keys_seen(mask, n, False)
    if not causal and seen >= n:
        return None
    squares, method = square_sum(logit_var, seen, causal)
    return (*weight_statistics(squares, n), method)
