"""Model-level quality: predictions track measurement layer by layer.

Each model is initialized by AutoInit, then Gaussian noise goes through it in training mode
(``autoinit_sym.measure``); per layer call, |log(measured var / predicted var)| must have a
median <= 0.1 and a 90th percentile <= 0.35 (issue 3).
"""
import math

import keras
import numpy as np
import pytest
from keras import layers

from autoinit_sym import AutoInit
from autoinit_sym.measure import measure


def log_errors(model, input_mean=0.0, input_var=1.0, samples=128, seeds=(0, 1, 2)) -> dict[str, float]:
    """|mean over seeds of log(measured var / predicted var)| per single-output layer call.

    Each seed redraws the weights (AutoInit's seed) and the noise. The predictions are
    expectations over the weight draw; a single draw of a narrow network wanders around them,
    so the measured variances are averaged geometrically over draws, as for the MLP figures."""
    logs: dict[str, list[float]] = {}
    for seed in seeds:
        model, estimates = AutoInit(input_data_mean=input_mean, input_data_var=input_var,
                                    weight_init_config={"seed": seed}).initialize_model(model, return_estimates=True)
        measured = measure(model, input_mean, input_var, samples=samples, seed=seed, batch_size=samples)
        for key, estimate in estimates.items():
            pred_var, meas = estimate.var, measured.get(key)
            if meas is None or isinstance(pred_var, tuple) or pred_var <= 0 or meas[1] <= 0:
                continue
            logs.setdefault(key, []).append(math.log(meas[1] / pred_var))
    return {key: abs(float(np.mean(v))) for key, v in logs.items() if len(v) == len(seeds)}


def assert_quality(errors: dict[str, float], median: float = 0.1, p90: float = 0.35) -> None:
    values = np.array(list(errors.values()))
    worst = sorted(errors.items(), key=lambda kv: -kv[1])[:5]
    assert len(values) >= 5
    assert np.median(values) <= median and np.quantile(values, 0.9) <= p90, (
        f"median {np.median(values):.3f}, p90 {np.quantile(values, 0.9):.3f}; worst {worst}")


def plain_cnn(kind: str, activation: str, pooling: bool = False, width: int = 32) -> keras.Model:
    """Eight layers of one convolution type on a 16x16x3 input, halved once (a strided
    convolution, or max pooling) and read out by Flatten + Dense (or global average pooling)."""
    conv = {
        "conv": lambda: layers.Conv2D(width, 3, padding="same", activation=activation),
        "depthwise": lambda: layers.DepthwiseConv2D(3, padding="same", activation=activation),
        "separable": lambda: layers.SeparableConv2D(width, 3, padding="same", activation=activation),
        "transpose": lambda: layers.Conv2DTranspose(width, 3, padding="same", activation=activation),
    }[kind]
    keras.backend.clear_session()  # layer names, hence AutoInit's seeds, independent of test order
    inputs = keras.Input((16, 16, 3))
    x = layers.Conv2D(width, 3, padding="same", activation=activation)(inputs)
    for i in range(8):
        x = conv()(x)
        if i == 3:
            x = layers.MaxPooling2D(2)(x) if pooling else layers.Conv2D(width, 3, strides=2, activation=activation)(x)
    x = layers.GlobalAveragePooling2D()(x) if pooling else layers.Flatten()(x)
    return keras.Model(inputs, layers.Dense(10)(x))


