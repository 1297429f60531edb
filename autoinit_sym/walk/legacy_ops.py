"""TensorFlow functions recorded in Keras 2 configs (``TFOpLambda`` and ``SlicingOpLambda``
layers: what a functional Keras 2 model records for ``tf.math.multiply(x, 2.0)``, ``x[:, 2:]``
or ``tf.concat([a, b], axis=1)``) applied as the equivalent ``keras.ops`` operation, so that a
Keras 3 twin of the model holds an ordinary operation node the estimators know.

Only the functions of :data:`TF_OPS` are applied, looked up by their recorded name; nothing is
evaluated. The node keeps the Keras 2 layer's name (``tf.math.multiply_1``), so the estimates
carry the names the user's model has.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import keras
from keras import ops


class TFOp(NamedTuple):
    """A TensorFlow function as a ``keras.ops`` function: TensorFlow's parameter names in order,
    the keras op's names for them (None: the keras op has no such parameter, and only
    TensorFlow's default is accepted), and TensorFlow's defaults where the keras op's differ."""

    function: Callable[..., Any]
    tf_params: tuple[str, ...]
    keras_params: tuple[str | None, ...]
    defaults: dict[str, Any] = {}
    takes_list: bool = False  # the first argument is a list of tensors (concat, stack)


def _binary(function: Callable[..., Any]) -> TFOp:
    return TFOp(function, ("x", "y"), ("x1", "x2"))


def _unary(function: Callable[..., Any], name: str = "x") -> TFOp:
    return TFOp(function, (name,), ("x",))


def _reduction(function: Callable[..., Any]) -> TFOp:
    return TFOp(function, ("input_tensor", "axis", "keepdims"), ("x", "axis", "keepdims"))


TF_OPS: dict[str, TFOp] = {
    "math.multiply": _binary(ops.multiply),
    "math.add": _binary(ops.add),
    "__operators__.add": _binary(ops.add),
    "math.subtract": _binary(ops.subtract),
    "math.truediv": _binary(ops.true_divide),
    "math.divide": _binary(ops.true_divide),
    "math.maximum": _binary(ops.maximum),
    "math.minimum": _binary(ops.minimum),
    "math.pow": _binary(ops.power),
    "math.negative": _unary(ops.negative),
    "math.abs": _unary(ops.abs),
    "math.square": _unary(ops.square),
    "math.sqrt": _unary(ops.sqrt),
    "math.exp": _unary(ops.exp),
    "math.tanh": _unary(ops.tanh),
    "math.sigmoid": _unary(ops.sigmoid),
    "nn.relu": _unary(ops.relu, "features"),
    "nn.relu6": _unary(ops.relu6, "features"),
    "nn.silu": TFOp(ops.silu, ("features", "beta"), ("x", None), {"beta": 1.0}),
    "nn.swish": TFOp(ops.silu, ("features", "beta"), ("x", None), {"beta": 1.0}),
    "nn.gelu": TFOp(ops.gelu, ("features", "approximate"), ("x", "approximate"), {"approximate": False}),
    "nn.softmax": TFOp(ops.softmax, ("logits", "axis"), ("x", "axis"), {"axis": -1}),
    "math.reduce_mean": _reduction(ops.mean),
    "math.reduce_sum": _reduction(ops.sum),
    "math.reduce_max": _reduction(ops.max),
    "math.reduce_min": _reduction(ops.min),
    "reshape": TFOp(ops.reshape, ("tensor", "shape"), ("x", "newshape")),
    "transpose": TFOp(ops.transpose, ("a", "perm"), ("x", "axes")),
    "compat.v1.transpose": TFOp(ops.transpose, ("a", "perm"), ("x", "axes")),
    "expand_dims": TFOp(ops.expand_dims, ("input", "axis"), ("x", "axis")),
    "squeeze": TFOp(ops.squeeze, ("input", "axis"), ("x", "axis")),
    "concat": TFOp(ops.concatenate, ("values", "axis"), ("xs", "axis"), takes_list=True),
    "stack": TFOp(ops.stack, ("values", "axis"), ("x", "axis"), takes_list=True),
}
"""Recorded function name (``TFOpLambda``'s ``function``, without ``tf.``) -> keras op. A
parameter that is None in TensorFlow's call takes its TensorFlow default."""

GETITEM = "__operators__.getitem"


def _slice(spec: Any) -> Any:
    """A serialized slice element: ``{"start", "stop", "step"}`` -> slice, the ellipsis marker
    -> ``...``; None (a new axis) and integers as they are."""
    if isinstance(spec, dict):
        if spec.get("class_name") == "__ellipsis__":
            return Ellipsis
        return slice(spec.get("start"), spec.get("stop"), spec.get("step"))
    return spec


def apply(layer_name: str, function: str, first: Any, kwargs: dict[str, Any]) -> Any:
    """The output of TensorFlow function ``function`` (a recorded name) called on ``first``
    (its first argument: a tensor, or a list of tensors) and ``kwargs``, as keras ops on keras
    tensors; the op node is named ``layer_name``. ValueError naming the layer for a function
    or argument that is not known."""
    kwargs = {k: v for k, v in kwargs.items() if k != "name"}
    if function == GETITEM:
        spec = kwargs.pop("slice_spec", None)
        if kwargs or spec is None:
            raise ValueError(f"layer {layer_name!r} (SlicingOpLambda): expected the argument slice_spec only, "
                             f"got {sorted(kwargs) + ([] if spec is None else ['slice_spec'])}")
        key = tuple(_slice(s) for s in spec) if isinstance(spec, list) else _slice(spec)
        return _named(first[key], layer_name)
    op = TF_OPS.get(function)
    if op is None:
        raise ValueError(f"layer {layer_name!r} (TFOpLambda) applies tf.{function}, which AutoInit does not "
                         f"translate; translated: {', '.join('tf.' + n for n in sorted(TF_OPS))}")
    if isinstance(first, (list, tuple)) and len(first) == 1 and not op.takes_list:
        first = first[0]
    unknown = sorted(set(kwargs) - set(op.tf_params[1:]))
    if unknown:
        raise ValueError(f"layer {layer_name!r} (TFOpLambda): tf.{function} got arguments {unknown} that AutoInit "
                         f"does not translate (translated: {list(op.tf_params)})")
    values = {op.tf_params[0]: first, **kwargs}
    call = {}
    for tf_name, keras_name in zip(op.tf_params, op.keras_params):
        value = values.get(tf_name)
        value = op.defaults.get(tf_name) if value is None else value
        if keras_name is None:
            if value != op.defaults[tf_name]:
                raise ValueError(f"layer {layer_name!r} (TFOpLambda): tf.{function} with {tf_name}={value!r} has "
                                 f"no keras op; only {tf_name}={op.defaults[tf_name]!r} is translated")
        elif value is not None:
            call[keras_name] = value
    return _named(op.function(**call), layer_name)


def _named(tensor: Any, name: str) -> Any:
    """``tensor``, whose producing operation now bears the Keras 2 layer's ``name``."""
    history = getattr(tensor, "_keras_history", None)
    if history is None or not isinstance(tensor, keras.KerasTensor):
        raise ValueError(f"layer {name!r}: the translated operation did not produce a keras tensor")
    history.operation.name = name
    return tensor
