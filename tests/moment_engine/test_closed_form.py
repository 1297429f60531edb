"""Closed-form moments of piecewise exp-polynomial activations against mpmath quadrature.

The activations, points and the check live in ``helpers.py``; this module checks the default
tier's points (each activation at one narrow-grid point and the extremes),
``slow/test_closed_form_full_grid.py`` the rest."""
from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

from autoinit_sym.moment_engine.closed_form import MU, SIGMA, X, ClosedForm, derive
from autoinit_sym.moment_engine.piecewise import split_pieces
from helpers import (CLOSED_FORM_ACTIVATIONS, CLOSED_FORM_FAST, assert_closed_form_matches_mpmath,
                     cached_closed_form)

x = X
P = sp.Piecewise
HALF = sp.Rational(1, 2)


@pytest.fixture(scope="module")
def derived() -> dict[str, ClosedForm]:
    return {}


@pytest.mark.parametrize("name,mu,var", CLOSED_FORM_FAST)
def test_moments_match_mpmath(derived, name, mu, var):
    """The default tier's points; the rest are in slow/test_closed_form_full_grid.py."""
    assert_closed_form_matches_mpmath(cached_closed_form(derived, name), name, mu, var)


def test_relu_far_right_narrow_is_exact():
    cf = derive(sp.Max(0, x), x)
    assert float(cf.mean(50.0, 1e-4)) == pytest.approx(50.0, rel=1e-14)
    assert float(cf.variance(50.0, 1e-4)) == pytest.approx(1e-4, rel=1e-12)
    assert float(cf.variance(50.0, 1e-8)) == pytest.approx(1e-8, rel=1e-12)


@pytest.mark.parametrize("expr", [sp.tanh(x), 1 / (1 + sp.exp(-x)), sp.log(1 + sp.exp(x)),
                                  x * sp.tanh(sp.log(1 + sp.exp(x))), x / (1 + sp.Abs(x)),
                                  sp.exp(x**2 / 4), sp.Max(0, sp.sin(x)), sp.sqrt(x**2 + 1)])
def test_unsupported_forms_return_none(expr):
    assert derive(expr, x) is None


@pytest.mark.parametrize("name", ["relu", "elu", "hard_silu", "soft_shrink", "exponential", "relu_layer"])
def test_variance_never_negative_or_nan(derived, name):
    cf = cached_closed_form(derived, name)
    mu = np.concatenate([np.linspace(-100, 100, 41), np.linspace(-3, 3, 61)])[:, None]
    var = np.geomspace(1e-8, 1e6, 29)[None, :]
    with np.errstate(over="ignore"):
        second = cf.second_moment(mu, var)
    variance = cf.variance(mu, var)
    finite = np.isfinite(second)
    assert variance.shape == (mu.size, var.size)
    assert np.all(variance[finite] >= 0)
    assert np.all(np.isfinite(variance[finite]))
    assert np.all(np.isfinite(cf.mean(mu, var)[finite]))


def test_broadcasting_and_scalars():
    cf = derive(sp.Max(0, x), x)
    assert cf.mean(np.zeros((3, 1)), np.ones(4)).shape == (3, 4)
    assert cf.variance(0.0, 1.0).dtype == np.float64
    assert float(cf.mean(0.0, 1.0)) == pytest.approx(1 / np.sqrt(2 * np.pi), rel=1e-15)
    constant = derive(sp.Integer(3), x)
    assert constant.mean(np.zeros(5), 1.0).tolist() == [3.0] * 5
    assert constant.variance(np.zeros(5), 1.0).tolist() == [0.0] * 5


def test_expressions_are_plain_formulas_in_mu_and_sigma(derived):
    cf = cached_closed_form(derived, "elu")
    for expr in (cf.mean_expr, cf.second_moment_expr):
        assert expr.free_symbols <= {MU, SIGMA}
        assert {type(f).__name__ for f in expr.atoms(sp.Function)} <= {"exp", "erfc"}
    plain = sp.lambdify((MU, SIGMA), cf.mean_expr, "mpmath")
    assert float(plain(0.4, 1.5)) == pytest.approx(float(cf.mean(0.4, 1.5**2)), rel=1e-13)
    relu = derive(sp.Max(0, x), x)
    expected = MU * (1 - sp.erfc(MU / (sp.sqrt(2) * SIGMA)) / 2) + SIGMA * sp.exp(-MU**2 / (2 * SIGMA**2)) / sp.sqrt(2 * sp.pi)
    assert sp.simplify(relu.mean_expr - expected) == 0


def test_pieces_of_user_expressions():
    pieces = split_pieces(CLOSED_FORM_ACTIVATIONS["soft_shrink"], x)
    assert [(p.lo, p.hi) for p in pieces] == [(-sp.oo, -HALF), (-HALF, HALF), (HALF, sp.oo)]
    assert [p.terms for p in pieces] == [{(0, 0): HALF, (1, 0): 1}, {}, {(0, 0): -HALF, (1, 0): 1}]
    assert split_pieces(sp.exp(2 * x + 1) * x, x)[0].terms == {(1, 2): sp.E}
    nested = split_pieces(P((x, sp.Max(x, 0) > 1), (sp.Abs(x - 3), True)), x)  # switch inside a condition
    assert [(p.lo, p.hi, p.terms) for p in nested] == [
        (-sp.oo, 1, {(0, 0): 3, (1, 0): -1}), (1, sp.oo, {(1, 0): 1})]
    transcendental = split_pieces(sp.Max(0, sp.exp(x) - 2), x)
    assert [p.lo for p in transcendental] == [-sp.oo, sp.log(2)]


def test_bad_input_is_named():
    with pytest.raises(ValueError, match=r"free symbols \['alpha'\]"):
        derive(sp.Max(sp.Symbol("alpha") * x, x), x)
    cf = derive(x, x)
    with pytest.raises(ValueError, match="var must be > 0"):
        cf.mean(0.0, np.array([1.0, 0.0]))
