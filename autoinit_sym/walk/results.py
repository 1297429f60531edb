"""What AutoInit keeps for every layer call: the records that came in and went out, and how."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

from autoinit_sym.statistics.state import TensorState


@dataclass
class LayerEstimate:
    """The statistics of one layer call; unpacks as ``(mean, var)``.

    ``inputs`` and ``states`` are the :class:`~autoinit_sym.statistics.state.TensorState`
    records of its inputs and outputs. For a layer with several outputs, ``mean``, ``var``
    and ``shared`` are tuples (one entry per output) and ``outputs`` lists the (mean, var)
    pairs. ``method`` is one of ``statistics.methods.METHODS``. For a layer or submodel
    shared by several call sites, ``init_means_in`` / ``init_vars_in`` hold the combined
    input statistics its initializer was derived from (None otherwise). ``weights`` maps
    each redrawn variable's path to its standard deviation. ``role`` is "initialized" (its
    weights were drawn), "kept" (its weights were kept and its output measured through the
    real layer) or "" (no weights). ``calibration`` is the factor a calibration pass applied to
    its kernel (None without one); the statistics stay the analytic prediction. ``kept`` maps
    each trainable variable of this call's layer (or of a layer inside it) that kept its own
    initializer to why (``walk.report``).
    """

    key: str
    layer: str
    method: str
    inputs: list[TensorState]
    states: list[TensorState]
    init_means_in: list[float] | None = None
    init_vars_in: list[float] | None = None
    weights: dict[str, float] = field(default_factory=dict)
    role: str = ""
    calibration: float | None = None
    kept: dict[str, str] = field(default_factory=dict)

    @property
    def means_in(self) -> list[float]:
        return [s.mean for s in self.inputs]

    @property
    def vars_in(self) -> list[float]:
        return [s.var for s in self.inputs]

    @property
    def outputs(self) -> list[tuple[float, float]]:
        return [(s.mean, s.var) for s in self.states]

    @property
    def shared_in(self) -> list[float]:
        """The position-shared variance of each input."""
        return [s.shared for s in self.inputs]

    @property
    def shared_out(self) -> list[float]:
        """The position-shared variance of each output."""
        return [s.shared for s in self.states]

    @property
    def sample_shared_out(self) -> list[float]:
        """The per-sample part of each output's shared variance."""
        return [s.sample_shared for s in self.states]

    def _one_or_all(self, name: str) -> Any:
        values = tuple(getattr(s, name) for s in self.states)
        return values[0] if len(values) == 1 else values

    @property
    def mean(self) -> float | tuple[float, ...]:
        return self._one_or_all("mean")

    @property
    def var(self) -> float | tuple[float, ...]:
        return self._one_or_all("var")

    @property
    def shared(self) -> float | tuple[float, ...]:
        return self._one_or_all("shared")

    def summary(self) -> dict[str, Any]:
        """A JSON-ready dict: key, layer, method, means/vars/shared of inputs and outputs, the
        combined input statistics of a shared layer, the redrawn weights' spreads and the kept
        variables with why."""
        return {"key": self.key, "layer": self.layer, "method": self.method,
                "means_in": self.means_in, "vars_in": self.vars_in, "shared_in": self.shared_in,
                "outputs": [list(p) for p in self.outputs], "shared_out": self.shared_out,
                "sample_shared_out": self.sample_shared_out, "init_means_in": self.init_means_in,
                "init_vars_in": self.init_vars_in, "weights": dict(self.weights), "role": self.role,
                "calibration": self.calibration, "kept": dict(self.kept)}

    def __iter__(self) -> Iterator:
        return iter((self.mean, self.var))

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int):
        return (self.mean, self.var)[index]
