"""Closed-form moments of piecewise exp-polynomial activations against mpmath quadrature."""
from __future__ import annotations

import mpmath as mp
import numpy as np
import pytest
import sympy as sp

from autoinit_sym.moment_engine.closed_form import MU, SIGMA, X, ClosedForm, derive
from autoinit_sym.moment_engine.piecewise import split_pieces

x = X
P = sp.Piecewise
HALF = sp.Rational(1, 2)
SELU_ALPHA, SELU_SCALE = 1.6732632423543772, 1.0507009873554805

# Keras definitions (keras.src.ops.nn / activations), written in the ways users write them.
ACTIVATIONS = {
    "relu": sp.Max(0, x),
    "leaky_relu": sp.Max(x, sp.Float(0.2) * x),
    "relu6": sp.Min(6, sp.Max(0, x)),
    "relu_layer": P((6, x >= 6), (x, x >= 1), (sp.Float(0.3) * (x - 1), True)),  # max 6, thr 1, slope .3
    "relu_nested": -sp.Float(0.1) * sp.Max(0, 1 - x) + sp.Min(6, sp.Max(0, P((x, x > 1), (0, True)))),
    "elu": P((x, x > 0), (sp.exp(x) - 1, True)),
    "selu": SELU_SCALE * P((x, x > 0), (SELU_ALPHA * (sp.exp(x) - 1), True)),
    "celu_2": sp.Max(0, x) + sp.Min(0, 2 * (sp.exp(x / 2) - 1)),
    "celu_10": P((x, x > 0), (10 * (sp.exp(x / 10) - 1), True)),  # exp(x/10) - 1 cancels if unpaired
    "hard_sigmoid": P((0, x < -sp.Rational(5, 2)), (1, x > sp.Rational(5, 2)), (x / 5 + HALF, True)),
    "hard_silu": x * sp.Min(1, sp.Max(0, (x + 3) / 6)),
    "hard_tanh": sp.Min(1, sp.Max(-1, x)),
    "hard_shrink": x * sp.Heaviside(sp.Abs(x) - HALF),
    "soft_shrink": sp.sign(x) * sp.Max(sp.Abs(x) - HALF, 0),
    "sparse_plus": P((0, x <= -1), ((x + 1) ** 2 / 4, x < 1), (x, True)),
    "sparse_sigmoid": P((0, x <= -1), ((x + 1) / 2, x < 1), (1, True)),
    "threshold": P((x, x > 1), (-2, True)),
    "exponential": sp.exp(x),
    "linear": x,
    "polynomial": x**3 - 2 * x + 1,
    "exp_poly_user": P((x * sp.exp(-x), x > 0), (x**2, True)),
}

NARROW_GRID = [(0.0, 1.0), (-1.3, 0.04), (2.5, 25.0), (0.7, 0.01)]
EXTREMES = {  # (mu, var) far off centre, very narrow, very wide
    "relu": [(50.0, 1e-4), (50.0, 1e-8), (-100.0, 1e6)],
    "elu": [(-100.0, 1e6), (-1.0, 1e-8)],
    "celu_10": [(0.0, 1e-8), (-0.5, 1e-8)],
    "relu6": [(6.0, 1e-6)],
    "hard_silu": [(3.0, 1e-8)],
    "exponential": [(5.0, 1e-8), (-30.0, 20.0)],
    "sparse_plus": [(-1.0, 1e-8), (-2.5, 0.0235)],
    "hard_shrink": [(0.5, 1e-8)],
    "polynomial": [(100.0, 1e-8)],
}
MORE_EXTREMES = {
    "relu": [(-5.0, 1.0), (1e-5, 1e-8)],
    "elu": [(0.0, 1e-8), (100.0, 1e-8)],
    "selu": [(-100.0, 1e6), (30.0, 1e-6)],
    "relu6": [(-100.0, 1e6), (3.0, 1e-8)],
    "hard_silu": [(-2.0, 1e-8), (100.0, 1e6)],
    "exponential": [(100.0, 1e-8)],
    "sparse_plus": [(0.5, 1e-8), (-3.0, 0.0554)],
    "hard_shrink": [(-100.0, 1e-8)],
    "polynomial": [(-100.0, 1e6)],
}
# Fast set: each activation at one narrow-grid point (in turn) and the extremes; the rest is slow.
FAST = [(name, *NARROW_GRID[i % len(NARROW_GRID)]) for i, name in enumerate(ACTIVATIONS)]
FAST += [(name, mu, var) for name, points in EXTREMES.items() for mu, var in points]
SLOW = [(name, mu, var) for name in ACTIVATIONS for mu, var in NARROW_GRID if (name, mu, var) not in FAST]
SLOW += [(name, mu, var) for name, points in MORE_EXTREMES.items() for mu, var in points]
CASES = FAST + [pytest.param(*case, marks=pytest.mark.slow) for case in SLOW]


