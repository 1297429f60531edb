"""Keras 2 models built with tf_keras, and their configs rewritten the way TF-2.4-era Keras saved
them (:func:`tf24_config`), for the legacy tests and ``bench_legacy``.

Each builder returns a tf_keras model covering one structure of issue 15: nested Functional
submodels shared and called at several nodes (:func:`shared_blocks`), Reshape and ZeroPadding3D
changing channel counts (:func:`padded_channels`), SpatialDropout1D with GRU and LSTM
(:func:`recurrent`), wrapped layers (:func:`wrappers`), a Sequential model (:func:`sequential`),
TensorFlow op layers (:func:`tf_ops`), a Lambda layer (:func:`with_lambda`),
and all of them at the size of the reference implementation's models (:func:`evolved`: about a
hundred layers, a few dozen submodel calls).
"""
from __future__ import annotations

import json
from typing import Any

TF24_DROPPED = ("module", "registered_name", "build_config", "compile_config")
"""Keys tf_keras writes that TF-2.4-era configs did not have."""


def tf24_config(model: Any) -> dict:
    """``model``'s JSON config as TF 2.4 wrote it: ``class_name`` "Functional" (or "Sequential"),
    ``keras_version`` "2.4.0", no ``module``/``registered_name``/``build_config`` keys, and GRU and
    LSTM configs carrying ``time_major: false`` (an argument Keras has since dropped)."""
    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            out = {k: strip(v) for k, v in value.items() if k not in TF24_DROPPED}
            if out.get("class_name") in ("GRU", "LSTM") and isinstance(out.get("config"), dict):
                out["config"].setdefault("time_major", False)
            return out
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    config = strip(json.loads(model.to_json()))
    config.update(keras_version="2.4.0", backend="tensorflow")
    return config


def _k2() -> Any:
    import tf_keras

    return tf_keras


def _block(name: str, width: int, activation: str = "relu") -> Any:
    """A Functional submodel Dense -> activation on an Input of ``width``."""
    k2 = _k2()
    inputs = k2.Input((width,), name=f"{name}_in")
    hidden = k2.layers.Dense(width, name=f"{name}_dense")(inputs)
    return k2.Model(inputs, k2.layers.Activation(activation, name=f"{name}_act")(hidden), name=name)


def shared_blocks(width: int = 32) -> Any:
    """Nested Functional submodels shared and called at several nodes: ``block`` is called on
    three branches (node indices 1, 2, 3 in the config), ``outer_block`` (holding a Sequential
    and another Functional submodel) on two; each call's input has the same statistics."""
    k2 = _k2()
    L = k2.layers
    block = _block("block", width, "tanh")
    inner = _block("inner", width, "relu")
    seq = k2.Sequential([k2.Input((width,)), L.Dense(width, name="seq_dense"), L.Activation("elu", name="seq_act")],
                        name="seq")
    outer_in = k2.Input((width,), name="outer_in")
    outer_block = k2.Model(outer_in, seq(inner(outer_in)), name="outer_block")
    x = k2.Input((width,), name="x")
    branches = [block(L.Dense(width, name=f"stem{index}")(x)) for index in range(3)]
    h = L.Concatenate(name="joined")(branches)
    pair = [outer_block(L.Dense(width, name=f"mix{index}")(h)) for index in range(2)]
    return k2.Model(x, L.Dense(4, name="head")(L.Add(name="sum")(pair)), name="shared_blocks")


def padded_channels() -> Any:
    """Reshape and ZeroPadding3D used to change channel counts: 24 channels become a 5-D tensor
    whose last axis is padded with 8 zeros, then 32 channels again."""
    k2 = _k2()
    L = k2.layers
    x = k2.Input((8, 8, 6), name="image")
    h = L.Conv2D(24, 3, padding="same", activation="relu", name="conv_a")(x)
    h = L.Reshape((8, 8, 24, 1), name="to_5d")(h)
    h = L.ZeroPadding3D(((0, 0), (0, 0), (0, 8)), name="pad_channels")(h)
    h = L.Reshape((8, 8, 32), name="to_4d")(h)
    h = L.Conv2D(32, 3, padding="same", name="conv_b")(h)
    h = L.GlobalAveragePooling2D(name="pool")(h)
    return k2.Model(x, L.Dense(16, name="head")(h), name="padded_channels")


