"""autoinit-sym: analytic, symbolic AutoInit for Keras 3 models.

The symbolic side (``moments``, ``register_activation``, ``export_table``) needs only
SymPy, NumPy, SciPy and mpmath; ``AutoInit`` and ``AutoInitVisualizer`` import Keras
when first touched. Heavy modules load lazily so ``import autoinit_sym`` stays fast.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "moments": "autoinit_sym.moment_engine.activation_moments",
    "register_activation": "autoinit_sym.moment_engine.activation_moments",
    "ActivationMoments": "autoinit_sym.moment_engine.activation_moments",
    "registered_names": "autoinit_sym.moment_engine.activation_moments",
    "export_table": "autoinit_sym.moment_engine.tables",
    "AutoInit": "autoinit_sym.autoinit",
    "AutoInitVisualizer": "autoinit_sym.visualizer",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'autoinit_sym' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
