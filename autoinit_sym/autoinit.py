"""AutoInit: initialize a Keras model so every weighted layer's pre-activation output has mean 0
and variance ``signal_variance``, from the statistics of the model's inputs.

``initialize_model`` loads the model (``walk.loading``), builds its graph of layer calls
(``walk.graph``), walks it (``walk.walker``) and only then writes the weights
(``walk.weights``), all or nothing, so an error leaves the model as it was.
"""
from __future__ import annotations

import logging
import math
from typing import Any, Callable, Mapping

import keras
import numpy as np

from autoinit_sym.estimators.base import LayerRule
from autoinit_sym.walk import legacy, walker
from autoinit_sym.walk.calibration import FLAG_RATIO, calibrate, calibration_batch, flagged
from autoinit_sym.walk.data import data_statistics, read_batches
from autoinit_sym.walk.graph import ModelGraph, build_graph
from autoinit_sym.walk.measured import measured_calls, rows_for
from autoinit_sym.walk.loading import (check_finite, check_input_shapes, check_positive, check_sequence_length,
                                       input_statistics, load, resolve_shapes)
from autoinit_sym.walk.report import Estimates, initialization_report
from autoinit_sym.walk.results import LayerEstimate
from autoinit_sym.walk.selection import kept_layers
from autoinit_sym.walk.settings import WeightInitConfig
from autoinit_sym.walk.tracing import Tracer, frozen_inner_layers, open_layers
from autoinit_sym.walk.weights import PendingWeight, base_seed, write_pending

logger = logging.getLogger("autoinit_sym")

SAME_SCALE = 10.0
"""Second moments within this factor of each other count as unchanged when the error for an
unrepresentable weight looks for the layer where its input's second moment went astray."""


