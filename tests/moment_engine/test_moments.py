"""moments(): accuracy against mpmath on both grids, the API, caching and bad input.

Accuracy (issue 2): relative error <= 1e-9 over |mu| <= 3, 0.01 <= var <= 25 (grid A)
and <= 1e-6 over |mu| <= 100, 1e-8 <= var <= 1e6 (grid B), never NaN/inf/negative;
a variance below 1e-10 * E[f^2] only has to stay below that level. Values under 1e-30
are judged by absolute error. A mean is also allowed float64's cancellation floor,
8 eps * sqrt(E[f^2]) (an odd f at mu = 0 has mean 0, which no float sum reproduces).
The default run checks every case at a rotating sample of points (and relu-like
narrow inputs far off centre at mu = 50, var = 1e-4 always); slow/test_moments_full_grid.py,
all points. The cases, grids and the check live in helpers.py.
"""
import numpy as np
import pytest
import sympy

import autoinit_sym
from autoinit_sym.moment_engine import catalog, expressions
from autoinit_sym import moments, register_activation
from autoinit_sym.moment_engine.expressions import X
from helpers import MOMENT_CASE_IDS, MOMENT_CASES, RTOL_A, assert_matches_reference, sampled_points


@pytest.mark.parametrize("index", range(len(MOMENT_CASES)), ids=MOMENT_CASE_IDS)
def test_accuracy_on_sampled_grid(index):
    name, params = MOMENT_CASES[index]
    m = moments(name, **params)
    for (mu, var), rtol in sampled_points(index):
        assert_matches_reference(m, mu, var, rtol)


def test_relu_far_off_centre_narrow_input_is_not_zero():
    # the reference AutoInit returns (0, 0) here
    m = moments("relu")
    assert m.mean(50.0, 1e-4) == pytest.approx(50.0, rel=1e-15)
    assert m.variance(50.0, 1e-4) == pytest.approx(1e-4, rel=1e-12)


def test_methods_and_formulas():
    closed, numeric = moments("elu", alpha=1.0), moments("tanh")
    assert closed.method == "closed_form" and numeric.method == "quadrature"
    assert isinstance(closed.mean_expr, sympy.Expr) and isinstance(closed.second_moment_expr, sympy.Expr)
    assert numeric.mean_expr is None and numeric.second_moment_expr is None
    assert closed.name == "elu" and closed.params == {"alpha": 1.0}
    assert closed.expr.free_symbols == {X}


def test_broadcasting_and_dtypes():
    m = moments("tanh")
    mu = np.linspace(-2, 2, 3)[:, None]
    var = np.array([0.5, 1.0, 2.0, 4.0])
    mean, variance = m.mean(mu, var), m.variance(mu, var)
    assert mean.shape == variance.shape == (3, 4) and mean.dtype == np.float64
    assert mean[1, 2] == pytest.approx(float(m.mean(0.0, 2.0)), abs=1e-15)
    assert isinstance(m.variance(0.0, 1.0), np.floating)
    second = m.second_moment(mu, var)
    np.testing.assert_allclose(second, variance + mean**2, rtol=1e-14)
    mean_c = moments("relu").mean(mu, var)
    assert mean_c.shape == (3, 4)


def test_quadrature_matches_closed_form_where_both_exist():
    from autoinit_sym.moment_engine import quadrature
    from autoinit_sym.moment_engine.expressions import numpy_function

    mu, var = np.meshgrid(np.linspace(-4, 4, 9), np.geomspace(1e-3, 1e3, 7))
    for name in ("elu", "hard_silu", "sparse_plus", "relu6"):
        m = moments(name)
        mean, variance = quadrature.gaussian_moments(numpy_function(m.expr), m.breakpoints,
                                                     mu.ravel(), var.ravel())
        np.testing.assert_allclose(mean, m.mean(mu, var).ravel(), rtol=1e-11, atol=1e-13)
        np.testing.assert_allclose(variance, m.variance(mu, var).ravel(), rtol=1e-10, atol=1e-13)


def test_overflow_safe_far_tails():
    for name in ("softplus", "log_sigmoid", "mish", "silu", "sigmoid", "gelu"):
        m = moments(name)
        for mu in (-1e4, 1e4):
            mean, variance = m.mean(mu, 1.0), m.variance(mu, 1.0)
            assert np.isfinite(mean) and np.isfinite(variance) and variance >= 0, (name, mu)


def test_cache_returns_the_same_object():
    assert moments("elu") is moments("elu", alpha=1.0)
    assert moments("tanh") is moments("tanh")
    assert moments("x*tanh(log(1 + exp(x)))") is moments("x*tanh(log(1 + exp(x)))")
    assert moments("elu", alpha=0.5) is not moments("elu")


def test_expression_inputs():
    a = sympy.Symbol("a")
    m = moments(a * sympy.Symbol("x") ** 2, a=3)
    assert float(m.mean(1.0, 2.0)) == pytest.approx(3 * (1 + 2), rel=1e-13)
    assert moments("x").method == "closed_form"
    assert float(moments("x").variance(0.3, 2.0)) == pytest.approx(2.0, rel=1e-14)


