"""Activation layers: predicted vs measured output statistics on Gaussian noise."""
import keras
import numpy as np
import pytest

from autoinit_sym import AutoInit
from autoinit_sym.statistics.activation import activation_statistics
from autoinit_sym.measure import measure

INPUTS = {"unit": (0.0, 1.0), "narrow": (0.5, 1e-3), "wide": (0.0, 25.0), "off_centre": (-1.5, 0.5)}
WIDTH, SAMPLES = 1000, 100

ELEMENTWISE = ["relu", "relu6", "leaky_relu", "elu", "celu", "selu", "gelu", "silu", "mish", "tanh",
               "sigmoid", "hard_sigmoid", "hard_silu", "softplus", "softsign", "log_sigmoid",
               "hard_tanh", "soft_shrink", "hard_shrink", "tanh_shrink", "sparse_plus", "squareplus"]

LAYERS = {
    "relu_layer": lambda: keras.layers.ReLU(max_value=1.0, negative_slope=0.1, threshold=0.5),
    "leaky_relu_layer": lambda: keras.layers.LeakyReLU(negative_slope=0.3),
    "elu_layer": lambda: keras.layers.ELU(alpha=0.5),
    "prelu_constant": lambda: keras.layers.PReLU(alpha_initializer=keras.initializers.Constant(0.25)),
    "prelu_random": lambda: keras.layers.PReLU(alpha_initializer=keras.initializers.RandomUniform(-0.5, 1.0, seed=0)),
}


def check(make_layer, stats, rel=0.05, mean_tol=0.02):
    mean_in, var_in = INPUTS[stats]
    inputs = keras.Input((WIDTH,))
    model = keras.Model(inputs, make_layer()(inputs))
    model, estimates = AutoInit(input_data_mean=mean_in, input_data_var=var_in).initialize_model(
        model, return_estimates=True)
    (key, estimate), = estimates.items()
    mean, var = measure(model, mean_in, var_in, samples=SAMPLES)[key]
    std = np.sqrt(estimate.var)
    assert mean == pytest.approx(estimate.mean, abs=mean_tol * std + 1e-6)
    assert var == pytest.approx(estimate.var, rel=rel, abs=1e-9)
    return estimate


@pytest.mark.parametrize("stats", list(INPUTS))
@pytest.mark.parametrize("activation", ELEMENTWISE)
def test_activation_layer(activation, stats):
    estimate = check(lambda: keras.layers.Activation(activation), stats)
    assert estimate.method in ("closed_form", "quadrature")


@pytest.mark.parametrize("stats", list(INPUTS))
@pytest.mark.parametrize("name", list(LAYERS))
def test_parametrized_activation_layers(name, stats):
    """PReLU is predicted from its alpha initializer's distribution; with random alphas
    the 1000 drawn slopes' own mean deviates from it by ~sd(alpha)/sqrt(1000) (seeded, so the
    draw does not depend on what ran before in the session)."""
    check(LAYERS[name], stats, mean_tol=0.05 if name == "prelu_random" else 0.02)


@pytest.mark.parametrize("stats", ["unit", "off_centre"])
def test_softmax_activation_delegates_to_the_softmax_estimator(stats):
    """The softmax rule itself (estimators/softmax.py) is tested with its module."""
    estimate = check(lambda: keras.layers.Activation("softmax"), stats, rel=0.1)
    assert estimate.mean == pytest.approx(1.0 / WIDTH)


def test_linear_is_exact():
    assert activation_statistics("linear", 0.3, 2.0) == (0.3, 2.0, "exact")
    assert activation_statistics(None, 0.3, 2.0) == (0.3, 2.0, "exact")


def test_unknown_callable_is_integrated_numerically():
    mean, var, method = activation_statistics(lambda x: x * x, 0.5, 2.0)
    assert method == "quadrature"
    assert mean == pytest.approx(2.25)              # E[x^2] = var + mean^2
    assert var == pytest.approx(2 * 4.0 + 4 * 0.25 * 2.0)  # 2 var^2 + 4 mean^2 var


def test_unknown_name_is_a_clear_error():
    with pytest.raises(ValueError, match="no_such_activation"):
        activation_statistics("no_such_activation", 0.0, 1.0)
