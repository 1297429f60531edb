"""Model-level quality: predictions track measurement layer by layer.

Each model is initialized by AutoInit, then Gaussian noise goes through it in training mode
(``autoinit_sym.measure``); per layer call, |log(measured var / predicted var)| must have a
median <= 0.1 and a 90th percentile <= 0.35 (issue 3).
"""

import keras
import pytest
from keras import layers

from helpers import DRAWS, assert_quality, log_errors


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


KINDS = ["conv", "depthwise", "separable", "transpose"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("activation", ["tanh", "selu"])
def test_plain_cnn(kind, activation):
    assert_quality(log_errors(plain_cnn(kind, activation, width=64)))


RELU_WIDTH = 128
"""ReLU nets spread most from draw to draw (about 0.6 in log variance at the tenth convolution
of width 64): at width 128 three disjoint sets of 16 draws all meet the figures (median
0.01-0.08, p90 0.04-0.22), at width 64 one set in three misses the median (0.116)."""


@pytest.mark.parametrize("kind", ["conv", "transpose"])
def test_plain_relu_cnn(kind):
    """ReLU carries any deviation undamped: before the per-position profile (borders of
    padding="same") the last convolutions drifted to +0.39 in log variance."""
    assert_quality(log_errors(plain_cnn(kind, "relu", width=RELU_WIDTH)))


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_cnn_with_pooling(activation):
    """Max pooling of tanh outputs has a positive mean too: the layers after it carry offsets,
    which the global average pooling keeps (position-shared variance)."""
    width = RELU_WIDTH if activation == "relu" else 64
    assert_quality(log_errors(plain_cnn("conv", activation, pooling=True, width=width)))


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


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_residual_net_without_normalization(activation):
    """ReLU blocks add a ReLU output to a Gaussian branch: the activation after each sum is
    integrated as such (``statistics.residual_sums``)."""
    width = RELU_WIDTH if activation == "relu" else 64
    assert_quality(log_errors(residual_net(activation, width=width)))


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
    assert_quality(log_errors(every_merge_model(), samples=1024, seeds=DRAWS[:4]))


def test_off_centre_input():
    """A far-off-centre input (mean 5, var 0.01) is scaled by its second moment at the first layer."""
    assert_quality(log_errors(plain_cnn("conv", "tanh", width=64), input_mean=5.0, input_var=0.01))
