"""The command line with hostile or careless input: outputs that collide with inputs or each
other, writes that fail half-way, unsafe model files, odd JSON, odd expressions, Ctrl-C."""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from autoinit_sym import cli
from helpers import run_cli

SCRIPT = Path(sys.executable).with_name("autoinit-sym")
LAYERS_MODULE = textwrap.dedent('''
    import warnings

    import keras


    class Flaky(keras.layers.Layer):
        """Fails in training mode (as the probe runs it) with a multi-line, coloured message."""

        def call(self, x, training=None):
            if training:
                raise ValueError("\\x1b[1mExploded\\x1b[0m on purpose.\\n\\n  Arguments received:\\n  x=tensor")
            return x


    class Chatty(keras.layers.Layer):
        def call(self, x):
            warnings.warn("first line\\nsecond line \\x1b[31mred\\x1b[0m")
            return x
''')


def one_line_error(status, err, *fragments):
    assert status != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err and "\x1b" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def leftovers(folder: Path) -> list[str]:
    """Temporary files left behind in ``folder``."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    import keras

    root = tmp_path_factory.mktemp("safety")
    inputs = keras.Input((16,), name="x")
    hidden = keras.layers.Dense(32, activation="tanh", name="hidden")(inputs)
    keras.Model(inputs, keras.layers.Dense(4, name="head")(hidden), name="plain").save(root / "plain.keras")
    inputs = keras.Input((256,))
    keras.Model(inputs, keras.layers.Dense(256, name="wide")(inputs)).save(root / "wide.keras")  # 256 KiB
    inputs = keras.Input((8,))
    doubled = keras.layers.Lambda(lambda t: t * 2.0, name="double")(keras.layers.Dense(8, name="d")(inputs))
    lam = keras.Model(inputs, keras.layers.Dense(4, name="out")(doubled))
    lam.save(root / "lambda.keras")
    lam.save(root / "lambda.h5")
    (root / "lambda.json").write_text(lam.to_json())
    (root / "layers_mod.py").write_text(LAYERS_MODULE)
    return root


@pytest.fixture
def model(saved, tmp_path):
    """A copy of the plain model in the test's own folder, and its bytes."""
    path = tmp_path / "m.keras"
    path.write_bytes((saved / "plain.keras").read_bytes())
    return path


# --- part 3: outputs never clobber inputs or each other, and appear all at once --------------

@pytest.mark.parametrize("extra", [
    ("-o", "{model}"),
    ("-o", "{dir}/sub/../m.keras"),
    ("-o", "{dir}/link.keras"),
    ("-o", "{dir}/hard.keras"),
    ("-o", "{dir}/o.keras", "--report", "{dir}/o.keras"),
    ("-o", "{dir}/o.keras", "--report", "{model}"),
    ("-o", "{dir}/o.keras", "--plot", "{model}"),
    ("-o", "{dir}/o.keras", "--plot", "{dir}/o.keras"),
    ("-o", "{dir}/o.keras", "--report", "{dir}/r.json", "--plot", "{dir}/./r.json"),
])
def test_colliding_paths_are_refused_before_any_work(capfd, model, tmp_path, extra):
    (tmp_path / "sub").mkdir()
    (tmp_path / "link.keras").symlink_to(model)
    os.link(model, tmp_path / "hard.keras")
    original = model.read_bytes()
    listing = sorted(os.listdir(tmp_path))
    argv = [a.format(model=model, dir=tmp_path) for a in extra]
    status, _, err = run_cli(capfd, "init", model, *argv)
    assert status == 1
    one_line_error(status, err, "is the same file as the", "give different paths")
    assert model.read_bytes() == original
    assert sorted(os.listdir(tmp_path)) == listing


def test_names_differing_in_case_collide_where_the_filesystem_ignores_case(capfd, model, tmp_path, monkeypatch):
    assert not cli.case_insensitive(tmp_path)  # Linux: these are two files
    status, _, err = run_cli(capfd, "init", model, "-o", tmp_path / "out.keras", "--report", tmp_path / "OUT.KERAS")
    assert status == 0, err
    assert {"out.keras", "OUT.KERAS"} <= set(os.listdir(tmp_path))
    monkeypatch.setattr(cli, "case_insensitive", lambda folder: True)
    status, _, err = run_cli(capfd, "init", model, "-o", tmp_path / "new.keras", "--report", tmp_path / "NEW.keras")
    one_line_error(status, err, "--output", "is the same file as the output --report")
    assert not (tmp_path / "new.keras").exists()