def recurrent(steps: int = 12, features: int = 6) -> Any:
    """SpatialDropout1D, GRU and LSTM (whose TF-2.4 configs carry ``time_major``)."""
    k2 = _k2()
    L = k2.layers
    x = k2.Input((steps, features), name="sequence")
    h = L.SpatialDropout1D(0.2, name="spatial_dropout")(x)
    h = L.GRU(8, return_sequences=True, name="gru")(h)
    h = L.LSTM(8, name="lstm")(h)
    return k2.Model(x, L.Dense(4, name="head")(h), name="recurrent")


def wrappers(steps: int = 12, features: int = 6) -> Any:
    """Wrapped layers, whose configs hold the inner layer's config: Bidirectional(GRU) (the inner
    GRU's TF-2.4 config carries ``time_major``), TimeDistributed(Dense), then BatchNormalization."""
    k2 = _k2()
    L = k2.layers
    x = k2.Input((steps, features), name="sequence")
    h = L.Bidirectional(L.GRU(8, return_sequences=True, name="inner_gru"), name="bidirectional")(x)
    h = L.TimeDistributed(L.Dense(16, activation="relu", name="inner_dense"), name="per_step")(h)
    h = L.BatchNormalization(name="norm")(h)
    h = L.GlobalAveragePooling1D(name="pool")(h)
    return k2.Model(x, L.Dense(4, name="head")(h), name="wrappers")


def sequential(width: int = 16) -> Any:
    """A Sequential model declaring its input on its first layer (``input_shape``), no Input."""
    k2 = _k2()
    L = k2.layers
    return k2.Sequential([L.Dense(width, activation="relu", input_shape=(width,), name="first"),
                          L.Dropout(0.1, name="drop"), L.Dense(4, name="head")], name="sequential")


def tf_ops(width: int = 64) -> Any:
    """TensorFlow functions on Keras 2 tensors, recorded as TFOpLambda and SlicingOpLambda
    layers: multiply, add, subtract, relu, concat, slicing, reshape, reduce_mean."""
    import tensorflow as tf

    k2 = _k2()
    L = k2.layers
    x = k2.Input((width,), name="x")
    a = L.Dense(width, name="dense_a")(x)
    b = L.Dense(width, name="dense_b")(x)
    h = tf.nn.relu(tf.math.multiply(a, 0.5) + b)
    g = tf.nn.relu(b - tf.math.multiply(a, 0.5))
    h = tf.concat([h, g], axis=1)[:, 16:80]
    h = tf.reshape(h, (-1, 4, 16))
    h = tf.math.reduce_mean(h, axis=1)
    return k2.Model(x, L.Dense(4, name="head")(h), name="tf_ops")


def with_lambda(width: int = 16) -> Any:
    """A Lambda layer (its function is serialized as bytecode)."""
    k2 = _k2()
    L = k2.layers
    x = k2.Input((width,), name="x")
    h = L.Dense(width, name="dense")(x)
    h = L.Lambda(lambda t: t * 2.0 - 1.0, name="affine")(h)
    return k2.Model(x, L.Dense(4, name="head", activation="relu")(h), name="with_lambda")


def evolved(blocks: int = 10, calls: int = 3, width: int = 32, steps: int = 16) -> Any:
    """A model like the reference implementation's evolved ones: a recurrent stem (spatial
    dropout, GRU), then ``blocks`` distinct Functional submodels (Dense, activation, Dense),
    each called at ``calls`` nodes on scaled copies of the same tensor, summed with a scaled
    residual (TF op layers), a Lambda, a slice and a head."""
    import tensorflow as tf

    k2 = _k2()
    L = k2.layers
    x = k2.Input((steps, width), name="sequence")
    h = L.SpatialDropout1D(0.1, name="spatial_dropout")(x)
    h = L.GRU(width, name="gru")(h)
    for index in range(blocks):
        inputs = k2.Input((width,), name=f"cell{index}_in")
        inner = L.Dense(width, activation=("relu", "tanh", "elu")[index % 3], name=f"cell{index}_a")(inputs)
        cell = k2.Model(inputs, L.Dense(width, name=f"cell{index}_b")(inner), name=f"cell{index}")
        branches = [cell(h if call == 0 else tf.math.multiply(h, -1.0 / call)) for call in range(calls)]
        total = h
        for branch in branches:
            total = total + branch
        h = tf.math.multiply(total, 1.0 / (calls + 1))
    h = L.Lambda(lambda t: t - 0.1, name="shift")(h)
    return k2.Model(x, L.Dense(10, name="head")(h[:, : width // 2]), name="evolved")
