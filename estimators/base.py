"""The contract every layer rule follows.

A rule maps the records of one layer call's inputs (``statistics.state.TensorState``: mean,
variance, position-shared variance and what else the walk knows of each tensor) to the
records of its outputs, assuming the elements of an input are Gaussian with those
statistics and independent of each other apart from what the record says (the AutoInit
assumption). Weighted layers also schedule new weights (:meth:`LayerRule.set_initializer`);
nothing is written to the model until the whole walk has succeeded.

- Built-in rules subclass :class:`LayerRule` and implement :meth:`LayerRule.propagate`. A
  rule that maps a tensor to itself returns its input record; one that computes new values
  builds its output with :meth:`LayerRule.output`, which fills every field it does not
  mention by that field's carry policy (``statistics.state``).
- Rules written for the reference implementation subclass
  :class:`LayerOutputDistributionEstimator` and implement
  ``estimate(means_in, vars_in) -> (mean, var)`` (or a list of pairs, one per output); its
  ``propagate`` is the one adapter from that contract to records.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any, Sequence

from autoinit_sym.statistics.border_profile import spatial_shape
from autoinit_sym.statistics.methods import (CLOSED_FORM, EXACT, METHODS, MONTE_CARLO, PASS_THROUGH, PROBE,
                                             QUADRATURE)
from autoinit_sym.statistics.state import TensorState, derived
from autoinit_sym.walk.settings import WeightInitConfig
from autoinit_sym.walk.weights import PendingWeight

from .registry import lookup

__all__ = ["CLOSED_FORM", "EXACT", "METHODS", "MONTE_CARLO", "PASS_THROUGH", "PROBE", "QUADRATURE",
           "EstimationContext", "LayerRule", "LayerOutputDistributionEstimator", "IdentityRule", "moments_of"]


@dataclass
class EstimationContext:
    """What every rule may read: the AutoInit settings and the pending weight writes."""

    signal_variance: float = 1.0
    config: WeightInitConfig = field(default_factory=WeightInitConfig)
    pending: dict[int, PendingWeight] = field(default_factory=dict)  # id(variable) -> write
    custom_estimators: dict[type, type] = field(default_factory=dict)  # user overrides
    sequence_samples: dict[int, list[Any]] = field(default_factory=dict)
    """Output sequences kept from recurrent layers' Monte Carlo, by id of the output tensor
    (the next recurrent layer samples through them; see ``estimators.rnn``)."""
    weight_seed: int | None = None
    """Base seed of this initialization's weight draws (``AutoInit`` draws one per call,
    ``walk.weights.base_seed``); None: ``config.seed``."""
    call_positions: dict[int, int] = field(default_factory=dict)
    """Position of every layer call in the walk (``graph.calls``), by id of its Keras node (set by
    the walker): the structural key of the call's Monte Carlo seed."""

    def rule_for(self, layer: Any, input_shapes: Sequence[tuple] | None = None,
                 output_shapes: Sequence[tuple] | None = None, node: Any = None) -> "LayerRule | None":
        """A rule instance for ``layer`` (user overrides first), or None if none is known.

        Wrappers (TimeDistributed, Bidirectional, ...) use this to delegate to the inner layer."""
        cls = lookup(layer, self.custom_estimators)
        return None if cls is None else cls(layer, self, input_shapes, output_shapes, node)

    def seed_for(self, *key: Any, weights: bool = False) -> int:
        """A reproducible seed for one use, derived from ``key``: positions in the walk, never layer
        names (Keras generates those from a process-wide counter). Weight draws (``weights=True``,
        ``walk.weights.weight_seed``) derive from :attr:`weight_seed`, Monte Carlo sampling from
        ``config.seed``; a base that is None counts as 0."""
        base = self.weight_seed if weights and self.weight_seed is not None else self.config.seed
        text = "|".join(str(k) for k in (0 if base is None else base, *key))
        return zlib.crc32(text.encode()) & 0x7FFFFFFF


def moments_of(states: Sequence[TensorState]) -> tuple[list[float], list[float]]:
    """The means and the variances of ``states``, as two lists."""
    return [s.mean for s in states], [s.var for s in states]


