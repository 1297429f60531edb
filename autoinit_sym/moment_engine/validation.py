"""Checks that an activation f (parameters substituted) has well-defined Gaussian moments.

E[f(X)] and E[f(X)^2] exist for every X ~ N(mu, sigma^2) when f is real and finite on the
real line except at points where f^2 stays integrable, and log|f(x)| = o(x^2). The engine
checks, before deriving anything:

- :func:`check_structure` (symbolic, linear in the size): at most MAX_NODES nodes; only
  numbers, ``x``, arithmetic, the functions of :data:`ALLOWED_FUNCTIONS` and Piecewise conditions;
  every constant real and within float64's range (no I, oo, nan, zoo, exp(10**10)); degree
  in x at most ``expressions.MAX_DEGREE``.
- :func:`check_values` (numeric): f is real (not NaN) on a grid over [-50, 50] and next to
  its breakpoints, where a NaN that float64 overflow could cause (inf - inf) is re-evaluated
  with mpmath; no pole: at each real zero r of a denominator, |f(r + d)| grows by less than
  POLE_RATIO as d shrinks from 1e-4 to 1e-8 (f^2 integrable: a singularity weaker than
  |x - r|^(-0.37)); growth at most exponential: log|f| at |x| = 2R is below
  2^GROWTH_POWER times its value at R, for R doubling from 10 to 1e6 (exp(x^2), cosh(x^2),
  exp(exp(x)) are refused; exp(20 x) and x^64 pass).
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import mpmath
import numpy as np
import sympy
from sympy.core.relational import Relational
from sympy.logic.boolalg import Boolean

from autoinit_sym.moment_engine.expressions import MAX_DEGREE, X, polynomial_degree, real_roots

MAX_NODES = 2_000               # SymPy tree nodes of an activation
POLE_RATIO = 30.0               # |f(r + 1e-8)| / |f(r + 1e-4)| above this: a pole at r
GROWTH_POWER = 1.5              # log|f(x)| growing faster than |x|^GROWTH_POWER: refused
MAX_POLES_CHECKED = 64          # zeros of denominators examined

ALLOWED_FUNCTIONS = (sympy.exp, sympy.log, sympy.erf, sympy.erfc, sympy.tanh, sympy.sinh, sympy.cosh,
             sympy.sin, sympy.cos, sympy.atan, sympy.asinh, sympy.Abs, sympy.sign, sympy.Heaviside,
             sympy.Max, sympy.Min, sympy.Piecewise)
_NON_FINITE = {sympy.nan: "nan", sympy.oo: "oo", -sympy.oo: "-oo", sympy.zoo: "zoo"}
_GRID = np.linspace(-50.0, 50.0, 2001) + 1 / (64 * math.pi)    # avoids the usual special points


def _ill_defined(expr: sympy.Expr, why: str) -> ValueError:
    text = str(expr)
    text = text if len(text) <= 80 else text[:77] + "..."
    return ValueError(f"activation {text} has no well-defined Gaussian moments: {why}")


def check_size(expr: sympy.Basic) -> None:
    """ValueError if ``expr``'s tree has more than MAX_NODES nodes (stops counting there)."""
    count, stack = 0, [expr]
    while stack:
        count += 1
        if count > MAX_NODES:
            raise ValueError(f"activation expression is too large (more than {MAX_NODES} nodes)")
        stack.extend(stack.pop().args)


def check_structure(expr: sympy.Expr) -> None:
    """Size, vocabulary, constants and degree of ``expr`` (see the module docstring)."""
    check_size(expr)
    stack = [expr]
    while stack:
        node = stack.pop()
        if node in _NON_FINITE:
            raise _ill_defined(expr, f"it holds the non-finite constant {_NON_FINITE[node]}")
        if node is sympy.I:
            raise _ill_defined(expr, "it is complex (holds I); activations are real functions")
        if isinstance(node, sympy.Expr) and not node.is_Atom and not node.free_symbols:
            _check_constant(expr, node)
            continue
        if not (node.is_Symbol or node.is_Number or isinstance(node, sympy.NumberSymbol)
                or isinstance(node, (sympy.Add, sympy.Mul, sympy.Pow, *ALLOWED_FUNCTIONS, Relational, Boolean,
                                     sympy.functions.elementary.piecewise.ExprCondPair))):
            kind = node.func.__name__ if isinstance(node, sympy.Function) else type(node).__name__
            allowed = sorted(f.__name__ for f in ALLOWED_FUNCTIONS)
            raise _ill_defined(expr, f"{kind} is not supported (functions: {allowed})")
        stack.extend(node.args)
    degree = polynomial_degree(expr)
    if degree > MAX_DEGREE:
        raise ValueError(f"activation has degree {degree:g} in x; at most {MAX_DEGREE} is supported "
                         f"(higher moments overflow float64)")