class AutoInit:
    """Data-free, signal-preserving weight initialization for Keras 3 models.

    Args:
        weight_init_config: dict with ``distribution`` (truncated_normal,
            untruncated_normal, uniform, orthogonal), ``constrain_weights`` (a bool),
            ``monte_carlo_samples`` and ``recurrent_monte_carlo_samples`` (integers, at least 2),
            ``seed`` (None or an integer); see ``walk.settings.WeightInitConfig``. With
            ``seed=None`` (the default) every call draws fresh weights from Keras's seeding, so
            ``keras.utils.set_random_seed(s)`` followed by the same calls draws them again;
            ``seed=<int>`` draws the same weights on every run and in any process. Monte Carlo
            estimates (recurrent layers, probes) are seeded by ``seed`` (0 when None). Seeds
            follow the model's structure, never its layers' names.
        input_data_mean, input_data_var: statistics of the model's inputs: one number,
            a list (input order) or a dict by input name.
        custom_distribution_estimators: {LayerClass: EstimatorClass}; these override
            the built-in estimators.
        signal_variance: variance every weighted layer's pre-activation output gets.
        input_shapes: the sizes of the model's inputs, each a shape without the batch axis: a
            dict by input name (inputs left out keep their recorded shapes), a list in input
            order, or one shape for a single-input model. Every layer call's shapes are
            re-inferred from them; they must agree with the sizes the model fixes.
        sequence_length: the size of every unknown non-batch axis of an input not in
            ``input_shapes``. Without either, an unknown size is taken as
            ``estimators.shapes.DEFAULT_TIMESTEPS`` (16), with a warning.

    Example:
        >>> model = AutoInit().initialize_model(model)
        >>> model, estimates = AutoInit().initialize_model(model, return_estimates=True)
        >>> mean, var = estimates["dense"]
    """

    def __init__(self, weight_init_config: dict | None = None, input_data_mean: Any = 0.0,
                 input_data_var: Any = 1.0,
                 custom_distribution_estimators: dict[type, type] | None = None,
                 signal_variance: float = 1.0, input_shapes: Any = None,
                 sequence_length: int | None = None) -> None:
        self.config = WeightInitConfig.from_dict(weight_init_config)
        self.input_shapes = check_input_shapes(input_shapes)
        self.sequence_length = check_sequence_length(sequence_length)
        self.signal_variance = check_positive("signal_variance", signal_variance)
        self.input_data_mean = input_data_mean
        self.input_data_var = input_data_var
        self.custom_estimators = dict(custom_distribution_estimators or {})
        for layer_class, estimator in self.custom_estimators.items():
            if not isinstance(layer_class, type):
                raise TypeError(f"custom_distribution_estimators keys must be layer classes, "
                                f"got {layer_class!r}")
            if not (isinstance(estimator, type) and issubclass(estimator, LayerRule)):
                raise TypeError(f"custom_distribution_estimators[{layer_class.__name__}] must be a "
                                f"subclass of LayerOutputDistributionEstimator (or LayerRule), got {estimator!r}")
        # Validate every given value now; the count and names of per-input lists and dicts
        # once the model's inputs are known.
        for name, value, check in (("input_data_mean", input_data_mean, check_finite),
                                   ("input_data_var", input_data_var, check_positive)):
            items = value.values() if isinstance(value, Mapping) else (
                value if isinstance(value, (list, tuple)) else [value])
            for item in items:
                check(name, item)

    def initialize_model(self, model: Any, return_estimates: bool = False,
                         custom_objects: dict | None = None, layers: Any = None, data: Any = None,
                         calibrate: bool = False) -> Any:
        """Initialize ``model`` (in place for a model object; built once from a config
        dict or JSON string) and return it, with the estimates when ``return_estimates``.

        ``layers`` says which layers to initialize: by default every layer except those with
        ``trainable=False``, which are taken as pretrained and keep their weights; ``"all"``,
        layer names, layer objects or a predicate select explicitly (``walk.selection``). A
        kept layer's output statistics are measured through the real layer with its own
        weights, and everything after it is scaled for them.

        ``data`` (a NumPy array, a list of arrays in input order, a dict by input name, a
        ``tf.data.Dataset`` or an iterable of batches; a few batches are enough) sets the input
        statistics (mean and variance per input over the data) instead of ``input_data_mean``
        / ``input_data_var``, and is the batch a calibration runs on.

        ``calibrate=True`` adds one forward pass after the analytic initialization that
        rescales each plain weighted layer so its pre-activation variance on this draw equals
        ``signal_variance`` (``walk.calibration``), on ``data`` or on Gaussian samples of the
        input statistics (data-free). The estimates keep the analytic prediction and the factor
        (``LayerEstimate.calibration``); factors far from 1 are logged as a warning.

        The estimates map each layer call's key (see ``autoinit_sym.walk.graph``) to a
        :class:`~autoinit_sym.walk.results.LayerEstimate`, in topological order; layers without a
        rule are opened by tracing their ``call`` (``walk.tracing``), so the calls inside them are
        estimated and initialized too. Their ``report`` (``walk.report``) says how many trainable
        parameters were redrawn and which layers kept their own initializers and why; more than
        ``walk.report.KEPT_WARNING`` of them kept for reasons other than ``layers`` is a warning.

        Nothing is written unless the whole walk succeeds and every weight's scale is finite
        and representable in its dtype (a ValueError names the weight and the statistic that
        caused its scale); the write itself is all or nothing, an interrupt included
        (``walk.weights.write_pending``). A model whose optimizer is built (compiled and
        trained) gets the optimizer state of a fresh optimizer with the same configuration in
        the same pass: moments and iteration count reset, learning rate and loss scale at their
        configured values (:func:`fresh_optimizer_state`)."""
        if not isinstance(calibrate, bool):
            raise TypeError(f"calibrate must be True or False, got {calibrate!r}")
        model, returned = load(model, custom_objects)  # returned: the user's model (tf_keras: not the twin)
        graph = build_graph(model)
        legacy.check_settings(returned, model, self.config.constrain_weights)
        kept = kept_layers(model, legacy.twin_selection(layers, returned, model))
        batches = None if data is None else read_batches(data, graph.input_names)
        means, variances = input_statistics(graph, self.input_data_mean, self.input_data_var) \
            if batches is None else data_statistics(batches)
        for name, mean, var in zip(graph.input_names, means, variances):
            if not math.isfinite(mean * mean + var):
                raise ValueError(f"input {name!r}: the second moment input_data_mean^2 + input_data_var "
                                 f"= {mean:.3g}^2 + {var:.3g} overflows")
        context = walker.WalkContext(signal_variance=self.signal_variance, config=self.config,
                                     custom_estimators=self.custom_estimators,
                                     weight_seed=base_seed(self.config.seed), kept_layers=kept)
        graph.tracer = Tracer(walker.opens(context))  # layers to open are traced once, while sizing
        resolve_shapes(graph, self.input_shapes, self.sequence_length)
        open_layers(graph, walker.opens(context))
        if layers is None:
            kept |= frozen_inner_layers(graph)
        sample = self._sample(graph, batches, means, variances) if kept or calibrate else None
        if kept:
            context.measured = measured_calls(graph, [x[:rows_for(graph)] for x in sample], kept)
        estimates = Estimates(walker.estimate(graph, context, walker.input_states(graph, means, variances)))
        write_pending(context.pending.values(), self.config.distribution,
                      self.config.constrain_weights, context.seed_for,
                      explain=input_explainer(graph, estimates, self.signal_variance),
                      resets=fresh_optimizer_state(model))
        estimates.report = initialization_report(model, graph, estimates,
                                                 [p.variable for p in context.pending.values()], kept)
        if calibrate:
            self._calibrate(graph, estimates, kept, sample)
        return (returned, estimates) if return_estimates else returned

    def _sample(self, graph: ModelGraph, batches: list | None, means: list[float],
                variances: list[float]) -> list[np.ndarray]:
        """The batch kept layers are measured and calibration runs on: the data's rows (one
        array per model input), or Gaussian rows of the input statistics."""
        if batches is not None:
            return [np.concatenate([b[i] for b in batches]) for i in range(len(graph.inputs))]
        return calibration_batch(graph, means, variances, seed=self.config.seed)

    def _calibrate(self, graph: ModelGraph, estimates: Mapping[str, LayerEstimate], kept: set[int],
                   sample: list[np.ndarray]) -> None:
        """The calibration pass (``walk.calibration``) on ``sample``; the factors go into the
        estimates, the far ones into a warning."""
        factors = calibrate(graph, sample, self.signal_variance, skip=kept)
        for key, factor in factors.items():
            estimates[key].calibration = factor
        far = flagged(factors)
        if far:
            logger.warning("calibration rescaled %d layer(s) by more than %.1fx either way (%s): the analytic "
                           "variance map is unstable there for this draw, or a rule is off",
                           len(far), FLAG_RATIO, ", ".join(f"{k} x{f:.2f}" for k, f in list(far.items())[:5]))


