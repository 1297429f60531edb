"""Per-position second-moment profiles (``statistics.border_profile``): tap matrices against
the real Keras convolutions, profile bookkeeping through padding/cropping/pooling, and the
border effect they remove, measured through real initialized layers."""
import math

import keras
import numpy as np
import pytest
from keras import layers

from autoinit_sym import AutoInit
from autoinit_sym.statistics.border_profile import (along_axes, distinct, mixed, normalized, tap_matrix,
                                                     window_means)


def ones_conv_output(layer_class, profile: np.ndarray, **kwargs) -> np.ndarray:
    """The real layer with an all-ones kernel applied to ``profile`` (one channel): S = M r."""
    layer = layer_class(1, use_bias=False, kernel_initializer="ones", **kwargs)
    out = layer(profile[None, ..., None].astype("float64"))
    return np.asarray(keras.ops.convert_to_numpy(out), dtype=np.float64)[0, ..., 0]


CASES = [  # (kernel, strides, dilation, padding)
    (3, 1, 1, "same"), (3, 2, 1, "same"), (4, 2, 1, "same"), (5, 1, 2, "same"), (3, 1, 1, "valid"),
    (3, 2, 1, "valid"), (7, 2, 1, "same"),
]


@pytest.mark.parametrize("kernel,stride,dilation,padding", CASES)
def test_tap_matrices_match_keras_conv2d(kernel, stride, dilation, padding):
    rng = np.random.default_rng(0)
    profile = rng.uniform(0.2, 2.0, (11, 9))
    expected = ones_conv_output(layers.Conv2D, profile, kernel_size=kernel, strides=stride,
                                dilation_rate=dilation, padding=padding)
    matrices = [tap_matrix(n, o, kernel, stride, dilation, padding) for n, o in zip(profile.shape, expected.shape)]
    np.testing.assert_allclose(along_axes(matrices, profile), expected, rtol=1e-6)


@pytest.mark.parametrize("kernel,stride,padding", [(3, 1, "same"), (3, 2, "same"), (4, 2, "same"),
                                                   (3, 2, "valid"), (5, 3, "valid")])
def test_tap_matrices_match_keras_conv2d_transpose(kernel, stride, padding):
    profile = np.random.default_rng(1).uniform(0.2, 2.0, (6, 7))
    expected = ones_conv_output(layers.Conv2DTranspose, profile, kernel_size=kernel, strides=stride,
                                padding=padding)
    matrices = [tap_matrix(n, o, kernel, stride, 1, padding, transpose=True)
                for n, o in zip(profile.shape, expected.shape)]
    np.testing.assert_allclose(along_axes(matrices, profile), expected, rtol=1e-6)


def test_causal_conv1d_tap_matrix():
    profile = np.random.default_rng(2).uniform(0.5, 1.5, 13)
    expected = ones_conv_output(layers.Conv1D, profile, kernel_size=4, dilation_rate=2, padding="causal")
    np.testing.assert_allclose(along_axes([tap_matrix(13, 13, 4, 1, 2, "causal")], profile), expected, rtol=1e-6)


def test_profile_helpers():
    assert normalized(np.ones((3, 4))) is None
    assert normalized(np.zeros(5)) is None
    r = normalized(np.array([1.0, 2.0, 3.0]))
    assert r.mean() == pytest.approx(1.0)
    # Mixing: second-moment weights, None counts as uniform, a shape mismatch drops the profile.
    mix = mixed([np.array([0.5, 1.5]), None], [1.0, 3.0], (2,))
    np.testing.assert_allclose(mix, [0.875, 1.125])
    assert mixed([np.array([0.5, 1.5])], [1.0], (3,)) is None
    # Window means of a 2-pool over [1, 3, 2, 2] -> [2, 2]: uniform.
    assert window_means([tap_matrix(4, 2, 2, 2, 1, "valid")], np.array([0.5, 1.5, 1.0, 1.0])) is None
    values, inverse, fractions = distinct(np.array([[1.0, 2.0], [1.0, 1.0]]))
    np.testing.assert_array_equal(values, [1.0, 2.0])
    np.testing.assert_allclose(fractions, [0.75, 0.25])
    np.testing.assert_array_equal(values[inverse], [1.0, 2.0, 1.0, 1.0])