def _check_constant(expr: sympy.Expr, constant: sympy.Expr) -> None:
    """A constant subexpression must be a real number within float64's range."""
    try:
        value = complex(sympy.N(constant, 15))
    except OverflowError:
        value = complex(math.inf)
    except (TypeError, ValueError):
        raise _ill_defined(expr, f"its constant {constant} does not evaluate to a number") from None
    if value.imag != 0:
        raise _ill_defined(expr, f"its constant {constant} is not real")
    if not abs(value.real) <= np.finfo(float).max:
        raise _ill_defined(expr, f"its constant {constant} is beyond float64's range")


def check_values(expr: sympy.Expr, f: Callable[[np.ndarray], np.ndarray], points: Sequence[float]) -> None:
    """Growth, realness and poles of f = ``expr`` (its NumPy function ``f``, its breakpoints
    ``points``); see the module docstring."""
    exact = sympy.lambdify(X, expr, modules="mpmath")
    _check_growth(expr, exact)
    near = [p + s * 1e-7 * (1 + abs(p)) for p in points for s in (-1, 1)]
    grid = np.concatenate([_GRID, near])
    values = f(grid)
    for x in grid[np.isnan(values)][:: max(1, int(np.isnan(values).sum()) // 32)]:
        _exact_value(expr, exact, float(x))          # raises unless NaN was float64 overflow
    _check_poles(expr, f)


def _exact_value(expr: sympy.Expr, exact: Callable, x: float) -> mpmath.mpf:
    """f(x) in mpmath; ValueError where it is not a real number."""
    with mpmath.workdps(20):
        try:
            value = exact(mpmath.mpf(x))
        except (ZeroDivisionError, ValueError, OverflowError, TypeError) as err:
            raise _ill_defined(expr, f"it cannot be evaluated at x = {x:.6g} ({type(err).__name__})") from None
        if isinstance(value, mpmath.mpc):
            if abs(value.imag) > 1e-12 * abs(value):
                raise _ill_defined(expr, f"it is not real at x = {x:.6g}")
            value = value.real
        if not mpmath.isfinite(value):
            raise _ill_defined(expr, f"it is not finite at x = {x:.6g}")
        return value


def _log_size(expr: sympy.Expr, exact: Callable, x: float) -> float:
    """log|f(x)| (-inf where f(x) = 0, inf beyond float64's range)."""
    value = abs(_exact_value(expr, exact, x))
    if value == 0:
        return -math.inf
    log = mpmath.log(value)
    return float(log) if abs(log) < 1e300 else math.inf


def _check_growth(expr: sympy.Expr, exact: Callable) -> None:
    """Refuse log|f(x)| growing faster than |x|^GROWTH_POWER (pairs x = R, 2R; R = 10 ... 1e6)."""
    for side in (1.0, -1.0):
        previous = _log_size(expr, exact, side * 10.0)
        radius = 10.0
        while radius < 1e6:
            current = _log_size(expr, exact, side * 2 * radius)
            if current > 50 and (math.isinf(current) or current > 2**GROWTH_POWER * max(previous, 1.0)):
                raise _ill_defined(expr, f"it grows too fast (log|f| is {current:.3g} at x = {side * 2 * radius:g}, "
                                         f"{previous:.3g} at x = {side * radius:g}): Gaussian moments need "
                                         f"log|f(x)| = o(x^2), and at most exponential growth is supported")
            previous, radius = current, 2 * radius


def _check_poles(expr: sympy.Expr, f: Callable[[np.ndarray], np.ndarray]) -> None:
    """At the real zeros of every denominator (base of a negative power), f^2 must stay integrable."""
    zeros: list[float] = []
    for power in expr.atoms(sympy.Pow):
        if power.base.has(X) and power.exp.is_number and power.exp.is_negative:
            zeros.extend(float(r) for r in real_roots(power.base, X))
    for r in sorted(set(zeros))[:MAX_POLES_CHECKED]:
        scale = max(1.0, abs(r))
        for side in (-1.0, 1.0):
            wide, narrow = np.abs(f(np.array([r + side * 1e-4 * scale, r + side * 1e-8 * scale])))
            if not np.isfinite(narrow) or narrow > POLE_RATIO * wide and narrow > 1e-300:
                raise _ill_defined(expr, f"it has a pole at x = {r:.6g} (f^2 is not integrable there)")
