"""Activations of residual sums g(c f(z) + n) (``statistics.residual_sums``): against mpmath,
Monte Carlo for the shared offsets, and real layers."""
import math

import keras
import mpmath
import numpy as np
import pytest
from keras import layers

from autoinit_sym import AutoInit, moments
from autoinit_sym.statistics.activation import activation_output, activation_shared, classify
from autoinit_sym.statistics.residual_sums import (ShiftedActivation, matched_output, shifted_moments,
                                                   shifted_shared)
from autoinit_sym.measure import measure

mpmath.mp.dps = 30


def relu_of_gaussian(a, mean, var):
    """E[relu(a + n)], E[relu(a + n)^2] for n ~ N(mean, var), in mpmath."""
    m, s = a + mean, mpmath.sqrt(var)
    t = m / s
    cdf, pdf = mpmath.ncdf(t), mpmath.npdf(t)
    return m * cdf + s * pdf, (m * m + var) * cdf + m * s * pdf


def reference(c, z_mean, z_var, n_mean, n_var):
    """(mean, var) of relu(c relu(z) + n) by mpmath quadrature over z, split at 0."""
    density = lambda z: mpmath.npdf(z, z_mean, mpmath.sqrt(z_var))  # noqa: E731
    first = lambda z: density(z) * relu_of_gaussian(c * max(z, 0), n_mean, n_var)[0]  # noqa: E731
    second = lambda z: density(z) * relu_of_gaussian(c * max(z, 0), n_mean, n_var)[1]  # noqa: E731
    sd = mpmath.sqrt(z_var)
    edges = [z_mean - 40 * sd, *([0] if abs(z_mean) < 40 * sd else []), z_mean + 40 * sd]
    edges = sorted(edges)
    m1, m2 = mpmath.quad(first, edges), mpmath.quad(second, edges)
    return float(m1), float(m2 - m1 * m1)


@pytest.mark.parametrize("c,z_mean,z_var,n_mean,n_var", [
    (1.0, 0.0, 1.0, 0.0, 1.0), (1.0, 0.5, 2.0, -0.3, 0.7), (-1.0, 0.0, 1.0, 0.2, 0.5),
    (0.5, -3.0, 0.01, 2.0, 0.04), (1.0, 4.0, 0.25, -4.0, 0.25), (2.0, 0.0, 25.0, 0.0, 1e-3),
])
def test_shifted_moments_against_mpmath(c, z_mean, z_var, n_mean, n_var):
    inner = activation_output("relu", z_mean, z_var, 0.0)
    mean, var = shifted_moments(moments("relu"), ShiftedActivation(inner, c, n_mean, n_var))
    ref_mean, ref_var = reference(c, z_mean, z_var, n_mean, n_var)
    assert mean == pytest.approx(ref_mean, rel=1e-7, abs=1e-12)
    assert var == pytest.approx(ref_var, rel=1e-6, abs=1e-12)


def test_shifted_moments_of_a_smooth_activation_against_monte_carlo():
    """tanh(elu(z) + n) by 4e6 samples (the engine's inner moments are tested elsewhere)."""
    rng = np.random.default_rng(0)
    z, n = rng.normal(0.3, 1.2, 4_000_000), rng.normal(-0.2, 0.6, 4_000_000)
    y = np.tanh(np.where(z > 0, z, np.expm1(z)) + n)
    inner = activation_output(classify("elu", alpha=1.0), 0.3, 1.44, 0.0)
    mean, var = shifted_moments(moments("tanh"), ShiftedActivation(inner, 1.0, -0.2, 0.36))
    assert mean == pytest.approx(y.mean(), abs=3 * y.std() / 2000)
    assert var == pytest.approx(y.var(), rel=3e-3)


def test_shifted_shared_against_monte_carlo():
    """Channels with offsets a_z ~ N(0, s_z) in z and a_n ~ N(0, s_n) in n: the variance of the
    channels' exact conditional means (by fine quadrature per channel) matches."""
    z_mean, z_var, s_z, n_mean, n_var, s_n = 0.2, 1.0, 0.4, 0.1, 0.8, 0.3
    inner = activation_output("relu", z_mean, z_var, s_z)
    origin = ShiftedActivation(inner, 1.0, n_mean, n_var, s_n)
    engine = moments("relu")
    out_var = shifted_moments(engine, origin)[1]
    shared = shifted_shared(engine, origin, out_var)
    rng = np.random.default_rng(1)
    channels = 20000
    a_z, a_n = rng.normal(0, math.sqrt(s_z), channels), rng.normal(0, math.sqrt(s_n), channels)
    nodes, weights = np.polynomial.hermite_e.hermegauss(80)
    weights = weights / weights.sum()
    z = z_mean + a_z[:, None] + math.sqrt(z_var - s_z) * nodes[None, :]
    conditional = engine.mean(np.maximum(z, 0) + n_mean + a_n[:, None], n_var - s_n) @ weights
    assert shared == pytest.approx(conditional.var(), rel=0.04)
    assert 0 < shared < out_var


def test_matched_output_reproduces_the_moments():
    target_mean, target_var, target_shared = 0.9, 0.8, 0.25
    origin = matched_output("relu", target_mean, target_var, target_shared, 0.5, 1.5, 0.3)
    engine = moments("relu")
    assert float(engine.mean(origin.mean, origin.var)) == pytest.approx(target_mean, rel=1e-6)
    assert float(engine.variance(origin.mean, origin.var)) == pytest.approx(target_var, rel=1e-6)
    assert activation_shared("relu", origin.mean, origin.var, origin.shared, target_var) == pytest.approx(
        target_shared, rel=1e-6)


def residual_block(width: int = 512, blocks: int = 3) -> keras.Model:
    keras.backend.clear_session()
    inputs = keras.Input((width,))
    x = layers.Dense(width, activation="relu", name="stem")(inputs)
    for i in range(blocks):
        branch = layers.Dense(width, name=f"branch{i}")(x)
        x = layers.Activation("relu", name=f"relu{i}")(layers.Add(name=f"add{i}")([x, branch]))
    return keras.Model(inputs, x)


def test_relu_after_a_residual_sum_through_real_layers():
    """relu(relu(z) + n) is not relu of a Gaussian: treated as one, the block outputs read
    +0.06, +0.10, +0.14 in log variance (+0.33 after six blocks); the walk integrates each sum
    (the blocks after the first through the moment-matched law of the previous output)."""
    model = residual_block()
    measured, predicted = [], None
    for seed in range(10):  # the arithmetic mean over draws: 3 draws scatter by about 0.06 at block 3
        model, est = AutoInit(weight_init_config={"seed": seed}).initialize_model(model, return_estimates=True)
        m = measure(model, samples=2048, seed=seed, batch_size=2048)
        measured.append([m[f"relu{i}"][1] for i in range(3)])
        predicted = [est[f"relu{i}"].var for i in range(3)]
    errors = np.log(np.mean(measured, axis=0) / np.array(predicted))
    assert np.all(np.abs(errors) < 0.05), errors
    # The Gaussian rule at the first block's sum, for comparison:
    add = est["add0"]
    gaussian = float(moments("relu").variance(add.mean, add.var))
    assert math.log(np.mean(measured, axis=0)[0] / gaussian) > 0.05
