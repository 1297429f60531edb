"""The one place that says which estimator serves which layer or operation class.

Family modules register with the :func:`estimates` decorator::

    @estimates(keras.layers.Add, keras.layers.Average)
    class MeanOfInputs(LayerOutputDistributionEstimator): ...

Lookup walks the class's MRO, so a subclass of a registered layer is served by its
parent's rule unless it has one of its own; user estimators take precedence.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping

from .base import LayerOutputDistributionEstimator

_REGISTRY: dict[type, type[LayerOutputDistributionEstimator]] = {}

# Family modules, imported on first lookup (they import Keras).
FAMILIES = (
    "activations", "core", "convolutional", "normalization", "merging", "regularization",
    "reshaping", "pooling", "ops", "applications", "softmax", "attention", "rnn",
)


def estimates(*classes: type) -> Callable[[type], type]:
    """Class decorator registering an estimator for the given layer/operation classes."""
    def register(estimator: type) -> type:
        for cls in classes:
            _REGISTRY[cls] = estimator
        return estimator
    return register


_loaded = False


def load_builtin_estimators() -> None:
    """Import every family module once, which fills the registry."""
    global _loaded
    if _loaded:
        return
    for family in FAMILIES:
        try:
            importlib.import_module(f"{__package__}.{family}")
        except ModuleNotFoundError as err:  # a family not written yet
            if err.name != f"{__package__}.{family}":
                raise
    _loaded = True


def lookup(obj: Any, custom: Mapping[type, type] | None = None) -> type[LayerOutputDistributionEstimator] | None:
    """The estimator class for layer/operation ``obj``, or None when none is registered."""
    load_builtin_estimators()
    for cls in type(obj).__mro__:
        if custom and cls in custom:
            return custom[cls]
        if cls in _REGISTRY:
            return _REGISTRY[cls]
    return None


def registered() -> dict[type, type[LayerOutputDistributionEstimator]]:
    """A copy of the built-in registry (layer class -> estimator class)."""
    load_builtin_estimators()
    return dict(_REGISTRY)
