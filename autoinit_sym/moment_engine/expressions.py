"""Activation expressions: parsing, validation, breakpoints and overflow-safe NumPy code.

An activation is a SymPy expression in the real symbol ``x`` and, optionally, named
real parameters. Strings are parsed with :func:`sympy.parse_expr`; besides SymPy's own
names (``exp``, ``tanh``, ``erf``, ``erfc``, ...) they may use ``sigmoid``, ``softplus``
and ``relu``.
"""
from __future__ import annotations

from tokenize import TokenError
from typing import Callable, Iterable

import numpy as np
import sympy
from scipy import special
from sympy.parsing.sympy_parser import convert_xor, parse_expr, standard_transformations
from sympy.printing.numpy import SciPyPrinter

X = sympy.Symbol("x", real=True)

# Convenience names accepted in expression strings, written in plain SymPy.
_HELPERS: dict[str, Callable[[sympy.Expr], sympy.Expr]] = {
    "sigmoid": lambda u: 1 / (1 + sympy.exp(-u)),
    "softplus": lambda u: sympy.log(1 + sympy.exp(u)),
    "relu": lambda u: sympy.Max(u, 0),
}
_TRANSFORMS = standard_transformations + (convert_xor,)
_KINK_FUNCTIONS = (sympy.Abs, sympy.sign, sympy.Heaviside, sympy.floor, sympy.ceiling)


def parameter_symbol(name: str) -> sympy.Symbol:
    """The real SymPy symbol used for the activation parameter ``name``."""
    return sympy.Symbol(name, real=True)


def parse(expr: str | sympy.Expr, parameters: Iterable[str] = ()) -> sympy.Expr:
    """Parse ``expr`` (a string or SymPy expression in ``x``) and check its free symbols.

    Every free symbol must be ``x`` or one of ``parameters``; symbols given as plain
    ``Symbol('x')`` are identified with the real ``x`` by name.
    """
    parameters = tuple(parameters)
    names = {"x": X, **{p: parameter_symbol(p) for p in parameters}}
    if isinstance(expr, str):
        local = {**_HELPERS, **names}
        try:
            parsed = parse_expr(expr, local_dict=local, transformations=_TRANSFORMS)
        except (SyntaxError, TokenError, TypeError, ValueError, AttributeError,
                NameError) as err:
            raise ValueError(f"could not parse activation expression {expr!r}: "
                             f"{type(err).__name__}: {err}".replace("\n", " ")) from None
    elif isinstance(expr, sympy.Basic):
        parsed = expr
    else:
        raise ValueError(f"activation expression must be a str or sympy.Expr, got "
                         f"{type(expr).__name__}")
    if not isinstance(parsed, sympy.Expr):
        raise ValueError(f"could not parse activation expression {expr!r}: it is a "
                         f"{type(parsed).__name__}, not an expression in x")
    parsed = parsed.subs({s: names[s.name] for s in parsed.free_symbols
                          if s.name in names and s != names[s.name]})
    unknown = sorted(s.name for s in parsed.free_symbols if s.name not in names)
    if unknown:
        valid = ["x", *parameters]
        raise ValueError(f"activation expression {str(expr)!r} has unknown symbol(s) "
                         f"{unknown}; allowed: {valid}")
    return parsed


def substitute(expr: sympy.Expr, values: dict[str, float]) -> sympy.Expr:
    """``expr`` with each parameter symbol replaced by its number (ints stay exact)."""
    return expr.subs({parameter_symbol(k): as_number(v) for k, v in values.items()})