@pytest.mark.parametrize("failing", ["report", "plot"])
def test_a_failing_output_writes_none_of_them(capfd, model, tmp_path, monkeypatch, failing):
    out, report, plot = tmp_path / "o.keras", tmp_path / "r.json", tmp_path / "p.png"
    out.write_bytes(b"previous model")
    if failing == "report":
        monkeypatch.setattr(cli, "estimate_record", lambda *a: 1 / 0)
    else:
        monkeypatch.setattr(cli, "_visualize", lambda *a, **k: 1 / 0)
    status, _, err = run_cli(capfd, "init", model, "-o", out, "--report", report, "--plot", plot, "--samples", 16)
    one_line_error(status, err, "ZeroDivisionError")
    assert out.read_bytes() == b"previous model"
    assert not report.exists() and not plot.exists()
    assert leftovers(tmp_path) == []


def test_ctrl_c_while_writing_leaves_no_file(capfd, model, tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_visualize", interrupted)
    status, _, err = run_cli(capfd, "init", model, "-o", tmp_path / "o.keras", "--plot", tmp_path / "p.png")
    assert status == 130
    assert err.strip() == "autoinit-sym init: interrupted"
    assert sorted(os.listdir(tmp_path)) == ["m.keras"]


def test_file_size_limit_leaves_the_target_whole(saved, tmp_path):
    """`ulimit -f 64` (KiB): the 256 KiB model cannot be written; the old output stays whole."""
    out = tmp_path / "partial.keras"
    out.write_bytes(b"previous model")

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))

    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    result = subprocess.run([str(SCRIPT), "init", str(saved / "wide.keras"), "-o", str(out)], capture_output=True,
                            text=True, cwd=tmp_path, preexec_fn=limit, env=env, timeout=300)
    assert result.returncode == 1, result.stderr
    one_line_error(result.returncode, result.stderr, "File too large")
    assert out.read_bytes() == b"previous model"
    assert leftovers(tmp_path) == []


def test_outputs_get_the_usual_permissions_and_suffixes_ignore_case(capfd, model, tmp_path):
    existing = tmp_path / "EXISTING.KERAS"
    existing.write_bytes(b"old")
    existing.chmod(0o640)
    fresh = tmp_path / "fresh.json"
    status, stdout, err = run_cli(capfd, "init", model, "-o", existing, "--report", fresh)
    assert status == 0, err
    assert f"wrote {existing}" in stdout and f"wrote {fresh}" in stdout
    umask = os.umask(0)
    os.umask(umask)
    assert existing.stat().st_mode & 0o777 == 0o640
    assert fresh.stat().st_mode & 0o777 == 0o666 & ~umask
    import keras

    json.loads(fresh.read_text())
    assert leftovers(tmp_path) == []
    status, _, err = run_cli(capfd, "init", existing, "-o", tmp_path / "again.keras")  # .KERAS read too
    assert status == 0, err
    assert keras.saving.load_model(tmp_path / "again.keras").get_layer("hidden").kernel.shape == (16, 32)


@pytest.mark.parametrize("output, fragment", [
    ("{dir}/missing/o.keras", "does not exist"),
    ("{dir}", "is a folder"),
])
def test_bad_output_locations_are_one_line(capfd, model, tmp_path, output, fragment):
    status, _, err = run_cli(capfd, "visualize", model, "--plot", output.format(dir=tmp_path))
    one_line_error(status, err, fragment)


def test_table_and_demo_write_through_a_temporary_file(capfd, tmp_path, monkeypatch):
    status, stdout, err = run_cli(capfd, "table", "--format", "csv", "--names", "relu", "-o", tmp_path / "t.csv")
    assert status == 0, err
    assert "relu" in (tmp_path / "t.csv").read_text() and stdout.strip() == f"wrote {tmp_path / 't.csv'}"

    import autoinit_sym.demo

    def fake_demo(plot_path, samples, seed):
        Path(plot_path).write_bytes(b"png")
        print(f"table\nwrote {plot_path}")

    monkeypatch.setattr(autoinit_sym.demo, "run_demo", fake_demo)
    status, stdout, err = run_cli(capfd, "demo", "-o", tmp_path / "demo.png")
    assert status == 0, err
    assert stdout == f"table\nwrote {tmp_path / 'demo.png'}\n"
    assert (tmp_path / "demo.png").read_bytes() == b"png" and leftovers(tmp_path) == []


# --- what is loaded ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["lambda.keras", "lambda.h5", "lambda.json"])
def test_python_code_in_a_model_needs_unsafe(capfd, saved, tmp_path, name):
    out = tmp_path / "o.keras"
    status, _, err = run_cli(capfd, "init", saved / name, "-o", out)
    one_line_error(status, err, "Lambda", "pass --unsafe only if you trust this file")
    assert not out.exists()
    status, stdout, err = run_cli(capfd, "init", saved / name, "-o", out, "--unsafe")
    assert status == 0, err
    assert out.exists()


