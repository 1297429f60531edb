"""GELU (x Phi(x), Keras approximate=False) closed-form moments against a 50-digit mpmath reference.

Requirement: relative error <= 1e-9 for E[f(X)] and Var[f(X)] on mu in {-40, -8, -3, -1, 0, 0.5,
2, 8, 40} x var in {1e-8, 1e-4, 0.01, 1, 25, 1e4}. Values below float64's normal range (2.2e-308;
mu = -40 with var <= 0.01 gives 1e-345 to 1e-700) cannot carry a relative precision; there the
returned value must be within 2.2e-308 of the reference (it is 0 or a subnormal).
The full grid is slow (about 30 s of mpmath: slow/test_gelu_full_grid.py); the default run checks
one point per branch. The grid, the reference and the check live in helpers.py.
"""
import math

import numpy as np
import pytest
import sympy

from autoinit_sym import moments
from autoinit_sym.moment_engine import gelu as gelu_moments, quadrature
from autoinit_sym.moment_engine.closed_form import MU, SIGMA
from helpers import GELU_SAMPLE, check_gelu


def test_sample_matches_mpmath():
    check_gelu(GELU_SAMPLE)


def test_method_and_formulas():
    m = moments("gelu")
    assert m.method == "closed_form" and moments("gelu", approximate=False) is m
    assert moments("gelu", approximate=True).method == "quadrature"
    assert moments("x/2*(1 + erf(x/sqrt(2)))").method == "closed_form"
    assert moments("x*(1 + erf(x/sqrt(2)))").method == "quadrature"      # 2 x Phi(x) is not matched
    for expr in (m.mean_expr, m.second_moment_expr):
        assert isinstance(expr, sympy.Expr) and expr.free_symbols == {MU, SIGMA}
    # E[f(Z)^2] = 1/3 + 1/(2 pi sqrt 3) for Z ~ N(0, 1)
    exact = sympy.Rational(1, 3) + 1 / (2 * sympy.pi * sympy.sqrt(3))
    assert abs(m.second_moment_expr.subs({MU: 0, SIGMA: 1}).evalf(40) - exact.evalf(40)) < 1e-35
    for mu, sigma in ((0.3, 1.7), (-1.2, 0.4), (2.0, 5.0)):
        at = {MU: mu, SIGMA: sigma}
        assert float(m.mean_expr.subs(at).evalf(30)) == pytest.approx(float(m.mean(mu, sigma**2)), rel=1e-13)
        assert float(m.second_moment_expr.subs(at).evalf(30)) == pytest.approx(
            float(m.second_moment(mu, sigma**2)), rel=1e-13)


def test_quadrature_fallback_routing(monkeypatch):
    """Points whose cancellation check fails go to the engine's quadrature. No such point is known
    (every branch's check passes over |mu| <= 1e12, 1e-12 <= var <= 1e14), so the check is made
    to fail: with CANCELLATION_MAX = 1 only the chaos series (narrow inputs) stays."""
    mu = np.array([-25.0, -40.0, -300.0, -40.0, 0.0, 3.0, -3.0])
    var = np.array([10.0, 25.0, 1e3, 1.0, 1.0, 0.01, 1e-6])
    assert gelu_moments.variance_closed_form(mu, var)[1].all()
    monkeypatch.setattr(gelu_moments, "CANCELLATION_MAX", 1.0)
    assert gelu_moments.variance_closed_form(mu, var)[1].tolist() == [False] * 5 + [True] * 2
    closed = gelu_moments.GeluClosedForm()
    fallback = quadrature.gaussian_moments(closed._f, [], mu[:5], var[:5])[1]
    np.testing.assert_array_equal(closed.variance(mu, var)[:5], fallback)


def test_branches_agree_where_they_overlap():
    """The chaos series, the Owen's T formula, the left-tail and the split forms are independent
    derivations; where two of them are accurate they must agree."""
    mu = np.array([-1.0, 0.0, 0.5, 2.0, -0.3])
    var = np.array([0.1, 0.12, 0.05, 0.1, 0.01])
    second, _ = gelu_moments._second_moment_terms(mu, var)
    m = gelu_moments.mean(mu, var)
    np.testing.assert_allclose(gelu_moments._series_variance(mu, var), second - m * m, rtol=1e-12)
    mu, var = np.array([-8.0, -12.0, -5.0, -3.0]), np.array([1.0, 2.0, 0.5, 4.0])
    second, _ = gelu_moments._second_moment_terms(mu, var)
    np.testing.assert_allclose(gelu_moments._split_second_moment(mu, var), second, rtol=1e-10)
    np.testing.assert_allclose(gelu_moments._tail_second_moment(mu[:3], var[:3]), second[:3], rtol=1e-9)


def test_broadcasting_dtype_and_far_tails():
    m = moments("gelu")
    mu = np.linspace(-2, 2, 3)[:, None]
    var = np.array([1e-6, 1.0, 4.0, 1e4])
    mean, variance = m.mean(mu, var), m.variance(mu, var)
    assert mean.shape == variance.shape == (3, 4) and mean.dtype == variance.dtype == np.float64
    assert isinstance(m.variance(0.0, 1.0), np.floating)
    np.testing.assert_allclose(m.second_moment(mu, var), variance + mean**2, rtol=1e-15)
    for mu in (-1e4, 1e4, -1e8):
        for var in (1e-8, 1.0, 1e6):
            mean, variance = float(m.mean(mu, var)), float(m.variance(mu, var))
            assert math.isfinite(mean) and math.isfinite(variance) and variance >= 0, (mu, var)
    assert float(m.variance(1e4, 1e-8)) == pytest.approx(1e-8, rel=1e-12)
