"""Probing a layer that has no estimator: run the real layer on Gaussian samples.

Each floating-point input is drawn iid N(mean, var) with the call's per-sample shape, each
integer or boolean one (ids, masks) from the values its record says it holds
(``TensorState.discrete``; ones for a boolean, 0..1 for an integer where none is known), the
layer runs in training mode with the call's constant arguments, and the mean and variance of
every output are measured (:func:`autoinit_sym.walk.monte_carlo.gaussian_statistics`,
seeded). A probe is impossible when the call has no graph node, a shape is unknown
or an input is neither numeric nor boolean; then, and when the layer fails on the samples,
the input statistics pass through unchanged. Rules that have no exact answer for some
settings of their layer probe it too (:func:`probed`).
"""
from __future__ import annotations

import logging
from typing import Any, Sequence

from autoinit_sym.estimators.base import PASS_THROUGH, PROBE, LayerRule, moments_of
from autoinit_sym.statistics.state import DiscreteValues, TensorState
from autoinit_sym.walk.graph import SMALL_INTEGERS, invoke
from autoinit_sym.walk.monte_carlo import gaussian_statistics

logger = logging.getLogger("autoinit_sym")

PROBE_SAMPLES = 256
"""Batch rows drawn for one probe."""


def missing_estimator_warning(name: str, probed: bool, reason: str = "") -> str:
    """The reference's warning, followed by what is done instead."""
    head = f"No LayerOutputDistributionEstimator found for layer {name}."
    if probed:
        return f"{head} Probing its output with Gaussian samples instead."
    return (f"{head} A probe is impossible ({reason}); passing its input statistics "
            "through unchanged instead.")


def probe_impossible(node: Any, input_shapes: list[tuple]) -> str:
    """Why the call cannot be probed, or '' when it can."""
    if node is None:
        return "the call has no graph node"
    for shape in input_shapes:
        if any(d is None for d in shape[1:]):
            return f"input shape {shape} is not fully known"
    for tensor in node.arguments.keras_tensors:
        if not any(kind in str(tensor.dtype) for kind in ("float", "int", "bool")):
            return f"input of dtype {tensor.dtype} is neither numeric nor boolean"
    return ""


def sampled_values(inputs: Sequence[TensorState], dtypes: Sequence[str]) -> list[DiscreteValues | None]:
    """What a probe draws for each input: None (Gaussian) for a floating-point one, else the
    values its record holds, or ones (boolean) / 0..SMALL_INTEGERS - 1 (integer) without one."""
    out: list[DiscreteValues | None] = []
    for state, dtype in zip(inputs, dtypes):
        if "float" in dtype:
            out.append(None)
        elif state.discrete is not None:
            out.append(DiscreteValues(dtype, state.discrete.low, state.discrete.high))
        else:
            out.append(DiscreteValues(dtype, 1, 2) if "bool" in dtype else DiscreteValues(dtype, 0, SMALL_INTEGERS))
    return out


def no_rule_warning(layer: Any, why: str) -> str:
    return f"No exact rule for {layer.name} {why}; probing it with Gaussian samples instead."


class ProbeEstimator(LayerRule):
    """Measure the real layer on Gaussian samples with the incoming statistics (Monte Carlo)."""

    method = PROBE

    def propagate(self, inputs: Sequence[TensorState]) -> list[TensorState]:
        means_in, vars_in = moments_of(inputs)
        reason = probe_impossible(self.node, self.input_shapes)
        if not reason:
            try:
                pairs = self.probe(inputs)
            except Exception as err:  # the layer itself failed on the samples
                reason = f"running it on Gaussian samples failed: {type(err).__name__}: {err}"
                logger.warning("Probing layer %s failed (%s); passing its input statistics through "
                               "unchanged.", self.layer.name, reason)
            else:
                return [self.output(inputs, m, v, i) for i, (m, v) in enumerate(pairs)]
        self.method = PASS_THROUGH
        return [self.output(inputs, means_in[0], vars_in[0], i) for i in range(max(len(self.output_shapes), 1))]

    def probe(self, inputs: Sequence[TensorState]) -> list[tuple[float, float]]:
        """The measured (mean, var) of every output on ``monte_carlo_samples`` (at most
        :data:`PROBE_SAMPLES`) batch rows drawn from ``inputs`` (:func:`sampled_values`), seeded by
        the call's position in the walk."""
        node, layer = self.node, self.layer
        means_in, vars_in = moments_of(inputs)
        values = sampled_values(inputs, [str(t.dtype) for t in node.arguments.keras_tensors])

        def run(*inputs: Any) -> list[Any]:
            return invoke(layer, node, list(inputs), training=True)

        samples = min(PROBE_SAMPLES, self.context.config.monte_carlo_samples)
        return gaussian_statistics(run, [s[1:] for s in self.input_shapes], means_in, vars_in,
                                   samples=samples, discrete=values,
                                   seed=self.context.seed_for("probe", self.context.call_positions.get(id(node))),
                                   description=f"Probing {layer.name}")


def probed(rule: LayerRule, inputs: Sequence[TensorState], warning: str) -> list[TensorState]:
    """``rule``'s call estimated by probing the real layer on Gaussian samples, after logging
    ``warning``; ``rule.method`` becomes the probe's method (probe, or pass-through)."""
    logger.warning(warning)
    prober = ProbeEstimator(rule.layer, rule.context, rule.input_shapes, rule.output_shapes, rule.node)
    result = prober.propagate(inputs)
    rule.method = prober.method
    return result
