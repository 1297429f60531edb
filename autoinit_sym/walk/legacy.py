"""Keras 2 models: ``tf_keras`` models (the ``tf-keras`` package; ``tf.keras`` under
``TF_USE_LEGACY_KERAS=1``) and Keras 2 configs, initialized with the same estimators.

A ``tf_keras`` model is recognized by its class; a config dict by its Keras 2 format
(``keras_version`` 2.x, list-style ``inbound_nodes`` or ``batch_input_shape`` inputs) and built
with ``tf_keras`` (:func:`from_config`). The walk then runs on a Keras 3 *twin*
(``walk.legacy_config``) whose variables *are* the user's: each twin ``keras.Variable`` wraps
the user's ``tf.Variable`` (:func:`share_variables`; TensorFlow backend), so the all-or-nothing
write pass writes straight into the ``tf_keras`` model, and kept layers are measured with the
user's weights. Names, trainable flags and dtype policies of the user's model are not touched.

TensorFlow and ``tf_keras`` are imported only when a Keras 2 model or config is given; without
``tf_keras`` a config is refused with an error naming the extra :data:`EXTRA`.
"""
from __future__ import annotations

import base64
import binascii
import json
import marshal
import sys
import types
from typing import Any, Iterator, Mapping

import keras

from autoinit_sym.walk.legacy_config import MODEL_CLASSES, Builder

EXTRA = "autoinit-sym[legacy]"


def from_tf_keras(obj: Any) -> bool:
    """Whether ``obj`` is a ``tf_keras`` object (by its classes' modules, without importing ``tf_keras``)."""
    return any(cls.__module__.split(".")[0] == "tf_keras" for cls in type(obj).__mro__)


def is_tf_keras_model(obj: Any) -> bool:
    """Whether ``obj`` is a ``tf_keras`` model."""
    return from_tf_keras(obj) and hasattr(obj, "layers") and hasattr(obj, "get_config")


def is_keras2_config(config: Mapping) -> bool:
    """Whether a model config dict is in the Keras 2 format: ``keras_version`` 2.x, or a model
    ``class_name`` (or none) with layers whose ``inbound_nodes`` are lists (Keras 3 writes
    dicts), with TF op layers, or with an InputLayer declaring ``batch_input_shape``."""
    if str(config.get("keras_version", "")).startswith("2."):
        return True
    if "class_name" in config and config["class_name"] not in MODEL_CLASSES:
        return False
    inner = config.get("config", {}) if "class_name" in config else config
    for layer in inner.get("layers", []) if isinstance(inner, Mapping) else []:
        if not isinstance(layer, Mapping):
            return False
        nodes = layer.get("inbound_nodes")
        if nodes and isinstance(nodes[0], list):
            return True
        if layer.get("class_name") in ("TFOpLambda", "SlicingOpLambda"):
            return True
        if layer.get("class_name") == "InputLayer" and "batch_input_shape" in layer.get("config", {}):
            return True
    return False


def tf_keras_module() -> Any:
    """The ``tf_keras`` package; ImportError naming the extra when it is not installed."""
    try:
        import tf_keras
    except ImportError as err:
        raise ImportError(f"this is a Keras 2 model config, which AutoInit builds with tf_keras; install it with "
                          f"pip install '{EXTRA}' (the tf-keras package)") from err
    return tf_keras


def _lambdas(config: Mapping) -> Iterator[tuple[str, Mapping]]:
    """(name, config) of every Lambda layer in a model config, nested models included."""
    inner = config.get("config", config) if "class_name" in config else config
    for layer in inner.get("layers", []):
        if layer.get("class_name") == "Lambda":
            yield layer.get("config", {}).get("name", "?"), layer.get("config", {})
        elif layer.get("class_name") in MODEL_CLASSES:
            yield from _lambdas(layer)