# Diagnosed (paired simulations, zero vs circular padding, same weights): the upward drift of
# ReLU nets is a border effect of padding="same". A position's pre-activation second moment is
# proportional to the sum of its input's second moments over the taps valid there; border
# positions have both fewer taps and a lower input variance (they were borders one layer
# earlier), so the pooled second moment grows by 1 + Cov(r, taps)/(E r * E taps) per layer:
# predicted +0.026, +0.061, ... +0.53 in log E[z^2] over plain_cnn's ten convolutions (simulated
# +0.56; independent of width and of the input channel count; circular padding removes it;
# the strided "valid" convolution adds a one-off +0.12 by reading mostly interior positions).
# tanh/selu contract such deviations, ReLU (a homogeneous, marginally stable map) carries them.
# The fix is to carry a per-position relative second-moment profile through the walk and use
# the profile-weighted tap count as the fan-in. Separately, per-draw spread is large for ReLU at
# width 64 (sd of log E[z^2] about 0.6 at layer 10): even an exact predictor passes median <= 0.1
# and p90 <= 0.35 on a 3-draw geometric mean in only ~40% of draw triples.
OFFSET_DRIFT = pytest.mark.xfail(
    reason="ReLU nets: 'same'-padding border profile raises the second moment layer by layer "
           "(+0.27 measured at the last convolution, +0.53 predicted by the border recursion before "
           "draw spread), not modelled yet: the walk carries no per-position variance profile", strict=False)
KINDS = ["conv", "depthwise", "separable", "transpose"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("activation", ["tanh", "selu"])
def test_plain_cnn(kind, activation):
    assert_quality(log_errors(plain_cnn(kind, activation, width=64), samples=64))


@OFFSET_DRIFT
def test_plain_relu_cnn():
    assert_quality(log_errors(plain_cnn("conv", "relu", width=64), samples=64))


@pytest.mark.parametrize("activation", [pytest.param("relu", marks=OFFSET_DRIFT), "tanh"])
def test_cnn_with_pooling(activation):
    """Max pooling of tanh outputs has a positive mean too: the layers after it carry offsets,
    which the global average pooling keeps (position-shared variance)."""
    assert_quality(log_errors(plain_cnn("conv", activation, pooling=True, width=64), samples=64))


def residual_net(activation: str, blocks: int = 6, width: int = 32) -> keras.Model:
    """Residual blocks without normalization: x + conv(act(conv(x))), with average pooling."""
    keras.backend.clear_session()
    inputs = keras.Input((16, 16, 3))
    x = layers.Conv2D(width, 3, padding="same")(inputs)
    for i in range(blocks):
        y = layers.Conv2D(width, 3, padding="same", activation=activation)(x)
        y = layers.Conv2D(width, 3, padding="same")(y)
        x = layers.Add()([x, y])
        x = layers.Activation(activation)(x)
        if i == blocks // 2:
            x = layers.AveragePooling2D(2)(x)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(10)(x))


def test_residual_net_without_normalization():
    assert_quality(log_errors(residual_net("tanh", width=64), samples=64))


@OFFSET_DRIFT
def test_residual_relu_net():
    assert_quality(log_errors(residual_net("relu", width=64), samples=64))


def every_merge_model() -> keras.Model:
    """Two dense branches merged by every merge layer, dropout and normalization in between."""
    keras.backend.clear_session()
    inputs = keras.Input((64,))
    a = layers.Dense(64, activation="relu")(inputs)
    b = layers.Dense(64, activation="tanh")(inputs)
    merged = [layer([a, b]) for layer in (layers.Add(), layers.Subtract(), layers.Average(), layers.Multiply(),
                                          layers.Maximum(), layers.Minimum())]
    x = layers.Concatenate()(merged + [layers.Dot(axes=1)([a, b])])
    x = layers.Dropout(0.2)(x)
    x = layers.Dense(64, activation="selu")(x)
    c = layers.Dense(64)(x)
    x = layers.Maximum()([x, c, layers.Dense(64, activation="elu")(x)])
    x = layers.LayerNormalization()(x)
    return keras.Model(inputs, layers.Dense(8)(x))


def test_every_merge_layer():
    assert_quality(log_errors(every_merge_model(), samples=1024))


def test_off_centre_input():
    """A far-off-centre input (mean 5, var 0.01) is scaled by its second moment at the first layer."""
    assert_quality(log_errors(plain_cnn("conv", "tanh", width=64), input_mean=5.0, input_var=0.01, samples=64))
