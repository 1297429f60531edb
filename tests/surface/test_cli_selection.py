"""``autoinit-sym init --layers/--all/--data/--calibrate``: kept layers, data and calibration
from the command line, and one-line errors for bad values."""
from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from helpers import run_cli


@pytest.fixture
def saved(tmp_path):
    inputs = keras.Input((8,), name="x")
    hidden = keras.layers.Dense(8, activation="relu", name="a")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(4, name="b")(hidden))
    model.get_layer("a").trainable = False
    model.save(tmp_path / "m.keras")
    np.save(tmp_path / "d.npy", np.random.default_rng(0).normal(2.0, 1.0, (64, 8)).astype("float32"))
    np.savez(tmp_path / "d.npz", x=np.random.default_rng(1).normal(0.0, 3.0, (64, 8)).astype("float32"))
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object))
    return tmp_path


def test_data_and_calibration_reach_the_report(saved, capfd):
    status, out, err = run_cli(capfd, "init", saved / "m.keras", "-o", saved / "o.keras", "--data", saved / "d.npy",
                           "--calibrate", "--report", saved / "r.json")
    assert status == 0, err
    layers = {record["key"]: record for record in json.loads((saved / "r.json").read_text())["layers"]}
    assert layers["a"]["role"] == "kept" and layers["a"]["method"] == "measured"
    assert layers["b"]["role"] == "initialized" and layers["b"]["calibration"] > 0
    assert layers["a"]["means_in"] == [pytest.approx(float(np.load(saved / "d.npy").mean()), rel=1e-5)]


def test_npz_by_input_name_and_all(saved, capfd):
    before = keras.saving.load_model(saved / "m.keras").get_layer("a").get_weights()[0]
    status, _, err = run_cli(capfd, "init", saved / "m.keras", "-o", saved / "o.keras", "--data", saved / "d.npz",
                         "--all")
    assert status == 0, err
    after = keras.saving.load_model(saved / "o.keras").get_layer("a").get_weights()[0]
    assert not np.array_equal(before, after)


def test_layers_selects_what_is_initialized(saved, capfd):
    before = keras.saving.load_model(saved / "m.keras")
    status, _, err = run_cli(capfd, "init", saved / "m.keras", "-o", saved / "o.keras", "--layers", "a")
    assert status == 0, err
    after = keras.saving.load_model(saved / "o.keras")
    assert not np.array_equal(before.get_layer("a").get_weights()[0], after.get_layer("a").get_weights()[0])
    assert np.array_equal(before.get_layer("b").get_weights()[0], after.get_layer("b").get_weights()[0])


@pytest.mark.parametrize("extra,message", [
    (["--layers", "a,zz"], "does not have"),
    (["--data", "r.json"], "must be a .npy or .npz"),
    (["--data", "missing.npy"], "cannot be read"),
    (["--data", "objects.npy"], "cannot be read"),
    (["--layers", "a", "--all"], "not allowed with"),
])
def test_bad_values_are_one_line_errors(saved, capfd, extra, message):
    extra = [str(saved / e) if e.endswith((".npy", ".json")) else e for e in extra]
    status, _, err = run_cli(capfd, "init", saved / "m.keras", "-o", saved / "o.keras", *extra)
    assert status != 0 and message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (saved / "o.keras").exists()
