"""A Keras 2 model config rebuilt as a Keras 3 model (a *twin*): the same layers, names, trainable
flags, dtype policies and call graph, so the walk and the estimators run on it unchanged.

The config is read as Keras 2 wrote it (``tf_keras`` and ``tf.keras`` of TF 2.x, TF-2.4-era
configs included), not through Keras 3's deserialization, which rejects parts of it:

- *Calls* come from list-style ``inbound_nodes``: each node lists ``[layer, node_index,
  tensor_index, kwargs]`` per tensor of the first argument. A node index counts the calls of a
  layer in config order, from 1 for a nested model built on an ``Input`` (Keras 2 keeps that
  model's own node 0 out of the config) and from 0 otherwise; an ``InputLayer`` always has 0.
  So nested Functional models shared and called at several nodes are rebuilt as written.
- *Arguments* Keras 3 no longer takes are dropped where they do not change the output:
  ``time_major=False`` (True is refused), ``implementation`` and ``fused`` (kernel choices),
  ``virtual_batch_size``/``adjustment`` when None, ``noise_shape`` and ``trainable`` of spatial
  dropouts (fixed by the layer; it has no weights); BatchNormalization's one-element ``axis``
  list (as Keras 2 writes it once built) becomes that axis; Keras 2 dtype policies become their names.
- ``TFOpLambda``/``SlicingOpLambda`` calls become keras ops (``walk.legacy_ops``).
- ``Lambda`` layers take the function of the user's ``tf_keras`` layer (``source``), never
  bytecode from the config.
"""
from __future__ import annotations

from collections import deque
from typing import Any, Callable

import keras
from keras import tree

from autoinit_sym.walk import legacy_ops

MODEL_CLASSES = ("Functional", "Model", "Sequential")
OP_LAYERS = ("TFOpLambda", "SlicingOpLambda")
CONSTANT = "_CONSTANT_VALUE"
"""The name Keras 2 records for a constant in a call's first argument: ``[CONSTANT, -1, value]``."""

REQUIRED = {"time_major": False, "virtual_batch_size": None, "adjustment": None}
"""Keras 2 arguments Keras 3 dropped, accepted only with the value that keeps Keras 3's behaviour."""
IGNORED = ("implementation", "fused")
"""Keras 2 arguments that chose a kernel, not the output."""
SHAPE_ARGUMENTS = ("batch_input_shape", "input_shape", "batch_size", "input_dim")
"""Input declarations on a layer; the twin takes its inputs from the InputLayer entries."""
NESTED = ("layer", "backward_layer", "cell", "cells")
"""Config keys holding a wrapped layer's config (Bidirectional, TimeDistributed, RNN)."""


def is_ref(value: Any) -> bool:
    """Whether ``value`` is a serialized tensor reference ``[layer, node, tensor(, kwargs)]``, or
    a constant in its place ``[CONSTANT, -1, value(, kwargs)]``."""
    return (isinstance(value, list) and len(value) in (3, 4) and isinstance(value[0], str)
            and isinstance(value[1], int) and (isinstance(value[2], int) or value[0] == CONSTANT))


def map_refs(value: Any, function: Callable[[list], Any]) -> Any:
    """``value`` with every tensor reference replaced by ``function(reference)``."""
    if is_ref(value):
        return function(value)
    if isinstance(value, list):
        return [map_refs(v, function) for v in value]
    if isinstance(value, dict):
        return {k: map_refs(v, function) for k, v in value.items()}
    return value


def refs_in(value: Any) -> list[list]:
    """The tensor references in ``value``, in order."""
    found: list[list] = []
    map_refs(value, found.append)
    return found


def _dtype(value: Any) -> Any:
    """A Keras 2 dtype policy (``{"class_name": "Policy", "config": {"name": ...}}``) as its name."""
    if isinstance(value, dict) and isinstance(value.get("config"), dict) and "name" in value["config"]:
        return value["config"]["name"]
    return value


