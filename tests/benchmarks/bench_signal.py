"""Signal propagation: measured per-layer variance under Gaussian input, Keras default vs AutoInit.

Deep unnormalized networks (Dense stacks and plain CNNs; weighted layer, then an
Activation layer, then Dropout/SpatialDropout2D), fed N(0, 1) noise in training mode
(dropout active). The variance of every weighted layer's output (pre-activation) is
measured with ``autoinit_sym.measure.measure`` for the same architecture initialized by
Keras's defaults (glorot_uniform, zero bias) and by AutoInit, next to AutoInit's
prediction. AutoInit aims at variance 1 at every depth; default initialization drifts
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
    seed: int = 0


PRESETS = {
    "tiny": Settings(activations=("relu",), architectures=("mlp", "cnn"), mlp_depth=3, mlp_width=8,
                     cnn_depth=2, cnn_filters=4, cnn_size=6, samples=32),
    "quick": Settings(activations=("relu", "tanh", "selu", "gelu", "silu", "sigmoid"),
                      architectures=("mlp", "cnn"), mlp_depth=30, mlp_width=128, cnn_depth=20,
                      cnn_filters=32),
    "full": Settings(activations=("relu", "tanh", "selu", "gelu", "silu", "elu", "sigmoid", "softplus",
                                  "mish", "leaky_relu"),
                     architectures=("mlp", "cnn"), mlp_depth=50, mlp_width=256, cnn_depth=30,
                     cnn_filters=64, cnn_size=32, samples=1024),
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


def propagate(settings: Settings, architecture: str, activation: str) -> dict:
    """Measured weighted-layer variances for default init and AutoInit, and AutoInit's predictions."""
    import keras

    from autoinit_sym import AutoInit
    from autoinit_sym.measure import measure

    keras.utils.set_random_seed(settings.seed)
    model = build(settings, architecture, activation)
    weighted = [layer.name for layer in model.layers if layer.name.startswith(WEIGHTED_PREFIXES)]
    default = measure(model, 0.0, 1.0, samples=settings.samples, seed=settings.seed)
    _, estimates = AutoInit(weight_init_config={"seed": settings.seed}).initialize_model(
        model, return_estimates=True)
    autoinit = measure(model, 0.0, 1.0, samples=settings.samples, seed=settings.seed)
    keras.backend.clear_session()
    return {"activation": activation, "architecture": architecture, "dropout": settings.dropout,
            "layers": weighted, "default_var": [default[k][1] for k in weighted],
            "autoinit_var": [autoinit[k][1] for k in weighted],
            "predicted_var": [estimates[k].var for k in weighted],
            "autoinit_mean": [autoinit[k][0] for k in weighted]}


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
        ax.plot(depth, row["default_var"], "-", color=INIT_COLORS["keras_default"], label="Keras default")
        ax.plot(depth, row["autoinit_var"], "-", color=INIT_COLORS["autoinit"], lw=2, label="AutoInit")
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
                 "training mode", fontsize=10)
    return save(fig, out_dir, "signal.png")


def run(settings: Settings, out_dir: Path, preset: str) -> dict:
    start = time.perf_counter()
    rows = [propagate(settings, architecture, activation)
            for architecture in settings.architectures for activation in settings.activations]
    doc = make_result("signal", preset, asdict(settings), {"networks": rows}, headline(rows),
                      [plot(rows, settings, out_dir)], time.perf_counter() - start)
    write_result(doc, out_dir)
    return doc
