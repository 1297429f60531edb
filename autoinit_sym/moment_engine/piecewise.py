"""Split an expression in x into intervals on which it is a sum of c * x**n * exp(a*x).

``split_pieces(expr, x)`` finds the breakpoints of every switch in the expression (Max,
Min, Abs, Heaviside, sign, Piecewise conditions; inner switches first) by solving for x
(exactly for polynomials, irrational roots of degree > 2 as 30-digit Floats, and for
c*exp(a*x) + d; other switch arguments make it return None), then on each interval between
consecutive breakpoints replaces every switch by its active branch and expands the result
into terms.  It returns None when the expression is
not of that form (tanh, sigmoid, softplus, ...), so the caller can fall back to quadrature.
Conditions are read almost everywhere: what happens at a single point (Heaviside(0),
sign(0)) has no weight under a Gaussian and is ignored.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import sympy as sp

from autoinit_sym.moment_engine.expressions import exact_real_roots
from autoinit_sym.moment_engine.methods import Deadline

# (n, a) -> c for the term c * x**n * exp(a*x); n a nonnegative int, a and c real numbers.
Terms = Dict[Tuple[int, sp.Expr], sp.Expr]


@dataclass(frozen=True)
class Piece:
    """f(x) = sum(c * x**n * exp(a*x) for (n, a), c in terms.items()) on lo < x < hi."""

    lo: sp.Expr  # a real number or -oo
    hi: sp.Expr  # a real number or +oo
    terms: Terms


def split_pieces(expr: sp.Expr, x: sp.Symbol, deadline: Optional[Deadline] = None) -> Optional[List[Piece]]:
    """Pieces of the SymPy expression ``expr`` over the real line, ordered, or None if not
    piecewise exp-polynomial. ``deadline`` is checked between switches and intervals.

    Raises ValueError when ``expr`` holds free symbols other than ``x``.
    """
    if not isinstance(expr, sp.Basic):
        raise TypeError(f"expr must be a SymPy expression, got {type(expr).__name__}")
    deadline = deadline or Deadline(None)
    extra = sorted(str(s) for s in expr.free_symbols - {x})
    if extra:
        raise ValueError(f"expression {expr} has free symbols {extra} besides {x}; "
                         "substitute every parameter with a number first")
    try:
        cuts = _breakpoints(expr, x, deadline)
        bounds = [sp.S.NegativeInfinity] + cuts + [sp.S.Infinity]
        smooth = [_branch_at(expr, x, _interior_point(lo, hi)) for lo, hi in zip(bounds[:-1], bounds[1:])]
    except _NotPiecewise:
        return None
    pieces: List[Piece] = []
    for lo, hi, branch in zip(bounds[:-1], bounds[1:], smooth):
        deadline.check("splitting into pieces")
        terms = exp_polynomial_terms(branch, x)
        if terms is None:
            return None
        if pieces and pieces[-1].terms == terms:
            pieces[-1] = Piece(pieces[-1].lo, hi, terms)
        else:
            pieces.append(Piece(lo, hi, terms))
    return pieces


def exp_polynomial_terms(expr: sp.Expr, x: sp.Symbol) -> Optional[Terms]:
    """Terms {(n, a): c} of ``expr`` = sum c * x**n * exp(a*x), or None if not of that form."""
    if expr.has(sp.Piecewise):
        return None
    terms: Terms = {}
    for term in sp.Add.make_args(sp.expand(expr)):
        parsed = _parse_term(term, x)
        if parsed is None:
            return None
        coeff, key = parsed
        terms[key] = terms.get(key, sp.S.Zero) + coeff
    return {key: c for key, c in terms.items() if not c.is_zero}


def _parse_term(term: sp.Expr, x: sp.Symbol) -> Optional[Tuple[sp.Expr, Tuple[int, sp.Expr]]]:
    """(c, (n, a)) for a product term c * x**n * exp(a*x), else None."""
    coeff, n, rate = sp.S.One, 0, sp.S.Zero
    for factor in sp.Mul.make_args(term):
        if not factor.has(x):
            if not (factor.is_number and factor.is_extended_real):
                return None
            coeff *= factor
            continue
        base, power = factor.as_base_exp()
        if base == x and power.is_Integer and power >= 0:
            n += int(power)
            continue
        if isinstance(base, sp.exp):  # exp(g)**k
            base, power = sp.E, base.args[0] * power
        elif not (base.is_number and base.is_positive):
            return None
        exponent = power * sp.log(base) if base != sp.E else power
        linear = _linear_in(exponent, x)
        if linear is None:
            return None
        slope, offset = linear
        rate += slope
        coeff *= sp.exp(offset)
    return coeff, (n, sp.S.Zero if rate.is_zero else rate)


def _linear_in(expr: sp.Expr, x: sp.Symbol) -> Optional[Tuple[sp.Expr, sp.Expr]]:
    """(slope, offset) with real numeric parts if ``expr`` = slope*x + offset, else None."""
    expr = sp.expand(expr)
    slope = expr.coeff(x, 1)
    offset = sp.expand(expr - slope * x)
    if offset.has(x) or not (slope.is_number and slope.is_extended_real and offset.is_extended_real):
        return None
    return slope, offset


class _NotPiecewise(Exception):
    """The expression switches where no finite set of breakpoints describes it."""


_SWITCHES = (sp.Max, sp.Min, sp.Abs, sp.Heaviside, sp.sign, sp.Piecewise)


def _breakpoints(expr: sp.Expr, x: sp.Symbol, deadline: Deadline) -> List[sp.Expr]:
    """Sorted real points where some switch (Max, Min, Abs, Heaviside, sign, Piecewise) of
    ``expr`` may change branch.  Inner switches first: an outer switch compares smooth
    branches on each interval between the inner breakpoints, and only roots inside count."""
    cuts: Dict[float, sp.Expr] = {}
    seen = set()
    for node in sp.postorder_traversal(expr):
        if not isinstance(node, _SWITCHES) or not node.has(x) or node in seen:
            continue
        seen.add(node)
        deadline.check("finding breakpoints")
        ordered = sorted(cuts.values(), key=float)
        bounds = [sp.S.NegativeInfinity] + ordered + [sp.S.Infinity]
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            for switch in _switch_functions(node, x, _interior_point(lo, hi)):
                for root in _real_roots(switch, x):
                    if lo < root < hi:
                        cuts.setdefault(float(root), root)
    return sorted(cuts.values(), key=float)


def _switch_functions(node: sp.Expr, x: sp.Symbol, point: sp.Expr) -> List[sp.Expr]:
    """Smooth functions (valid near ``point``) whose sign changes move ``node`` to another branch."""
    if isinstance(node, sp.Piecewise):
        relations = set().union(*(cond.atoms(sp.core.relational.Relational) for _, cond in node.args))
        return [_branch_at(rel.lhs - rel.rhs, x, point) for rel in relations]
    args = [_branch_at(arg, x, point) for arg in node.args]
    if isinstance(node, (sp.Max, sp.Min)):
        return [a - b for i, a in enumerate(args) for b in args[i + 1:]]
    return args[:1]


def _real_roots(expr: sp.Expr, x: sp.Symbol) -> List[sp.Expr]:
    """Real roots of a smooth ``expr`` (``exact_real_roots``); _NotPiecewise where there is no exact method."""
    roots = exact_real_roots(expr, x)
    if roots is None:
        raise _NotPiecewise(expr)
    return roots


def _interior_point(lo: sp.Expr, hi: sp.Expr) -> sp.Expr:
    """A point strictly inside (lo, hi)."""
    if lo.is_infinite and hi.is_infinite:
        return sp.S.Zero
    if lo.is_infinite:
        return hi - 1
    if hi.is_infinite:
        return lo + 1
    return (lo + hi) / 2


def _branch_at(expr: sp.Expr, x: sp.Symbol, point: sp.Expr) -> sp.Expr:
    """``expr`` with every switch replaced by its branch at ``point`` (valid on the interval
    around ``point`` that no breakpoint crosses)."""
    if not expr.has(x) or not expr.args:
        return expr
    if isinstance(expr, sp.Piecewise):
        for value, cond in expr.args:
            truth = cond.subs(x, point)
            if truth == sp.true:
                return _branch_at(value, x, point)
            if truth != sp.false:
                raise _NotPiecewise(cond)
        raise _NotPiecewise(expr)
    args = [_branch_at(arg, x, point) for arg in expr.args]
    if isinstance(expr, (sp.Max, sp.Min)):
        pick = max if isinstance(expr, sp.Max) else min
        return pick(args, key=lambda arg: float(arg.subs(x, point)))
    if isinstance(expr, sp.Abs):
        return args[0] if args[0].subs(x, point) >= 0 else -args[0]
    if isinstance(expr, (sp.Heaviside, sp.sign)):
        return expr.func(args[0].subs(x, point), *args[1:])
    return expr.func(*args)
