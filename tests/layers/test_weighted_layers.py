"""Every weighted layer: predicted vs measured output statistics of the real, freshly
initialized layer on Gaussian noise (narrow, unit, wide and off-centre inputs)."""
import keras
import numpy as np
import pytest

from autoinit_sym import AutoInit
from autoinit_sym.estimators.convolutional import forward_taps, transpose_taps
from autoinit_sym.measure import measure

INPUTS = {"unit": (0.0, 1.0), "narrow": (0.0, 1e-4), "wide": (0.0, 100.0), "off_centre": (3.0, 0.5)}

LAYERS = {
    "dense": ((64,), lambda: keras.layers.Dense(512)),
    "dense_relu": ((64,), lambda: keras.layers.Dense(512, activation="relu")),
    "dense_const_bias": ((64,), lambda: keras.layers.Dense(512, bias_initializer=keras.initializers.Constant(0.5))),
    "dense_random_bias": ((64,), lambda: keras.layers.Dense(
        256, activation="tanh", bias_initializer=keras.initializers.RandomNormal(0.2, 0.3))),
    "einsum_dense": ((8, 16), lambda: keras.layers.EinsumDense("abc,cd->abd", output_shape=(8, 256), bias_axes="d")),
    "einsum_dense_2": ((8, 16), lambda: keras.layers.EinsumDense("abc,bcd->ad", output_shape=(256,))),
    "conv1d_causal": ((20, 8), lambda: keras.layers.Conv1D(128, 3, padding="causal", dilation_rate=2)),
    "conv1d_same_stride": ((21, 8), lambda: keras.layers.Conv1D(128, 4, strides=2, padding="same")),
    "conv2d_groups": ((9, 9, 8), lambda: keras.layers.Conv2D(128, 3, padding="same", groups=2, activation="elu")),
    "conv2d_valid": ((9, 9, 8), lambda: keras.layers.Conv2D(128, 3, strides=2)),
    "conv3d": ((5, 5, 5, 4), lambda: keras.layers.Conv3D(128, 2, padding="same")),
    "conv1d_transpose": ((10, 8), lambda: keras.layers.Conv1DTranspose(128, 3, strides=2, padding="same")),
    "conv2d_transpose_valid": ((6, 6, 8), lambda: keras.layers.Conv2DTranspose(128, 3, strides=2)),
    "conv2d_transpose_same": ((6, 6, 8), lambda: keras.layers.Conv2DTranspose(128, 4, strides=3, padding="same")),
    "conv3d_transpose": ((3, 3, 3, 4), lambda: keras.layers.Conv3DTranspose(64, 3, strides=2, padding="same")),
    "depthwise1d": ((16, 128), lambda: keras.layers.DepthwiseConv1D(3, depth_multiplier=2, padding="same")),
    "depthwise2d": ((9, 9, 256), lambda: keras.layers.DepthwiseConv2D(3, strides=2, padding="same")),
    "separable1d": ((16, 64), lambda: keras.layers.SeparableConv1D(128, 3, padding="same")),
    "separable2d": ((8, 8, 32), lambda: keras.layers.SeparableConv2D(128, 3, depth_multiplier=2, activation="relu")),
}


def initialized(shape, make_layer, mean, var, seed=0, **kwargs):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape)
    model = keras.Model(inputs, make_layer()(inputs))
    return AutoInit(input_data_mean=mean, input_data_var=var, weight_init_config={"seed": seed},
                    **kwargs).initialize_model(
        model, return_estimates=True)


