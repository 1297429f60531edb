"""AutoInitVisualizer: measured series agree with AutoInit's predictions; plots are written
and stay readable for long models."""
from __future__ import annotations

import json

import numpy as np
import pytest

from autoinit_sym.visualizer import (MAX_TICK_LABELS, AutoInitVisualizer, PropagationSeries,
                                     SignalPropagation, plot_signal_propagation,
                                     with_default_initializers)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def tanh_mlp(width: int = 256, depth: int = 3, kernel_initializer: str = "glorot_uniform"):
    import keras

    inputs = keras.Input((32,), name="x")
    x = inputs
    for i in range(depth):
        x = keras.layers.Dense(width, activation="tanh", kernel_initializer=kernel_initializer,
                               name=f"dense_{i}")(x)
        x = keras.layers.Dropout(0.2, name=f"dropout_{i}")(x)
    outputs = keras.layers.Dense(64, name="head")(x)
    return keras.Model(inputs, outputs, name="tanh_mlp")


@pytest.mark.parametrize("input_mean, input_var", [(0.0, 1.0), (3.0, 0.01), (-1.0, 25.0)])
def test_series_match_predictions_and_default_differs(tmp_path, input_mean, input_var):
    plot = tmp_path / "signal.png"
    series = AutoInitVisualizer().visualize(tanh_mlp(), plot_path=str(plot), num_samples=400,
                                            input_data_mean=input_mean, input_data_var=input_var)
    assert plot.read_bytes()[:8] == PNG_MAGIC
    assert series.layers[0] == "dense_0" and series.layers[-1] == "head"
    assert series.weighted == [name.startswith(("dense", "head")) for name in series.layers]
    auto = series.autoinit
    # Statistics over a layer's n units carry its weights' single draw; when the input is
    # far off-centre and narrow, each unit's output is nearly a fixed offset, so the
    # measured variance is chi-square-like (relative error ~ sqrt(2/n)) and the mean's
    # standard error ~ sqrt(var/n). Allow three of those.
    units = np.array([64 if name == "head" else 256 for name in series.layers])
    assert np.all(np.abs(auto.measured_var / auto.predicted_var - 1) <= 3 * np.sqrt(2 / units))
    assert np.all(np.abs(auto.measured_mean - auto.predicted_mean) <= 3 * np.sqrt(auto.predicted_var / units))
    # The head is linear: AutoInit puts its output at mean 0, variance 1.
    assert auto.predicted_var[-1] == pytest.approx(1.0)
    # Keras's default ignores the input statistics; the first pre-activation second moment
    # would be fan_in * Var(W) * (var + mean^2), far from AutoInit's 1 off-centre.
    assert np.all(np.isnan(series.default.predicted_var))
    if input_mean != 0.0:
        assert abs(np.log(series.default.measured_var[0] / auto.measured_var[0])) > 0.05


def test_signal_variance_and_model_left_untouched(tmp_path):
    model = tanh_mlp(depth=2)
    before = [np.array(w) for w in model.get_weights()]
    series = AutoInitVisualizer().visualize(model, plot_path=str(tmp_path / "p.png"), num_samples=300,
                                            signal_variance=2.0)
    assert series.autoinit.predicted_var[-1] == pytest.approx(2.0)
    assert series.autoinit.measured_var[-1] == pytest.approx(2.0, rel=3 * np.sqrt(2 / 64))
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)


def test_accepts_a_json_config_and_returns_serializable_series(tmp_path):
    series = AutoInitVisualizer().visualize(tanh_mlp(depth=1).to_json(), plot_path=str(tmp_path / "p.png"),
                                            num_samples=50)
    data = json.loads(json.dumps(series.as_dict()))
    assert data["layers"] == series.layers
    assert len(data["autoinit"]["measured_var"]) == len(series.layers)
    table = series.table().splitlines()
    assert table[0].split()[:2] == ["layer", "method"]
    assert [line.split()[0] for line in table[2:]] == ["dense_0", "head"]


def test_default_copy_resets_initializers():
    import keras

    model = tanh_mlp(depth=1, kernel_initializer=keras.initializers.Constant(0.5))
    copy = with_default_initializers(model)
    assert isinstance(copy.get_layer("dense_0").kernel_initializer, keras.initializers.GlorotUniform)
    kernel = np.asarray(copy.get_layer("dense_0").kernel)
    assert kernel.std() > 0 and abs(kernel.mean()) < 0.05
    np.testing.assert_array_equal(np.asarray(model.get_layer("dense_0").kernel), 0.5)


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_samples=1), "num_samples"),
    (dict(signal_variance=0.0), "signal_variance"),
    (dict(input_data_var=-1.0), "input_data_var"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AutoInitVisualizer().visualize(tanh_mlp(depth=1), **kwargs)


def synthetic_series(n: int) -> SignalPropagation:
    rng = np.random.default_rng(0)
    depth = np.arange(n)
    auto = PropagationSeries(np.zeros(n), np.ones(n), rng.normal(0, 0.02, n), 1 + rng.normal(0, 0.05, n))
    default = PropagationSeries(np.full(n, np.nan), np.full(n, np.nan), np.zeros(n), 0.9 ** depth)
    return SignalPropagation([f"block_{i}_conv" for i in range(n)], ["closed_form"] * n,
                             [True] * n, default, auto, 1.0)


def test_long_models_get_thinned_labels_and_a_log_scale(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    figures = []
    monkeypatch.setattr(plt.Figure, "savefig", lambda fig, path, **kw: figures.append(fig))
    plot_signal_propagation(synthetic_series(300), str(tmp_path / "long.png"))
    plot_signal_propagation(synthetic_series(300), str(tmp_path / "long.png"), log_variance=False, ylim=(0, 2))
    plot_signal_propagation(synthetic_series(12), str(tmp_path / "short.png"))
    (long_auto, long_linear, short) = [fig.axes[1] for fig in figures]
    assert 10 <= len(long_auto.get_xticks()) <= MAX_TICK_LABELS
    assert long_auto.get_yscale() == "log"     # 0.9**299 spans many decades
    assert long_linear.get_yscale() == "linear" and long_linear.get_ylim() == (0, 2)
    assert len(short.get_xticks()) == 12 and short.get_yscale() == "linear"
    assert [t.get_text() for t in short.get_xticklabels()][:2] == ["block_0_conv", "block_1_conv"]


def test_plot_file_is_written(tmp_path):
    path = tmp_path / "plot.png"
    plot_signal_propagation(synthetic_series(150), str(path))
    assert path.read_bytes()[:8] == PNG_MAGIC