def check_lambdas(config: Mapping) -> None:
    """Refuse a config whose Lambda layers hold Python bytecode unless unsafe deserialization is
    enabled (``keras.config.enable_unsafe_deserialization()``; ``--unsafe`` on the command line),
    and bytecode that this Python cannot load, naming the layer. Nothing is run here."""
    from keras.src.saving.serialization_lib import in_safe_mode

    for name, layer in _lambdas(config):
        if layer.get("function_type") != "lambda":
            continue
        if in_safe_mode() is not False:
            raise ValueError(f"layer {name!r} (Lambda) holds Python bytecode, which loading would run: refused in "
                             "safe mode; only if you trust this config, pass --unsafe (Python: "
                             "keras.config.enable_unsafe_deserialization())")
        function = layer.get("function")
        code = function[0] if isinstance(function, (list, tuple)) and function else function
        try:
            loaded = marshal.loads(base64.b64decode(str(code).encode("ascii")))
        except (ValueError, EOFError, TypeError, binascii.Error) as err:
            loaded = err
        if not isinstance(loaded, types.CodeType):
            version = f"{sys.version_info.major}.{sys.version_info.minor}"
            raise ValueError(f"layer {name!r} (Lambda): its function's bytecode cannot be loaded by Python "
                             f"{version} (written by another Python version, or damaged: {loaded!r}); rebuild "
                             "the model in code, or load the config with the Python version that wrote it")


def from_config(config: Mapping, custom_objects: dict | None = None) -> Any:
    """The ``tf_keras`` model of a Keras 2 config (``{"class_name", "config"}`` as written by
    ``to_json``, or a bare ``get_config()`` dict), after :func:`check_lambdas`."""
    check_lambdas(config)  # applies Keras 3's safe mode; tf_keras's own is then lifted
    tf_keras = tf_keras_module()
    from tf_keras.src.saving.serialization_lib import SafeModeScope

    try:
        with tf_keras.utils.custom_object_scope(dict(custom_objects or {})), SafeModeScope(False):
            if "class_name" in config:
                return tf_keras.models.model_from_json(json.dumps(dict(config)))
            kind = tf_keras.Model if "input_layers" in config else tf_keras.Sequential
            return kind.from_config(dict(config))
    except (ValueError, TypeError, KeyError, AttributeError, IndexError) as err:
        raise ValueError(f"Keras 2 model config is malformed for tf_keras: {type(err).__name__}: {err}") from err


def keras3_twin(model: Any, custom_objects: dict | None = None) -> keras.Model:
    """The Keras 3 twin of ``tf_keras`` model ``model`` (``walk.legacy_config``) with every
    variable shared with ``model`` (:func:`share_variables`)."""
    if keras.backend.backend() != "tensorflow":
        raise ValueError(f"tf_keras model {model.name!r}: AutoInit initializes tf_keras models through Keras 3's "
                         f"TensorFlow backend, but KERAS_BACKEND is {keras.backend.backend()!r}; run with "
                         "KERAS_BACKEND=tensorflow")
    try:
        entry = json.loads(model.to_json())  # plain lists and dicts, as a saved config has them
    except NotImplementedError:
        entry = {}
    if entry.get("class_name") not in MODEL_CLASSES or "layers" not in entry.get("config", {}):
        raise ValueError(f"cannot see the graph of tf_keras model {model.name!r} ({type(model).__name__}): "
                         "AutoInit needs a Functional or Sequential model (subclassed models hide their graph)")
    twin = Builder(custom_objects).model(entry, model)
    share_variables(model, twin)
    return twin


def _base_name(variable: Any) -> str:
    """A variable's own name without scope and index: ``dense/kernel:0`` -> ``kernel``."""
    return str(variable.name).rsplit("/", 1)[-1].split(":", 1)[0]


def _storage(variable: Any) -> Any:
    """The ``tf.Variable`` holding a ``tf_keras`` weight (inside a mixed-precision AutoCastVariable)."""
    return getattr(variable, "_variable", variable) if type(variable).__name__ == "AutoCastVariable" \
        else variable


