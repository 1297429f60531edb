"""Deep MLPs without normalization: Gaussian noise through the initialized model
(training mode) keeps every Dense output's variance near signal_variance.

Dense layers are linear and followed by Activation layers, so the measured Dense
output is the pre-activation AutoInit scales to variance 1.
"""
import keras
import numpy as np
import pytest

from autoinit_sym import AutoInit
from autoinit_sym.statistics.activation import activation_statistics
from autoinit_sym.measure import measure

SAMPLES = 512


def mlp(activation: str, depth: int, width: int, seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((width,))
    x = inputs
    for i in range(depth):
        x = keras.layers.Dense(width, name=f"dense{i}")(x)
        x = keras.layers.Activation(activation, name=f"act{i}")(x)
    return keras.Model(inputs, x)


def dense_variances(activation: str, depth: int, width: int, seed: int) -> np.ndarray:
    model = AutoInit(weight_init_config={"seed": seed}).initialize_model(mlp(activation, depth, width, seed))
    measured = measure(model, samples=SAMPLES, seed=seed)
    return np.array([measured[f"dense{i}"][1] for i in range(depth)])


def mean_over_draws(activation: str, depth: int = 10, width: int = 256, draws: int = 8) -> np.ndarray:
    """Per Dense layer, the arithmetic mean over ``draws`` independently seeded weight draws of
    the measured variance: the statistic AutoInit's prediction (an expectation over draws) is."""
    return np.mean([dense_variances(activation, depth, width, seed) for seed in range(draws)], axis=0)


BOUNDS = {"gelu": (0.8, 1.4)}


@pytest.mark.parametrize("activation", ["relu", "tanh", "selu", "gelu", "elu", "sigmoid", "softplus",
                                        "mish", "leaky_relu"])
def test_ten_layer_mlp_keeps_unit_variance(activation):
    """Issue 3's floors, on the mean over 8 draws (width 256, depth 10). Measured per layer:
    relu 1.00-1.13, tanh and selu within 1%, elu 0.97-1.02, sigmoid 0.92-1.07, softplus
    0.93-1.10, mish 1.00-1.10, leaky_relu 0.98-1.09; gelu drifts upward with depth (1.26 at
    layer 10: its variance map has slope slightly above 1 at the fixed point, so finite-width
    fluctuations grow), hence its wider bound. silu is in the next test."""
    low, high = BOUNDS.get(activation, (0.8, 1.25))
    variances = mean_over_draws(activation)
    assert np.all((variances >= low) & (variances <= high)), np.round(variances, 3)


@pytest.mark.parametrize("activation, high", [("silu", 1.8), ("hard_silu", 2.8)])
def test_unstable_variance_maps_drift_but_each_layer_is_predicted(activation, high):
    """silu and hard_silu have variance maps with slope > 1 at the fixed point: finite
    width and the spread of per-sample input norms make even exact statistics drift
    upward with depth (layer 10, mean over 8 draws: silu 1.50, hard_silu 2.15; calibration,
    ``initialize_model(calibrate=True)``, removes the drift of a draw). Checked: the
    first three layers are at 1, the drift stays below the recorded bound, and in the
    first five layers each activation's output is predicted from its measured input
    (deeper, the pooled input is a visibly non-Gaussian scale mixture: that is the drift)."""
    variances = mean_over_draws(activation)
    assert np.all(np.abs(np.log(variances[:3])) < np.log(1.1)), np.round(variances, 3)
    assert np.all((variances >= 0.7) & (variances <= high)), np.round(variances, 3)

    model = AutoInit().initialize_model(mlp(activation, 10, 256, 0))
    measured = measure(model, samples=SAMPLES)
    for i in range(5):
        mean_in, var_in = measured[f"dense{i}"]
        mean, var, _ = activation_statistics(activation, mean_in, var_in)
        assert measured[f"act{i}"][1] == pytest.approx(var, rel=0.08), i
        assert measured[f"act{i}"][0] == pytest.approx(mean, abs=0.05 * np.sqrt(var)), i


@pytest.mark.parametrize("activation", ["tanh", "selu"])
def test_forty_layer_mlp_single_draw(activation):
    variances = dense_variances(activation, depth=40, width=128, seed=0)
    assert np.all((variances >= 0.75) & (variances <= 1.33)), np.round(variances, 3)
