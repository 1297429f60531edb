"""Training benefit: deep unnormalized networks trained on scikit-learn's bundled digits.

For each architecture (a deep Dense stack, a plain CNN), activation, initialization
(Keras default glorot_uniform, he_normal, lecun_normal, AutoInit, AutoInit + calibration,
LSUV) and seed, train for a fixed number of epochs with Adam (learning rate 1e-3, no schedule)
and record the test accuracy. No download: ``sklearn.datasets.load_digits`` ships with
scikit-learn (the ``bench`` extra).

The two data-driven rows see the same rows: AutoInit + calibration is
``initialize_model(model, data=x_train, calibrate=True)`` (the input statistics and the
calibration batch are the training split), LSUV (``lsuv.py``) runs on the whole training split
as its batch.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import mean

from .figures import INIT_COLORS, new_figure, save
from .networks import deep_mlp, plain_cnn
from .schema import make_result, write_result

INITS = ("keras_default", "he_normal", "lecun_normal", "autoinit", "autoinit_calibrated", "lsuv")
COLORS = {**INIT_COLORS, "autoinit_calibrated": "#17becf", "lsuv": "#9467bd"}


@dataclass(frozen=True)
class Settings:
    architectures: tuple[str, ...]
    activations: tuple[str, ...]
    seeds: tuple[int, ...]
    mlp_depth: int
    mlp_width: int
    cnn_depth: int
    cnn_filters: int
    epochs: int
    batch_size: int = 128
    learning_rate: float = 1e-3
    inits: tuple[str, ...] = INITS
    test_fraction: float = 0.25


PRESETS = {
    "tiny": Settings(architectures=("mlp",), activations=("relu",), seeds=(0,),
                     mlp_depth=3, mlp_width=16, cnn_depth=2, cnn_filters=4, epochs=1),
    "quick": Settings(architectures=("mlp", "cnn"), activations=("relu", "tanh", "selu", "gelu"),
                      seeds=(0, 1), mlp_depth=30, mlp_width=64, cnn_depth=10, cnn_filters=16,
                      epochs=12),
    "full": Settings(architectures=("mlp", "cnn"),
                     activations=("relu", "tanh", "selu", "gelu", "silu", "elu", "sigmoid"),
                     seeds=(0, 1, 2), mlp_depth=30, mlp_width=64, cnn_depth=16, cnn_filters=32,
                     epochs=30, batch_size=64),
}


def load_digits_split(test_fraction: float):
    """Digits scaled to [0, 1], a fixed stratified split; also the training pixels' mean and var."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = (data.data / 16.0).astype("float32")
    x_train, x_test, y_train, y_test = train_test_split(
        x, data.target, test_size=test_fraction, stratify=data.target, random_state=0)
    return x_train, x_test, y_train, y_test, float(x_train.mean()), float(x_train.var())


def build(settings: Settings, architecture: str, activation: str, init: str):
    """The network for one run, with ``init``'s kernel initializer (AutoInit is applied later)."""
    kernel = init if init in ("he_normal", "lecun_normal") else None
    if architecture == "mlp":
        return deep_mlp(settings.mlp_depth, settings.mlp_width, activation, 64,
                        kernel_initializer=kernel, classes=10)
    if architecture == "cnn":
        return plain_cnn(settings.cnn_depth, settings.cnn_filters, activation, (8, 8, 1),
                         kernel_initializer=kernel, classes=10)
    raise ValueError(f"unknown architecture {architecture!r}; valid: 'mlp', 'cnn'")


def initial_weights(settings: Settings, architecture: str, activation: str, init: str, seed: int,
                    pixel_mean: float, pixel_var: float, x_train=None) -> list:
    """Weights of a freshly built network under ``init``: AutoInit given the pixel statistics;
    AutoInit + calibration and LSUV given the training images ``x_train`` (shaped for the
    network)."""
    import keras

    keras.utils.set_random_seed(seed)
    model = build(settings, architecture, activation, init)
    if init in ("autoinit_calibrated", "lsuv") and x_train is None:
        raise ValueError(f"init {init!r} needs the training images (x_train)")
    if init == "autoinit":
        from autoinit_sym import AutoInit

        AutoInit(input_data_mean=pixel_mean, input_data_var=pixel_var,
                 weight_init_config={"seed": seed}).initialize_model(model)
    elif init == "autoinit_calibrated":
        from autoinit_sym import AutoInit

        AutoInit(weight_init_config={"seed": seed}).initialize_model(model, data=x_train, calibrate=True)
    elif init == "lsuv":
        from .lsuv import lsuv

        lsuv(model, x_train, seed=seed)
    return model.get_weights()