def input_explainer(graph: ModelGraph, estimates: Mapping[str, LayerEstimate],
                    signal_variance: float) -> Callable[[PendingWeight], str]:
    """For the error about an unrepresentable weight: what its scale came from. A kernel's
    standard deviation is sqrt(signal_variance / (fan_in * E[x^2])) for its input's second
    moment E[x^2]. Walking back from that input along first inputs, the first layer call whose
    own input second moment differs from E[x^2] by more than :data:`SAME_SCALE` is named as
    where it went astray; failing that, the formula with its three numbers (and the model input
    whose given statistics it is)."""
    owner = {path: key for key, estimate in estimates.items() for path in estimate.weights}
    calls = {call.key: call for call in graph.calls}
    producer = {slot: call for call in graph.calls if not call.submodel for slot in call.outputs}
    input_names = dict(zip(graph.inputs, graph.input_names))

    def explain(item: PendingWeight) -> str:
        std, fan_in = float(item.stddev), item.fan_in
        if not (fan_in and math.isfinite(std) and std > 0.0):
            return ""
        second = signal_variance / (fan_in * std * std)
        call = calls.get(owner.get(item.variable.path))
        slot = call.inputs[0] if call is not None and call.inputs and second > 0 else None
        while slot in producer and estimates[producer[slot].key].inputs:
            before = estimates[producer[slot].key].inputs[0].second_moment
            if not (before > 0 and 1.0 / SAME_SCALE < before / second < SAME_SCALE):
                return (f"the input of {call.key!r} has second moment {second:.3g}: it "
                        f"{'falls' if second < before else 'rises'} from {before:.3g} at "
                        f"{producer[slot].key!r}")
            slot = producer[slot].inputs[0]
        formula = (f"std = sqrt(signal_variance {signal_variance:.3g} / (fan-in {fan_in:g} x input "
                   f"second moment {second:.3g}))")
        if slot in input_names:
            return f"{formula}; that second moment is input_data_mean^2 + input_data_var of {input_names[slot]!r}"
        return formula

    return explain


def fresh_optimizer_state(model: Any) -> list[tuple[Any, Any]]:
    """``(variable, value)`` for every variable of ``model``'s optimizer when it is built: the
    values a new optimizer of the same configuration has once built for the model's trainable
    variables (moments and iteration count zero, learning rate and loss scale as configured).
    It is built for a moment beside the old one (the memory of a second optimizer state);
    constant values are kept as one number broadcast to the variable's shape. An optimizer
    that cannot be rebuilt from its config keeps its state, with a warning."""
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None or not optimizer.built:
        return []
    try:
        fresh = type(optimizer).from_config(optimizer.get_config())
        fresh.build(model.trainable_variables)
    except Exception as err:  # a custom optimizer whose config does not rebuild it
        logger.warning("the optimizer state of %s was kept: a fresh optimizer could not be built from its "
                       "config (%s: %s); compile the model again to reset it",
                       type(optimizer).__name__, type(err).__name__, err)
        return []
    old, new = optimizer.variables, fresh.variables
    if [(tuple(v.shape), v.dtype) for v in old] != [(tuple(v.shape), v.dtype) for v in new]:
        logger.warning("the optimizer state of %s was kept: a fresh optimizer built for the model's "
                       "trainable variables has other variables; compile the model again to reset it",
                       type(optimizer).__name__)
        return []
    resets = []
    for variable, initial in zip(old, new):
        value = keras.ops.convert_to_numpy(initial)
        if value.size and np.all(value == value.flat[0]):
            value = np.broadcast_to(value.flat[0], value.shape)
        resets.append((variable, value))
    return resets