def test_register_activation_with_parameters():
    register_activation("scaled_tanh", "k * tanh(x / k)", k=2.0)
    assert "scaled_tanh" in catalog.names() and "scaled_tanh" in autoinit_sym.registered_names()
    m = moments("scaled_tanh")
    assert m.params == {"k": 2.0}
    assert_matches_reference(m, 0.4, 3.0, RTOL_A)
    assert_matches_reference(moments("scaled_tanh", k=0.5), -1.0, 0.5, RTOL_A)
    register_activation("scaled_tanh", "k * x", k=2.0)      # user entries may be replaced
    assert float(moments("scaled_tanh").mean(1.0, 1.0)) == pytest.approx(2.0)


@pytest.mark.parametrize("call,match", [
    (lambda: moments("rleu"), r"unknown activation 'rleu'; did you mean \['relu'"),
    (lambda: moments("x +* 2"), "could not parse"),
    (lambda: moments("x*y + z"), r"unknown symbol\(s\) \['y', 'z'\]"),
    (lambda: moments("tanh").mean(0.0, 0.0), "variance must be > 0"),
    (lambda: moments("relu").variance([0.0, 1.0], [1.0, -1.0]), "variance must be > 0"),
    (lambda: moments("elu", slope=1.0), r"unknown parameter\(s\) \['slope'\].*valid parameters: \['alpha'\]"),
    (lambda: moments("threshold"), r"needs parameter\(s\) \['threshold', 'default_value'\]"),
    (lambda: moments("gelu", approximate="yes"), "must be a bool"),
    (lambda: moments("elu", alpha="big"), "must be a real number"),
    (lambda: register_activation("tanh", "x"), "built-in"),
    (lambda: register_activation("mine", "x*q"), r"unknown symbol\(s\) \['q'\]"),
    (lambda: moments(3.5), "must be a str or sympy.Expr"),
    (lambda: moments("x**2", a=1.0), r"parameter\(s\) \['a'\] do not appear"),
    (lambda: moments(""), "could not parse"),
])
def test_bad_input_is_a_one_line_value_error(call, match):
    with pytest.raises(ValueError, match=match) as info:
        call()
    assert "\n" not in str(info.value)


def test_package_exports_the_function_whichever_import_came_first():
    import importlib

    import autoinit_sym

    module = importlib.import_module("autoinit_sym.moment_engine.activation_moments")
    assert autoinit_sym.moments is module.moments is moments
    assert autoinit_sym.moments("relu") is moments("relu")
    assert autoinit_sym.registered_names() == catalog.names()


def test_mean_then_variance_share_one_quadrature_run(monkeypatch):
    from autoinit_sym.moment_engine import quadrature

    m = moments("softsign")
    calls = []
    original = quadrature.gaussian_moments
    monkeypatch.setattr(quadrature, "gaussian_moments", lambda *a: calls.append(1) or original(*a))
    mu, var = np.array([0.2, -1.0]), np.array([1.0, 3.0])
    mean, variance = m.mean(mu, var), m.variance(mu, var)
    assert len(calls) == 1
    m.variance(mu, var)                      # kept for one call only: no stale caching
    m.variance(mu, var + 1.0)
    assert len(calls) == 3
    np.testing.assert_array_equal((mean, variance), m.mean_variance(mu, var))


def test_numpy_function_prints_integer_powers_as_products_correctly():
    """Integer powers are printed as parenthesized products (fast in NumPy); negative
    powers, powers of sums and of functions must keep their meaning."""
    from autoinit_sym.moment_engine.expressions import numpy_function

    f = numpy_function(X**3 - 2 / X**4 + (X + 1) ** 5 + sympy.exp(-X) ** 3 + sympy.sqrt(X))
    x = np.linspace(0.5, 3.0, 7)
    expected = x**3 - 2 / x**4 + (x + 1) ** 5 + np.exp(-x) ** 3 + np.sqrt(x)
    np.testing.assert_allclose(f(x), expected, rtol=1e-14)


def test_numpy_function_compiles_each_expression_once(monkeypatch):
    """Equal expressions share one compiled function; a different expression (or a Float of
    another precision) gets its own; beyond MAX_COMPILED the oldest is dropped."""
    monkeypatch.setattr(expressions, "_COMPILED", {})
    monkeypatch.setattr(expressions, "MAX_COMPILED", 2)
    relu = expressions.numpy_function(sympy.Max(X, 0))
    assert expressions.numpy_function(sympy.Max(0, X)) is relu
    x = np.array([-1.5, 0.0, 2.5])
    np.testing.assert_array_equal(relu(x), [0.0, 0.0, 2.5])
    coarse = expressions.numpy_function(sympy.Float(0.1) * X)
    fine = expressions.numpy_function(sympy.Float("0.1", 40) * X)
    assert coarse is not fine and len(expressions._COMPILED) == 2
    assert expressions.numpy_function(sympy.Max(X, 0)) is not relu      # dropped as the oldest


def test_stable_rewrites_apply_and_plain_expressions_pass_unchanged():
    """softplus, sigmoid and the tanh/erf complements are rewritten; an expression holding
    none of exp, tanh, erf is returned as it is."""
    relu = sympy.Max(X, 0) - sympy.Rational(1, 5) * sympy.Max(-X, 0)
    assert expressions._stable_form(relu) is relu
    for expr in (sympy.log(1 + sympy.exp(X)), 1 / (1 + sympy.exp(-X)), 1 + sympy.tanh(X), 1 - sympy.erf(X)):
        assert expressions._stable_form(expr) != expr