def as_number(value: float) -> sympy.Expr:
    """A SymPy number for a parameter value: integral floats become Integers."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating,
                                                        sympy.Number)):
        raise ValueError(f"activation parameter must be a real number, got {value!r}")
    if np.isfinite(float(value)) and float(value) == int(value):
        return sympy.Integer(int(value))
    return sympy.Float(float(value))


def breakpoints(expr: sympy.Expr) -> list[float]:
    """Real x where ``expr`` is not smooth: Piecewise/Max/Min boundaries and Abs/sign/
    Heaviside arguments' zeros (solved symbolically; numeric expression required)."""
    candidates: list[sympy.Expr] = []
    for node in sympy.preorder_traversal(expr):
        if isinstance(node, sympy.Piecewise):
            for _, cond in node.args:
                candidates.extend(r.lhs - r.rhs for r in cond.atoms(sympy.core.relational.Relational))
        elif isinstance(node, (sympy.Max, sympy.Min)):
            args = node.args
            candidates.extend(a - b for i, a in enumerate(args) for b in args[i + 1:])
        elif isinstance(node, _KINK_FUNCTIONS):
            candidates.append(node.args[0])
    points: set[float] = set()
    for c in candidates:
        if X not in c.free_symbols:
            continue
        try:
            roots = sympy.solve(sympy.Eq(c, 0), X)
        except (NotImplementedError, TypeError, ValueError):
            continue
        for r in roots:
            value = complex(sympy.N(r))
            if abs(value.imag) < 1e-12 and np.isfinite(value.real):
                points.add(float(value.real))
    return sorted(points)


class _Softplus(sympy.Function):
    """log(1 + exp(u)), evaluated without overflow."""


class _Expit(sympy.Function):
    """1 / (1 + exp(-u)), evaluated without overflow."""


class _Erfc(sympy.Function):
    """erfc(u), kept as written (SymPy would turn erfc(-u) back into 2 - erfc(u))."""


def _stable_form(expr: sympy.Expr) -> sympy.Expr:
    """Rewrite the overflow/cancellation-prone patterns log(1+e^u), 1/(1+e^u),
    1 +- tanh(u) and 1 +- erf(u) into softplus/expit/erfc, which stay finite and exact."""
    u = sympy.Wild("u")
    rules = [
        (sympy.log(1 + sympy.exp(u)), lambda u: _Softplus(u)),
        (1 / (1 + sympy.exp(u)), lambda u: _Expit(-u)),
        (1 + sympy.tanh(u), lambda u: 2 * _Expit(2 * u)),
        (1 - sympy.tanh(u), lambda u: 2 * _Expit(-2 * u)),
        (1 + sympy.erf(u), lambda u: _Erfc(-u)),
        (1 - sympy.erf(u), lambda u: _Erfc(u)),
    ]
    for pattern, build in rules:
        expr = expr.replace(pattern, build)
    return expr


_NUMPY_FUNCTIONS = {
    "_Softplus": lambda u: np.logaddexp(0.0, u),
    "_Expit": special.expit,
    "_Erfc": special.erfc,
}


class _ProductPowerPrinter(SciPyPrinter):
    """Prints small integer powers as products: NumPy's ``x**3`` goes through ``pow``
    (about 20x slower than ``x*x*x`` on float64 arrays), and the quadrature evaluates f
    at hundreds of nodes per (mu, var) pair."""

    def _print_Pow(self, expr: sympy.Pow, rational: bool = False) -> str:
        exponent = expr.exp
        if exponent.is_Integer and 3 <= abs(int(exponent)) <= 8:
            base = self.parenthesize(expr.base, sympy.printing.precedence.PRECEDENCE["Mul"] + 1)
            product = "*".join([base] * abs(int(exponent)))
            return f"({product})" if exponent > 0 else f"(1/({product}))"
        return super()._print_Pow(expr, rational=rational)


def numpy_function(expr: sympy.Expr) -> Callable[[np.ndarray], np.ndarray]:
    """Vectorized float64 f(x) for a numeric expression, overflow-safe for the usual
    activation patterns (softplus, sigmoid, tanh/erf complements); the result is a new
    writable array of x's shape."""
    printer = _ProductPowerPrinter({"fully_qualified_modules": False, "inline": True,
                                    "allow_unknown_functions": True,
                                    "user_functions": {name: name for name in _NUMPY_FUNCTIONS}})
    compiled = sympy.lambdify(X, _stable_form(expr), modules=[_NUMPY_FUNCTIONS, "scipy", "numpy"],
                              printer=printer)

    def f(x: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore", invalid="ignore", under="ignore"):
            out = np.asarray(compiled(x), dtype=np.float64)
        if out is x or out.shape != np.shape(x) or not out.flags.writeable:
            out = np.array(np.broadcast_to(out, np.shape(x)))
        return out

    return f