class LayerRule:
    """Base of the built-in rules: override :meth:`propagate`.

    Args:
        layer: the Keras layer (or operation) being called.
        context: the shared :class:`EstimationContext`.
        input_shapes: shapes of this call's inputs (batch dimension included, may be None).
        output_shapes: shapes of this call's outputs.
        node: the Keras ``Node`` of this call, when there is one; its ``arguments``
            hold constant call arguments (e.g. the 2.0 in ``keras.ops.multiply(x, 2.0)``).

    ``method`` (one of :data:`METHODS`) says how the result was obtained and is recorded in
    the results; a rule may set it per call. Where it depends on the layer's settings, the
    class attribute ``method_label`` says so in words for the supported-layers table.
    """

    method: str = EXACT
    method_label: str | None = None
    keeps_values: bool = False
    """True where every output element is an input element (identity, moves, repeats): such a
    layer, inserted anywhere it applies, changes no prediction (a generic test holds every
    such rule to that)."""

    def __init__(self, layer: Any, context: EstimationContext | None = None,
                 input_shapes: Sequence[tuple] | None = None,
                 output_shapes: Sequence[tuple] | None = None, node: Any = None) -> None:
        self.layer = layer
        self.context = context if context is not None else EstimationContext()
        self.input_shapes = list(input_shapes or [])
        self.output_shapes = list(output_shapes or [])
        self.node = node

    # The reference implementation's attribute names.
    @property
    def signal_variance(self) -> float:
        return self.context.signal_variance

    @property
    def weight_init_config(self) -> WeightInitConfig:
        return self.context.config

    def propagate(self, inputs: Sequence[TensorState]) -> TensorState | list[TensorState]:
        """The output record (or one per output) of this call for the input records ``inputs``."""
        raise NotImplementedError

    def output_spatial(self, index: int = 0) -> tuple | None:
        """The spatial shape (axes 1..-2) of output ``index``, None when unknown or absent."""
        return spatial_shape(self.output_shapes[index]) if index < len(self.output_shapes) else None

    def output(self, inputs: Sequence[TensorState], mean: float, var: float, index: int = 0,
               **known: Any) -> TensorState:
        """Output ``index``'s record with ``mean``, ``var`` and the fields in ``known``; every
        other field by its carry policy from ``inputs`` (``statistics.state.derived``)."""
        return derived(inputs, mean, var, self.output_spatial(index), **known)

    def set_initializer(self, variable: Any, stddev: float, attr: str | None = None,
                        fan_in: float | None = None, owner: Any = None) -> None:
        """Schedule ``variable`` to be redrawn with mean 0 and standard deviation ``stddev``
        in the configured distribution; ``attr`` names the initializer attribute
        (e.g. ``"kernel_initializer"``) to update so that the saved config matches, on
        ``owner`` (default: this rule's layer; e.g. a recurrent layer's cell)."""
        owner = self.layer if owner is None else owner
        self.context.pending[id(variable)] = PendingWeight(owner, variable, float(stddev), attr, fan_in)


class LayerOutputDistributionEstimator(LayerRule):
    """The reference implementation's contract: override :meth:`estimate`.

    Register one with ``AutoInit(custom_distribution_estimators={MyLayer: MyEstimator})``;
    its output records keep what the carry policies say of the fields it cannot see.
    """

    def estimate(self, means_in: list[float], vars_in: list[float]) -> Any:
        """Return ``(mean, var)`` of the output, or a list of such pairs for several outputs."""
        raise NotImplementedError

    def propagate(self, inputs: Sequence[TensorState]) -> list[TensorState]:
        result = self.estimate(*moments_of(inputs))
        count = max(len(self.output_shapes), 1)
        if isinstance(result, (list, tuple)) and result and isinstance(result[0], (list, tuple)):
            pairs = [tuple(p) for p in result]
        else:
            pairs = [tuple(result)] if isinstance(result, (list, tuple)) else [result]
        if len(pairs) == 1 and count > 1:
            pairs = pairs * count
        if len(pairs) != count or any(len(p) != 2 for p in pairs):
            raise ValueError(f"{type(self).__name__}.estimate for layer {getattr(self.layer, 'name', self.layer)!r} "
                             f"returned {result!r}; expected {count} (mean, var) pair(s)")
        return [self.output(inputs, float(m), float(v), i) for i, (m, v) in enumerate(pairs)]


class IdentityRule(LayerRule):
    """A layer whose output is its input: the input record unchanged."""

    keeps_values = True

    def propagate(self, inputs: Sequence[TensorState]) -> TensorState:
        return inputs[0]
