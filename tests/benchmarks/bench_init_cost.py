"""Cost of AutoInit against the cost of building the same Keras model, in one run.

For each model: ``build_s`` = best time of ``type(model).from_config(config)`` after a
warm-up; ``init_s`` = best time of ``AutoInit().initialize_model(model)`` on a built model
(``init_cold_s`` = its first call); ``estimate_s`` = the estimation walk alone (graph + walk,
no weight writes); ``ratio`` = init_s / build_s; ``extra_rss_mb`` = peak resident memory
added during one initialization (RSS, so TensorFlow's own allocations count, but memory
freed earlier and reused does not show); ``traced_peak_mb`` = peak of the Python/NumPy
allocations made during one initialization (tracemalloc, in a separate untimed call).
Models: keras.applications (weights=None), a recurrent text model, and synthetic Dense
stacks of growing depth (fixed width) and growing width (fixed depth).
"""
from __future__ import annotations

import copy
import gc
import tracemalloc
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .cost_meter import PeakResidentMemory, best_time, timed
from .figures import new_figure, save
from .networks import deep_mlp, text_rnn
from .schema import make_result, write_result

MB = 2.0 ** 20


@dataclass(frozen=True)
class Settings:
    applications: tuple[str, ...]
    depths: tuple[int, ...]       # synthetic depth sweep at width `sweep_width`
    widths: tuple[int, ...]       # synthetic width sweep at depth `sweep_depth`
    sweep_width: int = 64
    sweep_depth: int = 16
    rnn_length: int = 40          # the recurrent text model's sequence length and units
    rnn_units: int = 32
    repeats: int = 2


PRESETS = {
    "tiny": Settings(applications=(), depths=(2, 4), widths=(8,), sweep_width=8, sweep_depth=2,
                     rnn_length=8, rnn_units=4, repeats=1),
    "quick": Settings(applications=("ResNet50", "MobileNetV2", "EfficientNetB0", "DenseNet121"),
                      depths=(2, 8, 32, 128), widths=(16, 128, 1024)),
    "full": Settings(applications=("ResNet50", "MobileNetV2", "EfficientNetB0", "DenseNet121",
                                   "ConvNeXtTiny", "InceptionV3", "Xception", "VGG16"),
                     depths=(2, 8, 32, 128, 256), widths=(16, 64, 256, 1024, 2048), repeats=3),
}


def estimation_only(model: Any) -> None:
    """AutoInit's graph walk without writing weights (how cost splits: estimate vs write)."""
    from autoinit_sym.autoinit import AutoInit
    from autoinit_sym.statistics.state import TensorState
    from autoinit_sym.walk import walker
    from autoinit_sym.walk.graph import build_graph
    from autoinit_sym.walk.loading import input_statistics

    init = AutoInit()
    graph = build_graph(model)
    means, variances = input_statistics(graph, init.input_data_mean, init.input_data_var)
    walker.estimate(graph, walker.WalkContext(signal_variance=init.signal_variance, config=init.config),
                    [TensorState(m, v) for m, v in zip(means, variances)])


def measure_model(model: Any, repeats: int) -> dict:
    """Build, initialize and estimation times and memory for one built model."""
    from autoinit_sym import AutoInit

    config = model.get_config()
    copies = [copy.deepcopy(config) for _ in range(repeats + 2)]  # from_config consumes its dict
    rebuild = lambda: type(model).from_config(copies.pop())  # noqa: E731
    rebuild()  # warm-up
    gc.collect()
    build_s = best_time(rebuild, repeats)
    with PeakResidentMemory() as build_memory:
        rebuild()
    gc.collect()
    init_cold_s, (_, estimates) = timed(lambda: AutoInit().initialize_model(model, return_estimates=True))
    init_s = best_time(lambda: AutoInit().initialize_model(model), repeats)
    estimate_s = best_time(lambda: estimation_only(model), repeats)
    gc.collect()
    with PeakResidentMemory() as init_memory:
        AutoInit().initialize_model(model)
    tracemalloc.start()
    AutoInit().initialize_model(model)
    traced_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {
        "layers": len(model.layers), "params": int(model.count_params()),
        "build_s": build_s, "init_s": init_s, "init_cold_s": init_cold_s, "estimate_s": estimate_s,
        "ratio": init_s / build_s, "cold_ratio": init_cold_s / build_s,
        "extra_rss_mb": _mb(init_memory.extra_bytes), "build_extra_rss_mb": _mb(build_memory.extra_bytes),
        "traced_peak_mb": _mb(traced_peak),
        "methods": dict(Counter(e.method for e in estimates.values())),
    }


