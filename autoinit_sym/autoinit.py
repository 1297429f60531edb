"""AutoInit: walk a Keras model's graph from its input statistics and redraw every
weighted layer so its pre-activation output has mean 0 and variance signal_variance.

The walk is pure estimation (no weight is sampled); weights are written only after
every layer call has been estimated and checked, so an error leaves the model as it was.
"""
from __future__ import annotations

import json
import logging
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from numbers import Real
from typing import Any, Mapping, NamedTuple

import keras

from autoinit_sym.walk.results import LayerEstimate
from autoinit_sym.estimators.base import (CARRY, EstimationContext, LayerOutputDistributionEstimator,
                                          WeightInitConfig, carried_shared)
from autoinit_sym.statistics.border_profile import mixed, spatial_shape
from autoinit_sym.walk.graph import Call, ModelGraph, build_graph
from autoinit_sym.walk.probe import ProbeEstimator, missing_estimator_warning, probe_impossible
from autoinit_sym.walk.weights import write_pending

logger = logging.getLogger("autoinit_sym")

MAX_PASSES = 20
"""Re-walks at most this often to settle the combined statistics of shared layers."""
SHARED_TOLERANCE = 1e-9
"""Relative change of the combined statistics below which shared layers are settled."""


@dataclass
class WalkContext(EstimationContext):
    """The estimation context plus the combined input statistics of shared layers
    (id(layer) -> (means, vars)), which weighted layers scale their weights for."""

    shared_input_stats: dict[int, tuple[list[float], list[float]]] = field(default_factory=dict)


def _check_positive(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def _check_finite(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def per_input(name: str, value: Any, graph: ModelGraph) -> list[Any]:
    """``value`` given once for all inputs, as a list in input order, or as a dict by
    input name, expanded to one entry per model input."""
    count = len(graph.inputs)
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - set(graph.input_names))
        missing = [n for n in graph.input_names if n not in value]
        if unknown or missing:
            raise ValueError(f"{name} by input name: unknown {unknown}, missing {missing}; "
                             f"the model's inputs are {graph.input_names}")
        return [value[n] for n in graph.input_names]
    if isinstance(value, (list, tuple)):
        if len(value) != count:
            raise ValueError(f"{name} has {len(value)} entries but the model has {count} inputs "
                             f"{graph.input_names}")
        return list(value)
    return [value] * count


def input_statistics(graph: ModelGraph, mean: Any, var: Any) -> tuple[list[float], list[float]]:
    """Validated per-input means and variances (variances > 0)."""
    means = [_check_finite(f"input_data_mean[{n}]", m)
             for n, m in zip(graph.input_names, per_input("input_data_mean", mean, graph))]
    variances = [_check_positive(f"input_data_var[{n}]", v)
                 for n, v in zip(graph.input_names, per_input("input_data_var", var, graph))]
    return means, variances


def load_model(model: Any, custom_objects: dict | None = None) -> keras.Model:
    """``model`` itself, or the model built once from a config dict or a JSON string."""
    if isinstance(model, keras.Model):
        return model
    if isinstance(model, (str, bytes)):
        try:
            model = json.loads(model)
        except json.JSONDecodeError as err:
            raise ValueError(f"model JSON is malformed: {err}") from err
        if not isinstance(model, dict):
            raise ValueError(f"model JSON must describe an object (a model config), got {type(model).__name__}")
    if not isinstance(model, dict):
        raise TypeError(f"model must be a keras.Model, a config dict or a JSON string, "
                        f"got {type(model).__name__}")
    try:
        if "class_name" in model:
            built = keras.saving.deserialize_keras_object(model, custom_objects=custom_objects)
        elif "input_layers" in model:
            built = keras.Model.from_config(model, custom_objects=custom_objects)
        elif "layers" in model:
            built = keras.Sequential.from_config(model, custom_objects=custom_objects)
        else:
            raise ValueError("it has none of the keys 'class_name', 'input_layers', 'layers'")
    except (ValueError, TypeError, KeyError, AttributeError) as err:
        raise ValueError(f"model config is malformed: {err}") from err
    if not isinstance(built, keras.Model):
        raise ValueError(f"model config describes a {type(built).__name__}, not a keras.Model")
    return built


def _as_pairs(result: Any, outputs: int, key: str) -> list[tuple[float, float]]:
    """An estimator's result as one (mean, var) pair per output, checked finite."""
    if isinstance(result, (list, tuple)) and result and isinstance(result[0], (list, tuple)):
        pairs = [tuple(p) for p in result]
    else:
        pairs = [tuple(result)]
    if len(pairs) == 1 and outputs > 1:
        pairs = pairs * outputs
    if len(pairs) != max(outputs, 1) or any(len(p) != 2 for p in pairs):
        raise ValueError(f"the estimator of layer {key!r} returned {result!r}; expected "
                         f"{outputs} (mean, var) pair(s)")
    checked = []
    for mean, var in pairs:
        mean, var = float(mean), float(var)
        if not (math.isfinite(mean) and math.isfinite(var)) or var < -1e-12 * (1.0 + mean * mean):
            raise ValueError(f"layer {key!r} has a non-finite or negative estimate (mean={mean}, "
                             f"var={var}); no weights were written")
        checked.append((mean, max(var, 0.0)))
    return checked


def _per_output(estimator: Any, attr: str, count: int, default: Any, unset: Any = CARRY) -> list[Any]:
    """What ``estimator`` set in ``attr``: one value for all ``count`` outputs, or a list with
    one per output; ``default()`` where it left ``unset``."""
    given = getattr(estimator, attr, unset)
    if given is unset or (isinstance(given, str) and given == CARRY):
        return default()
    if isinstance(given, (list, tuple)):
        if len(given) != count:
            raise ValueError(f"{type(estimator).__name__} set {attr} to {len(given)} values; expected "
                             f"one value per output ({count})")
        return list(given)
    return [given] * count


def _shared_outputs(estimator: Any, vars_in: list[float], shared_in: list[float],
                    pairs: list[tuple[float, float]]) -> list[float]:
    """The position-shared variance of each output: what the estimator set in ``shared_out``
    (one value for all outputs, or one per output), else :func:`carried_shared`; clipped to
    [0, var] of its output."""
    values = _per_output(estimator, "shared_out", len(pairs),
                         lambda: [carried_shared(vars_in, shared_in, var) for _, var in pairs], unset=None)
    checked = []
    for value, (_, var) in zip(values, pairs):
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"{type(estimator).__name__} set a non-finite shared_out {values!r}")
        checked.append(min(max(value, 0.0), var))
    return checked