def _estimates(model, mean=0.0, var=1.0):
    return AutoInit(input_data_mean=mean, input_data_var=var).initialize_model(model, return_estimates=True)


def test_zero_padding_then_valid_conv_is_same_conv():
    """ZeroPadding2D(1) + a valid 3x3 convolution computes what a 'same' one does: the same
    fan-in (profile-weighted tap count) and the same output statistics."""
    keras.backend.clear_session()
    inputs = keras.Input((10, 10, 4))
    same = keras.Model(inputs, layers.Conv2D(8, 3, padding="same", activation="relu", name="c2")(
        layers.Conv2D(8, 3, padding="same", activation="relu", name="c1")(inputs)))
    x = layers.Conv2D(8, 3, activation="relu", name="c1")(layers.ZeroPadding2D(1)(inputs))
    padded = keras.Model(inputs, layers.Conv2D(8, 3, activation="relu", name="c2")(layers.ZeroPadding2D(1)(x)))
    _, a = _estimates(same)
    _, b = _estimates(padded)
    assert a["c2"].mean == pytest.approx(b["c2"].mean, rel=1e-9)
    assert a["c2"].var == pytest.approx(b["c2"].var, rel=1e-9)
    assert a["c2"].weights and list(a["c2"].weights.values())[0] == pytest.approx(list(b["c2"].weights.values())[0])


def relu_stack(depth: int, width: int, size: int = 12, head=None) -> keras.Model:
    keras.backend.clear_session()
    inputs = keras.Input((size, size, 4))
    x = inputs
    for i in range(depth):
        x = layers.Conv2D(width, 3, padding="same", activation="relu", name=f"conv{i}")(x)
    if head is not None:
        x = head(x)
    return keras.Model(inputs, x)


def relu_profiles(depth: int, size: int) -> list[np.ndarray]:
    """The profile recursion for 3x3 'same' ReLU convolutions on a uniform input:
    r_1 = normalized(M 1), r_(l+1) = normalized(M r_l) (ReLU keeps a zero-mean profile)."""
    matrix = tap_matrix(size, size, 3, 1, 1, "same")
    profile, out = None, []
    for _ in range(depth):
        profile = normalized(along_axes([matrix, matrix], profile))
        out.append(profile)
    return out


def outputs(model, names, samples=64, seed=0):
    sub = keras.Model(model.input, [model.get_layer(n).output for n in names])
    x = np.random.default_rng(seed).standard_normal((samples, *model.input_shape[1:])).astype("float32")
    ys = sub(x, training=True)
    ys = ys if isinstance(ys, (list, tuple)) else [ys]
    return [np.asarray(keras.ops.convert_to_numpy(y), dtype=np.float64) for y in ys]


def test_relu_profile_matches_measurement():
    """The measured per-position second moment of a deep ReLU 'same' stack (normalized per
    draw, so each draw's overall scale cancels; averaged over 4 draws) follows the recursion,
    and the walk scales the last kernel by the profile-weighted tap count C mean_o (M r)(o)."""
    depth, size, width = 6, 12, 96
    model = relu_stack(depth, width, size)
    predicted = relu_profiles(depth, size)
    measured = np.zeros((size, size))
    for seed in range(4):
        model, est = AutoInit(weight_init_config={"seed": seed}).initialize_model(model, return_estimates=True)
        (y,) = outputs(model, [f"conv{depth - 1}"], seed=seed)
        second = (y ** 2).mean(axis=(0, 3))
        measured += second / second.mean() / 4
    assert predicted[-1][0, 0] < 0.25 and predicted[-1][6, 6] > 1.5  # a uniform profile would fail
    np.testing.assert_allclose(measured, predicted[-1], rtol=0.1, atol=0.03)
    matrix = tap_matrix(size, size, 3, 1, 1, "same")
    fan_in = width * float(along_axes([matrix, matrix], predicted[-2]).mean())
    second = est[f"conv{depth - 2}"].var + est[f"conv{depth - 2}"].mean ** 2
    stddev = list(est[f"conv{depth - 1}"].weights.values())[0]
    assert stddev == pytest.approx(math.sqrt(1.0 / (fan_in * second)), rel=1e-9)
    plain = math.sqrt(1.0 / (width * float(along_axes([matrix, matrix], None).mean()) * second))
    # The strong interior of the input is where outputs have all their taps: the
    # profile-weighted count exceeds the plain one, so the weights are smaller.
    assert stddev < plain / 1.02


