"""An activation applied to a tensor record: the one rule that activation layers, activation
ops and the fused activations of weighted layers share.

For an input record with mean mu, variance v and position-shared variance c:

- the output's moments are those of f(X), X ~ N(mu, v) (``activation.activation_statistics``);
  with a per-position profile r the input at p is N(mu, r(p) (v + mu^2) - mu^2) and the
  output's moments are the mixture over positions (:func:`profile_moments`);
- its shared variance is Var_a E[f(mu + a + e) | a] (``activation.activation_shared``) and it
  keeps the input's per-sample fraction of it;
- an input that is a residual sum of an activation output and a Gaussian branch is not
  Gaussian: ``residual_sums.activation_of_sum`` integrates it exactly;
- its lag correlation follows ``lag_correlation.activated_lags``, which also turns per-sample
  scale floors into per-sample offsets;
- its origin says it is f of a Gaussian (``activation.activation_output``), which max
  pooling and residual sums use.
"""
from __future__ import annotations

import numpy as np

from autoinit_sym.moment_engine.activation_moments import ActivationMoments
from autoinit_sym.statistics.activation import (ENGINE, IDENTITY, SOFTMAX, VARIANCE_FLOOR, Activation,
                                                activation_output, activation_shared, activation_statistics)
from autoinit_sym.statistics.border_profile import distinct, normalized
from autoinit_sym.statistics.lag_correlation import activated_lags
from autoinit_sym.statistics.methods import EXACT, QUADRATURE
from autoinit_sym.statistics.residual_sums import ShiftedActivation, activation_of_sum
from autoinit_sym.statistics.state import TensorState


def activated(state: TensorState, activation: Activation, axis_size: int | None = None) -> tuple[TensorState, str]:
    """The record of f(x) for x described by ``state`` (module docstring), and how its moments
    were obtained; ``axis_size`` is the softmax axis' length. The identity returns ``state``."""
    if activation.kind == IDENTITY:
        return state, EXACT
    mean, var, shared = state.mean, state.var, state.shared
    per_sample = min(max(state.sample_shared / shared, 0.0), 1.0) if shared > 0 else 0.0
    out_mean, out_var, method = activation_statistics(activation, mean, var, axis_size)
    out_profile = None if activation.kind == SOFTMAX else state.profile  # softmax outputs average 1/n
    if activation.kind == ENGINE:
        engine = activation.engine()
        gaussian = (out_mean, out_var)
        if state.profile is not None:
            out_mean, out_var, out_profile = profile_moments(engine, mean, var, state.profile)
        if isinstance(state.origin, ShiftedActivation):
            out_mean, out_var, out_shared, out_origin = activation_of_sum(
                activation, state.origin, gaussian, (out_mean, out_var), mean, var, shared)
            return TensorState(out_mean, out_var, out_shared, per_sample * out_shared, out_origin,
                               out_profile), QUADRATURE
    out_shared = activation_shared(activation, mean, var, shared, out_var)
    out_sample = per_sample * out_shared
    out_lags, offsets = activated_lags(state.lags, activation, mean, var, shared, per_sample * shared,
                                       out_var, out_shared)
    offsets = min(offsets, out_var - out_shared)
    return TensorState(out_mean, out_var, out_shared + offsets, out_sample + offsets,
                       activation_output(activation, mean, var, shared), out_profile, out_lags), method


def profile_moments(engine: ActivationMoments, mean: float, var: float, profile: np.ndarray,
                    ) -> tuple[float, float, np.ndarray | None]:
    """Pooled (mean, var) and profile of f(x_p) for x_p ~ N(mean, v_p),
    v_p = r(p) (var + mean^2) - mean^2 (floored at a tiny positive value), evaluated once
    per distinct profile value: mean = sum_u w_u m_u, var = sum_u w_u (v_u + (m_u - mean)^2)."""
    values, inverse, fractions = distinct(profile)
    second = var + mean * mean
    inputs = np.maximum(values * second - mean * mean, VARIANCE_FLOOR * max(var, 1e-300))
    means, variances = (np.asarray(a, dtype=np.float64) for a in engine.mean_variance(mean, inputs))
    out_mean = float(fractions @ means)
    out_var = float(fractions @ (variances + (means - out_mean) ** 2))
    seconds = variances + means * means
    return out_mean, out_var, normalized(seconds[inverse].reshape(profile.shape))
