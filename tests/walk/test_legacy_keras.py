"""Keras 2 models (tf_keras) and Keras 2 configs in the TF-2.4-era format (issue 15).

Configs are written here with tf_keras (``benchmarks.legacy_networks``) and rewritten as TF 2.4
saved them; each structure Keras 3 cannot load (nested Functional submodels called at several
nodes, SpatialDropout1D, GRU/LSTM with ``time_major``, TF op layers, Lambda, Reshape and
ZeroPadding3D changing channel counts) initializes (the estimates against the real initialized
tf_keras model: tests/slow/test_legacy_estimates.py).
"""
import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

tf_keras = pytest.importorskip("tf_keras", reason="tf_keras (the extra autoinit-sym[legacy]) is not installed")

import keras  # noqa: E402
from keras.src.saving.serialization_lib import SafeModeScope  # noqa: E402

from autoinit_sym import AutoInit  # noqa: E402
from autoinit_sym.walk import legacy  # noqa: E402
from autoinit_sym.walk.loading import load  # noqa: E402
from benchmarks import legacy_networks as networks  # noqa: E402
from helpers import run_cli  # noqa: E402

STRUCTURES = ("padded_channels", "recurrent", "sequential", "shared_blocks", "tf_ops", "with_lambda", "wrappers")


def _config(name: str) -> dict:
    return networks.tf24_config(getattr(networks, name)())


def _initialize(model, seed: int):
    with SafeModeScope(False):
        return AutoInit(weight_init_config={"seed": seed}).initialize_model(model, return_estimates=True)


@pytest.mark.parametrize("name", STRUCTURES)
def test_tf24_config_initializes_the_tf_keras_model(name):
    """A TF-2.4-style config is recognized, built with tf_keras and initialized: the model
    returned is a tf_keras model whose variables hold the draws (each redrawn weight, found through
    a fresh twin's pairing, has a sample standard deviation within 25% of the estimates' one), and every weighted layer and
    TF op layer has an estimate under its own name."""
    config = _config(name)
    assert config["keras_version"] == "2.4.0"
    assert not any("module" in layer for layer in config["config"]["layers"])
    assert legacy.is_keras2_config(config)
    model, estimates = _initialize(config, seed=3)
    assert legacy.is_tf_keras_model(model)
    named = {layer.name for layer in model.layers if layer.weights or layer.name.startswith("tf.")}
    assert named <= {key.split("#")[0] for key in estimates}
    variables = {mine.path: theirs for mine, theirs in legacy.weight_pairs(model, legacy.keras3_twin(model))}
    redrawn = [(path, std) for estimate in estimates.values() for path, std in estimate.weights.items()]
    assert redrawn
    for path, std in redrawn:
        values = variables[path].numpy()
        assert abs(float(np.std(values)) - float(std)) <= 0.25 * float(std), (path, np.std(values), std)


def test_nested_submodels_are_called_at_several_nodes():
    """The shared-blocks config really holds what Keras 3 rejects: a submodel called at node
    indices above 0 (``block`` at 1, 2 and 3); Keras 3's own loader refuses it."""
    config = _config("shared_blocks")
    block = next(layer for layer in config["config"]["layers"] if layer["name"] == "block")
    assert len(block["inbound_nodes"]) == 3
    consumers = [node for layer in config["config"]["layers"] for node in layer["inbound_nodes"]
                 if node and node[0][0] == "block"]
    assert [ref[1] for ref in consumers[0]] == [1, 2, 3]  # "joined" takes block's nodes 1, 2, 3
    with pytest.raises(Exception):
        keras.saving.deserialize_keras_object(config)


def test_names_trainable_flags_and_dtype_policies_survive():
    """A tf_keras model object is initialized in place: same object, names, trainable flags
    and dtype policies (mixed_float16 included); a frozen layer keeps its weights, the others
    are redrawn into the user's own variables."""
    L = tf_keras.layers
    x = tf_keras.Input((16,), name="x")
    h = L.Dense(32, activation="relu", name="frozen", trainable=False)(x)
    h = L.Dense(32, activation="relu", name="half", dtype="mixed_float16")(h)
    model = tf_keras.Model(x, L.Dense(4, name="head")(h), name="mixed")
    before = {w.name: w.numpy().copy() for w in model.weights}
    described = [(layer.name, layer.trainable, layer.dtype_policy.name) for layer in model.layers]
    returned, estimates = _initialize(model, seed=0)
    assert returned is model
    assert [(layer.name, layer.trainable, layer.dtype_policy.name) for layer in model.layers] == described
    np.testing.assert_array_equal(model.get_layer("frozen").kernel.numpy(), before["frozen/kernel:0"])
    for name in ("half/kernel:0", "head/kernel:0"):
        after = next(w for w in model.weights if w.name == name).numpy()
        assert not np.array_equal(after, before[name])
    assert estimates["frozen"].method == "measured"
    assert model.get_layer("half").kernel.dtype == "float32"


