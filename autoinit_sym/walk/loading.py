"""Turning what the user gives into what the walk needs: a model object from a model, a config
dict or a JSON string (a Keras 3 twin for a ``tf_keras`` model or a Keras 2 config,
``walk.legacy``), validated per-input statistics, and the sizes of the model's inputs (stated,
or :data:`~autoinit_sym.estimators.shapes.DEFAULT_TIMESTEPS` for an unknown one) from which
every call's shapes are re-inferred."""
from __future__ import annotations

import json
import logging
import math
from numbers import Integral, Real
from typing import Any, Mapping

import keras

from autoinit_sym.estimators.shapes import DEFAULT_TIMESTEPS
from autoinit_sym.walk import legacy
from autoinit_sym.walk.graph import ModelGraph, infer_shapes

logger = logging.getLogger("autoinit_sym")

Shape = tuple[int, ...]
InputShapes = dict[str, Shape] | list[Shape] | Shape | None
"""``input_shapes`` once checked: by input name, in input order (a list), one shape (a tuple,
for a single-input model) or not given."""


def check_positive(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def check_finite(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def per_input(name: str, value: Any, graph: ModelGraph) -> list[Any]:
    """``value`` given once for all inputs, as a list in input order, or as a dict by
    input name, expanded to one entry per model input."""
    count = len(graph.inputs)
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - set(graph.input_names))
        missing = [n for n in graph.input_names if n not in value]
        if unknown or missing:
            raise ValueError(f"{name} by input name: unknown {unknown}, missing {missing}; "
                             f"the model's inputs are {graph.input_names}")
        return [value[n] for n in graph.input_names]
    if isinstance(value, (list, tuple)):
        if len(value) != count:
            raise ValueError(f"{name} has {len(value)} entries but the model has {count} inputs "
                             f"{graph.input_names}")
        return list(value)
    return [value] * count


def input_statistics(graph: ModelGraph, mean: Any, var: Any) -> tuple[list[float], list[float]]:
    """Validated per-input means and variances (variances > 0)."""
    means = [check_finite(f"input_data_mean[{n}]", m)
             for n, m in zip(graph.input_names, per_input("input_data_mean", mean, graph))]
    variances = [check_positive(f"input_data_var[{n}]", v)
                 for n, v in zip(graph.input_names, per_input("input_data_var", var, graph))]
    return means, variances


def check_dims(label: str, shape: Any) -> Shape:
    """``shape`` (a list or tuple of positive integers: an input's shape without the batch
    axis) as a tuple of ints; ValueError naming ``label`` otherwise."""
    if not isinstance(shape, (list, tuple)):
        raise ValueError(f"{label} must be a tuple of positive integers (the input's shape without the "
                         f"batch axis), got {shape!r}")
    for index, dim in enumerate(shape):
        if isinstance(dim, bool) or not isinstance(dim, Integral) or dim <= 0:
            raise ValueError(f"{label} = {tuple(shape)!r}: dimension {index} must be a positive integer, "
                             f"got {dim!r}")
    return tuple(int(d) for d in shape)


def check_input_shapes(value: Any) -> InputShapes:
    """``input_shapes`` checked as far as the model is not needed: None, a dict of input name ->
    shape, a list of shapes in input order (a list or tuple whose entries are lists or tuples),
    or one shape (a list or tuple of integers) for a single-input model."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        for name in value:
            if not isinstance(name, str):
                raise ValueError(f"input_shapes keys must be input names (strings), got {name!r}")
        return {name: check_dims(f"input_shapes[{name!r}]", shape) for name, shape in value.items()}
    if isinstance(value, (list, tuple)) and any(isinstance(v, (list, tuple)) for v in value):
        return [check_dims(f"input_shapes[{index}]", shape) for index, shape in enumerate(value)]
    return check_dims("input_shapes", value)


def check_sequence_length(value: Any) -> int | None:
    """``sequence_length`` (None or a positive integer)."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, Integral) or value <= 0):
        raise ValueError(f"sequence_length must be a positive integer (the size of every unknown non-batch "
                         f"axis of the model's inputs) or None, got {value!r}")
    return None if value is None else int(value)


def _pattern(dims: tuple) -> str:
    """A recorded shape without the batch axis as the user may state it: ``(?, 3)``."""
    return "(" + ", ".join("?" if d is None else str(d) for d in dims) + ("," if len(dims) == 1 else "") + ")"


def input_sizes(graph: ModelGraph, input_shapes: InputShapes,
                sequence_length: int | None) -> tuple[list[Shape], list[str]]:
    """Every model input's concrete shape without the batch axis: as stated in ``input_shapes``
    (checked against the input's rank and known sizes), else the recorded shape with
    ``sequence_length`` or, failing that, :data:`DEFAULT_TIMESTEPS` for each unknown size; and
    the axes that got the default (``"'tokens' axis 1"``, the batch being axis 0)."""
    names, count = graph.input_names, len(graph.inputs)
    if isinstance(input_shapes, dict):
        unknown = [name for name in input_shapes if name not in names]
        if unknown:
            raise ValueError(f"input_shapes names unknown input(s) {unknown}; the model's inputs are {names}")
        given = {names.index(name): shape for name, shape in input_shapes.items()}
    elif isinstance(input_shapes, list):
        if len(input_shapes) != count:
            raise ValueError(f"input_shapes has {len(input_shapes)} shapes but the model has {count} inputs "
                             f"{names}; give one per input in this order, or a dict by input name")
        given = dict(enumerate(input_shapes))
    elif input_shapes is not None:
        if count != 1:
            raise ValueError(f"input_shapes is one shape {input_shapes}, but the model has {count} inputs "
                             f"{names}; give a dict by input name or a list in input order")
        given = {0: input_shapes}
    else:
        given = {}
    shapes, defaulted = [], []
    for index, (name, recorded) in enumerate(zip(names, graph.input_shapes)):
        dims = tuple(recorded[1:])
        if index not in given:
            shapes.append(tuple((sequence_length or DEFAULT_TIMESTEPS) if d is None else d for d in dims))
            if sequence_length is None:
                defaulted += [f"{name!r} axis {axis + 1}" for axis, d in enumerate(dims) if d is None]
            continue
        shape = given[index]
        valid = f"valid: {_pattern(dims)}, every ? a positive integer" if None in dims else f"valid: {dims}"
        if len(shape) != len(dims):
            raise ValueError(f"input_shapes[{name!r}] = {shape} has {len(shape)} dimension(s), but input {name!r} "
                             f"of shape {tuple(recorded)} has {len(dims)} besides the batch axis; {valid}")
        if any(r is not None and d != r for d, r in zip(shape, dims)):
            raise ValueError(f"input_shapes[{name!r}] = {shape} contradicts the known sizes of input {name!r} "
                             f"of shape {tuple(recorded)}; {valid}")
        shapes.append(shape)
    return shapes, defaulted


def unknown_sizes_warning(defaulted: list[str]) -> str:
    """The warning for input sizes the walk had to assume."""
    return (f"unknown sizes in the model's inputs ({', '.join(defaulted)}; axis 0 is the batch): AutoInit "
            f"assumes {DEFAULT_TIMESTEPS} (DEFAULT_TIMESTEPS) for each and infers every layer call's shapes from "
            "that; state the sizes with AutoInit(input_shapes={input name: shape without the batch axis}) or "
            "AutoInit(sequence_length=N) (command line: --input-shape NAME=D1,D2,...)")


def resolve_shapes(graph: ModelGraph, input_shapes: InputShapes, sequence_length: int | None) -> None:
    """Give every call of ``graph`` shapes inferred from the model inputs' sizes
    (:func:`input_sizes`); warns once for the sizes assumed and once per call that cannot be
    traced on them (that call keeps its recorded shapes)."""
    shapes, defaulted = input_sizes(graph, input_shapes, sequence_length)
    if defaulted:
        logger.warning(unknown_sizes_warning(defaulted))
    for key, why in infer_shapes(graph, shapes).items():
        logger.warning("the shapes of layer call %r could not be inferred from the input shapes %s, so its "
                       "recorded shapes are used: %s", key, shapes, why)


def load_model(model: Any, custom_objects: dict | None = None) -> keras.Model:
    """The Keras 3 model the walk runs on (:func:`load`)."""
    return load(model, custom_objects)[0]


def load(model: Any, custom_objects: dict | None = None) -> tuple[keras.Model, Any]:
    """The Keras 3 model the walk runs on, and the model the user gets back: ``model`` itself
    twice, or the model built once from a config dict or a JSON string twice; for a ``tf_keras``
    model, or a Keras 2 config (built with ``tf_keras``), its Keras 3 twin sharing its variables
    and the ``tf_keras`` model (``walk.legacy``)."""
    if isinstance(model, keras.Model):
        return model, model
    if legacy.is_tf_keras_model(model):
        return legacy.keras3_twin(model, custom_objects), model
    if isinstance(model, (str, bytes)):
        try:
            model = json.loads(model)
        except json.JSONDecodeError as err:
            raise ValueError(f"model JSON is malformed: {err}") from err
        if not isinstance(model, dict):
            raise ValueError(f"model JSON must describe an object (a model config), got {type(model).__name__}")
    if not isinstance(model, dict):
        raise TypeError(f"model must be a keras.Model, a tf_keras model, a config dict or a JSON string, "
                        f"got {type(model).__name__}")
    if legacy.is_keras2_config(model):
        built = legacy.from_config(model, custom_objects)
        return legacy.keras3_twin(built, custom_objects), built
    try:
        if "class_name" in model:
            built = keras.saving.deserialize_keras_object(model, custom_objects=custom_objects)
        elif "input_layers" in model:
            built = keras.Model.from_config(model, custom_objects=custom_objects)
        elif "layers" in model:
            built = keras.Sequential.from_config(model, custom_objects=custom_objects)
        else:
            raise ValueError("it has none of the keys 'class_name', 'input_layers', 'layers'")
    except (ValueError, TypeError, KeyError, AttributeError) as err:
        raise ValueError(f"model config is malformed: {err}") from err
    if not isinstance(built, keras.Model):
        raise ValueError(f"model config describes a {type(built).__name__}, not a keras.Model")
    return built, built