class TensorStatistics(NamedTuple):
    """What the walk knows of one tensor (see ``estimators.base``): pooled mean and variance,
    the position-shared variance and its per-sample part, how it was made elementwise from a
    Gaussian (origin), its per-position second-moment profile and its short-range spatial
    correlation (``statistics.lag_correlation``)."""

    mean: float
    var: float
    shared: float = 0.0
    sample_shared: float = 0.0
    origin: Any = None
    profile: Any = None
    lags: Any = None


def _sample_shared_outputs(estimator: Any, shared_in: list[float], sample_in: list[float],
                           shared_out: list[float]) -> list[float]:
    """The per-sample part of each output's shared variance: what the estimator set in
    ``sample_shared_out`` (one value, or a list per output), else the inputs' per-sample
    fraction of their shared variance; clipped to [0, shared] of its output."""
    total = float(sum(shared_in))
    fraction = float(sum(sample_in)) / total if total > 0 else 0.0
    values = _per_output(estimator, "sample_shared_out", len(shared_out), lambda: [fraction * c for c in shared_out])
    return [min(max(float(b), 0.0), c) if math.isfinite(float(b)) else 0.0 for b, c in zip(values, shared_out)]


def _profile_outputs(estimator: Any, call: Call, means_in: list[float], vars_in: list[float],
                     profiles_in: list[Any]) -> list[Any]:
    """The per-position profile of each output: what the estimator set in ``profile_out``
    (one for all outputs, or a list), else the inputs' profiles mixed by second moment where
    the output has their spatial shape (``statistics.border_profile.mixed``). A profile
    whose shape is not the output's spatial shape is dropped (uniform)."""
    shapes = [spatial_shape(shape) for shape in (call.output_shapes or [None] * len(call.outputs))]
    seconds = [v + m * m for m, v in zip(means_in, vars_in)]
    values = _per_output(estimator, "profile_out", len(shapes),
                         lambda: [mixed(profiles_in, seconds, shape) for shape in shapes])
    return [p if p is not None and shape is not None and p.shape == shape else None
            for p, shape in zip(values, shapes)]


