"""The one record the walk keeps for every tensor, and what each field does when a rule is silent.

A :class:`TensorState` holds everything known about one tensor's elements, each taken as
Gaussian where the AutoInit assumption applies:

- ``mean``, ``var``: pooled over samples, positions and channels;
- ``shared``: the covariance of two distinct spatial/sequence positions of one channel
  (0 <= shared <= var): x = mean + a + e with a ~ N(0, shared) common to a channel's
  positions and e independent (weighted layers turn an input mean into such per-channel
  offsets; pooling cannot average it away);
- ``sample_shared``: the part of ``shared`` that varies from sample to sample (gates,
  spatial dropout masks) rather than being fixed by the weight draw (0 <= it <= shared);
- ``origin``: how the tensor was made elementwise from a Gaussian (an
  ``activation.ActivationOutput``, a ``residual_sums.ShiftedActivation``) or None;
- ``profile``: the per-position relative second moment over the spatial axes (mean 1;
  ``border_profile``) or None when uniform;
- ``lags``: the short-range correlation of a channel's nearby positions beyond the shared
  offset (``lag_correlation.LagCorrelation``) or None for independent positions;
- ``discrete``: for an integer or boolean tensor (token ids, padding masks, positions), the
  values it holds (:class:`DiscreteValues`), which probes and samples draw instead of Gaussian
  floats; None for a floating-point tensor.

A rule that maps a tensor to itself returns its input record unchanged; a rule that knows
some fields of its output builds the record with :func:`derived`, which fills every field
it was not told from the inputs by that field's *carry policy*, declared once below
(:data:`CARRY_POLICIES`):

- ``shared``: the inputs' shared fraction of the variance, variance-weighted over inputs;
- ``sample_shared``: the inputs' per-sample fraction of the shared variance;
- ``profile``: the inputs' profiles mixed by second moment where the output has their
  spatial shape (positions map one-to-one), uniform otherwise;
- ``origin``, ``lags`` and ``discrete``: reset (None), the plain AutoInit assumption: a rule that
  changes the values without saying what became of them cannot keep any of them (the walk sets
  ``discrete`` again where a call's output is an integer or boolean tensor).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping, Sequence

from autoinit_sym.statistics.border_profile import mixed


@dataclasses.dataclass(frozen=True)
class DiscreteValues:
    """The values of an integer or boolean tensor: independent, uniform over the integers
    low <= k < high (``high = low + 1``: the constant ``low``, e.g. a padding mask of ones).
    Mean (low + high - 1) / 2, variance ((high - low)^2 - 1) / 12."""

    dtype: str
    low: int
    high: int

    def __post_init__(self) -> None:
        if not self.high > self.low:
            raise ValueError(f"DiscreteValues needs low < high, got [{self.low}, {self.high})")

    @property
    def mean(self) -> float:
        return (self.low + self.high - 1) / 2.0

    @property
    def var(self) -> float:
        return ((self.high - self.low) ** 2 - 1) / 12.0

    def state(self) -> "TensorState":
        """The record of a tensor holding these values."""
        return TensorState(self.mean, self.var, discrete=self)


@dataclasses.dataclass(frozen=True)
class TensorState:
    """What the walk knows of one tensor (see the module docstring); immutable."""

    mean: float
    var: float
    shared: float = 0.0
    sample_shared: float = 0.0
    origin: Any = None
    profile: Any = None
    lags: Any = None
    discrete: DiscreteValues | None = None

    @property
    def second_moment(self) -> float:
        """E[x^2] = var + mean^2."""
        return self.var + self.mean * self.mean

    def replace(self, **changes: Any) -> "TensorState":
        """A copy with ``changes`` (field name -> value); every other field kept as it is."""
        return dataclasses.replace(self, **changes)


FIELDS = tuple(f.name for f in dataclasses.fields(TensorState))
"""Field names in declaration order (the order carry policies are applied in)."""

Policy = Callable[[Sequence[TensorState], Mapping[str, Any], Any], Any]
"""carry(inputs, output fields known so far, output spatial shape or None) -> value."""


def _carry_shared(inputs: Sequence[TensorState], out: Mapping[str, Any], spatial: Any) -> float:
    """var_out * sum(shared_in) / sum(var_in): the output keeps its inputs' shared fraction."""
    total = sum(s.var for s in inputs)
    if not (total > 0 and out["var"] > 0):
        return 0.0
    return out["var"] * sum(s.shared for s in inputs) / total


def _carry_sample_shared(inputs: Sequence[TensorState], out: Mapping[str, Any], spatial: Any) -> float:
    """shared_out * sum(sample_shared_in) / sum(shared_in): the inputs' per-sample fraction."""
    total = sum(s.shared for s in inputs)
    return out["shared"] * sum(s.sample_shared for s in inputs) / total if total > 0 else 0.0


def _carry_profile(inputs: Sequence[TensorState], out: Mapping[str, Any], spatial: Any) -> Any:
    """The inputs' profiles mixed by second moment where the output has their spatial shape."""
    return mixed([s.profile for s in inputs], [s.second_moment for s in inputs], spatial)


def _reset(inputs: Sequence[TensorState], out: Mapping[str, Any], spatial: Any) -> None:
    return None


CARRY_POLICIES: dict[str, Policy] = {
    "shared": _carry_shared,
    "sample_shared": _carry_sample_shared,
    "origin": _reset,
    "profile": _carry_profile,
    "lags": _reset,
    "discrete": _reset,
}
"""What each field becomes when a rule does not mention it (mean and var it must give)."""


def derived(inputs: Sequence[TensorState], mean: float, var: float, spatial: Any = None,
            **known: Any) -> TensorState:
    """The output record of a rule that computed ``mean``, ``var`` and the fields in ``known``;
    every other field follows its carry policy from ``inputs`` (``spatial``: the output's
    spatial shape, for the profile)."""
    unknown = sorted(set(known) - set(CARRY_POLICIES))
    if unknown:
        raise TypeError(f"unknown TensorState field(s) {unknown}; valid fields: {list(FIELDS)}")
    out: dict[str, Any] = {"mean": float(mean), "var": float(var)}
    for name, policy in CARRY_POLICIES.items():
        out[name] = known[name] if name in known else policy(inputs, out, spatial)
    return TensorState(**out)


def checked(state: TensorState, spatial: Any, who: str) -> TensorState:
    """``state`` with finite mean/var (else ValueError naming ``who``), var >= 0, shared clipped
    to [0, var], sample_shared to [0, shared], and a profile whose shape is not ``spatial``
    dropped (uniform)."""
    mean, var = float(state.mean), float(state.var)
    if not (math.isfinite(mean) and math.isfinite(var)) or var < -1e-12 * (1.0 + mean * mean):
        raise ValueError(f"{who} has a non-finite or negative estimate (mean={mean}, var={var}); "
                         "no weights were written")
    var = max(var, 0.0)
    shared = float(state.shared)
    if not math.isfinite(shared):
        raise ValueError(f"{who} has a non-finite shared variance {shared}")
    shared = min(max(shared, 0.0), var)
    sample = float(state.sample_shared)
    sample = min(max(sample, 0.0), shared) if math.isfinite(sample) else 0.0
    profile = state.profile
    if profile is not None and (spatial is None or profile.shape != spatial):
        profile = None
    if (mean, var, shared, sample) == (state.mean, state.var, state.shared, state.sample_shared) \
            and profile is state.profile:
        return state
    return dataclasses.replace(state, mean=mean, var=var, shared=shared, sample_shared=sample, profile=profile)
