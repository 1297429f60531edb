"""Layers that only move, repeat or pass on their input's elements change no prediction.

Generic over the registry: every layer or operation class whose rule says ``keeps_values``
must appear in :data:`INSERTIONS`, and inserting it between a ReLU convolution and a max
pool, or between two Dense layers (where it applies), leaves every other call's predicted
mean and variance equal to within 1e-12 relative.
"""
from __future__ import annotations

import keras
import pytest
from keras import layers, ops
from keras.src.ops import core as ops_core
from keras.src.ops import numpy as ops_np

from autoinit_sym import AutoInit
from autoinit_sym.estimators.registry import registered

CONV, DENSE = "conv", "dense"

INSERTIONS = {
    keras.layers.Identity: (lambda x: layers.Identity()(x), (CONV, DENSE)),
    keras.layers.Masking: (lambda x: layers.Masking()(x), (CONV, DENSE)),
    keras.layers.ActivityRegularization: (lambda x: layers.ActivityRegularization(l1=0.1)(x), (CONV, DENSE)),
    keras.layers.Flatten: (lambda x: layers.Flatten()(x), (DENSE,)),
    keras.layers.Reshape: (lambda x: layers.Reshape(tuple(x.shape[1:]))(x), (CONV, DENSE)),
    keras.layers.Permute: (lambda x: layers.Permute((2, 1, 3) if len(x.shape) == 4 else (1,))(x), (CONV, DENSE)),
    keras.layers.RepeatVector: (lambda x: layers.RepeatVector(3)(x), (DENSE,)),
    ops_np.Reshape: (lambda x: ops.reshape(x, (-1,) + tuple(x.shape[1:])), (CONV, DENSE)),
    ops_np.Transpose: (lambda x: ops.transpose(x, (0, 2, 1, 3) if len(x.shape) == 4 else (0, 1)), (CONV, DENSE)),
    ops_np.ExpandDims: (lambda x: ops.squeeze(ops.expand_dims(x, 1), 1), (DENSE,)),
    ops_np.Squeeze: (lambda x: ops.squeeze(ops.expand_dims(x, 1), 1), (DENSE,)),
    ops_np.Repeat: (lambda x: ops.repeat(x, 1, axis=-1), (CONV, DENSE)),
    ops_np.Tile: (lambda x: ops.tile(x, (1,) * len(x.shape)), (CONV, DENSE)),
    ops_np.Ravel: (lambda x: ops.reshape(ops.ravel(x), (-1, x.shape[-1])), (DENSE,)),
    ops_np.Moveaxis: (lambda x: ops.moveaxis(ops.moveaxis(x, 1, 2), 2, 1), (CONV,)),
    ops_np.GetItem: (lambda x: x[:, :], (CONV, DENSE)),
    ops_np.Split: (lambda x: ops.split(x, 1, axis=-1)[0], (CONV, DENSE)),
    ops_core.Cast: (lambda x: ops.cast(x, "float32"), (CONV, DENSE)),
    ops_core.StopGradient: (lambda x: ops.stop_gradient(x), (CONV, DENSE)),
    ops_core.ConvertToTensor: (lambda x: ops.convert_to_tensor(x), (CONV, DENSE)),
}
"""Per class: how to insert it into a tensor, and where (after a ReLU convolution before a max
pool, or between two Dense layers)."""

TIME_DISTRIBUTED = (lambda x: layers.TimeDistributed(layers.Identity())(x), (CONV,))


def model(where: str, insert=None) -> keras.Model:
    keras.utils.set_random_seed(0)
    if where == CONV:
        inputs = keras.Input((8, 8, 3))
        x = layers.Conv2D(8, 3, padding="same", activation="relu", name="conv")(inputs)
        x = insert(x) if insert else x
        x = layers.MaxPooling2D(2, name="pool")(x)
        x = layers.GlobalAveragePooling2D(name="gap")(x)
        return keras.Model(inputs, layers.Dense(4, name="head")(x))
    inputs = keras.Input((6,))
    x = layers.Dense(8, activation="relu", name="d1")(inputs)
    x = insert(x) if insert else x
    return keras.Model(inputs, layers.Dense(4, activation="tanh", name="d2")(x))


def predictions(net: keras.Model) -> dict[str, tuple[float, float]]:
    _, estimates = AutoInit(input_data_mean=0.5, input_data_var=2.0,
                            weight_init_config={"seed": 1}).initialize_model(net, return_estimates=True)
    return {key: (e.mean, e.var) for key, e in estimates.items()}


def test_every_value_keeping_rule_is_exercised():
    keeping = {cls for cls, rule in registered().items() if getattr(rule, "keeps_values", False)}
    assert keeping, "no rule declares keeps_values"
    assert keeping == set(INSERTIONS), (sorted(c.__name__ for c in keeping - set(INSERTIONS)),
                                        sorted(c.__name__ for c in set(INSERTIONS) - keeping))


@pytest.mark.parametrize("insertion", list(INSERTIONS.values()) + [TIME_DISTRIBUTED],
                         ids=[c.__name__ for c in INSERTIONS] + ["TimeDistributed(Identity)"])
def test_inserting_changes_no_prediction(insertion):
    insert, places = insertion
    for where in places:
        plain, inserted = predictions(model(where)), predictions(model(where, insert))
        assert set(plain) <= set(inserted)
        for key, (mean, var) in plain.items():
            got_mean, got_var = inserted[key]
            assert got_mean == pytest.approx(mean, rel=1e-12, abs=1e-300), (where, key)
            assert got_var == pytest.approx(var, rel=1e-12, abs=1e-300), (where, key)


def test_the_check_sees_a_layer_that_changes_the_signal():
    """A Dropout in the same place does change the pooled prediction, so the comparison can fail."""
    plain = predictions(model(CONV))
    dropped = predictions(model(CONV, lambda x: layers.Dropout(0.5)(x)))
    assert dropped["pool"][1] != pytest.approx(plain["pool"][1], rel=1e-3)
