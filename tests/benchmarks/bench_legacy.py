"""Keras 2 models: time and memory to initialize TF-2.4-style configs (issue 15).

Every config is written with tf_keras and rewritten as TF 2.4 saved it
(``legacy_networks.tf24_config``); all run in this one process, one after the other, as the
reference implementation's test suite runs its seven saved configs (it takes 15-37 s per model
and peaked near 13 GB for six). Per model:

- ``init_s``: ``AutoInit().initialize_model(config)`` on the JSON config, everything included
  (tf_keras build, Keras 3 twin, walk, write); ``build_s`` and ``twin_s`` are its first two parts
  timed alone (``walk.legacy.from_config``, ``walk.legacy.keras3_twin``);
- ``init_object_s``: ``initialize_model`` on the built tf_keras model (twin, walk, write);
- ``extra_rss_mb``: peak resident memory during ``init_s`` over the resident memory before it;
  ``rss_mb`` the process's resident memory after the model (so growth over the set shows).

A first model, kept out of the table (``warm_up_init_s`` in the headline), takes the process's
one-time costs (imports, compiled moment functions). ``layers`` counts every layer and TF op
layer, nested models' included; ``submodel_calls`` the calls of nested models. The target is at most 3 s per model of up to 100 layers with a few
dozen submodel calls.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .cost_meter import PeakResidentMemory, resident_bytes, timed
from .schema import make_result, write_result

MB = 2.0 ** 20
TARGET_S = 3.0


@dataclass(frozen=True)
class Settings:
    models: tuple[tuple[str, tuple[tuple[str, int], ...]], ...]
    """(builder in legacy_networks, its keyword arguments)."""


STRUCTURES = tuple((name, ()) for name in ("shared_blocks", "padded_channels", "recurrent", "wrappers",
                                            "sequential", "tf_ops", "with_lambda"))
PRESETS = {
    "tiny": Settings(models=(("tf_ops", ()), ("padded_channels", ()))),
    "quick": Settings(models=STRUCTURES + (("evolved", (("blocks", 6), ("calls", 2))),
                                           ("evolved", (("blocks", 10), ("calls", 3))))),
    "full": Settings(models=STRUCTURES + (("evolved", (("blocks", 6), ("calls", 2))),
                                          ("evolved", (("blocks", 10), ("calls", 3))),
                                          ("evolved", (("blocks", 12), ("calls", 3), ("width", 64))))),
}


def _layers(model: Any) -> int:
    """Layers of a tf_keras model (TF op layers included), nested models opened."""
    return sum(_layers(layer) if hasattr(layer, "layers") else int(type(layer).__name__ != "InputLayer")
               for layer in model.layers)


def _submodel_calls(entry: dict) -> int:
    """Calls of nested models in a Keras 2 model config entry, nested ones included."""
    calls = 0
    for layer in entry.get("config", {}).get("layers", []):
        if layer["class_name"] in ("Functional", "Model", "Sequential"):
            calls += max(1, len(layer.get("inbound_nodes", []))) + _submodel_calls(layer)
    return calls


def measure_model(name: str, kwargs: dict) -> dict:
    """One row (module docstring)."""
    from keras.src.saving.serialization_lib import SafeModeScope

    from autoinit_sym import AutoInit
    from autoinit_sym.walk import legacy

    from . import legacy_networks

    original = getattr(legacy_networks, name)(**kwargs)
    text = json.dumps(legacy_networks.tf24_config(original))
    with SafeModeScope(False):  # with_lambda and evolved hold Lambda bytecode this process wrote
        build_s, model = timed(lambda: legacy.from_config(json.loads(text)))
        twin_s, _ = timed(lambda: legacy.keras3_twin(model))
        with PeakResidentMemory() as memory:
            init_s, initialized = timed(lambda: AutoInit().initialize_model(text))
        init_object_s, _ = timed(lambda: AutoInit().initialize_model(initialized))
    layers, calls = _layers(initialized), _submodel_calls(json.loads(text))
    rss = resident_bytes()
    label = name + "".join(f"_{k}{v}" for k, v in kwargs.items())
    return {"model": label, "layers": layers, "submodel_calls": calls, "params": int(initialized.count_params()),
            "build_s": round(build_s, 3), "twin_s": round(twin_s, 3), "init_s": round(init_s, 3),
            "init_object_s": round(init_object_s, 3),
            "extra_rss_mb": None if memory.extra_bytes is None else round(memory.extra_bytes / MB, 1),
            "rss_mb": None if rss is None else round(rss / MB, 1)}


def headline(rows: list[dict]) -> dict:
    largest = max(rows, key=lambda r: r["layers"])
    return {"slowest_init_s": max(r["init_s"] for r in rows),
            "largest_model": largest["model"], "largest_layers": largest["layers"],
            "largest_submodel_calls": largest["submodel_calls"], "largest_init_s": largest["init_s"],
            "within_target": sum(r["init_s"] <= TARGET_S for r in rows), "models": len(rows),
            "final_rss_mb": rows[-1]["rss_mb"]}


def run(settings: Settings, out_dir: Path, preset: str) -> dict:
    start = time.perf_counter()
    warm_up = measure_model("tf_ops", {})["init_s"]  # one-time costs: imports, compiled moment functions
    rows = [measure_model(name, dict(kwargs)) for name, kwargs in settings.models]
    doc = make_result("legacy", preset, asdict(settings), {"models": rows},
                      {**headline(rows), "warm_up_init_s": warm_up}, [], time.perf_counter() - start)
    write_result(doc, out_dir)
    return doc
