"""Turning what the user gives into what the walk needs: a model object from a model, a config
dict or a JSON string, and validated per-input statistics."""
from __future__ import annotations

import json
import math
from numbers import Real
from typing import Any, Mapping

import keras

from autoinit_sym.walk.graph import ModelGraph


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


def load_model(model: Any, custom_objects: dict | None = None) -> keras.Model:
    """``model`` itself, or the model built once from a config dict or a JSON string."""
    if isinstance(model, keras.Model):
        return model
    if isinstance(model, (str, bytes)):
        try:
            model = json.loads(model)
        except json.JSONDecodeError as err:
            raise ValueError(f"model JSON is malformed: {err}") from err
        if not isinstance(model, dict):
            raise ValueError(f"model JSON must describe an object (a model config), got {type(model).__name__}")
    if not isinstance(model, dict):
        raise TypeError(f"model must be a keras.Model, a config dict or a JSON string, "
                        f"got {type(model).__name__}")
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
    return built