@pytest.mark.parametrize("head,tolerance", [
    (lambda: layers.Cropping2D(3), 0.03), (lambda: layers.UpSampling2D(2), 0.03),
    (lambda: layers.ZeroPadding2D(2), 0.03),
    (lambda: layers.MaxPooling2D(3, strides=2, padding="same"), 0.1), (lambda: layers.AveragePooling2D(2), 0.1),
])
def test_profile_through_rearranging_layers(head, tolerance):
    """After four bordered ReLU convolutions, each layer's second moment relative to its input's
    (the draw's scale cancels), averaged over 8 draws of width 96. Pooling reads +0.05 to +0.08:
    the per-channel offsets vary near the borders (fewer taps), and neighbours in one window
    share more of them than the average pair of positions the walk's shared variance is."""
    def build():
        keras.backend.clear_session()
        inputs = keras.Input((12, 12, 4))
        x = inputs
        for i in range(4):
            x = layers.Conv2D(96, 3, padding="same", activation="relu", name=f"conv{i}")(x)
        return keras.Model(inputs, head()(x))

    model = build()
    middle = model.layers[-1].name
    ratios = []
    for seed in range(8):
        model, est = AutoInit(weight_init_config={"seed": seed}).initialize_model(model, return_estimates=True)
        before, after = outputs(model, ["conv3", middle], samples=32, seed=seed)
        ratios.append((after ** 2).mean() / (before ** 2).mean())
    second = lambda e: e.var + e.mean ** 2  # noqa: E731
    predicted = second(est[middle]) / second(est["conv3"])
    assert abs(math.log(np.mean(ratios) / predicted)) < tolerance, (middle, np.mean(ratios), predicted)


def test_cropping_uses_the_profile():
    """Cropping the border of a bordered ReLU output keeps the stronger interior: the predicted
    second moment rises by the profile's interior mean (a uniform rule would keep it)."""
    model = relu_stack(3, 32, head=layers.Cropping2D(3))
    _, est = _estimates(model)
    crop = [k for k in est if k.startswith("cropping")][0]
    second = lambda e: e.var + e.mean ** 2  # noqa: E731
    interior = relu_profiles(3, 12)[-1][3:-3, 3:-3].mean()
    assert interior > 1.05
    assert second(est[crop]) == pytest.approx(second(est["conv2"]) * interior, rel=1e-6)


@pytest.mark.parametrize("norm,uniform", [(layers.LayerNormalization, True), (layers.BatchNormalization, False)])
def test_normalization_per_position_resets_the_profile(norm, uniform):
    """LayerNormalization over the channels gives every position the same second moment, so the
    next convolution counts plain taps; BatchNormalization scales all positions together and
    keeps the border profile."""
    keras.backend.clear_session()
    inputs = keras.Input((10, 10, 4))
    x = norm(name="norm")(layers.Conv2D(16, 3, padding="same", activation="relu")(inputs))
    model = keras.Model(inputs, layers.Conv2D(16, 3, padding="same", name="last")(x))
    _, est = _estimates(model)
    matrix = tap_matrix(10, 10, 3, 1, 1, "same")
    second = est["norm"].var + est["norm"].mean ** 2
    plain = math.sqrt(1.0 / (16 * float(along_axes([matrix, matrix], None).mean()) * second))
    stddev = list(est["last"].weights.values())[0]
    assert (stddev == pytest.approx(plain, rel=1e-9)) == uniform
