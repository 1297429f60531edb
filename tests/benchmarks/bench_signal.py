"""Signal propagation: measured per-layer variance under Gaussian input, Keras default vs AutoInit.

Deep unnormalized networks (Dense stacks and plain CNNs; weighted layer, then an
Activation layer, then Dropout/SpatialDropout2D), fed N(0, 1) noise in training mode
(dropout active). The variance of every weighted layer's output (pre-activation) is
measured with ``autoinit_sym.measure.measure`` for the same architecture initialized by
Keras's defaults (glorot_uniform, zero bias) and by AutoInit, next to AutoInit's
prediction, for several weight draws (summarized by their geometric mean). AutoInit aims at variance 1 at every depth; default initialization drifts
geometrically (the AutoInit paper's signal-propagation figure).
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import median

from .figures import INIT_COLORS, new_figure, save
from .networks import deep_mlp, plain_cnn
from .schema import make_result, write_result

WEIGHTED_PREFIXES = ("dense_", "conv_")


@dataclass(frozen=True)
class Settings:
    activations: tuple[str, ...]
    architectures: tuple[str, ...]
    mlp_depth: int
    mlp_width: int
    cnn_depth: int
    cnn_filters: int
    cnn_size: int = 16
    dropout: float = 0.2
    samples: int = 256
    seeds: tuple[int, ...] = (0, 1, 2)   # weight draws


PRESETS = {
    "tiny": Settings(activations=("relu",), architectures=("mlp", "cnn"), mlp_depth=3, mlp_width=8,
                     cnn_depth=2, cnn_filters=4, cnn_size=6, samples=32, seeds=(0,)),
    "quick": Settings(activations=("relu", "tanh", "selu", "gelu", "silu", "sigmoid"),
                      architectures=("mlp", "cnn"), mlp_depth=30, mlp_width=128, cnn_depth=20,
                      cnn_filters=32, seeds=(0, 1)),
    "full": Settings(activations=("relu", "tanh", "selu", "gelu", "silu", "elu", "sigmoid", "softplus",
                                  "mish", "leaky_relu"),
                     architectures=("mlp", "cnn"), mlp_depth=50, mlp_width=256, cnn_depth=30,
                     cnn_filters=32, cnn_size=16, samples=512),
}


def build(settings: Settings, architecture: str, activation: str):
    if architecture == "mlp":
        return deep_mlp(settings.mlp_depth, settings.mlp_width, activation, settings.mlp_width,
                        dropout=settings.dropout, separate_activation=True)
    if architecture == "cnn":
        return plain_cnn(settings.cnn_depth, settings.cnn_filters, activation,
                         (settings.cnn_size, settings.cnn_size, settings.cnn_filters),
                         dropout=settings.dropout, separate_activation=True)
    raise ValueError(f"unknown architecture {architecture!r}; valid: 'mlp', 'cnn'")


def one_draw(settings: Settings, architecture: str, activation: str, seed: int) -> tuple[list, dict, dict, dict]:
    """Weighted-layer names, measured statistics under default init and AutoInit, AutoInit's estimates."""
    import keras

    from autoinit_sym import AutoInit
    from autoinit_sym.measure import measure

    keras.utils.set_random_seed(seed)
    model = build(settings, architecture, activation)
    weighted = [layer.name for layer in model.layers if layer.name.startswith(WEIGHTED_PREFIXES)]
    default = measure(model, 0.0, 1.0, samples=settings.samples, seed=seed)
    _, estimates = AutoInit(weight_init_config={"seed": seed}).initialize_model(model, return_estimates=True)
    autoinit = measure(model, 0.0, 1.0, samples=settings.samples, seed=seed)
    keras.backend.clear_session()
    return weighted, default, autoinit, estimates


def _geometric_mean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values)) if min(values) > 0 else 0.0


