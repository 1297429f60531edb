"""Cold start: the first ``initialize_model`` in a fresh process against a warm one.

Each repeat is one fresh Python process (``python -c``, whatever process runs the benchmark): it
imports Keras and autoinit_sym (``import_s``), builds two copies of the model, then times
``AutoInit().initialize_model`` on the first (``cold_s``: the first call, which pays for the lazy
imports of the rule modules and the moment engine and every first-use derivation and cache) and
on the second, a fresh model of the same architecture (``warm_s``). ``ratio`` = cold_s / warm_s,
the figure held to at most :data:`TARGET_RATIO` on ResNet50 (keras.applications, weights=None).
The backend is the one the benchmark runs under (``KERAS_BACKEND``).
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import textwrap
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .figures import new_figure, save
from .schema import make_result, write_result

TARGET_RATIO = 1.5

CHILD = textwrap.dedent('''
    import json, sys, time
    start = time.perf_counter()
    import keras
    from autoinit_sym import AutoInit
    import_s = time.perf_counter() - start

    def build(name):
        if name == "small_cnn":
            inputs = keras.Input((16, 16, 3))
            x = keras.layers.Conv2D(8, 3, padding="same")(inputs)
            x = keras.layers.BatchNormalization()(x)
            x = keras.layers.Activation("relu")(x)
            x = keras.layers.MaxPooling2D()(x)
            x = keras.layers.GlobalAveragePooling2D()(x)
            return keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x))
        return getattr(keras.applications, name)(weights=None)

    first, second = build(sys.argv[1]), build(sys.argv[1])
    timings = {"import_s": import_s}
    for key, model in (("cold_s", first), ("warm_s", second)):
        start = time.perf_counter()
        AutoInit().initialize_model(model)
        timings[key] = time.perf_counter() - start
    print(json.dumps(timings))
''')


@dataclass(frozen=True)
class Settings:
    models: tuple[str, ...]
    processes: int  # fresh processes per model; the row reports each and the headline the median ratio


PRESETS = {
    "tiny": Settings(models=("small_cnn",), processes=1),
    "quick": Settings(models=("ResNet50",), processes=2),
    "full": Settings(models=("ResNet50",), processes=3),
}


def fresh_process(model: str) -> dict:
    """Timings of one fresh process (see the module docstring)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
    result = subprocess.run([sys.executable, "-c", CHILD, model], capture_output=True, text=True, env=env,
                            check=False)
    if result.returncode:
        raise RuntimeError(f"cold-start process for {model} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def plot(rows: list[dict], out_dir: Path) -> str:
    """Cold and warm time of each fresh process, per model."""
    fig, axes = new_figure(1, 1, panel_size=(6.0, 3.6))
    ax = axes[0][0]
    labels = [f"{r['model']} #{r['process']}" for r in rows]
    positions = range(len(rows))
    ax.bar([p - 0.2 for p in positions], [r["cold_s"] for r in rows], 0.4, label="first call (cold)")
    ax.bar([p + 0.2 for p in positions], [r["warm_s"] for r in rows], 0.4, label="second call, fresh model (warm)")
    for p, row in zip(positions, rows):
        ax.annotate(f"{row['ratio']:.2f}x", (p, max(row["cold_s"], row["warm_s"])), ha="center", va="bottom",
                    fontsize=8)
    ax.set_xticks(list(positions), labels, fontsize=8)
    ax.set_ylabel("seconds")
    ax.set_title(f"initialize_model in a fresh process (target: cold <= {TARGET_RATIO} x warm)", fontsize=10)
    ax.legend(fontsize=8)
    return save(fig, out_dir, "cold_start.png")


def run(settings: Settings, out_dir: Path, preset: str) -> dict:
    start = time.perf_counter()
    rows = []
    for model in settings.models:
        for process in range(1, settings.processes + 1):
            timing = fresh_process(model)
            rows.append({"model": model, "process": process, **timing,
                         "ratio": timing["cold_s"] / timing["warm_s"]})
    headline = {f"cold_ratio_{m}": statistics.median(r["ratio"] for r in rows if r["model"] == m)
                for m in settings.models}
    headline["backend"] = os.environ.get("KERAS_BACKEND", "tensorflow")
    doc = make_result("cold_start", preset, asdict(settings), {"processes": rows}, headline,
                      [plot(rows, out_dir)], time.perf_counter() - start)
    write_result(doc, out_dir)
    return doc