def keras3_config(name: str, class_name: str, config: dict) -> dict:
    """``config`` of layer ``name`` with what Keras 3 does not take removed (module docstring)."""
    config = {k: v for k, v in config.items() if k not in SHAPE_ARGUMENTS + IGNORED}
    for key, keep in REQUIRED.items():
        if key in config:
            if config[key] != keep:
                raise ValueError(f"layer {name!r} ({class_name}) has {key}={config[key]!r}, which Keras 3 does "
                                 f"not support; only {key}={keep!r} can be rebuilt")
            del config[key]
    if class_name.startswith("SpatialDropout"):  # Keras 3 takes neither; the layer has no weights
        config.pop("noise_shape", None)
        config.pop("trainable", None)
    if class_name == "BatchNormalization" and isinstance(config.get("axis"), list):  # Keras 2 after build: [3]
        if len(config["axis"]) != 1:
            raise ValueError(f"layer {name!r} (BatchNormalization) normalizes over axes {config['axis']}; "
                             "Keras 3 normalizes over one axis")
        config["axis"] = config["axis"][0]
    if "dtype" in config:
        config["dtype"] = _dtype(config["dtype"])
    for key in NESTED:
        if isinstance(config.get(key), dict):
            config[key] = _nested(name, config[key])
        elif isinstance(config.get(key), list):
            config[key] = [_nested(name, c) for c in config[key]]
    return config


def _nested(owner: str, entry: dict) -> dict:
    """A wrapped layer's config in the form Keras 3 deserializes."""
    inner = entry.get("config", {})
    return {"module": "keras.layers", "class_name": entry["class_name"], "registered_name": None,
            "config": keras3_config(f"{owner}/{inner.get('name', '')}", entry["class_name"], inner)}


