"""Distribution across devices (issue 15): ``initialize_model`` inside a ``tf.distribute``
MirroredStrategy scope (two logical CPU devices) initializes every replica's copy alike; on
JAX, ``keras.distribution`` DataParallel and ModelParallel keep every variable's sharding, and
each shard is drawn for the device it lives on. Each case runs in its own process, since the
devices must be configured before TensorFlow or JAX starts."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

MODEL = """
import json
import numpy as np
import keras
from autoinit_sym import AutoInit


def mlp():
    inputs = keras.Input((256,), name="x")
    x = keras.layers.Dense(512, activation="relu", name="d1")(inputs)
    return keras.Model(inputs, keras.layers.Dense(128, name="d2")(x))


def initialized(model):
    return AutoInit(weight_init_config={"seed": 3}).initialize_model(model, return_estimates=True)
"""

MIRRORED = MODEL + """
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    model = mlp()
    before = [[c.numpy() for c in strategy.experimental_local_results(v.value)] for v in model.weights]
    model, estimates = initialized(model)
plain, _ = initialized(mlp())
out = []
for variable, old, reference in zip(model.weights, before, plain.weights):
    copies = [c.numpy() for c in strategy.experimental_local_results(variable.value)]
    out.append({"path": variable.path, "mirrored": type(variable.value).__name__,
                "devices": [c.device for c in strategy.experimental_local_results(variable.value)],
                "copies_equal": all(np.array_equal(copies[0], c) for c in copies[1:]),
                "changed": not np.array_equal(old[0], copies[0]),
                "equals_unmirrored": bool(np.array_equal(copies[0], keras.ops.convert_to_numpy(reference))),
                "std": float(copies[0].std()),
                "expected": [float(s) for e in estimates.values() for p, s in e.weights.items()
                             if p == variable.path]})
print(json.dumps(out))
"""

SHARDED = MODEL + """
import sys
import jax
from keras import distribution
from autoinit_sym.walk import drawing

requested = []
real_block = drawing.RowSource.block
drawing.RowSource.block = lambda self, index: requested.append((self.shape, tuple(
    (s.start, s.stop) for s in index))) or real_block(self, index)
plain, _ = initialized(mlp())
requested.clear()
devices = jax.devices()
if sys.argv[1] == "data":
    distribution.set_distribution(distribution.DataParallel(devices=devices))
else:
    mesh = distribution.DeviceMesh((2, 2), ("batch", "model"), devices)
    layouts = distribution.LayoutMap(mesh)
    layouts["d1/kernel"] = (None, "model")
    layouts["d2/kernel"] = ("model", None)
    distribution.set_distribution(distribution.ModelParallel(layout_map=layouts, batch_dim_name="batch"))
model = mlp()
before = {v.path: (v.value.sharding, np.asarray(v.value)) for v in model.weights}
model, estimates = initialized(model)
out = []
for variable, reference in zip(model.weights, plain.weights):
    value = variable.value
    sharding, old = before[variable.path]
    out.append({"path": variable.path, "spec": str(getattr(value.sharding, "spec", "")),
                "same_sharding": value.sharding == sharding,
                "devices": len(value.sharding.device_set),
                "shard_shapes": sorted({tuple(s.data.shape) for s in value.addressable_shards}),
                "changed": not np.array_equal(old, np.asarray(value)),
                "equals_unsharded": bool(np.array_equal(np.asarray(value), keras.ops.convert_to_numpy(reference)))})
print(json.dumps({"variables": out, "requested": requested}))
"""


def run(script: str, backend: str, *args: str, **env: str) -> object:
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "KERAS_BACKEND": backend, **env}
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True,
                          env=environment, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_mirrored_strategy_scope_initializes_every_replica():
    pytest.importorskip("tensorflow")
    variables = run(MIRRORED, "tensorflow")
    assert [v["path"] for v in variables] == ["d1/kernel", "d1/bias", "d2/kernel", "d2/bias"]
    for v in variables:
        assert v["mirrored"] == "MirroredVariable" and len(set(v["devices"])) == 2, v
        assert v["copies_equal"] and v["equals_unmirrored"], v
    for v in variables[::2]:  # the kernels: AutoInit's scale, on every replica
        (expected,) = v["expected"]
        assert v["changed"] and v["std"] == pytest.approx(expected, rel=0.03), v


@pytest.mark.parametrize("mode", ["data", "model"])
def test_jax_distribution_keeps_the_sharding_and_draws_each_shard_where_it_lives(mode):
    pytest.importorskip("jax")
    found = run(SHARDED, "jax", mode, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    variables = {v["path"]: v for v in found["variables"]}
    assert set(variables) == {"d1/kernel", "d1/bias", "d2/kernel", "d2/bias"}
    for v in variables.values():
        assert v["same_sharding"] and v["devices"] == 4 and v["equals_unsharded"], v
    assert variables["d1/kernel"]["changed"] and variables["d2/kernel"]["changed"]
    kernels = {(256, 512): "d1/kernel", (512, 128): "d2/kernel"}
    blocks = [(kernels[tuple(shape)], tuple(map(tuple, index))) for shape, index in found["requested"]
              if tuple(shape) in kernels]
    if mode == "model":  # column shards of d1, row shards of d2: never the whole kernel
        assert variables["d1/kernel"]["shard_shapes"] == [[256, 256]]
        assert variables["d2/kernel"]["shard_shapes"] == [[256, 128]]
        assert sorted({index for name, index in blocks if name == "d1/kernel"}) == [
            ((None, None), (0, 256)), ((None, None), (256, 512))]
        assert sorted({index for name, index in blocks if name == "d2/kernel"}) == [
            ((0, 256), (None, None)), ((256, 512), (None, None))]
    else:  # replicated: every device holds the whole kernel, drawn once and put on each
        assert variables["d1/kernel"]["shard_shapes"] == [[256, 512]]
        assert [index for name, index in blocks if name == "d1/kernel"] == [((None, None), (None, None))]
