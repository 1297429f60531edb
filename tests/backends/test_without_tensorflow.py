"""On the JAX and torch backends nothing of ours needs TensorFlow: ``import autoinit_sym``,
``initialize_model`` and the ``demo``, ``init`` and ``visualize`` commands work with TensorFlow
absent, and with it installed none of them imports it (Keras's own ``model.save`` does, to check
whether an object is a ``tf.TensorShape``). Each check runs in a fresh process on the current
backend; on TensorFlow there is nothing to check."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import keras
import pytest

BACKEND = keras.backend.backend()
pytestmark = pytest.mark.skipif(BACKEND == "tensorflow", reason="about running without TensorFlow")

MODEL = textwrap.dedent('''
    import sys
    import keras

    inputs = keras.Input((8,), name="x")
    hidden = keras.layers.Dense(16, activation="relu", name="hidden")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(hidden))
''')

API = textwrap.dedent('''
    import autoinit_sym
    initialized, estimates = autoinit_sym.AutoInit(weight_init_config={"seed": 0}).initialize_model(
        model, return_estimates=True)
    assert abs(estimates["head"].var - 1.0) < 1e-6, estimates["head"]
''')

CLI = textwrap.dedent('''
    from autoinit_sym.cli import main
    model.save("model.keras")
    assert main(["init", "model.keras", "-o", "out.keras", "--report", "report.json"]) == 0
    assert main(["visualize", "model.keras", "--plot", "plot.png", "--samples", "20"]) == 0
''')

IMPORTERS = textwrap.dedent('''
    import traceback

    importers = []

    class Watch:
        """Records who imports TensorFlow (the frames outside the import machinery)."""

        def find_spec(self, name, path=None, target=None):
            if name == "tensorflow":
                importers.extend(f.filename for f in traceback.extract_stack()[:-1]
                                 if "importlib" not in f.filename)
            return None

    sys.meta_path.insert(0, Watch())
''')


def run(tmp_path, code: str) -> None:
    env = dict(os.environ, KERAS_BACKEND=BACKEND, MPLBACKEND="Agg")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


def test_api_and_cli_work_without_tensorflow(tmp_path):
    """TensorFlow made unimportable (as in an install without it): the API, ``init`` and ``visualize``
    work (``demo`` runs through the same start-up, below)."""
    blocked = 'import sys\nsys.modules["tensorflow"] = None  # as if TensorFlow were not installed\n'
    run(tmp_path, blocked + MODEL + API + CLI)
    assert (tmp_path / "out.keras").stat().st_size > 0 and (tmp_path / "plot.png").stat().st_size > 0


def test_nothing_of_ours_imports_tensorflow(tmp_path):
    """TensorFlow installed: the API, ``visualize`` and ``demo`` leave it unimported, and ``init``
    does not import it either (Keras's ``model.save`` would, but the model file was written with
    TensorFlow blocked, and Keras keeps its answer that TensorFlow is unavailable)."""
    save = textwrap.dedent('''
        sys.modules["tensorflow"] = None
        model.save("model.keras")
        del sys.modules["tensorflow"]
    ''')
    check = textwrap.dedent('''
        from autoinit_sym.cli import main
        assert main(["visualize", "model.keras", "--plot", "plot.png", "--samples", "20"]) == 0
        assert main(["demo", "--plot", "demo.png", "--samples", "20"]) == 0
        assert "tensorflow" not in sys.modules and not importers, importers
        assert main(["init", "model.keras", "-o", "out.keras"]) == 0
        ours = [f for f in importers if "autoinit_sym" in f or "/estimators/" in f]
        assert not ours, importers
    ''')
    run(tmp_path, MODEL + save + IMPORTERS + API + "assert 'tensorflow' not in sys.modules, importers\n" + check)