def propagate(settings: Settings, architecture: str, activation: str) -> dict:
    """Per weighted layer: measured variance (geometric mean over weight draws, and each draw)
    under default init and AutoInit, and AutoInit's prediction (first draw)."""
    draws = [one_draw(settings, architecture, activation, seed) for seed in settings.seeds]
    weighted, _, _, estimates = draws[0]
    by_seed = {init: [[stats[k][1] for k in weighted] for stats in (d[index] for d in draws)]
               for init, index in (("default", 1), ("autoinit", 2))}
    return {"activation": activation, "architecture": architecture, "dropout": settings.dropout,
            "layers": weighted, "seeds": list(settings.seeds),
            "default_var": [_geometric_mean(list(v)) for v in zip(*by_seed["default"])],
            "autoinit_var": [_geometric_mean(list(v)) for v in zip(*by_seed["autoinit"])],
            "default_var_by_seed": by_seed["default"], "autoinit_var_by_seed": by_seed["autoinit"],
            "predicted_var": [estimates[k].var for k in weighted]}


def _log_gap(measured: list[float], target: list[float]) -> list[float]:
    return [abs(math.log(m / t)) if m > 0 and t > 0 else math.inf for m, t in zip(measured, target)]


def headline(rows: list[dict]) -> dict:
    out = {}
    for row in rows:
        tag = f"{row['architecture']}_{row['activation']}"
        out[f"last_var_default_{tag}"] = row["default_var"][-1]
        out[f"last_var_autoinit_{tag}"] = row["autoinit_var"][-1]
    gaps = [g for row in rows for g in _log_gap(row["autoinit_var"], row["predicted_var"])]
    out["median_abs_log_measured_over_predicted"] = median(gaps)
    out["max_abs_log_measured_over_predicted"] = max(gaps)
    out["worst_last_layer_abs_log_var_autoinit"] = max(abs(math.log(r["autoinit_var"][-1]))
                                                       for r in rows)
    out["worst_last_layer_abs_log_var_default"] = max(
        abs(math.log(r["default_var"][-1])) if r["default_var"][-1] > 0 else math.inf for r in rows)
    return out


def plot(rows: list[dict], settings: Settings, out_dir: Path) -> str:
    """One panel per (architecture, activation): variance vs depth on a log scale."""
    from matplotlib.ticker import MaxNLocator

    cols = min(4, len(rows))
    grid_rows = -(-len(rows) // cols)
    fig, axes = new_figure(grid_rows, cols, panel_size=(3.3, 2.7))
    for index, row in enumerate(rows):
        ax = axes[index // cols][index % cols]
        depth = range(1, len(row["layers"]) + 1)
        for init, key, label in (("keras_default", "default_var", "Keras default"),
                                 ("autoinit", "autoinit_var", "AutoInit")):
            draws = row[f"{key}_by_seed"]
            ax.fill_between(depth, [min(v) for v in zip(*draws)], [max(v) for v in zip(*draws)],
                            color=INIT_COLORS[init], alpha=0.25, lw=0)
            ax.plot(depth, row[key], "-", color=INIT_COLORS[init], lw=2 if init == "autoinit" else 1.2,
                    label=label)
        ax.plot(depth, row["predicted_var"], "--", color="black", lw=0.8, label="AutoInit predicted")
        ax.set_yscale("log")
        ax.set_title(f"{row['architecture'].upper()}, {row['activation']}", fontsize=9)
        ax.tick_params(labelsize=7)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        low, high = ax.get_ylim()
        ax.set_ylim(min(low, 0.1), max(high, 10))
        if index % cols == 0:
            ax.set_ylabel("output variance", fontsize=8)
        if index // cols == grid_rows - 1:
            ax.set_xlabel("weighted layer (depth)", fontsize=8)
    for index in range(len(rows), grid_rows * cols):
        axes[index // cols][index % cols].axis("off")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"Variance of each weighted layer's output, N(0, 1) input, dropout {settings.dropout}, "
                 f"training mode; lines: geometric mean over {len(settings.seeds)} weight draws, "
                 "bands: min-max", fontsize=10)
    return save(fig, out_dir, "signal.png")


def run(settings: Settings, out_dir: Path, preset: str) -> dict:
    start = time.perf_counter()
    rows = [propagate(settings, architecture, activation)
            for architecture in settings.architectures for activation in settings.activations]
    doc = make_result("signal", preset, asdict(settings), {"networks": rows}, headline(rows),
                      [plot(rows, settings, out_dir)], time.perf_counter() - start)
    write_result(doc, out_dir)
    return doc