def test_layer_selection_by_tf_keras_layers_and_predicates():
    """``layers=`` given as tf_keras layer objects or as a predicate on tf_keras layers selects
    the same twin layers as their names (walk.legacy.twin_selection)."""
    from autoinit_sym.walk.selection import kept_layers

    model = networks.shared_blocks()
    twin = legacy.keras3_twin(model)
    by_name = kept_layers(twin, ["head", "block_dense"])
    block_dense = model.get_layer("block").get_layer("block_dense")
    assert kept_layers(twin, legacy.twin_selection([model.get_layer("head"), block_dense], model, twin)) == by_name
    chosen = legacy.twin_selection(lambda layer: isinstance(layer, tf_keras.layers.Dense)
                                   and layer.name in ("head", "block_dense"), model, twin)
    assert kept_layers(twin, chosen) == by_name
    assert len(by_name) == len([w for w in model.weights if w.name.endswith("kernel:0")]) - 2


def test_sequential_config_declaring_its_input_on_its_first_layer():
    """Older Sequential configs have no InputLayer entry: the first layer's batch_input_shape
    declares the input."""
    config = _config("sequential")
    layers = config["config"]["layers"]
    assert layers[0]["class_name"] == "InputLayer"
    layers[1]["config"]["batch_input_shape"] = layers.pop(0)["config"]["batch_input_shape"]
    model, estimates = _initialize(config, seed=0)
    assert [layer.name for layer in model.layers] == ["first", "drop", "head"]
    assert list(estimates) == ["first", "drop", "head"] and float(estimates["head"][1]) == pytest.approx(1.0)


def test_tf_op_with_a_constant_first_argument():
    """``tf.math.maximum(0.0, h)`` records the constant in the first argument's place and the
    tensor among the keyword arguments; it is a ReLU: E = 1/sqrt(2 pi), Var = 1/2 - 1/(2 pi)."""
    import tensorflow as tf

    x = tf_keras.Input((16,), name="x")
    h = tf.math.maximum(0.0, tf_keras.layers.Dense(16, name="dense")(x))
    model = tf_keras.Model(x, tf_keras.layers.Dense(4, name="head")(h), name="constant_first")
    _, estimates = _initialize(model, seed=0)
    key = next(k for k in estimates if k.startswith("tf.math.maximum"))
    np.testing.assert_allclose([float(estimates[key][0]), float(estimates[key][1])],
                               [1 / np.sqrt(2 * np.pi), 0.5 - 1 / (2 * np.pi)], rtol=1e-6)


def test_constrain_weights_is_refused_for_tf_keras_models():
    model = networks.tf_ops()
    twin = legacy.keras3_twin(model)
    with pytest.raises(ValueError, match=r"constrain_weights=True is not available for tf_keras model 'tf_ops"):
        legacy.check_settings(model, twin, constrain_weights=True)
    legacy.check_settings(model, twin, constrain_weights=False)
    keras_model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    legacy.check_settings(keras_model, keras_model, constrain_weights=True)


def _lambda_config() -> dict:
    return _config("with_lambda")


def _layer(config: dict, name: str) -> dict:
    return next(layer for layer in config["config"]["layers"] if layer["name"] == name)


def test_lambda_bytecode_is_refused_in_safe_mode():
    """A Lambda's bytecode is not loaded in safe mode: the error names the layer and the way out."""
    with pytest.raises(ValueError, match=r"layer 'affine' \(Lambda\) holds Python bytecode.*--unsafe"):
        AutoInit().initialize_model(_lambda_config())


def test_lambda_bytecode_from_another_python_names_the_layer():
    """Bytecode this Python cannot load (damaged, or written by another version) is named."""
    config = _lambda_config()
    _layer(config, "affine")["config"]["function"][0] = base64.b64encode(b"\xe3\x00\x07not code").decode()
    with SafeModeScope(False), pytest.raises(ValueError, match=r"layer 'affine' \(Lambda\).*cannot be loaded by"):
        AutoInit().initialize_model(config)


