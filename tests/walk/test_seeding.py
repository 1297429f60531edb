"""Seeding (issue 13, items 1 and 2): fresh weights by default from Keras's seeding, the same
weights for a configured seed in any process, and every seed keyed by the model's structure,
never by the names Keras generates from a process-wide counter."""
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from autoinit_sym import AutoInit

ROOT = Path(__file__).resolve().parents[2]


class Wiggle(keras.layers.Layer):
    """A layer without a rule: AutoInit probes it (Monte Carlo through the layer)."""

    def call(self, x):
        return x * keras.ops.sin(x)


def text_model(prefix=None):
    """Conv1D -> SpatialDropout1D -> MaxPooling1D -> LSTM -> Bidirectional(GRU) -> probed layer
    -> SimpleRNN -> Dense, every layer unnamed unless ``prefix`` names them."""
    name = (lambda n: f"{prefix}_{n}") if prefix else (lambda n: None)
    inputs = keras.Input((20, 4))
    x = keras.layers.Conv1D(8, 3, activation="relu", name=name("conv"))(inputs)
    x = keras.layers.SpatialDropout1D(0.2, name=name("drop"))(x)
    x = keras.layers.MaxPooling1D(2, name=name("pool"))(x)
    x = keras.layers.LSTM(8, return_sequences=True, name=name("lstm"))(x)
    x = keras.layers.Bidirectional(keras.layers.GRU(4, return_sequences=True, name=name("gru")),
                                   name=name("bidirectional"))(x)
    x = Wiggle(name=name("wiggle"))(x)
    x = keras.layers.SimpleRNN(4, name=name("rnn"))(x)
    return keras.Model(inputs, keras.layers.Dense(2, name=name("head"))(x))


def weights_of(model):
    return [np.array(w) for w in model.get_weights()]


def initialized(seed, prefix=None, keras_seed=0, init_seed=None):
    """A fresh text model (Keras weights from ``keras_seed``), initialized with ``seed``; with
    ``init_seed``, Keras's seed is set to it again just before initializing."""
    keras.utils.set_random_seed(keras_seed)
    model = text_model(prefix)
    if init_seed is not None:
        keras.utils.set_random_seed(init_seed)
    model, estimates = AutoInit(weight_init_config={"seed": seed}).initialize_model(model, return_estimates=True)
    return weights_of(model), [tuple(e) for e in estimates.values()]


def assert_same(a, b):
    assert len(a[0]) == len(b[0])
    for x, y in zip(a[0], b[0]):
        np.testing.assert_array_equal(x, y)
    assert a[1] == b[1]


def test_unnamed_builds_in_one_process_give_identical_estimates_and_weights():
    """The second build's auto-generated names differ (forward_gru_1, ...); nothing else does."""
    first, second = initialized(seed=5), initialized(seed=5)
    assert_same(first, second)


def test_names_do_not_enter_the_seeds():
    assert_same(initialized(seed=5, prefix="a"), initialized(seed=5, prefix="b"))


def test_default_draws_follow_keras_seeding():
    """seed=None: keras.utils.set_random_seed(s) followed by the same calls draws the same weights
    (and estimates, whose Monte Carlo runs through the drawn kernels); another s draws others."""
    assert_same(initialized(seed=None, init_seed=3), initialized(seed=None, init_seed=3))
    other = initialized(seed=None, init_seed=4)[0]
    assert not np.array_equal(initialized(seed=None, init_seed=3)[0][0], other[0])


def test_numpy_integer_seed_is_the_int_seed():
    assert_same(initialized(seed=np.int64(5)), initialized(seed=5))
    assert not np.array_equal(initialized(seed=6)[0][0], initialized(seed=5)[0][0])


def fresh_kernels(draws, seed):
    """The kernel of one Dense(64 -> 64) layer after each of ``draws`` initializations."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(64)])
    init = AutoInit(weight_init_config={"seed": seed})
    return np.stack([keras.ops.convert_to_numpy(init.initialize_model(model).layers[0].kernel) for _ in range(draws)])


def test_default_draws_are_independent_on_every_call():
    """Averaged over n calls, independent draws have variance std^2 / n per weight (n = 8;
    the same draw every call would keep std^2); a configured seed repeats its draw exactly."""
    draws = 8
    kernels = fresh_kernels(draws, seed=None)
    std2 = kernels.var(axis=(1, 2)).mean()
    assert std2 == pytest.approx(1.0 / 64, rel=0.05)  # Var(W) = 1 / fan_in for N(0, 1) inputs
    assert kernels.mean(axis=0).var() == pytest.approx(std2 / draws, rel=0.1)  # 4096 weights: 2.2% s.e.
    seeded = fresh_kernels(3, seed=11)
    assert all(np.array_equal(seeded[0], k) for k in seeded[1:])


SUBPROCESS = """
import hashlib, json, random, sys
import keras
sys.path.insert(0, sys.argv[1])
keras.layers.Dense(3), keras.layers.GRU(2), keras.random.SeedGenerator(), random.random()  # another history
from test_seeding import initialized
weights, estimates = initialized(seed=5)
print(json.dumps([[hashlib.sha256(w.tobytes()).hexdigest() for w in weights], estimates]))
"""


def test_seeded_weights_are_the_same_in_another_process():
    """Another process, whose history (auto-generated names, Python's random state) differs."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "KERAS_BACKEND": keras.backend.backend()}
    out = subprocess.run([sys.executable, "-c", SUBPROCESS, str(Path(__file__).parent)], capture_output=True,
                         text=True, env=env, cwd=ROOT, check=True).stdout.strip().splitlines()[-1]
    digests, estimates = json.loads(out)
    weights, here = initialized(seed=5)
    assert digests == [hashlib.sha256(w.tobytes()).hexdigest() for w in weights]
    assert [list(e) for e in here] == estimates
