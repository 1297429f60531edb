"""The one place that says which rule serves which layer or operation class.

Family modules register with the :func:`rule_for` decorator::

    @rule_for(keras.layers.Add, keras.layers.Average)
    class MeanOfInputs(LayerRule): ...

Every module of this package except the shared ones (:data:`SHARED_MODULES`) is a family
module, found and imported on the first lookup; a family for an optional package
(:data:`OPTIONAL_FAMILIES`) is imported on the first lookup after that package has been
imported by the user (a layer of it can exist only then), so AutoInit never imports it itself. Lookup walks the class's MRO, so a subclass
of a registered layer is served by its parent's rule unless it has one of its own; user
rules take precedence.
"""
from __future__ import annotations

import importlib
import pkgutil
import sys
from typing import Any, Callable, Mapping

SHARED_MODULES = frozenset({"base", "registry", "weighted", "shapes", "attention_weights"})
"""Modules that hold what families share (the contract, this registry, the weighted-layer
base, shape helpers, softmax attention-weight statistics) rather than rules for one Keras family."""

OPTIONAL_FAMILIES = {"keras_hub": "keras_hub"}
"""Family modules serving an optional package (module -> the package's import name)."""

_REGISTRY: dict[type, type] = {}
_loaded = False
_loaded_optional: set[str] = set()


def rule_for(*classes: type) -> Callable[[type], type]:
    """Class decorator registering a rule for the given layer/operation classes."""
    def register(rule: type) -> type:
        for cls in classes:
            _REGISTRY[cls] = rule
        return rule
    return register


def family_modules() -> list[str]:
    """The family modules' names, in name order."""
    return sorted(info.name for info in pkgutil.iter_modules(_package_path())
                  if info.name not in SHARED_MODULES and info.name not in OPTIONAL_FAMILIES)


def _package_path() -> list[str]:
    return list(importlib.import_module(__package__).__path__)


def load_builtin_rules() -> None:
    """Import every family module once, which fills the registry, and each optional family once
    its package is in ``sys.modules``."""
    global _loaded
    if not _loaded:
        for family in family_modules():
            importlib.import_module(f"{__package__}.{family}")
        _loaded = True
    for family, package in OPTIONAL_FAMILIES.items():
        if family not in _loaded_optional and package in sys.modules:
            importlib.import_module(f"{__package__}.{family}")
            _loaded_optional.add(family)


def lookup(obj: Any, custom: Mapping[type, type] | None = None) -> type | None:
    """The rule class for layer/operation ``obj``, or None when none is registered."""
    load_builtin_rules()
    for cls in type(obj).__mro__:
        if custom and cls in custom:
            return custom[cls]
        if cls in _REGISTRY:
            return _REGISTRY[cls]
    return None


def registered() -> dict[type, type]:
    """A copy of the built-in registry (layer class -> rule class)."""
    load_builtin_rules()
    return dict(_REGISTRY)