@pytest.mark.parametrize("stats", list(INPUTS))
@pytest.mark.parametrize("name", list(LAYERS))
def test_prediction_matches_measurement(name, stats):
    """A single weight draw has only as many independent per-channel gains (and, off
    centre, per-channel offsets: input mean x the sum of the channel's weights) as
    output channels; where those are few or the fan-in is tiny (depthwise, separable)
    the measurement is averaged over several weight draws."""
    keras.backend.clear_session()  # layer names independent of test order
    shape, make_layer = LAYERS[name]
    mean_in, var_in = INPUTS[stats]
    measured = []
    draws = 12 if stats == "off_centre" else 3 if name.startswith(("depthwise", "separable")) else 1
    for seed in range(draws):
        model, estimates = initialized(shape, make_layer, mean_in, var_in, seed=seed)
        (key, estimate), = estimates.items()
        measured.append(measure(model, mean_in, var_in, samples=256 // min(draws, 2))[key])
    measured_mean, measured_var = np.mean(measured, axis=0)
    assert measured_var == pytest.approx(estimate.var, rel=0.12)
    assert measured_mean == pytest.approx(estimate.mean, abs=0.12 * np.sqrt(estimate.var))
    if not name.startswith(("dense_relu", "dense_const", "dense_random", "conv2d_groups", "separable2d")):
        assert estimate.var == pytest.approx(1.0)  # linear, zero bias: exactly signal_variance


def test_embedding_output_is_set_directly():
    inputs = keras.Input((12,), dtype="int32")
    model = keras.Model(inputs, keras.layers.Embedding(50, 64)(inputs))
    model, estimates = AutoInit(signal_variance=2.0).initialize_model(model, return_estimates=True)
    mean, var = estimates["embedding"] if "embedding" in estimates else next(iter(estimates.values()))
    assert (mean, var) == (0.0, 2.0)
    table = keras.ops.convert_to_numpy(model.layers[-1].embeddings)
    assert table.mean() == pytest.approx(0.0, abs=0.05)
    assert table.var() == pytest.approx(2.0, rel=0.05)


def test_signal_variance_scales_the_output():
    model, estimates = initialized((64,), LAYERS["dense"][1], 0.0, 1.0, signal_variance=3.0)
    (key, estimate), = estimates.items()
    assert estimate.var == pytest.approx(3.0)
    assert measure(model, samples=256)[key][1] == pytest.approx(3.0, rel=0.1)


def test_kernel_std_follows_the_input_second_moment():
    _, estimates = initialized((64,), LAYERS["dense"][1], 2.0, 5.0)
    (estimate,) = estimates.values()
    (std,) = estimate.weights.values()
    assert std == pytest.approx(np.sqrt(1.0 / (64 * (5.0 + 4.0))))


@pytest.mark.parametrize("in_len, kernel, stride, dilation, padding", [
    (9, 3, 1, 1, "same"), (9, 3, 2, 1, "same"), (10, 4, 3, 1, "same"), (10, 4, 1, 2, "same"), (9, 3, 1, 1, "causal"),
    (9, 3, 2, 1, "valid"), (7, 5, 2, 1, "valid"), (11, 3, 1, 3, "valid")])
def test_tap_counts_match_a_real_convolution_of_ones(in_len, kernel, stride, dilation, padding):
    """The counted taps equal the mean output of the layer on ones with a ones kernel."""
    layer = keras.layers.Conv1D(1, kernel, strides=stride, dilation_rate=dilation, padding=padding,
                                use_bias=False, kernel_initializer="ones")
    out = keras.ops.convert_to_numpy(layer(np.ones((1, in_len, 1), "float32")))
    assert forward_taps(in_len, out.shape[1], kernel, stride, dilation, padding) == pytest.approx(out.mean())
    if padding != "causal" and dilation == 1:
        transpose = keras.layers.Conv1DTranspose(1, kernel, strides=stride, padding=padding,
                                                 use_bias=False, kernel_initializer="ones")
        out = keras.ops.convert_to_numpy(transpose(np.ones((1, in_len, 1), "float32")))
        assert transpose_taps(in_len, out.shape[1], kernel, stride, 1, padding) == pytest.approx(out.mean())


@pytest.mark.parametrize("in_len, kernel, stride, dilation, padding, output_padding", [
    (9, 3, 2, 1, "same", 1), (9, 3, 2, 1, "valid", 1), (8, 4, 3, 1, "same", 2), (8, 4, 3, 1, "valid", 0),
    (9, 3, 1, 2, "same", None), (9, 3, 1, 2, "valid", None), (7, 5, 2, 1, "same", 0)])
def test_transpose_tap_counts_with_output_padding_and_dilation(in_len, kernel, stride, dilation, padding,
                                                               output_padding):
    if dilation > 1 and keras.backend.backend() == "tensorflow":
        pytest.skip("TensorFlow's CPU kernel (Conv2DBackpropInput) refuses dilated transposed convolutions")
    layer = keras.layers.Conv1DTranspose(1, kernel, strides=stride, dilation_rate=dilation, padding=padding,
                                         output_padding=output_padding, use_bias=False, kernel_initializer="ones")
    out = keras.ops.convert_to_numpy(layer(np.ones((1, in_len, 1), "float32")))
    assert transpose_taps(in_len, out.shape[1], kernel, stride, dilation, padding) == pytest.approx(out.mean())