def layer_pairs(user: Any, twin: keras.Model) -> Iterator[tuple[Any, Any]]:
    """(user tf_keras layer, its Keras 3 twin) for every layer of ``user`` with a twin (TF op
    layers have none: they became keras ops), matched by name, nested models recursively."""
    twins = {layer.name: layer for layer in twin.layers}
    for layer in user.layers:
        counterpart = twins.get(layer.name)
        if counterpart is None:
            continue
        yield layer, counterpart
        if is_tf_keras_model(layer):
            yield from layer_pairs(layer, counterpart)


def weight_pairs(user: Any, twin: keras.Model) -> Iterator[tuple[Any, Any]]:
    """(twin keras.Variable, user tf.Variable) for every weight of ``user``'s layers, matched by
    layer (:func:`layer_pairs`) and weight order, checked by name, shape and dtype."""
    twins = dict((id(mine), theirs) for mine, theirs in layer_pairs(user, twin))
    for layer in _weighted_layers(user):
        counterpart = twins.get(id(layer))
        if counterpart is None:
            raise ValueError(f"layer {layer.name!r} of tf_keras model {user.name!r} has no Keras 3 twin")
        mine, theirs = list(layer.weights), list(counterpart.weights)
        described = [(_base_name(v), tuple(v.shape), str(keras.backend.standardize_dtype(v.dtype.name)))
                     for v in mine]
        expected = [(_base_name(v), tuple(v.shape), str(v.dtype)) for v in theirs]
        if described != expected:
            raise ValueError(f"layer {layer.name!r} ({type(layer).__name__}): its tf_keras weights {described} do "
                             f"not match those of its Keras 3 twin {expected}")
        yield from zip(theirs, mine)


def _weighted_layers(model: Any) -> Iterator[Any]:
    """The layers of ``model`` that own weights, nested models opened."""
    for layer in model.layers:
        if is_tf_keras_model(layer):
            yield from _weighted_layers(layer)
        elif layer.weights:
            yield layer


def check_settings(user: Any, twin: keras.Model, constrain_weights: bool) -> None:
    """ValueError, before anything is written, for a setting a tf_keras model cannot take:
    ``constrain_weights`` (its constraint is a Keras 3 object, which a tf_keras model can neither
    apply through its optimizer's variables nor save)."""
    if constrain_weights and twin is not user:
        raise ValueError(f"constrain_weights=True is not available for tf_keras model {user.name!r}: the "
                         "ZeroMeanFixedScale constraint is a Keras 3 object; initialize without it")


def twin_selection(layers: Any, user: Any, twin: keras.Model) -> Any:
    """``initialize_model``'s ``layers`` selection for the twin of ``user``: tf_keras layer objects
    become their twins and a predicate is asked about the user's tf_keras layers; None, "all" and
    names are the same for both (the twin keeps every name)."""
    if twin is user or layers is None or isinstance(layers, str):
        return layers
    pairs = list(layer_pairs(user, twin))
    if callable(layers) and not from_tf_keras(layers) and not isinstance(layers, keras.layers.Layer):
        originals = {id(theirs): mine for mine, theirs in pairs}
        return lambda layer: layers(originals.get(id(layer), layer))
    twins = {id(mine): theirs for mine, theirs in pairs}
    items = [layers] if from_tf_keras(layers) else layers
    try:
        return [twins.get(id(item), item) for item in items]
    except TypeError:
        return layers  # not iterable: kept_layers names the problem


def share_variables(user: Any, twin: keras.Model) -> None:
    """Make every twin variable hold the user's ``tf.Variable`` (:func:`weight_pairs`, all
    checked before any is changed): a write to the twin is a write to the user's model."""
    for twin_variable, user_variable in list(weight_pairs(user, twin)):
        twin_variable._value = _storage(user_variable)
