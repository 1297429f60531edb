"""The estimator contract shared by every layer rule.

An estimator maps the (mean, variance) of each input of one layer call to the
(mean, variance) of its output, assuming every element of an input is Gaussian
with those statistics and independent of the others (the AutoInit assumption), except
for one tracked correlation, described below. Weighted layers additionally schedule new weights through :meth:`set_initializer`;
nothing is written to the model until the whole walk has succeeded.

Position-shared variance: besides (mean, var) the walk keeps, per tensor, ``shared`` =
the covariance between two distinct spatial/sequence positions of the same channel
(0 <= shared <= var): x = mean + a + e with a ~ N(0, shared) common to all positions of
a channel and e ~ N(0, var - shared) independent across positions. Weighted layers turn
an input mean into such per-channel offsets, attention mixes the same values into every
query, spatial dropout masks whole channels; pooling cannot average it away. Before
``estimate`` the walk sets ``estimator.shared_in`` (one value per input); an estimator
that knows its output's shared variance sets ``self.shared_out`` (a float, or a list per
output) inside ``estimate``; otherwise :func:`carried_shared` applies. ``estimate`` keeps
returning only ``(mean, var)``, so estimators written for the reference work unchanged.

Per-sample part of the shared variance: a position-shared component is either fixed by
the weight draw (a per-channel offset, the same for every sample: batch normalization
subtracts it) or varies from sample to sample (a squeeze-and-excitation gate, a spatial
dropout mask: batch normalization keeps it). The walk keeps the second kind as
``sample_shared`` (0 <= sample_shared <= shared), sets ``estimator.sample_shared_in``, and
takes ``self.sample_shared_out`` where an estimator sets it; otherwise each output keeps the
inputs' per-sample fraction of the shared variance.

Per-position profile: the walk also keeps, per tensor, the relative second moment of each
spatial position, ``profile`` (see ``statistics.border_profile``; None = uniform), which
zero-padded borders make non-uniform. The walk sets ``estimator.profile_in`` (one entry per
input); ``mean``/``var`` stay pooled over positions. An estimator that knows its output's
profile sets ``self.profile_out`` (an array, None, or a list per output); otherwise
(:data:`CARRY`) the walk keeps the inputs' second-moment-weighted profile where the output
has the same spatial shape, and drops it elsewhere.

Short-range correlation: the walk may also keep, per tensor, the correlation of a channel's
values at nearby positions beyond the shared offset, ``lags`` (an
``statistics.lag_correlation.LagCorrelation``; None = independent positions), which
depthwise convolutions and curved activations build up. The walk sets ``estimator.lags_in``;
an estimator with a rule for it sets ``self.lags_out`` (one for all outputs, or a list);
otherwise it is dropped (None), the AutoInit assumption.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from autoinit_sym.walk.settings import WeightInitConfig
from autoinit_sym.walk.weights import PendingWeight

# How an estimate was obtained (recorded per layer call in the estimates).
EXACT = "exact"                # exact algebra (affine maps, reshapes, merges of independent inputs)
CLOSED_FORM = "closed_form"    # closed-form Gaussian integral from the moment engine
QUADRATURE = "quadrature"      # high-precision numerical integration
MONTE_CARLO = "monte_carlo"    # sampling through the real layer or a clone of it
PROBE = "probe"                # unknown layer: real layer run on Gaussian samples
PASS_THROUGH = "pass_through"  # statistics passed on unchanged (no way to do better)

METHODS = (EXACT, CLOSED_FORM, QUADRATURE, MONTE_CARLO, PROBE, PASS_THROUGH)

CARRY = "carry"
"""``profile_out`` default: let the walk carry the input profile (see the module docstring)."""

@dataclass
class EstimationContext:
    """What every estimator may read: the AutoInit settings and the pending weight writes."""

    signal_variance: float = 1.0
    config: WeightInitConfig = field(default_factory=WeightInitConfig)
    pending: dict[int, PendingWeight] = field(default_factory=dict)  # id(variable) -> write
    custom_estimators: dict[type, type] = field(default_factory=dict)  # user overrides
    sequence_samples: dict[int, list[Any]] = field(default_factory=dict)
    """Output sequences kept from recurrent layers' Monte Carlo, by id of the output tensor
    (the next recurrent layer samples through them; see ``estimators.rnn``)."""

    def estimator_for(self, layer: Any, input_shapes: Sequence[tuple] | None = None,
                      output_shapes: Sequence[tuple] | None = None, node: Any = None,
                      ) -> "LayerOutputDistributionEstimator | None":
        """An estimator instance for ``layer`` (user overrides first), or None if none is known.

        Wrappers (TimeDistributed, Bidirectional, ...) use this to delegate to the inner layer."""
        from .registry import lookup

        cls = lookup(layer, self.custom_estimators)
        return None if cls is None else cls(layer, self, input_shapes, output_shapes, node)

    def seed_for(self, *key: Any) -> int:
        """A reproducible per-use seed derived from the configured seed and ``key``."""
        import zlib

        text = "|".join(str(k) for k in (self.config.seed, *key))
        return zlib.crc32(text.encode()) & 0x7FFFFFFF


class LayerOutputDistributionEstimator:
    """Base class: override :meth:`estimate`.

    Args:
        layer: the Keras layer (or operation) being called.
        context: the shared :class:`EstimationContext`.
        input_shapes: shapes of this call's inputs (batch dimension included, may be None).
        output_shapes: shapes of this call's outputs.
        node: the Keras ``Node`` of this call, when there is one; its ``arguments``
            hold constant call arguments (e.g. the 2.0 in ``keras.ops.multiply(x, 2.0)``).

    Subclasses set ``method`` (one of :data:`METHODS`) to say how they obtained
    their result; it is recorded in the estimates. Where the method depends on the
    layer's settings, the optional class attribute ``method_label`` says so in words
    for the generated supported-layers table (e.g. ``"exact; closed_form with normalize=True"``).
    """

    method: str = EXACT
    method_label: str | None = None
    shared_in: Sequence[float] = ()
    """Position-shared variance of each input (set by the walk; empty when called directly)."""
    shared_out: float | Sequence[float] | None = None
    """Position-shared variance of the output(s), set by ``estimate`` when the rule knows it."""
    sample_shared_in: Sequence[float] = ()
    """Per input, the part of its shared variance that varies from sample to sample."""
    sample_shared_out: Any = CARRY
    """The outputs' per-sample shared part, set by ``estimate`` where the rule knows it."""
    origin_in: Sequence[Any] = ()
    """Per input, how it was made elementwise from a Gaussian (an
    ``activations.ActivationOutput``), or None; set by the walk."""
    origin_out: Any = None
    """The output's origin, set by ``estimate`` where it is an activation's output (max
    pooling uses it: the max of f(z_i) is f(max z_i) for a non-decreasing f)."""

    profile_in: Sequence[Any] = ()
    """Per input, its per-position relative second moment (an array over the spatial axes,
    mean 1) or None when uniform; set by the walk."""
    profile_out: Any = CARRY
    """The output's profile, set by ``estimate`` where the rule knows it (None: uniform)."""
    lags_in: Sequence[Any] = ()
    """Per input, its short-range spatial correlation or None; set by the walk."""
    lags_out: Any = None
    """The output's short-range spatial correlation, set by ``estimate`` where the rule knows it."""

    def __init__(self, layer: Any, context: EstimationContext | None = None,
                 input_shapes: Sequence[tuple] | None = None,
                 output_shapes: Sequence[tuple] | None = None, node: Any = None) -> None:
        self.layer = layer
        self.context = context if context is not None else EstimationContext()
        self.input_shapes = list(input_shapes or [])
        self.output_shapes = list(output_shapes or [])
        self.node = node

    # Compatibility with the reference implementation's attribute names.
    @property
    def signal_variance(self) -> float:
        return self.context.signal_variance

    @property
    def weight_init_config(self) -> WeightInitConfig:
        return self.context.config

    def estimate(self, means_in: list[float], vars_in: list[float]):
        """Return ``(mean, var)`` of the output, or a list of such pairs for several outputs."""
        raise NotImplementedError

    def shared(self, index: int = 0) -> float:
        """Position-shared variance of input ``index`` (0 when the walk did not say)."""
        return float(self.shared_in[index]) if index < len(self.shared_in) else 0.0

    def sample_shared(self, index: int = 0) -> float:
        """The per-sample part of input ``index``'s shared variance (0 when the walk did not say)."""
        return float(self.sample_shared_in[index]) if index < len(self.sample_shared_in) else 0.0

    def profile(self, index: int = 0) -> Any:
        """The per-position profile of input ``index`` (None when uniform or unknown)."""
        return self.profile_in[index] if index < len(self.profile_in) else None

    def lags(self, index: int = 0) -> Any:
        """The short-range spatial correlation of input ``index`` (None when independent or unknown)."""
        return self.lags_in[index] if index < len(self.lags_in) else None

    def origin(self, index: int = 0) -> Any:
        """The elementwise origin of input ``index`` (None when unknown)."""
        return self.origin_in[index] if index < len(self.origin_in) else None

    def set_initializer(self, variable: Any, stddev: float, attr: str | None = None,
                        fan_in: float | None = None, owner: Any = None) -> None:
        """Schedule ``variable`` to be redrawn with mean 0 and standard deviation ``stddev``
        in the configured distribution; ``attr`` names the initializer attribute
        (e.g. ``"kernel_initializer"``) to update so that the saved config matches, on
        ``owner`` (default: this estimator's layer; e.g. a recurrent layer's cell)."""
        owner = self.layer if owner is None else owner
        self.context.pending[id(variable)] = PendingWeight(owner, variable, float(stddev), attr, fan_in)


def carried_shared(vars_in: Sequence[float], shared_in: Sequence[float], var_out: float) -> float:
    """The default rule: the output keeps its inputs' shared fraction,
    var_out * sum(shared_in) / sum(vars_in) (variance-weighted over several inputs),
    clipped to [0, var_out]."""
    total = float(sum(vars_in))
    if total <= 0 or var_out <= 0:
        return 0.0
    return min(max(var_out * float(sum(shared_in)) / total, 0.0), var_out)

