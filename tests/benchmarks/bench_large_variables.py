"""Very large variables: AutoInit's weight write against Keras's own initializers, in one run.

For each case (a Dense layer with one 50M-value kernel, VGG16 built with ``weights=None``) and
each distribution, two measurements, each in a fresh Python process so that neither inherits
the other's allocations:

- ``autoinit``: ``AutoInit(weight_init_config={"distribution": d, "seed": 0}).initialize_model``
  on the built model: ``autoinit_write_s`` is its draw-and-write pass (``write_pending``),
  ``autoinit_total_s`` the whole call (the walk included);
- ``keras``: every kernel AutoInit writes assigned the draw of the equivalent Keras initializer
  (``walk.weights.keras_initializer``) on the same shape and dtype (``keras_s``).

``time_ratio`` = autoinit_write_s / keras_s. ``autoinit_extra_mb`` / ``keras_extra_mb``: peak
resident memory of the whole call over the resident memory just before it (every module
imported, the model built): RSS sampled every 2 ms by a thread, and the kernel's own peak
(``ru_maxrss``) where the call raised it, so a peak between two samples still counts.
``extra_over_largest`` is AutoInit's extra memory over the largest variable's size (the
target: at most 1.25 plus 100 MB).
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from autoinit_sym import AutoInit
from autoinit_sym import autoinit as autoinit_module
from autoinit_sym.walk.weights import keras_initializer

HERE = Path(__file__).resolve().parent
MB = 2.0 ** 20
DISTRIBUTIONS = ("truncated_normal", "untruncated_normal", "uniform", "orthogonal")


@dataclass(frozen=True)
class Settings:
    cases: tuple[str, ...]
    distributions: tuple[str, ...]
    dense_shape: tuple[int, int] = (10_000, 5_000)


PRESETS = {
    "tiny": Settings(cases=("dense",), distributions=("truncated_normal",), dense_shape=(1000, 500)),
    "quick": Settings(cases=("dense", "vgg16"), distributions=DISTRIBUTIONS),
    "full": Settings(cases=("dense", "vgg16"), distributions=DISTRIBUTIONS),
}


def build(case: str, dense_shape: tuple[int, int]):
    """The model of ``case``: one Dense layer of kernel ``dense_shape``, or VGG16."""
    import keras

    if case == "dense":
        inputs = keras.Input((dense_shape[0],))
        return keras.Model(inputs, keras.layers.Dense(dense_shape[1])(inputs))
    if case == "vgg16":
        return keras.applications.VGG16(weights=None)
    raise ValueError(f"unknown case {case!r}")


def keras_write(model, distribution: str) -> float:
    """Assign every kernel (what AutoInit draws: the variables of two or more axes) the draw of
    the Keras initializer of ``distribution``."""
    start = time.perf_counter()
    for index, variable in enumerate(v for v in model.trainable_weights if len(v.shape) >= 2):
        shape = tuple(int(d) for d in variable.shape)
        variable.assign(keras_initializer(distribution, 0.01, shape, index)(shape, variable.dtype))
    return time.perf_counter() - start


def autoinit_write(model, distribution: str) -> float:
    """``initialize_model``; returns the seconds of its draw-and-write pass (``write_pending``)."""
    real, spent = autoinit_module.write_pending, []

    def timed_write(*args, **kwargs):
        start = time.perf_counter()
        real(*args, **kwargs)
        spent.append(time.perf_counter() - start)

    autoinit_module.write_pending = timed_write
    try:
        AutoInit(weight_init_config={"distribution": distribution, "seed": 0}).initialize_model(model)
    finally:
        autoinit_module.write_pending = real
    return spent[0]


def measure(who: str, case: str, distribution: str, dense_shape: tuple[int, int]) -> dict:
    """Seconds and extra peak RSS (MB) of one write in this (fresh) process; every module is
    imported before the baseline is taken."""
    import gc
    import resource

    from benchmarks.cost_meter import PeakResidentMemory

    model = build(case, dense_shape)
    call = autoinit_write if who == "autoinit" else keras_write
    largest = max(math.prod(v.shape) * np.dtype(v.dtype).itemsize for v in model.weights)
    gc.collect()
    before_max = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    with PeakResidentMemory() as meter:
        start = time.perf_counter()
        write_s = call(model, distribution)
        seconds = time.perf_counter() - start
    after_max = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    peak = max(meter.peak, after_max) if after_max > before_max else meter.peak
    return {"seconds": seconds, "write_s": write_s, "extra_mb": (peak - meter.start) / MB, "largest_mb": largest / MB}


def in_fresh_process(who: str, case: str, distribution: str, dense_shape: tuple[int, int]) -> dict:
    """:func:`measure` in a new Python process (its JSON on the last line of stdout)."""
    code = ("import json, sys; sys.path.insert(0, %r); from benchmarks.bench_large_variables import measure; "
            "print(json.dumps(measure(%r, %r, %r, %r)))" % (str(HERE.parent), who, case, distribution,
                                                             tuple(dense_shape)))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env.setdefault("KERAS_BACKEND", "tensorflow")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    if done.returncode:
        raise RuntimeError(f"{who}/{case}/{distribution} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measurements(settings: Settings) -> list[dict]:
    rows = []
    for case in settings.cases:
        for distribution in settings.distributions:
            ours = in_fresh_process("autoinit", case, distribution, settings.dense_shape)
            theirs = in_fresh_process("keras", case, distribution, settings.dense_shape)
            rows.append({"case": case, "distribution": distribution, "largest_mb": ours["largest_mb"],
                         "autoinit_write_s": ours["write_s"], "autoinit_total_s": ours["seconds"],
                         "keras_s": theirs["write_s"], "time_ratio": ours["write_s"] / theirs["write_s"],
                         "autoinit_extra_mb": ours["extra_mb"], "keras_extra_mb": theirs["extra_mb"],
                         "memory_ratio": ours["extra_mb"] / max(theirs["extra_mb"], 1.0),
                         "extra_over_largest": ours["extra_mb"] / ours["largest_mb"]})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def headline(rows: list[dict]) -> dict:
    return {"worst_extra_over_largest": max(r["extra_over_largest"] for r in rows),
            "worst_extra_mb_over_budget": max(r["autoinit_extra_mb"] - (1.25 * r["largest_mb"] + 100.0)
                                              for r in rows),
            "orthogonal_time_ratio": max((r["time_ratio"] for r in rows if r["distribution"] == "orthogonal"),
                                         default=None)}


def run(settings: Settings, out_dir: Path, preset: str) -> dict:
    from .schema import make_result, write_result

    start = time.perf_counter()
    rows = measurements(settings)
    doc = make_result("large_variables", preset, asdict(settings), {"measurements": rows}, headline(rows), [],
                      time.perf_counter() - start)
    write_result(doc, out_dir)
    return doc


if __name__ == "__main__":  # bench_large_variables.py [PRESET [CASE or DISTRIBUTION ...]]
    sys.path.insert(0, str(HERE.parent))
    preset = PRESETS[sys.argv[1] if len(sys.argv) > 1 else "quick"]
    chosen = sys.argv[2:]
    found = measurements(Settings(tuple(c for c in preset.cases if c in chosen) or preset.cases,
                                  tuple(d for d in preset.distributions if d in chosen) or preset.distributions,
                                  preset.dense_shape))
    print(json.dumps(headline(found)))