@pytest.mark.parametrize("text, holds", [
    ("[1, 2, 3]", "holds JSON a list"),
    ("null", "holds JSON null"),
    ("42", "holds JSON a number"),
    ('"model"', "holds JSON a string"),
    ('{"layers": []}', "holds JSON an object without 'class_name'"),
    ('{"class_name": "Dense", "config": {"units": 3}, "module": "keras.layers"}', "holds the config of a Dense"),
    ('{"class_name": "Dense", "config": {"units": 3}, "module": "keras.layers"', "not valid JSON"),
])
def test_json_that_is_not_a_model_is_one_line(capfd, tmp_path, text, holds):
    path = tmp_path / "thing.JSON"
    path.write_text(text)
    status, _, err = run_cli(capfd, "visualize", path, "--plot", tmp_path / "p.png")
    assert status == 1
    one_line_error(status, err, repr(str(path)), holds)


def test_help_says_what_is_safe_to_load(capfd):
    for argv in (["--help"], ["init", "--help"], ["visualize", "--help"]):
        status, stdout, _ = run_cli(capfd, *argv)
        assert status == 0
        text = " ".join(stdout.split())
        assert "safe mode" in text and "--unsafe" in text and "whitelist" in text and "formula tables are data" in text


# --- warnings, numbers and expressions --------------------------------------------------------

def test_probe_and_python_warnings_are_one_line_each(capfd, saved, tmp_path):
    import keras

    sys.path.insert(0, str(saved))
    try:
        import layers_mod
    finally:
        sys.path.remove(str(saved))
    inputs = keras.Input((8,))
    x = layers_mod.Flaky(name="flaky")(keras.layers.Dense(8, name="d")(inputs))
    with pytest.warns(UserWarning, match="first line"):
        model = keras.Model(inputs, keras.layers.Dense(4, name="out")(layers_mod.Chatty(name="chatty")(x)))
    path = tmp_path / "flaky.keras"
    model.save(path)
    status, _, err = run_cli(capfd, "init", path, "-o", tmp_path / "o.keras",
                             "--custom-objects", saved / "layers_mod.py")
    assert status == 0, err
    lines = err.strip().splitlines()
    assert "\x1b" not in err and "Traceback" not in err
    assert all(line.startswith("autoinit-sym: warning: ") for line in lines), lines
    assert any("Probing layer flaky failed" in line and "Exploded on purpose. Arguments received" in line
               for line in lines), lines
    assert any("UserWarning: first line second line red" in line for line in lines), lines


@pytest.mark.parametrize("argv, fragment", [
    (("--input-mean", "1e300"), "overflows"),
    (("--input-mean", "1e154", "--input-var", "1e308"), "overflows"),
    (("--input-var", "1e-300"), "above the float32 maximum"),
    (("--signal-variance", "1e300"), "signal_variance 1e+300"),
])
def test_extreme_statistics_are_one_line_errors(capfd, model, tmp_path, argv, fragment):
    status, _, err = run_cli(capfd, "init", model, "-o", tmp_path / "o.keras", *argv)
    assert status == 1
    one_line_error(status, err, fragment)
    assert "OverflowError" not in err and not (tmp_path / "o.keras").exists()


@pytest.mark.parametrize("argv", [
    ("derive", "-x"),
    ("derive", "--", "-x"),
    ("derive", "-x", "--name", "neg"),
    ("derive", "--name", "neg", "-x"),
    ("--debug", "derive", "-x", "--debug"),
])
def test_expressions_starting_with_a_minus(capfd, argv):
    status, stdout, err = run_cli(capfd, *argv)
    assert status == 0, err
    assert "(x) = -x" in stdout and "closed_form" in stdout
    row = next(line for line in stdout.splitlines() if line.split()[:2] == ["1", "0.25"])
    assert float(row.split()[2]) == pytest.approx(-1.0)


def test_reason_survives_a_long_echoed_expression(capfd):
    status, _, err = run_cli(capfd, "derive", "x*tanh(x" + "+x" * 400)
    line = one_line_error(status, err, "never closed")
    assert len(line) < 700


def test_ctrl_c_during_derive_is_one_line_and_status_130(capfd, monkeypatch):
    import autoinit_sym.moment_engine.activation_moments as activation_moments

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(activation_moments, "moments", interrupted)
    status, _, err = run_cli(capfd, "derive", "x*tanh(x)")
    assert status == 130
    assert err == "autoinit-sym derive: interrupted\n"


def test_a_real_sigint_during_derive(tmp_path):
    code = textwrap.dedent('''
        import os, signal, sys
        import autoinit_sym.moment_engine.activation_moments as activation_moments
        from autoinit_sym.cli import main

        def interrupted(*args, **kwargs):
            os.kill(os.getpid(), signal.SIGINT)
            signal.pause()  # the KeyboardInterrupt arrives here

        activation_moments.moments = interrupted
        sys.exit(main(["derive", "x*tanh(x)"]))
    ''')
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 130
    assert result.stderr == "autoinit-sym derive: interrupted\n"