def _reference(expr: sp.Expr, mu: float, var: float) -> tuple[float, float, float]:
    """(mean, second moment, variance) at 30 digits: mpmath quad over z = (x - mu)/sigma,
    split at the breakpoints and at the peaks of every exp(r*x) * phi against which f, f**2 integrate."""
    with mp.workdps(30):
        mu_, sigma = mp.mpf(mu), mp.sqrt(mp.mpf(var))
        f = sp.lambdify(x, sp.piecewise_fold(expr.rewrite(sp.Piecewise)), "mpmath")
        pieces = split_pieces(expr, x)
        points = {mp.mpf(0)}
        for piece in pieces[1:]:
            t = (mp.mpf(float(piece.lo)) - mu_) / sigma
            points.update(t + d for d in (-2, -0.25, 0, 0.25, 2))
        for rate in {float(a) for piece in pieces for _, a in piece.terms}:
            points.update(r * sigma + d for r in (rate, 2 * rate) for d in (-3, 0, 3))
        grid = [-mp.inf] + sorted(p for p in points if abs(p) < 1e4) + [mp.inf]
        mean = _scaled_quad(lambda z: f(mu_ + sigma * z) * mp.npdf(z), grid)
        second = _scaled_quad(lambda z: f(mu_ + sigma * z) ** 2 * mp.npdf(z), grid)
        return float(mean), float(second), float(second - mean**2)


def _scaled_quad(integrand, grid):
    """mp.quad of integrand / S times S, S its largest value on the grid: mp.quad's tolerance is
    absolute, so an integral of 1e-30 would otherwise get only a few digits."""
    scale = max(abs(integrand(p)) for p in grid[1:-1]) or mp.mpf(1)
    return mp.quad(lambda z: integrand(z) / scale, grid) * scale


def _relative_error(got: float, want: float, floor: float = 1e-30) -> float:
    """Relative error, absolute below ``floor`` (1e-30, or the rounding level of the pieces)."""
    return abs(got - want) / abs(want) if abs(want) > floor else abs(got - want) / floor * 1e-30


@pytest.fixture(scope="module")
def derived() -> dict[str, ClosedForm]:
    return {}


def _closed_form(derived: dict, name: str) -> ClosedForm:
    if name not in derived:
        derived[name] = derive(ACTIVATIONS[name], x)
    return derived[name]


@pytest.mark.parametrize("name,mu,var", CASES)
def test_moments_match_mpmath(derived, name, mu, var):
    cf = _closed_form(derived, name)
    assert cf is not None
    mean, second, variance = _reference(ACTIVATIONS[name], mu, var)
    tol = 1e-9 if abs(mu) <= 3 and 0.01 <= var <= 25 else 1e-6
    got_mean, got_second, got_var = (float(cf.mean(mu, var)), float(cf.second_moment(mu, var)),
                                      float(cf.variance(mu, var)))
    # A mean that vanishes by cancellation between pieces (selu at 0, 1) is judged on the scale of f.
    assert _relative_error(got_mean, mean, max(1e-30, 1e-6 * np.sqrt(second))) <= tol, (got_mean, mean)
    assert _relative_error(got_second, second) <= tol, (got_second, second)
    assert got_var >= 0
    if variance >= 1e-10 * second:
        assert _relative_error(got_var, variance) <= tol, (got_var, variance)
    else:
        assert got_var < 1e-10 * second


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
    cf = _closed_form(derived, name)
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
    cf = _closed_form(derived, "elu")
    for expr in (cf.mean_expr, cf.second_moment_expr):
        assert expr.free_symbols <= {MU, SIGMA}
        assert {type(f).__name__ for f in expr.atoms(sp.Function)} <= {"exp", "erfc"}
    plain = sp.lambdify((MU, SIGMA), cf.mean_expr, "mpmath")
    assert float(plain(0.4, 1.5)) == pytest.approx(float(cf.mean(0.4, 1.5**2)), rel=1e-13)
    relu = derive(sp.Max(0, x), x)
    expected = MU * (1 - sp.erfc(MU / (sp.sqrt(2) * SIGMA)) / 2) + SIGMA * sp.exp(-MU**2 / (2 * SIGMA**2)) / sp.sqrt(2 * sp.pi)
    assert sp.simplify(relu.mean_expr - expected) == 0


def test_pieces_of_user_expressions():
    pieces = split_pieces(ACTIVATIONS["soft_shrink"], x)
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