def _combined(records: list[LayerEstimate]) -> tuple[list[float], list[float]]:
    """Input statistics pooled over several calls: mean of means, mean of second moments."""
    means, variances = [], []
    for i in range(len(records[0].means_in)):
        mean = sum(r.means_in[i] for r in records) / len(records)
        second = sum(r.vars_in[i] + r.means_in[i] ** 2 for r in records) / len(records)
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


class AutoInit:
    """Data-free, signal-preserving weight initialization for Keras 3 models.

    Args:
        weight_init_config: dict with ``distribution`` (truncated_normal,
            untruncated_normal, uniform, orthogonal), ``constrain_weights``,
            ``monte_carlo_samples``, ``recurrent_monte_carlo_samples``, ``seed``.
        input_data_mean, input_data_var: statistics of the model's inputs: one number,
            a list (input order) or a dict by input name.
        custom_distribution_estimators: {LayerClass: EstimatorClass}; these override
            the built-in estimators.
        signal_variance: variance every weighted layer's pre-activation output gets.

    Example:
        >>> model = AutoInit().initialize_model(model)
        >>> model, estimates = AutoInit().initialize_model(model, return_estimates=True)
        >>> mean, var = estimates["dense"]
    """

    def __init__(self, weight_init_config: dict | None = None, input_data_mean: Any = 0.0,
                 input_data_var: Any = 1.0,
                 custom_distribution_estimators: dict[type, type] | None = None,
                 signal_variance: float = 1.0) -> None:
        self.config = WeightInitConfig.from_dict(weight_init_config)
        self.signal_variance = _check_positive("signal_variance", signal_variance)
        self.input_data_mean = input_data_mean
        self.input_data_var = input_data_var
        self.custom_estimators = dict(custom_distribution_estimators or {})
        for layer_class, estimator in self.custom_estimators.items():
            if not isinstance(layer_class, type):
                raise TypeError(f"custom_distribution_estimators keys must be layer classes, "
                                f"got {layer_class!r}")
            if not (isinstance(estimator, type) and issubclass(estimator, LayerOutputDistributionEstimator)):
                raise TypeError(f"custom_distribution_estimators[{layer_class.__name__}] must be a "
                                f"subclass of LayerOutputDistributionEstimator, got {estimator!r}")
        # Validate every given value now; the count and names of per-input lists and dicts
        # once the model's inputs are known.
        for name, value, check in (("input_data_mean", input_data_mean, _check_finite),
                                   ("input_data_var", input_data_var, _check_positive)):
            items = value.values() if isinstance(value, Mapping) else (
                value if isinstance(value, (list, tuple)) else [value])
            for item in items:
                check(name, item)

    def initialize_model(self, model: Any, return_estimates: bool = False,
                         custom_objects: dict | None = None) -> Any:
        """Initialize ``model`` (in place for a model object; built once from a config
        dict or JSON string) and return it, with the estimates when ``return_estimates``.

        The estimates map each layer call's key (see ``autoinit_sym.walk.graph``) to a
        :class:`~autoinit_sym.walk.results.LayerEstimate`, in topological order."""
        model = load_model(model, custom_objects)
        graph = build_graph(model)
        means, variances = input_statistics(graph, self.input_data_mean, self.input_data_var)
        context = WalkContext(signal_variance=self.signal_variance, config=self.config,
                              custom_estimators=self.custom_estimators)
        estimates = self.estimate(graph, context, means, variances)
        write_pending(context.pending.values(), self.config.distribution,
                      self.config.constrain_weights, context.seed_for)
        return (model, estimates) if return_estimates else model

    def estimate(self, graph: ModelGraph, context: WalkContext, means: list[float],
                 variances: list[float]) -> "OrderedDict[str, LayerEstimate]":
        """Walk ``graph``, re-walking until shared layers' combined statistics settle;
        ``context.pending`` then holds the weights to write."""
        shared = {op: calls for op, calls in graph.calls_by_operation().items() if len(calls) > 1}
        warned: set[int] = set()
        for _ in range(MAX_PASSES):
            context.pending.clear()
            estimates = self._walk(graph, context, means, variances, warned)
            combined = {op: _combined([estimates[c.key] for c in calls]) for op, calls in shared.items()}
            if _settled(context.shared_input_stats, combined):
                break
            context.shared_input_stats = combined
        else:
            logger.warning("the combined input statistics of shared layers did not settle in %d "
                           "passes; using the last pass", MAX_PASSES)
        for op, calls in shared.items():
            for call in calls:
                estimates[call.key].init_means_in, estimates[call.key].init_vars_in = combined[op]
        return estimates

    def _walk(self, graph: ModelGraph, context: WalkContext, means: list[float],
              variances: list[float], warned: set[int]) -> "OrderedDict[str, LayerEstimate]":
        """One pass in topological order over :class:`TensorStatistics` slots; model inputs
        have shared 0 (positions independent), no origin and a uniform profile
        (see estimators.base)."""
        stats = {slot: TensorStatistics(m, v) for slot, m, v in zip(graph.inputs, means, variances)}
        method_of: dict[int, str] = {}
        estimates: OrderedDict[str, LayerEstimate] = OrderedDict()
        for call in graph.calls:
            inputs = [stats[s] for s in call.inputs]
            means_in, vars_in = [t.mean for t in inputs], [t.var for t in inputs]
            shared_in = [t.shared for t in inputs]
            if call.submodel:
                pairs = [(stats[s].mean, stats[s].var) for s in call.outputs]
                shared_out = [stats[s].shared for s in call.outputs]
                samples = [stats[s].sample_shared for s in call.outputs]
                method = method_of.get(call.outputs[0], "exact")
                weights: dict[str, float] = {}
            else:
                estimator = self._estimator(call, context, warned)
                estimator.shared_in, estimator.sample_shared_in = shared_in, [t.sample_shared for t in inputs]
                estimator.origin_in, estimator.profile_in = [t.origin for t in inputs], [t.profile for t in inputs]
                estimator.lags_in = [t.lags for t in inputs]
                before = {k: id(p) for k, p in context.pending.items()}
                try:
                    result = estimator.estimate(means_in, vars_in)
                except Exception as err:
                    err.add_note(f"while estimating layer call {call.key!r} ({type(call.operation).__name__})")
                    raise
                pairs = _as_pairs(result, len(call.outputs), call.key)
                shared_out = _shared_outputs(estimator, vars_in, shared_in, pairs)
                method = getattr(estimator, "method", "exact")
                weights = {p.variable.path: p.stddev for k, p in context.pending.items()
                           if before.get(k) != id(p)}
                origin = getattr(estimator, "origin_out", None)
                profiles = _profile_outputs(estimator, call, means_in, vars_in, estimator.profile_in)
                samples = _sample_shared_outputs(estimator, shared_in, estimator.sample_shared_in, shared_out)
                lags = _per_output(estimator, "lags_out", len(pairs), lambda: [None] * len(pairs), unset=None)
                stats.update((slot, TensorStatistics(m, v, c, b, origin, r, g)) for slot, (m, v), c, b, r, g
                             in zip(call.outputs, pairs, shared_out, samples, profiles, lags))
                method_of.update((s, method) for s in call.outputs)
            estimates[call.key] = LayerEstimate(call.key, call.operation.name, method, means_in,
                                                vars_in, pairs, weights=weights, shared_in=shared_in,
                                                shared_out=shared_out, sample_shared_out=samples)
        return estimates

    @staticmethod
    def _estimator(call: Call, context: WalkContext, warned: set[int]) -> LayerOutputDistributionEstimator:
        estimator = context.estimator_for(call.operation, call.input_shapes, call.output_shapes, call.node)
        if estimator is not None:
            return estimator
        if id(call.operation) not in warned:
            warned.add(id(call.operation))
            reason = probe_impossible(call.node, call.input_shapes)
            logger.warning(missing_estimator_warning(call.operation.name, not reason, reason))
        return ProbeEstimator(call.operation, context, call.input_shapes, call.output_shapes, call.node)
