"""What an initialization redrew, and what kept its own initializer and why.

Counted over the model's trainable parameters (``model.trainable_variables``): a variable is
*redrawn* when a rule scheduled it (``EstimationContext.pending``) and the write succeeded;
every other trainable variable is *kept*, with the reason found from the layer that owns it
(or the nearest enclosing layer the walk called):

- ``kept by the layer selection``: the user's own choice (``layers=``; a frozen layer's
  variables are not trainable and are not counted at all);
- ``no rule; probed`` / ``not traceable (...); probed``: a layer without a rule, measured by a
  probe with Gaussian samples, whose weights nothing rescales;
- ``neither estimated nor probed``: passed through;
- ``used directly by the operations of traced layer X``: a variable of a traced layer that no
  inner layer with a rule owns (e.g. a scale multiplied in by ``keras.ops``);
- ``its rule keeps it``: a layer with a rule that leaves this variable as it is (a
  normalization's scale and offset);
- ``not called by the model``.

More than :data:`KEPT_WARNING` of the trainable parameters kept for any reason but the user's
choice and a rule that accounts for them (biases, normalization scales: the estimate is made
with their values) is logged as a warning.
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from autoinit_sym.statistics.methods import PASS_THROUGH, PROBE
from autoinit_sym.walk.graph import ModelGraph, as_function

logger = logging.getLogger("autoinit_sym")

KEPT_WARNING = 0.05
"""Share of trainable parameters kept for reasons other than the user's choice above which a
warning is logged."""
CHOSEN, BY_RULE = "kept by the layer selection", "its rule keeps it"
LISTED = 8
"""Kept layers named in the one-line text (all of them are in :meth:`InitializationReport.summary`)."""


@dataclass
class KeptLayer:
    """The trainable parameters of one layer that kept their own initializers, and why."""

    layer: str
    parameters: int
    reason: str
    accounted: bool = False
    """True when the user chose to keep them (``layers=``) or their layer's rule keeps them."""


@dataclass
class InitializationReport:
    """``redrawn`` of ``total`` trainable parameters were redrawn; ``kept`` lists the rest."""

    redrawn: int
    total: int
    kept: list[KeptLayer] = field(default_factory=list)

    @property
    def share(self) -> float:
        """The redrawn share of the trainable parameters (1.0 for a model without any)."""
        return self.redrawn / self.total if self.total else 1.0

    @property
    def unaccounted_share(self) -> float:
        """The share kept for reasons other than the user's choice or a rule (module docstring)."""
        return sum(k.parameters for k in self.kept if not k.accounted) / self.total if self.total else 0.0

    def text(self) -> str:
        """``redrew N of M parameters (p%); kept their own initializers: <layers and why>``."""
        head = f"redrew {self.redrawn} of {self.total} parameters ({100.0 * self.share:.1f}%)"
        if not self.kept:
            return head
        kept = sorted(self.kept, key=lambda k: -k.parameters)
        listed = ", ".join(f"{k.layer} ({k.parameters}: {k.reason})" for k in kept[:LISTED])
        more = f", and {len(kept) - LISTED} more" if len(kept) > LISTED else ""
        return f"{head}; kept their own initializers: {listed}{more}"

    def summary(self) -> dict[str, Any]:
        """A JSON-ready dict: counts, share, the text and every kept layer."""
        return {"redrawn": self.redrawn, "total": self.total, "share": self.share, "text": self.text(),
                "kept": [vars(k).copy() for k in self.kept]}


class Estimates(OrderedDict):
    """The estimates of :meth:`AutoInit.initialize_model` (layer-call key -> ``LayerEstimate``,
    in walk order) with the :class:`InitializationReport` as ``report``."""

    report: InitializationReport | None = None


def _owned_variables(layer: Any) -> list[Any]:
    """The variables ``layer`` itself created (not its sublayers')."""
    return list(getattr(layer, "_trainable_variables", [])) + list(getattr(layer, "_non_trainable_variables", []))


def initialization_report(model: Any, graph: ModelGraph, estimates: Mapping[str, Any],
                          redrawn: Iterable[Any], kept_layers: set[int]) -> InitializationReport:
    """The report of an initialization of ``model`` (module docstring): ``redrawn`` are the
    variables written, ``kept_layers`` the ids of layers kept by the selection. Each estimate of a
    call whose layer kept variables gets them in ``LayerEstimate.kept`` (variable path -> why)."""
    trainable = {id(v): v for v in model.trainable_variables}
    written = {id(v) for v in redrawn} & trainable.keys()
    parent: dict[int, Any] = {}
    layers = list(model._flatten_layers(include_self=True, recursive=True))
    for layer in layers:
        for child in layer._flatten_layers(include_self=False, recursive=False):
            parent.setdefault(id(child), layer)
    first_call = {}
    for call in graph.calls:
        first_call.setdefault(id(call.operation), call)
    kept: dict[tuple[str, str], KeptLayer] = {}
    for layer in layers:
        for variable in _owned_variables(layer):
            if id(variable) not in trainable or id(variable) in written:
                continue
            reason, call = _reason(layer, parent, first_call, estimates, kept_layers, graph)
            entry = kept.setdefault((layer.name, reason), KeptLayer(layer.name, 0, reason, reason in (CHOSEN, BY_RULE)))
            entry.parameters += _size(variable)
            if call is not None and call.key in estimates:
                estimates[call.key].kept[variable.path] = reason
    total = sum(_size(v) for v in trainable.values())
    report = InitializationReport(sum(_size(trainable[i]) for i in written), total, list(kept.values()))
    if report.unaccounted_share > KEPT_WARNING:
        logger.warning("AutoInit %s (more than %.0f%% kept, KEPT_WARNING)", report.text(), 100 * KEPT_WARNING)
    return report


def _size(variable: Any) -> int:
    size = 1
    for d in variable.shape:
        size *= int(d)
    return size


def _reason(layer: Any, parent: dict[int, Any], first_call: dict[int, Any], estimates: Mapping[str, Any],
            kept_layers: set[int], graph: ModelGraph) -> tuple[str, Any]:
    """(why ``layer``'s variable was kept, the call it is reported on)."""
    owner = layer
    while owner is not None:
        if id(owner) in kept_layers:
            return CHOSEN, first_call.get(id(owner))
        call = first_call.get(id(owner))
        if call is not None:
            if call.submodel and as_function(owner) is None:
                return f"used directly by the operations of traced layer {owner.name}", call
            method = estimates[call.key].method if call.key in estimates else ""
            if method == PROBE:
                why = graph.untraced.get(id(owner))
                return (f"not traceable ({why}); probed" if why else "no rule; probed"), call
            if method == PASS_THROUGH:
                return "neither estimated nor probed", call
            return BY_RULE, call
        owner = parent.get(id(owner))
    return "not called by the model", None
