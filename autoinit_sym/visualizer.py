"""Signal propagation through a model, under Keras's default initialization and under AutoInit.

:class:`AutoInitVisualizer` pushes Gaussian noise through two copies of a model (one with
every initializer reset to its Keras default, one initialized by :class:`AutoInit`),
records the mean and variance after every layer in training mode, and plots them beside
AutoInit's predictions. The series come back as a :class:`SignalPropagation` so that they
can be checked programmatically.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

MAX_TICK_LABELS = 40        # thin x labels beyond this many layers
LOG_SCALE_SPREAD = 1e3      # variance panel goes log when max/min variance exceeds this


@dataclass
class PropagationSeries:
    """Per-layer statistics of one initialization; NaN where there is no value."""

    predicted_mean: np.ndarray
    predicted_var: np.ndarray
    measured_mean: np.ndarray
    measured_var: np.ndarray

    def as_dict(self) -> dict[str, list[float]]:
        return {key: [float(v) for v in getattr(self, key)] for key in
                ("predicted_mean", "predicted_var", "measured_mean", "measured_var")}


@dataclass
class SignalPropagation:
    """What :meth:`AutoInitVisualizer.visualize` measured, in walk order, one entry per layer.

    ``default`` holds the model with Keras's default initializers (measured only),
    ``autoinit`` the AutoInit-initialized model (predicted and measured);
    ``methods[i]`` says how AutoInit obtained its prediction for ``layers[i]`` and
    ``weighted[i]`` whether that layer has trainable weights.
    """

    layers: list[str]
    methods: list[str]
    weighted: list[bool]
    default: PropagationSeries
    autoinit: PropagationSeries
    signal_variance: float

    def table(self, weighted_only: bool = True) -> str:
        """An aligned text table, one row per layer (weighted layers only by default):
        AutoInit's predicted and measured mean and variance beside the variance measured
        under Keras's default initialization."""
        header = ("layer", "method", "pred mean", "meas mean", "pred var", "meas var", "default var")
        rows = [(name, method, *(f"{v:.4g}" for v in (
                    self.autoinit.predicted_mean[i], self.autoinit.measured_mean[i],
                    self.autoinit.predicted_var[i], self.autoinit.measured_var[i],
                    self.default.measured_var[i])))
                for i, (name, method, weighted) in enumerate(zip(self.layers, self.methods, self.weighted))
                if weighted or not weighted_only]
        widths = [max(len(row[c]) for row in [header, *rows]) for c in range(len(header))]
        lines = ["  ".join(cell.ljust(w) if c < 2 else cell.rjust(w)
                           for c, (cell, w) in enumerate(zip(row, widths)))
                 for row in [header, *rows]]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {"layers": list(self.layers), "methods": list(self.methods),
                "weighted": list(self.weighted), "signal_variance": self.signal_variance,
                "default": self.default.as_dict(), "autoinit": self.autoinit.as_dict()}


def with_default_initializers(model: Any) -> Any:
    """A fresh copy of ``model`` whose layers use their class's default initializers
    (the ones Keras picks when none is given), newly drawn."""
    import keras

    def clone(layer: Any) -> Any:
        if isinstance(layer, keras.Model):
            return with_default_initializers(layer)
        config = layer.get_config()
        params = inspect.signature(type(layer).__init__).parameters
        for key in config:
            if key.endswith("_initializer") and key in params:
                default = params[key].default
                if default is not inspect.Parameter.empty:
                    config[key] = default
        return type(layer).from_config(config)

    return keras.models.clone_model(model, clone_function=clone)


def _series(names: Sequence[str], measured: Mapping[str, Any],
            predicted: Mapping[str, Any] | None = None) -> PropagationSeries:
    def column(source: Mapping[str, Any] | None, index: int) -> np.ndarray:
        """Entry ``index`` (0 mean, 1 var) per layer; the first output's for several outputs."""
        values = [np.ravel(tuple(source[n])[index])[0] if source is not None and n in source
                  else np.nan for n in names]
        return np.asarray(values, dtype=np.float64)

    return PropagationSeries(column(predicted, 0), column(predicted, 1),
                             column(measured, 0), column(measured, 1))


