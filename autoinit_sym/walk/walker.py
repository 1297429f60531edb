"""The walk: every layer call in topological order, from the input records to the output records
of each call, re-walked until the combined input statistics of shared layers settle.

The walk is pure estimation (no weight is sampled): ``context.pending`` collects the weights
to write, which happens only after every layer call has been estimated and checked.
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from autoinit_sym.estimators.base import PASS_THROUGH, EstimationContext, LayerRule
from autoinit_sym.estimators.registry import lookup
from autoinit_sym.statistics.border_profile import spatial_shape
from autoinit_sym.statistics.methods import MEASURED
from autoinit_sym.statistics.state import DiscreteValues, TensorState, checked
from autoinit_sym.walk.graph import SMALL_INTEGERS, Call, ModelGraph, input_values
from autoinit_sym.walk.probe import ProbeEstimator, missing_estimator_warning, probe_impossible
from autoinit_sym.walk.results import LayerEstimate

logger = logging.getLogger("autoinit_sym")

INITIALIZED, KEPT = "initialized", "kept"
"""A layer call's role in the results: its weights were drawn, or kept and measured."""
MAX_PASSES = 20
"""Re-walks at most this often to settle the combined statistics of shared layers."""
SHARED_TOLERANCE = 1e-9
"""Relative change of the combined statistics below which shared layers are settled."""


@dataclass
class WalkContext(EstimationContext):
    """The estimation context plus the combined input statistics of shared layers
    (id(layer) -> (means, vars)), which weighted layers scale their weights for, and the
    layers whose weights are kept (id(layer)): they are measured through the real layer,
    with their own weights, instead of being initialized."""

    shared_input_stats: dict[int, tuple[list[float], list[float]]] = field(default_factory=dict)
    kept_layers: set[int] = field(default_factory=set)
    measured: dict[str, list[TensorState]] = field(default_factory=dict)
    """Output records measured through kept layers, by call key (``walk.measured``)."""
    untraced: dict[int, str] = field(default_factory=dict)
    """id(layer) -> why a layer without a rule could not be opened (``ModelGraph.untraced``)."""


def opens(context: WalkContext) -> Callable[[Any], bool]:
    """Which layers are opened by tracing (``walk.tracing``): those without a rule (user rules
    included) whose weights are not kept."""
    return lambda layer: id(layer) not in context.kept_layers and lookup(layer, context.custom_estimators) is None


def input_states(graph: ModelGraph, means: Sequence[float], variances: Sequence[float]) -> list[TensorState]:
    """The records of the model's inputs: N(mean, var) for a floating-point input; for an integer
    or boolean one, the values it is taken to hold (``graph.input_values``) and their statistics."""
    return [TensorState(m, v) if values is None else values.state()
            for m, v, values in zip(means, variances, input_values(graph))]


def discrete_output(state: TensorState, dtype: str, inputs: Sequence[TensorState]) -> TensorState:
    """``state`` for an output of ``dtype``: a floating-point one holds no discrete values; an
    integer or boolean one keeps what its rule said, else its first discrete input's values (a
    cast, a reshape), else ones for a boolean and 0..SMALL_INTEGERS - 1 for an integer."""
    if "float" in dtype:
        return state if state.discrete is None else state.replace(discrete=None)
    if state.discrete is not None:
        return state
    values = next((s.discrete for s in inputs if s.discrete is not None), None)
    if values is None or values.dtype != dtype:
        low, high = (values.low, values.high) if values is not None else (1, 2) if "bool" in dtype else (0, SMALL_INTEGERS)
        values = DiscreteValues(dtype, low, high)
    return state.replace(discrete=values)


def _combined(records: list[LayerEstimate]) -> tuple[list[float], list[float]]:
    """Input statistics pooled over several calls: mean of means, mean of second moments."""
    means, variances = [], []
    for i in range(len(records[0].inputs)):
        mean = sum(r.inputs[i].mean for r in records) / len(records)
        second = sum(r.inputs[i].second_moment for r in records) / len(records)
        means.append(mean)
        variances.append(max(second - mean * mean, 0.0))
    return means, variances


def _settled(old: dict, new: dict) -> bool:
    if old.keys() != new.keys():
        return False
    for key, (means, variances) in new.items():
        for a, b in zip(means + variances, old[key][0] + old[key][1]):
            if abs(a - b) > SHARED_TOLERANCE * (1.0 + abs(a)):
                return False
    return True


def estimate(graph: ModelGraph, context: WalkContext,
             inputs: Sequence[TensorState]) -> "OrderedDict[str, LayerEstimate]":
    """Walk ``graph`` from the model inputs' records, re-walking until shared layers' combined
    statistics settle; ``context.pending`` then holds the weights to write."""
    shared = {op: calls for op, calls in graph.calls_by_operation().items() if len(calls) > 1}
    warned: set[int | str] = set()
    for _ in range(MAX_PASSES):
        context.pending.clear()
        results = walk(graph, context, inputs, warned)
        combined = {op: _combined([results[c.key] for c in calls]) for op, calls in shared.items()}
        if _settled(context.shared_input_stats, combined):
            break
        context.shared_input_stats = combined
    else:
        logger.warning("the combined input statistics of shared layers did not settle in %d "
                       "passes; using the last pass", MAX_PASSES)
    for op, calls in shared.items():
        for call in calls:
            results[call.key].init_means_in, results[call.key].init_vars_in = combined[op]
    return results


