"""The result-file format shared by every benchmark, the report and the smoke test.

A result file ``results/<benchmark>.json`` holds::

    {"benchmark": str, "schema_version": 1, "preset": "tiny" | "quick" | "full",
     "created": ISO-8601 UTC, "duration_s": float (wall), "cpu_s": float (this process, all
     threads), "machine": {...}, "settings": {...},
     "results": {<table>: [row, ...], ...}, "headline": {figure: number, ...},
     "plots": [PNG file names next to the JSON]}

``TABLES`` says which row tables each benchmark must have and the keys of their rows.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from .environment import describe_machine

SCHEMA_VERSION = 1
PRESET_NAMES = ("tiny", "quick", "full")
TOP_LEVEL = {"benchmark": str, "schema_version": int, "preset": str, "created": str,
             "duration_s": (int, float), "cpu_s": (int, float), "machine": dict, "settings": dict, "results": dict,
             "headline": dict, "plots": list}

TABLES: dict[str, dict[str, tuple[str, ...]]] = {
    "moments": {
        "activations": ("name", "method", "moderate", "extreme", "cost", "first_use_s"),
    },
    "init_cost": {
        "applications": ("model", "layers", "params", "build_s", "init_s", "init_cold_s",
                         "ratio", "extra_rss_mb"),
        "synthetic": ("depth", "width", "layers", "params", "build_s", "init_s", "ratio",
                      "extra_rss_mb"),
        "recurrent": ("model", "layers", "params", "build_s", "init_s", "init_cold_s", "ratio",
                      "extra_rss_mb"),
    },
    "signal": {
        "networks": ("activation", "architecture", "dropout", "layers", "default_var",
                     "autoinit_var", "predicted_var"),
    },
    "training": {
        "runs": ("architecture", "activation", "init", "seed", "test_accuracy", "final_loss"),
        "summary": ("architecture", "activation", "init", "mean_accuracy", "min_accuracy",
                    "max_accuracy", "seeds"),
    },
    "keras_hub": {
        "backbones": ("model", "params", "error", "redrawn_share", "warnings", "median_log_error",
                      "p90_log_error", "residual_ratio", "build_s", "init_s", "ratio"),
    },
    "legacy": {
        "models": ("model", "layers", "submodel_calls", "params", "build_s", "twin_s", "init_s",
                   "init_object_s", "extra_rss_mb", "rss_mb"),
    },
    "large_variables": {
        "measurements": ("case", "distribution", "largest_mb", "autoinit_write_s", "autoinit_total_s",
                         "keras_s", "time_ratio", "autoinit_extra_mb", "keras_extra_mb", "memory_ratio",
                         "extra_over_largest"),
    },
    "cold_start": {
        "processes": ("model", "process", "import_s", "cold_s", "warm_s", "ratio"),
    },
}


# Tables a preset may leave empty (e.g. the tiny preset builds no keras.applications model).
OPTIONAL_TABLES = {("init_cost", "applications")}


class ResultSchemaError(ValueError):
    """A result file does not have the documented shape."""


def _jsonable(value: Any) -> Any:
    """Plain JSON values: numpy scalars become floats/ints, NaN/inf become None."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def make_result(benchmark: str, preset: str, settings: dict, results: dict, headline: dict,
                plots: list[str], duration_s: float) -> dict:
    """A validated result document."""
    doc = _jsonable({
        "benchmark": benchmark, "schema_version": SCHEMA_VERSION, "preset": preset,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "duration_s": round(duration_s, 3), "cpu_s": round(time.process_time(), 3),
        "machine": describe_machine(), "settings": settings,
        "results": results, "headline": headline, "plots": plots,
    })
    validate(doc)
    return doc


def validate(doc: Any) -> None:
    """Raise ResultSchemaError naming the first thing that does not match the format."""
    if not isinstance(doc, dict):
        raise ResultSchemaError(f"a result must be a JSON object, got {type(doc).__name__}")
    for key, kind in TOP_LEVEL.items():
        if key not in doc:
            raise ResultSchemaError(f"result lacks key {key!r}; required: {sorted(TOP_LEVEL)}")
        if not isinstance(doc[key], kind) or isinstance(doc[key], bool):
            raise ResultSchemaError(f"result key {key!r} has type {type(doc[key]).__name__}")
    name = doc["benchmark"]
    if name not in TABLES:
        raise ResultSchemaError(f"unknown benchmark {name!r}; known: {sorted(TABLES)}")
    if doc["preset"] not in PRESET_NAMES:
        raise ResultSchemaError(f"unknown preset {doc['preset']!r}; known: {list(PRESET_NAMES)}")
    if doc["schema_version"] != SCHEMA_VERSION:
        raise ResultSchemaError(f"schema_version {doc['schema_version']} != {SCHEMA_VERSION}")
    for table, keys in TABLES[name].items():
        rows = doc["results"].get(table)
        if not isinstance(rows, list) or not (rows or (name, table) in OPTIONAL_TABLES):
            raise ResultSchemaError(f"{name}: results[{table!r}] must be a non-empty list of rows")
        for i, row in enumerate(rows):
            missing = [k for k in keys if not isinstance(row, dict) or k not in row]
            if missing:
                raise ResultSchemaError(f"{name}: results[{table!r}][{i}] lacks {missing}")
    for key, value in doc["headline"].items():
        if value is not None and (not isinstance(value, (int, float, str)) or isinstance(value, bool)):
            raise ResultSchemaError(f"{name}: headline {key!r} must be a number, string or null")
    for plot in doc["plots"]:
        if not (isinstance(plot, str) and plot.endswith(".png") and "/" not in plot):
            raise ResultSchemaError(f"{name}: plot entry {plot!r} must be a PNG file name")


def write_result(doc: dict, out_dir: Path) -> Path:
    """Validate and write ``out_dir/<benchmark>.json``."""
    validate(doc)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{doc['benchmark']}.json"
    path.write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n")
    return path


def read_result(path: Path) -> dict:
    """Load and validate a result file."""
    try:
        doc = json.loads(Path(path).read_text())
    except json.JSONDecodeError as err:
        raise ResultSchemaError(f"{path}: not valid JSON ({err})") from err
    validate(doc)
    return doc
