"""The autoinit-sym command line: every subcommand, and one-line errors for bad input."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from helpers import run_cli

CUSTOM_MODULE = textwrap.dedent('''
    import keras
    from autoinit_sym.estimators.base import LayerOutputDistributionEstimator


    class Doubler(keras.layers.Layer):
        def call(self, x):
            return 2.0 * x


    class DoublerEstimator(LayerOutputDistributionEstimator):
        def estimate(self, means_in, vars_in):
            return 2.0 * means_in[0], 4.0 * vars_in[0]


    custom_distribution_estimators = {Doubler: DoublerEstimator}
''')


def assert_one_line_error(status: int, err: str, *fragments: str) -> None:
    assert status != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Saved models (.keras, .h5, .json; plain and with a custom layer) and broken files."""
    import keras

    root = tmp_path_factory.mktemp("cli")
    module = root / "my_layers.py"
    module.write_text(CUSTOM_MODULE)
    sys.path.insert(0, str(root))
    try:
        import my_layers
    finally:
        sys.path.remove(str(root))

    def plain() -> keras.Model:
        inputs = keras.Input((16,))
        x = keras.layers.Dense(32, activation="tanh", name="hidden")(inputs)
        return keras.Model(inputs, keras.layers.Dense(4, name="head")(x), name="plain")

    custom = keras.Sequential([keras.Input((8,)), keras.layers.Dense(8, activation="relu", name="dense"),
                               my_layers.Doubler(name="doubler")], name="custom")
    out = {"module": module, "dir": root}
    plain().save(out.setdefault("plain_keras", root / "plain.keras"))
    plain().save(out.setdefault("plain_h5", root / "plain.h5"))
    (out.setdefault("plain_json", root / "plain.json")).write_text(plain().to_json())
    custom.save(out.setdefault("custom_keras", root / "custom.keras"))
    custom.save(out.setdefault("custom_h5", root / "custom.h5"))
    (out.setdefault("custom_json", root / "custom.json")).write_text(custom.to_json())
    for suffix, text in ((".keras", "not a zip"), (".h5", "not hdf5"), (".json", "{not json")):
        (out.setdefault(f"corrupt{suffix}", root / f"corrupt{suffix}")).write_text(text)
    return out


# ---- usage errors (argparse) --------------------------------------------------------------

@pytest.mark.parametrize("argv, fragment", [
    ((), "required"),
    (("frobnicate",), "invalid choice"),
    (("init", "m.keras"), "--output"),
    (("init", "m.keras", "-o", "o.keras", "--input-var", "0"), "--input-var: must be > 0"),
    (("init", "m.keras", "-o", "o.keras", "--signal-variance", "-1"), "--signal-variance: must be > 0"),
    (("init", "m.keras", "-o", "o.keras", "--input-mean", "abc"), "not a number"),
    (("visualize", "m.keras", "--plot", "p.png", "--samples", "1"), "--samples: must be >= 2"),
    (("table",), "--format"),
    (("derive", "x", "--param", "alpha"), "NAME=VALUE"),
])
def test_bad_usage_is_one_line_and_status_2(capfd, argv, fragment):
    status, _, err = run_cli(capfd, *argv)
    assert status == 2
    assert_one_line_error(status, err, fragment)


# ---- bad input files -----------------------------------------------------------------------

@pytest.mark.parametrize("name, fragments", [
    ("missing.keras", ("not found",)),
    ("corrupt.keras", ("not a valid .keras file",)),
    ("corrupt.h5", ("could not load a model",)),
    ("corrupt.json", ("could not load a model",)),
    ("custom_keras", ("needs custom", "Doubler", "--custom-objects")),
    ("custom_h5", ("needs custom", "Doubler", "--custom-objects")),
    ("custom_json", ("needs custom", "Doubler", "--custom-objects")),
])
@pytest.mark.parametrize("command", ["init", "visualize"])
def test_bad_model_file_is_one_line(capfd, files, tmp_path, name, fragments, command):
    model = files.get(name, files["dir"] / name)
    extra = ("-o", str(tmp_path / "out.keras")) if command == "init" else ("--plot", str(tmp_path / "p.png"))
    status, _, err = run_cli(capfd, command, str(model), *extra)
    assert status == 1
    assert_one_line_error(status, err, *fragments)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("extra, fragment", [
    (("--distribution", "cauchy"), "unknown distribution 'cauchy'"),
    (("--custom-objects", "no_such_module_xyz"), "'no_such_module_xyz' not found"),
    (("--custom-objects", "no/such/file.py"), "not found"),
])
def test_bad_init_options_are_one_line(capfd, files, tmp_path, extra, fragment):
    status, _, err = run_cli(capfd, "init", str(files["plain_keras"]), "-o", str(tmp_path / "o.keras"), *extra)
    assert_one_line_error(status, err, fragment)


def test_init_output_must_be_keras(capfd, files, tmp_path):
    status, _, err = run_cli(capfd, "init", str(files["plain_keras"]), "-o", str(tmp_path / "o.h5"))
    assert_one_line_error(status, err, "must end in .keras")


@pytest.mark.parametrize("before", [True, False])
def test_debug_shows_the_traceback(capfd, files, tmp_path, before):
    argv = ["init", str(files["corrupt.h5"]), "-o", str(tmp_path / "o.keras")]
    status, _, err = run_cli(capfd, *(["--debug", *argv] if before else [*argv, "--debug"]))
    assert status == 1
    assert "Traceback" in err


