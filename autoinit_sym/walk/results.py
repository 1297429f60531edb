"""The record AutoInit keeps for every layer call: what came in, what went out, and how."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator


@dataclass
class LayerEstimate:
    """Output statistics of one layer call; unpacks as ``(mean, var)``.

    For a layer with several outputs, ``mean`` and ``var`` are tuples (one entry per
    output) and ``outputs`` lists the pairs. ``method`` is one of
    ``estimators.base.METHODS``. For a layer or submodel shared by several call sites,
    ``init_means_in`` / ``init_vars_in`` hold the combined input statistics its
    initializer was derived from (None otherwise). ``weights`` maps each redrawn
    variable's path to its standard deviation. ``shared_in`` / ``shared_out`` hold the
    position-shared variance (covariance between two positions of a channel, see
    ``estimators.base``) of each input and output; ``shared`` reads it like ``var``;
    ``sample_shared_out`` is its per-sample part (gates, spatial masks) per output.
    """

    key: str
    layer: str
    method: str
    means_in: list[float]
    vars_in: list[float]
    outputs: list[tuple[float, float]]
    init_means_in: list[float] | None = None
    init_vars_in: list[float] | None = None
    weights: dict[str, float] = field(default_factory=dict)
    shared_in: list[float] = field(default_factory=list)
    shared_out: list[float] = field(default_factory=list)
    sample_shared_out: list[float] = field(default_factory=list)

    @property
    def mean(self) -> float | tuple[float, ...]:
        return self.outputs[0][0] if len(self.outputs) == 1 else tuple(m for m, _ in self.outputs)

    @property
    def var(self) -> float | tuple[float, ...]:
        return self.outputs[0][1] if len(self.outputs) == 1 else tuple(v for _, v in self.outputs)

    @property
    def shared(self) -> float | tuple[float, ...]:
        return self.shared_out[0] if len(self.shared_out) == 1 else tuple(self.shared_out)

    def __iter__(self) -> Iterator:
        return iter((self.mean, self.var))

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int):
        return (self.mean, self.var)[index]

