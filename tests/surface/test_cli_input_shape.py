"""``autoinit-sym init --input-shape``: stated input sizes for models with unknown ones, and
one-line errors for bad values."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import run_cli


@pytest.fixture(scope="module")
def text_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved variable-length model: tokens -> Embedding -> Conv1D -> pooling -> Dense."""
    import keras

    tokens = keras.Input((None,), dtype="int32", name="tokens")
    h = keras.layers.Embedding(100, 16, name="emb")(tokens)
    h = keras.layers.Conv1D(16, 3, padding="same", activation="relu", name="conv")(h)
    h = keras.layers.GlobalAveragePooling1D(name="gap")(h)
    path = tmp_path_factory.mktemp("cli_shape") / "text.keras"
    keras.Model(tokens, keras.layers.Dense(2, name="head")(h), name="text").save(path)
    return path


@pytest.mark.parametrize("given", [("--input-shape", "tokens=12"), ("--input-shape", "12")])
def test_input_shape_is_used_without_a_warning(capfd, text_model, tmp_path, given):
    report = tmp_path / "report.json"
    status, out, err = run_cli(capfd, "init", str(text_model), "-o", str(tmp_path / "out.keras"),
                               "--report", str(report), *given)
    assert status == 0, err
    assert "DEFAULT_TIMESTEPS" not in err and "wrote" in out
    assert json.loads(report.read_text())["settings"]["input_shapes"] in ({"tokens": [12]}, [12])


def test_without_input_shape_one_warning_line_names_the_option(capfd, text_model, tmp_path):
    status, _, err = run_cli(capfd, "init", str(text_model), "-o", str(tmp_path / "out.keras"))
    assert status == 0, err
    lines = [line for line in err.splitlines() if "DEFAULT_TIMESTEPS" in line]
    assert len(lines) == 1 and "'tokens' axis 1" in lines[0] and "--input-shape" in lines[0], err


@pytest.mark.parametrize("values, status, fragments", [
    (["tokens=0"], 2, ["--input-shape", "positive integers", "'tokens=0'"]),
    (["tokens=a,3"], 2, ["--input-shape", "'tokens=a,3'"]),
    (["=12"], 2, ["--input-shape", "NAME=D1,D2"]),
    (["tokens="], 2, ["--input-shape", "positive integers"]),
    (["12", "13"], 1, ["without a name", "single-input"]),
    (["tokens=12", "tokens=13"], 1, ["['tokens'] more than once"]),
    (["words=12"], 1, ["unknown input(s) ['words']", "['tokens']"]),
    (["tokens=12,4"], 1, ["input_shapes['tokens']", "2 dimension(s)", "valid: (?,)"]),
])
def test_bad_input_shape_is_one_line_and_nonzero(capfd, text_model, tmp_path, values, status, fragments):
    out = tmp_path / "out.keras"
    argv = ["init", str(text_model), "-o", str(out)]
    for value in values:
        argv += ["--input-shape", value]
    code, _, err = run_cli(capfd, *argv)
    assert code == status
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert not out.exists()