class CompiledNetwork:
    """One compiled network per (architecture, activation), traced once and reused by every
    run: a run loads fresh initial weights and the optimizer's initial state. (Tracing a
    30-layer graph costs several times more than the whole training budget on digits.)"""

    def __init__(self, settings: Settings, architecture: str, activation: str) -> None:
        import keras

        self.settings, self.architecture, self.activation = settings, architecture, activation
        self.model = build(settings, architecture, activation, "keras_default")
        self.model.compile(optimizer=keras.optimizers.Adam(settings.learning_rate),
                           loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        self.model.optimizer.build(self.model.trainable_variables)
        self.optimizer_start = [v.numpy() for v in self.model.optimizer.variables]

    def train(self, data, init: str, seed: int) -> dict:
        """Train from ``init``'s weights for the fixed budget; test accuracy and final loss."""
        import keras

        x_train, x_test, y_train, y_test, pixel_mean, pixel_var = data
        if self.architecture == "cnn":
            x_train, x_test = x_train.reshape(-1, 8, 8, 1), x_test.reshape(-1, 8, 8, 1)
        self.model.set_weights(initial_weights(self.settings, self.architecture, self.activation,
                                               init, seed, pixel_mean, pixel_var, x_train))
        for variable, value in zip(self.model.optimizer.variables, self.optimizer_start):
            variable.assign(value)
        keras.utils.set_random_seed(seed)  # the shuffling order
        start = time.perf_counter()
        history = self.model.fit(x_train, y_train, epochs=self.settings.epochs,
                                 batch_size=self.settings.batch_size, verbose=0, shuffle=True)
        _, accuracy = self.model.evaluate(x_test, y_test, verbose=0)
        final_loss = float(history.history["loss"][-1])
        return {"architecture": self.architecture, "activation": self.activation, "init": init,
                "seed": seed, "test_accuracy": float(accuracy), "final_loss": final_loss,
                "diverged": not math.isfinite(final_loss), "train_s": time.perf_counter() - start}


def train_all(settings: Settings, data) -> list[dict]:
    import keras

    runs = []
    for architecture in settings.architectures:
        for activation in settings.activations:
            network = CompiledNetwork(settings, architecture, activation)
            runs += [network.train(data, init, seed) for init in settings.inits for seed in settings.seeds]
            keras.backend.clear_session()
    return runs


def summarize(runs: list[dict]) -> list[dict]:
    """Accuracy over seeds per (architecture, activation, init)."""
    groups: dict[tuple, list[float]] = {}
    for run in runs:
        groups.setdefault((run["architecture"], run["activation"], run["init"]), []).append(
            run["test_accuracy"])
    return [{"architecture": a, "activation": act, "init": init, "mean_accuracy": mean(accs),
             "min_accuracy": min(accs), "max_accuracy": max(accs), "seeds": len(accs)}
            for (a, act, init), accs in groups.items()]


def headline(summary: list[dict]) -> dict:
    """Per init: mean accuracy over all cells; how often AutoInit is best (or within 1 point);
    how often AutoInit + calibration is at least as good as every other initializer."""
    out = {}
    for init in {row["init"] for row in summary}:
        out[f"mean_accuracy_{init}"] = mean(r["mean_accuracy"] for r in summary if r["init"] == init)
    cells: dict[tuple, dict[str, float]] = {}
    for row in summary:
        cells.setdefault((row["architecture"], row["activation"]), {})[row["init"]] = row["mean_accuracy"]
    if all("autoinit" in c for c in cells.values()):
        out["cells"] = len(cells)
        out["autoinit_best_or_within_1pt"] = sum(c["autoinit"] >= max(c.values()) - 0.01
                                                 for c in cells.values())
        out["autoinit_worse_by_over_5pt"] = sum(c["autoinit"] < max(c.values()) - 0.05
                                                for c in cells.values())
    if all("autoinit_calibrated" in c for c in cells.values()):
        others = [max(v for k, v in c.items() if k != "autoinit_calibrated") for c in cells.values()]
        mine = [c["autoinit_calibrated"] for c in cells.values()]
        out["calibrated_at_least_best_other"] = sum(m >= o for m, o in zip(mine, others))
        out["calibrated_best_or_within_1pt"] = sum(m >= o - 0.01 for m, o in zip(mine, others))
        out["calibrated_worst_shortfall"] = max(o - m for m, o in zip(mine, others))
    return out


def plot(summary: list[dict], settings: Settings, out_dir: Path) -> str:
    """Grouped bars: test accuracy per activation and initialization, min-max over seeds."""
    fig, axes = new_figure(1, len(settings.architectures), panel_size=(6.2, 3.8))
    width = 0.8 / len(settings.inits)
    for ax, architecture in zip(axes[0], settings.architectures):
        for j, init in enumerate(settings.inits):
            rows = {r["activation"]: r for r in summary
                    if r["architecture"] == architecture and r["init"] == init}
            xs = [i + (j - (len(settings.inits) - 1) / 2) * width
                  for i in range(len(settings.activations))]
            means = [rows[a]["mean_accuracy"] for a in settings.activations]
            errors = [[m - rows[a]["min_accuracy"] for a, m in zip(settings.activations, means)],
                      [rows[a]["max_accuracy"] - m for a, m in zip(settings.activations, means)]]
            ax.bar(xs, means, width, yerr=errors, capsize=2, label=init,
                   color=COLORS.get(init))
        ax.set_xticks(range(len(settings.activations)), settings.activations)
        ax.set_ylim(0, 1.18)
        ax.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
        ax.axhline(0.1, color="black", lw=0.6, ls=":", label="chance")
        depth = settings.mlp_depth if architecture == "mlp" else settings.cnn_depth
        ax.set_title(f"{architecture.upper()}, {depth} layers, {settings.epochs} epochs, digits")
        ax.set_ylabel("test accuracy (bars: min-max over seeds)")
    axes[0][0].legend(loc="upper center", ncol=4, fontsize=7, frameon=False)
    return save(fig, out_dir, "training.png")


def run(settings: Settings, out_dir: Path, preset: str) -> dict:
    start = time.perf_counter()
    data = load_digits_split(settings.test_fraction)
    runs = train_all(settings, data)
    summary = summarize(runs)
    plots = [plot(summary, settings, out_dir)]
    doc = make_result("training", preset, asdict(settings), {"runs": runs, "summary": summary},
                      headline(summary), plots, time.perf_counter() - start)
    write_result(doc, out_dir)
    return doc