# ---- init and visualize on good input ------------------------------------------------------

@pytest.mark.parametrize("source", ["plain_keras", "plain_h5", "plain_json"])
def test_init_writes_an_initialized_model_and_a_report(capfd, files, tmp_path, source):
    import keras

    out, report = tmp_path / "init.keras", tmp_path / "report.json"
    status, stdout, err = run_cli(capfd, "init", str(files[source]), "-o", str(out), "--report", str(report),
                                  "--input-mean", "0.5", "--input-var", "4", "--seed", "3")
    assert status == 0, err
    assert "wrote" in stdout
    data = json.loads(report.read_text())
    assert data["settings"]["input_data_var"] == 4.0
    layers = {entry["layer"]: entry for entry in data["layers"]}
    assert {"hidden", "head"} <= set(layers)
    assert all(entry["method"] for entry in data["layers"])
    assert layers["head"]["mean"] == pytest.approx(0.0, abs=1e-6)
    assert layers["head"]["var"] == pytest.approx(1.0, rel=1e-6)

    # The written model really is initialized: its hidden pre-activation has variance 1
    # for inputs N(0.5, 4) (variance 4 + mean^2 0.25 times fan-in 16 times Var(W) = 1).
    model = keras.saving.load_model(out)
    kernel = np.asarray(model.get_layer("hidden").kernel)
    assert kernel.var() * 16 * (4.0 + 0.25) == pytest.approx(1.0, rel=0.2)


def test_init_with_custom_objects_module_and_its_estimators(capfd, files, tmp_path):
    report = tmp_path / "report.json"
    status, _, err = run_cli(capfd, "init", str(files["custom_h5"]), "-o", str(tmp_path / "c.keras"),
                             "--custom-objects", str(files["module"]), "--report", str(report))
    assert status == 0, err
    layers = {entry["layer"]: entry for entry in json.loads(report.read_text())["layers"]}
    assert layers["doubler"]["var"] == pytest.approx(4.0 * layers["dense"]["var"])


def test_visualize_writes_a_png_and_prints_the_table(capfd, files, tmp_path):
    plot = tmp_path / "signal.png"
    status, stdout, err = run_cli(capfd, "visualize", str(files["plain_json"]), "--plot", str(plot),
                                  "--samples", "64", "--log-variance", "on")
    assert status == 0, err
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "hidden" in stdout and "default var" in stdout


# ---- table and derive (no TensorFlow) ------------------------------------------------------

@pytest.mark.parametrize("fmt", ["markdown", "latex", "json", "csv"])
def test_table_formats(capfd, tmp_path, fmt):
    out = tmp_path / f"table.{fmt}"
    status, _, err = run_cli(capfd, "table", "--format", fmt, "--names", "relu,elu", "-o", str(out))
    assert status == 0, err
    text = out.read_text()
    assert "relu" in text and "elu" in text and "tanh" not in text
    if fmt == "json":
        json.loads(text)


def test_table_to_stdout(capfd):
    status, stdout, _ = run_cli(capfd, "table", "--format", "markdown", "--names", "relu")
    assert status == 0
    assert stdout.lstrip().startswith("|")


@pytest.mark.parametrize("argv, fragment", [
    (("table", "--format", "docx"), "docx"),
    (("table", "--format", "json", "--names", "relu,not_an_activation"), "not_an_activation"),
    (("derive", "x*tanh(x"), "pars"),
    (("derive", "x*sin(y)"), "y"),
    (("derive", "eluu"), "elu"),
    (("derive", "elu", "--param", "beta=2"), "beta"),
])
def test_table_and_derive_bad_input_is_one_line(capfd, argv, fragment):
    status, _, err = run_cli(capfd, *argv)
    assert_one_line_error(status, err, fragment)


def test_derive_closed_form_prints_formulas_and_values(capfd):
    status, stdout, err = run_cli(capfd, "derive", "Max(0, x) + 0.1*Min(0, x)", "--name", "leaky")
    assert status == 0, err
    assert "method: closed_form" in stdout
    assert "E[leaky(X)]" in stdout and "erf" in stdout
    # mean of leaky relu with slope 0.1 at mu=0, var=1: 0.9 / sqrt(2 pi)
    row = next(line for line in stdout.splitlines() if line.split()[:2] == ["0", "1"])
    assert float(row.split()[2]) == pytest.approx(0.9 / np.sqrt(2 * np.pi), rel=1e-9)


def test_derive_quadrature_and_parameters(capfd):
    status, stdout, _ = run_cli(capfd, "derive", "tanh")
    assert status == 0 and "quadrature" in stdout
    status, stdout, _ = run_cli(capfd, "derive", "elu", "--param", "alpha=0.5")
    assert status == 0 and "closed_form" in stdout


def test_table_and_derive_do_not_import_tensorflow(tmp_path):
    code = ("import sys; from autoinit_sym.cli import main; "
            "assert main(['table', '--format', 'csv', '--names', 'relu']) == 0; "
            "assert main(['derive', 'x**2']) == 0; "
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr


def test_console_script_reports_one_line_without_tensorflow_noise(tmp_path):
    """The installed entry point, in a fresh process: TensorFlow's start-up logging is silenced."""
    script = Path(sys.executable).with_name("autoinit-sym")
    (tmp_path / "bad.json").write_text("{not json")
    result = subprocess.run([str(script), "init", "bad.json", "-o", "o.keras"],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 1
    assert_one_line_error(result.returncode, result.stderr, "could not load a model")