def _mb(value: int | None) -> float | None:
    return None if value is None else value / MB


def applications(settings: Settings) -> list[dict]:
    import keras

    rows = []
    for name in settings.applications:
        model = getattr(keras.applications, name)(weights=None)
        rows.append({"model": name, **measure_model(model, settings.repeats)})
        keras.backend.clear_session()
    return rows


def synthetic(settings: Settings) -> list[dict]:
    shapes = sorted({(d, settings.sweep_width) for d in settings.depths}
                    | {(settings.sweep_depth, w) for w in settings.widths})
    return [{"depth": depth, "width": width,
             **measure_model(deep_mlp(depth, width, "relu", width), settings.repeats)}
            for depth, width in shapes]


def headline(results: dict) -> dict:
    out = {}
    for row in results["applications"] + results["recurrent"]:
        out[f"ratio_{row['model']}"] = row["ratio"]
        out[f"extra_rss_mb_{row['model']}"] = row["extra_rss_mb"]
        out[f"traced_peak_mb_{row['model']}"] = row["traced_peak_mb"]
    rows = results["synthetic"]
    deepest = max(rows, key=lambda r: (r["layers"], -r["params"]))
    shallowest = min(rows, key=lambda r: (r["layers"], r["params"]))
    out["synthetic_max_ratio"] = max(r["ratio"] for r in rows)
    out["synthetic_estimate_s_per_layer_deepest"] = deepest["estimate_s"] / deepest["layers"]
    out["synthetic_estimate_s_per_layer_shallowest"] = shallowest["estimate_s"] / shallowest["layers"]
    return out


def plot(results: dict, settings: Settings, out_dir: Path) -> str:
    """Time against layers (depth sweep) and against parameters (width sweep)."""
    fig, axes = new_figure(1, 2, panel_size=(5.4, 4.0))
    rows = results["synthetic"]
    sweeps = (
        ([r for r in rows if r["width"] == settings.sweep_width], "layers",
         f"Dense stacks of width {settings.sweep_width}: growing depth", "number of layers"),
        ([r for r in rows if r["depth"] == settings.sweep_depth], "params",
         f"Dense stacks of depth {settings.sweep_depth}: growing width", "number of parameters"),
    )
    for ax, (series, x_key, title, label) in zip(axes[0], sweeps):
        series = sorted(series, key=lambda r: r[x_key])
        xs = [r[x_key] for r in series]
        for key, name, style in (("build_s", "Keras build (from_config)", "k--o"),
                                 ("init_s", "AutoInit initialize_model", "b-o"),
                                 ("estimate_s", "AutoInit estimation walk only", "c-s")):
            ax.plot(xs, [r[key] for r in series], style, label=name)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("seconds (best of repeats)")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    for row, marker in zip(results["applications"] + results["recurrent"], "*PDXvp^<>h"):
        axes[0][0].plot(row["layers"], row["init_s"], marker, color="#d62728", ms=8, ls="none",
                        label=f"{row['model']}: AutoInit = {row['ratio']:.2f} x build")
    axes[0][0].legend(fontsize=6.5, loc="lower right")
    return save(fig, out_dir, "init_cost.png")


def run(settings: Settings, out_dir: Path, preset: str) -> dict:
    start = time.perf_counter()
    results = {"applications": applications(settings),
               "recurrent": [{"model": "text_rnn", **measure_model(
                   text_rnn(settings.rnn_length, units=settings.rnn_units), settings.repeats)}],
               "synthetic": synthetic(settings)}
    doc = make_result("init_cost", preset, asdict(settings), results, headline(results),
                      [plot(results, settings, out_dir)], time.perf_counter() - start)
    write_result(doc, out_dir)
    return doc
