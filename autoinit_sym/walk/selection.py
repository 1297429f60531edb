"""Which layers AutoInit initializes, and which keep their weights.

By default a layer with ``trainable=False`` is taken as pretrained and keeps its weights.
``layers`` selects explicitly: ``"all"``, layer names, layer objects, or a predicate
``layer -> bool``. Only layers that own weights can be kept; a kept layer's output is
measured through the real layer (walk/probe.py) and everything after it is scaled for it.
"""
from __future__ import annotations

from typing import Any, Iterable

import keras


def _all_layers(model: Any) -> list[Any]:
    """Every layer of ``model``, nested models' layers included (not the model itself)."""
    found, seen = [], set()
    stack = list(getattr(model, "layers", []))
    while stack:
        layer = stack.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        found.append(layer)
        stack.extend(getattr(layer, "layers", []) if isinstance(layer, keras.Model) else [])
    return found


def kept_layers(model: Any, layers: Any = None) -> set[int]:
    """id() of every weighted layer of ``model`` that keeps its weights under the selection
    ``layers`` (module docstring). Unknown names are an error listing the model's layers."""
    every = _all_layers(model)
    weighted = [layer for layer in every if layer.weights and not isinstance(layer, keras.Model)]
    if layers is None:
        return {id(layer) for layer in weighted if not layer.trainable}
    if isinstance(layers, str) and layers == "all":
        return set()
    if callable(layers) and not isinstance(layers, keras.layers.Layer):
        return {id(layer) for layer in weighted if not layers(layer)}
    items = [layers] if isinstance(layers, (str, keras.layers.Layer)) else list(_iterable(layers))
    others = [item for item in items if not isinstance(item, (str, keras.layers.Layer))]
    if others:
        raise TypeError(f"layers must be 'all', layer names, layer objects or a predicate; got {others[0]!r}")
    names = {item for item in items if isinstance(item, str)}
    objects = {id(item) for item in items if isinstance(item, keras.layers.Layer)}
    unknown = sorted(names - {layer.name for layer in every})
    if unknown:
        raise ValueError(f"layers names {unknown} that the model does not have; its layers are "
                         f"{[layer.name for layer in every]}")
    if objects - {id(layer) for layer in every}:
        raise ValueError("layers holds layer objects that are not part of the model")
    return {id(layer) for layer in weighted if layer.name not in names and id(layer) not in objects}


def _iterable(value: Any) -> Iterable[Any]:
    if isinstance(value, Iterable):
        return value
    raise TypeError(f"layers must be 'all', layer names, layer objects or a predicate; got {value!r}")