def walk(graph: ModelGraph, context: WalkContext, inputs: Sequence[TensorState],
         warned: set[int | str]) -> "OrderedDict[str, LayerEstimate]":
    """One pass in topological order: each call's rule maps its input records to its output
    records (a nested model's call reads the records its inner calls left). ``warned`` holds
    the ids of layers warned about a missing rule and the keys of calls reported as passed
    through, so that re-walks warn no more."""
    states = dict(zip(graph.inputs, inputs))
    context.untraced = graph.untraced
    context.call_positions = {id(call.node): position for position, call in enumerate(graph.calls)}
    method_of: dict[int, str] = {}
    results: OrderedDict[str, LayerEstimate] = OrderedDict()
    for call in graph.calls:
        ins = [states[s] for s in call.inputs]
        if call.submodel:
            outs = [states[s] for s in call.outputs]
            method, weights = method_of.get(call.outputs[0], "exact"), {}
        elif call.key in context.measured:
            outs, method, weights = context.measured[call.key], MEASURED, {}
            states.update(zip(call.outputs, outs))
            method_of.update((s, method) for s in call.outputs)
        else:
            rule = rule_for_call(call, context, warned)
            before = {k: id(p) for k, p in context.pending.items()}
            try:
                outs = _outputs(rule.propagate(ins), call, ins)
            except Exception as err:
                err.add_note(f"while estimating layer call {call.key!r} ({type(call.operation).__name__})")
                raise
            method = getattr(rule, "method", "exact")
            if method == PASS_THROUGH:
                _report_pass_through(call, rule, warned)
            weights = {p.variable.path: p.stddev for k, p in context.pending.items() if before.get(k) != id(p)}
            states.update(zip(call.outputs, outs))
            method_of.update((s, method) for s in call.outputs)
        role = KEPT if id(call.operation) in context.kept_layers else INITIALIZED if weights else ""
        results[call.key] = LayerEstimate(call.key, call.label, method, ins, outs, weights=weights,
                                          role=role)
    return results


def _outputs(result: TensorState | Sequence[TensorState], call: Call,
             inputs: Sequence[TensorState]) -> list[TensorState]:
    """A rule's result as one checked record per output of ``call``, integer and boolean outputs
    with the values they hold (:func:`discrete_output`)."""
    states = [result] if isinstance(result, TensorState) else list(result)
    count = max(len(call.outputs), 1)
    if len(states) == 1 and count > 1:
        states = states * count
    if len(states) != count or not all(isinstance(s, TensorState) for s in states):
        raise ValueError(f"the rule of layer call {call.key!r} returned {result!r}; expected {count} "
                         "TensorState record(s)")
    shapes = call.output_shapes or [None] * count
    dtypes = [str(t.dtype) for t in call.node.outputs] if call.node is not None else []
    if len(dtypes) == count:
        states = [discrete_output(s, dtype, inputs) for s, dtype in zip(states, dtypes)]
    return [checked(s, spatial_shape(shape), f"layer {call.key!r}") for s, shape in zip(states, shapes)]


def _report_pass_through(call: Call, rule: LayerRule, warned: set[int | str]) -> None:
    """Warn once that ``call`` could be neither estimated nor probed, naming it and why, where no
    warning has said so: a rule fell back on a probe (``walk.probe.probed``) that is impossible.
    (A missing rule's warning already gives the reason, and a probe that fails warns itself.)"""
    reason = probe_impossible(call.node, call.input_shapes)
    if not reason or isinstance(rule, ProbeEstimator) or call.key in warned:
        return
    warned.add(call.key)
    logger.warning("Layer call %r (%s) can be neither estimated nor probed (%s); passing its input "
                   "statistics through unchanged (method %s).", call.key, type(call.operation).__name__,
                   reason, PASS_THROUGH)


def rule_for_call(call: Call, context: WalkContext, warned: set[int | str]) -> LayerRule:
    """The rule for ``call``: a probe of the real layer for a kept layer, the registered rule,
    else a probe (warned about once per layer)."""
    if id(call.operation) in context.kept_layers:
        return ProbeEstimator(call.operation, context, call.input_shapes, call.output_shapes, call.node)
    rule = context.rule_for(call.operation, call.input_shapes, call.output_shapes, call.node)
    if rule is not None:
        return rule
    if id(call.operation) not in warned:
        warned.add(id(call.operation))
        reason = probe_impossible(call.node, call.input_shapes)
        untraced = context.untraced.get(id(call.operation))
        logger.warning(missing_estimator_warning(call.operation.name, not reason, reason)
                       + (f" (It could not be opened by tracing: {untraced})" if untraced else ""))
    return ProbeEstimator(call.operation, context, call.input_shapes, call.output_shapes, call.node)