class Builder:
    """Builds the twin of one Keras 2 model config (module docstring). ``objects`` maps class
    names to Keras 3 layer classes (custom layers); ``source`` is the user's ``tf_keras``
    model of this config (its Lambda layers' functions are reused)."""

    def __init__(self, objects: dict[str, Any] | None = None) -> None:
        self.objects = {k: v for k, v in (objects or {}).items()
                        if isinstance(v, type) and issubclass(v, keras.layers.Layer)}

    def model(self, entry: dict, source: Any) -> keras.Model:
        """The twin of a model entry ``{"class_name": "Functional"|"Model"|"Sequential", "config"}``."""
        config = entry["config"]
        twin = self._sequential(config, source) if entry["class_name"] == "Sequential" \
            else self._functional(config, source)
        if config.get("trainable") is False:
            twin.trainable = False
        return twin

    def layer(self, entry: dict, source: Any) -> Any:
        """The twin of one layer entry (a model entry included); ``source`` is the model holding
        the user's layer of that name."""
        class_name, config = entry["class_name"], entry.get("config", {})
        name = config.get("name", entry.get("name", ""))
        if class_name in MODEL_CLASSES:
            return self.model(entry, source.get_layer(name))
        if class_name == "Lambda":
            return self._lambda(name, config, source.get_layer(name))
        cls = self.objects.get(class_name) or getattr(keras.layers, class_name, None)
        if not (isinstance(cls, type) and issubclass(cls, keras.layers.Layer)):
            raise ValueError(f"layer {name!r}: class {class_name!r} has no Keras 3 counterpart; give the Keras 3 "
                             f"layer class in custom_objects={{{class_name!r}: ...}}")
        try:
            return cls.from_config(keras3_config(name, class_name, config))
        except Exception as err:
            raise ValueError(f"layer {name!r} ({class_name}) cannot be rebuilt in Keras 3: "
                             f"{type(err).__name__}: {err}") from err

    @staticmethod
    def _lambda(name: str, config: dict, original: Any) -> keras.layers.Layer:
        """A Keras 3 Lambda applying the user's tf_keras Lambda's own function."""
        return keras.layers.Lambda(original.function, output_shape=getattr(original, "_output_shape", None),
                                   arguments=dict(original.arguments or {}), name=name,
                                   trainable=config.get("trainable", True), dtype=_dtype(config.get("dtype")))

    @staticmethod
    def _input(config: dict) -> Any:
        """The keras Input of an InputLayer config."""
        name = config.get("name")
        if config.get("sparse") or config.get("ragged"):
            raise ValueError(f"input {name!r} is sparse or ragged; AutoInit needs dense inputs")
        shape = config.get("batch_input_shape", config.get("batch_shape"))
        if shape is None:
            raise ValueError(f"input {name!r} has no shape in the config")
        return keras.Input(batch_shape=tuple(shape), dtype=_dtype(config.get("dtype")), name=name)

    def _sequential(self, config: dict, source: Any) -> keras.Model:
        entries = list(config.get("layers", []))
        first = entries[0].get("config", {}) if entries else {}
        declared = bool(entries) and entries[0]["class_name"] == "InputLayer"
        members = []
        shape = first.get("batch_input_shape", first.get("batch_shape"))
        if shape is not None:
            members.append(keras.layers.InputLayer(batch_shape=tuple(shape),
                                                   dtype=_dtype(first.get("dtype")) if declared else None,
                                                   name=first.get("name") if declared else None))
        entries = entries[1:] if declared else entries
        members += [self.layer(e, source) for e in entries]
        return keras.Sequential(members, name=config.get("name"))

    def _functional(self, config: dict, source: Any) -> keras.Model:
        model_name = config.get("name")
        entries = {e.get("name", e.get("config", {}).get("name")): e for e in config["layers"]}
        outputs: dict[tuple[str, int], list] = {}
        calls: dict[str, Any] = {}
        first_index: dict[str, int] = {}
        queue: dict[str, deque] = {}
        for name, entry in entries.items():
            if entry["class_name"] == "InputLayer":
                outputs[(name, 0)] = [self._input(entry["config"])]
                continue
            calls[name] = None if entry["class_name"] in OP_LAYERS else self.layer(entry, source)
            first_index[name] = int(entry["class_name"] in MODEL_CLASSES and _has_input(entry))
            queue[name] = deque(entry.get("inbound_nodes", []))

        def tensor(ref: list) -> Any:
            name, node, index = ref[:3]
            if name not in entries:
                raise ValueError(f"model {model_name!r}: a call refers to layer {name!r}, which the config lacks")
            node = 0 if entries[name]["class_name"] == "InputLayer" else node
            found = outputs.get((name, node))
            return None if found is None else found[index]

        counts = dict(first_index)
        while queue:
            progressed = False
            for name in list(queue):
                nodes = queue[name]
                while nodes:
                    result = self._call(entries[name], calls[name], nodes[0], tensor, entries)
                    if result is None:
                        break
                    outputs[(name, counts[name])] = tree.flatten(result)
                    counts[name] += 1
                    nodes.popleft()
                    progressed = True
                if not nodes:
                    del queue[name]
            if not progressed:
                raise ValueError(f"model {model_name!r}: the calls of {sorted(queue)} wait for tensors no call "
                                 "produces (the config's inbound_nodes do not form a graph)")
        ends = [_single(map_refs(config[key], _required(tensor, model_name)))
                for key in ("input_layers", "output_layers")]
        return keras.Model(ends[0], ends[1], name=model_name)

    @staticmethod
    def _call(entry: dict, layer: Any, node: Any, tensor: Callable[[list], Any], entries: dict) -> Any:
        """The outputs of one recorded call, or None while one of its inputs is not built yet."""
        refs = [node] if is_ref(node) else refs_in(node)
        kwargs = refs[0][3] if refs and len(refs[0]) == 4 else {}
        missing = []

        def resolve(ref: list) -> Any:
            if ref[0] == CONSTANT:
                return ref[2]
            found = tensor(ref)
            if found is None:
                missing.append(ref)
            return found

        first = map_refs(node, resolve) if is_ref(node) else [map_refs(n, resolve) for n in node]
        kwargs = map_refs(kwargs, lambda r: resolve(r) if r[0] in entries else r)
        if missing:
            return None
        config = entry.get("config", {})
        name = config.get("name", entry.get("name"))
        if entry["class_name"] in OP_LAYERS:
            return legacy_ops.apply(name, config.get("function", ""), first, kwargs)
        if isinstance(first, list) and len(first) == 1:
            first = first[0]
        return layer(first, **kwargs)


def _has_input(entry: dict) -> bool:
    """Whether a nested model entry is built on an Input (Keras 2 then keeps its node 0 out)."""
    layers = entry.get("config", {}).get("layers", [])
    if entry["class_name"] != "Sequential":
        return True
    return bool(layers) and (layers[0]["class_name"] == "InputLayer"
                             or "batch_input_shape" in layers[0].get("config", {}))


def _single(value: Any) -> Any:
    """A one-element list of model inputs or outputs as its element."""
    return value[0] if isinstance(value, list) and len(value) == 1 else value


def _required(tensor: Callable[[list], Any], model_name: str) -> Callable[[list], Any]:
    def resolve(ref: list) -> Any:
        found = tensor(ref)
        if found is None:
            raise ValueError(f"model {model_name!r}: input or output {ref[:3]} is produced by no call")
        return found
    return resolve
