"""What several test modules share: running a rule on plain statistics, a test layer and its
reference-style estimator, and the model-quality measures."""
from __future__ import annotations

import logging
import math
from typing import Any, Sequence

import keras
import numpy as np

from autoinit_sym import AutoInit
from autoinit_sym.estimators import LayerOutputDistributionEstimator
from autoinit_sym.estimators.registry import lookup
from autoinit_sym.measure import measure
from autoinit_sym.statistics.state import TensorState
from autoinit_sym.walk.graph import build_graph


def propagated(rule: Any, means: Sequence[float], variances: Sequence[float], **fields: Sequence[Any]) -> Any:
    """``rule``'s output (mean, var), or a list of pairs for several outputs, for inputs with
    ``means`` and ``variances`` (and per-input record ``fields`` such as ``shared=[0.3]``)."""
    states = [TensorState(float(m), float(v), **{k: vals[i] for k, vals in fields.items()})
              for i, (m, v) in enumerate(zip(means, variances))]
    out = rule.propagate(states)
    records = [out] if isinstance(out, TensorState) else list(out)
    pairs = [(s.mean, s.var) for s in records]
    return pairs[0] if len(pairs) == 1 else pairs


def records(rule: Any, means: Sequence[float], variances: Sequence[float],
            **fields: Sequence[Any]) -> list[TensorState]:
    """``rule``'s output records for inputs built as in :func:`propagated`."""
    states = [TensorState(float(m), float(v), **{k: vals[i] for k, vals in fields.items()})
              for i, (m, v) in enumerate(zip(means, variances))]
    out = rule.propagate(states)
    return [out] if isinstance(out, TensorState) else list(out)


class Doubling(keras.layers.Layer):
    """y = 2 x."""

    def call(self, x):
        return 2.0 * x

    def compute_output_shape(self, input_shape):
        return input_shape


class DoublingEstimator(LayerOutputDistributionEstimator):
    """Mean 2m, variance 4v; returns only (mean, var), as estimators written for the reference do."""

    def estimate(self, means_in, vars_in):
        return 2.0 * means_in[0], 4.0 * vars_in[0]


DRAWS = tuple(range(16))


def log_errors(model, input_mean=0.0, input_var=1.0, samples=64, seeds=DRAWS) -> dict[str, float]:
    """|log(mean over draws of the measured var / predicted var)| per single-output layer call.

    Each seed redraws the weights (AutoInit's seed) and the noise. A prediction is the
    expectation over the weight draw of the variance pooled over positions, channels and
    samples, so it is compared with the arithmetic mean over draws: for ReLU the pooled second
    moment is exactly linear in each layer's weight variance, so that mean is unbiased, while
    one narrow draw (or a geometric mean) wanders low by the spread of log E[z^2], about 0.6
    at the tenth ReLU convolution of width 64."""
    predicted: dict[str, float] = {}
    measured_vars: dict[str, list[float]] = {}
    for seed in seeds:
        model, estimates = AutoInit(input_data_mean=input_mean, input_data_var=input_var,
                                    weight_init_config={"seed": seed}).initialize_model(model, return_estimates=True)
        measured = measure(model, input_mean, input_var, samples=samples, seed=seed, batch_size=samples)
        for key, estimate in estimates.items():
            meas = measured.get(key)
            if meas is None or isinstance(estimate.var, tuple) or estimate.var <= 0:
                continue
            predicted[key] = estimate.var
            measured_vars.setdefault(key, []).append(meas[1])
    return {key: abs(math.log(np.mean(v) / predicted[key])) for key, v in measured_vars.items()
            if len(v) == len(seeds) and np.mean(v) > 0}


def assert_quality(errors: dict[str, float], median: float = 0.1, p90: float = 0.35) -> None:
    values = np.array(list(errors.values()))
    worst = sorted(errors.items(), key=lambda kv: -kv[1])[:5]
    assert len(values) >= 5
    assert np.median(values) <= median and np.quantile(values, 0.9) <= p90, (
        f"median {np.median(values):.3f}, p90 {np.quantile(values, 0.9):.3f}; worst {worst}")


APPLICATION_DRAWS = {"EfficientNetB0": (0, 1, 2, 3)}
"""Depthwise blocks make a channel's nearby positions correlated (statistics.lag_correlation);
EfficientNetB0's squeeze pools depend on it. Its squeeze-and-excitation reductions have 4 to
48 channels, so one weight draw scatters their variance widely: it is measured over 4 draws
(32x32: median 0.066, p90 0.298; one draw: 0.083 / 0.335)."""


def assert_application_tracks(name: str, caplog: Any) -> None:
    """keras.applications ``name`` at 32x32: every call has a rule, none is probed, and the
    predictions track measurement (:func:`assert_quality`)."""
    model = getattr(keras.applications, name)(weights=None, input_shape=(32, 32, 3), classes=10)
    assert all(lookup(call.operation) is not None for call in build_graph(model).calls if not call.submodel)
    with caplog.at_level(logging.WARNING, logger="autoinit_sym"):
        errors = log_errors(model, samples=64, seeds=APPLICATION_DRAWS.get(name, (0,)))
    assert "No LayerOutputDistributionEstimator" not in caplog.text
    assert_quality(errors)