class AutoInitVisualizer:
    """Plot predicted and measured signal propagation for default and AutoInit initialization.

    Args:
        custom_distribution_estimators: ``{LayerClass: EstimatorClass}`` passed to
            :class:`AutoInit` for layers it does not know.

    Example::

        series = AutoInitVisualizer().visualize(model, plot_path="signal.png")
        series.autoinit.measured_var   # per-layer variance after AutoInit
    """

    def __init__(self, custom_distribution_estimators: Mapping[type, type] | None = None) -> None:
        self.custom_distribution_estimators = dict(custom_distribution_estimators or {})

    def visualize(self, model: Any, custom_objects: Mapping[str, Any] | None = None,
                  plot_path: str | None = None, num_samples: int = 100,
                  ylim: tuple[float, float] | None = None, signal_variance: float = 1.0, *,
                  input_data_mean: float = 0.0, input_data_var: float = 1.0, seed: int = 0,
                  log_variance: bool | None = None, weight_init_config: dict | None = None,
                  ) -> SignalPropagation:
        """Measure both copies on ``num_samples`` Gaussian inputs (mean ``input_data_mean``,
        variance ``input_data_var``, training mode) and plot them.

        The plot is written to ``plot_path`` (PNG) or shown when it is None. ``ylim`` bounds
        the variance panel; ``log_variance`` forces (True) or forbids (False) a log scale
        there, which by default is used when the variances spread over more than three
        decades. The model itself is left untouched.
        """
        import keras

        from .autoinit import AutoInit
        from .walk.loading import load_model
        from .measure import measure

        if not (isinstance(num_samples, (int, np.integer)) and num_samples >= 2):
            raise ValueError(f"num_samples must be an integer >= 2, got {num_samples!r}")
        if not signal_variance > 0:
            raise ValueError(f"signal_variance must be > 0, got {signal_variance!r}")
        if not input_data_var > 0:
            raise ValueError(f"input_data_var must be > 0, got {input_data_var!r}")
        model = load_model(model, custom_objects)  # a JSON string or config dict becomes a model
        default_model = with_default_initializers(model)
        autoinit = AutoInit(weight_init_config=weight_init_config, input_data_mean=input_data_mean,
                            input_data_var=input_data_var, signal_variance=signal_variance,
                            custom_distribution_estimators=self.custom_distribution_estimators)
        auto_model, estimates = autoinit.initialize_model(
            keras.models.clone_model(model), return_estimates=True, custom_objects=custom_objects)

        sampling = dict(input_mean=input_data_mean, input_var=input_data_var,
                        samples=int(num_samples), seed=seed, training=True)
        measured_auto = measure(auto_model, **sampling)
        measured_default = measure(default_model, **sampling)

        names = [name for name in estimates if name in measured_auto]
        series = SignalPropagation(
            layers=names,
            methods=[estimates[n].method for n in names],
            weighted=[bool(estimates[n].weights) for n in names],
            default=_series(names, measured_default),
            autoinit=_series(names, measured_auto, estimates),
            signal_variance=float(signal_variance))
        plot_signal_propagation(series, plot_path, title=f"Signal propagation: {model.name}",
                                ylim=ylim, log_variance=log_variance)
        return series


def plot_signal_propagation(series: SignalPropagation, plot_path: str | None = None, *,
                            title: str = "Signal propagation", ylim: tuple[float, float] | None = None,
                            log_variance: bool | None = None) -> None:
    """Two panels (mean, variance) per layer: default measured, AutoInit measured and
    predicted, with reference lines at mean 0 and at the target variance."""
    import matplotlib
    if plot_path is not None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(series.layers)
    x = np.arange(n)
    fig, (ax_mean, ax_var) = plt.subplots(2, 1, sharex=True, figsize=(min(24.0, 8.0 + 0.12 * n), 8.0),
                                          constrained_layout=True)
    styles = [
        (series.default.measured_mean, series.default.measured_var,
         dict(color="tab:orange", marker="o", label="Keras default, measured")),
        (series.autoinit.measured_mean, series.autoinit.measured_var,
         dict(color="tab:blue", marker="o", label="AutoInit, measured")),
        (series.autoinit.predicted_mean, series.autoinit.predicted_var,
         dict(color="black", linestyle="--", marker="x", label="AutoInit, predicted")),
    ]
    marker_size = 4.0 if n <= 60 else 1.5
    for mean, var, style in styles:
        ax_mean.plot(x, mean, markersize=marker_size, linewidth=1.2, **style)
        ax_var.plot(x, var, markersize=marker_size, linewidth=1.2, **style)
    ax_mean.axhline(0.0, color="gray", linewidth=0.8, linestyle=":", label="mean 0")
    ax_var.axhline(series.signal_variance, color="gray", linewidth=0.8, linestyle=":",
                   label=f"signal_variance {series.signal_variance:g} (weighted layers, before activation)")

    if log_variance is None:
        positive = np.concatenate([series.default.measured_var, series.autoinit.measured_var])
        positive = positive[np.isfinite(positive) & (positive > 0)]
        log_variance = positive.size > 0 and positive.max() / positive.min() > LOG_SCALE_SPREAD
    if log_variance:
        ax_var.set_yscale("log")
    if ylim is not None:
        ax_var.set_ylim(*ylim)

    ax_mean.set_ylabel("mean of layer output")
    ax_var.set_ylabel("variance of layer output" + (" (log scale)" if log_variance else ""))
    ax_var.set_xlabel("layer (in walk order)")
    ax_mean.set_title(title)
    ax_mean.legend(loc="best", fontsize="small")
    ax_var.legend(loc="best", fontsize="small")
    for ax in (ax_mean, ax_var):
        ax.grid(True, alpha=0.3)

    step = max(1, int(np.ceil(n / MAX_TICK_LABELS)))
    ticks = x[::step]
    ax_var.set_xticks(ticks)
    ax_var.set_xticklabels([series.layers[i] for i in ticks], rotation=90, fontsize="x-small")

    if plot_path is None:
        plt.show()
    else:
        fig.savefig(plot_path, dpi=110)
    plt.close(fig)