def test_time_major_true_is_refused():
    config = _config("recurrent")
    _layer(config, "gru")["config"]["time_major"] = True
    with pytest.raises(ValueError, match=r"layer 'gru' \(GRU\) has time_major=True"):
        AutoInit().initialize_model(config)


def test_unknown_tf_op_names_the_layer_and_leaves_the_model_untouched():
    import tensorflow as tf

    x = tf_keras.Input((8,), name="x")
    h = tf_keras.layers.Dense(8, name="dense")(x)
    model = tf_keras.Model(x, tf.math.bessel_i0(h), name="bessel")
    before = [w.numpy().copy() for w in model.weights]
    with pytest.raises(ValueError, match=r"layer 'tf.math.bessel_i0' \(TFOpLambda\) applies tf.math.bessel_i0"):
        AutoInit().initialize_model(model)
    for weight, old in zip(model.weights, before):
        np.testing.assert_array_equal(weight.numpy(), old)


def test_without_tf_keras_a_config_names_the_extra(monkeypatch):
    config = _config("padded_channels")
    monkeypatch.setitem(sys.modules, "tf_keras", None)
    with pytest.raises(ImportError, match=r"autoinit-sym\[legacy\]"):
        load(config)


def test_keras3_configs_are_not_taken_for_keras2():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    assert not legacy.is_keras2_config(json.loads(model.to_json()))
    functional = keras.Model(model.inputs, model.outputs)
    assert not legacy.is_keras2_config(json.loads(functional.to_json()))


LEGACY_SCRIPT = """
import numpy as np, tensorflow as tf
from autoinit_sym import AutoInit
model = tf.keras.Sequential([tf.keras.Input((16,)), tf.keras.layers.Dense(64, activation="relu"),
                             tf.keras.layers.Dense(64, activation="relu"), tf.keras.layers.Dense(4)])
before = [w.numpy().copy() for w in model.weights]
returned = AutoInit(weight_init_config={"seed": 0}).initialize_model(model)
x = np.random.default_rng(0).standard_normal((4096, 16)).astype("float32")
print(type(model).__module__.split(".")[0], returned is model,
      all(not np.array_equal(w.numpy(), b) for w, b in zip(model.weights[::2], before[::2])),
      float(np.var(model(x).numpy())))
"""


def test_tf_use_legacy_keras_makes_tf_keras_a_tf_keras_model():
    """Under TF_USE_LEGACY_KERAS=1, ``tf.keras`` is tf_keras: its models initialize too."""
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run([sys.executable, "-c", LEGACY_SCRIPT], env=env, capture_output=True, text=True,
                          timeout=300, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr[-2000:]
    module, same, redrawn, variance = done.stdout.split()[-4:]
    assert (module, same, redrawn) == ("tf_keras", "True", "True")
    assert 0.5 < float(variance) < 2.0


def test_cli_initializes_a_keras2_json_config(tmp_path, capfd):
    """``autoinit-sym init`` on a TF-2.4-style JSON config writes the tf_keras model initialized
    as the Python API initializes it (same seed, same weights)."""
    source = tmp_path / "padded.json"
    source.write_text(json.dumps(_config("padded_channels")))
    out = tmp_path / "padded.keras"
    code, _, stderr = run_cli(capfd, "init", str(source), "-o", str(out), "--seed", "1")
    assert code == 0, stderr
    saved = tf_keras.models.load_model(out)
    reference, _ = _initialize(json.loads(source.read_text()), seed=1)
    assert [w.name for w in saved.weights] == [w.name for w in reference.weights]
    for mine, theirs in zip(saved.weights, reference.weights):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())


def test_cli_refuses_lambda_bytecode_without_unsafe(tmp_path, capfd):
    """On the command line a Keras 2 config's Lambda bytecode needs --unsafe; the error names it."""
    source = tmp_path / "with_lambda.json"
    source.write_text(json.dumps(_lambda_config()))
    out = tmp_path / "with_lambda.keras"
    code, _, stderr = run_cli(capfd, "init", str(source), "-o", str(out))
    assert code != 0 and "layer 'affine' (Lambda)" in stderr and "--unsafe" in stderr and not out.exists()
    code, _, stderr = run_cli(capfd, "init", str(source), "-o", str(out), "--unsafe")
    assert code == 0, stderr
    assert tf_keras.models.load_model(out, safe_mode=False).get_layer("affine").function(np.float32(1.0)) == 1.0
