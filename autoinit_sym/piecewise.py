"""Split an expression in x into intervals on which it is a sum of c * x**n * exp(a*x).

``split_pieces(expr, x)`` rewrites Max, Min, Abs, Heaviside and sign into Piecewise,
folds the Piecewise to the top, finds the breakpoints by solving each condition for x, and on every interval between consecutive breakpoints expands the
active branch into terms.  It returns None when the expression is not of that form
(tanh, sigmoid, softplus, ...), so the caller can fall back to quadrature.
Conditions are read almost everywhere: what happens at a single point (Heaviside(0),
sign(0)) has no weight under a Gaussian and is ignored.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import sympy as sp

# (n, a) -> c for the term c * x**n * exp(a*x); n a nonnegative int, a and c real numbers.
Terms = Dict[Tuple[int, sp.Expr], sp.Expr]


@dataclass(frozen=True)
class Piece:
    """f(x) = sum(c * x**n * exp(a*x) for (n, a), c in terms.items()) on lo < x < hi."""

    lo: sp.Expr  # a real number or -oo
    hi: sp.Expr  # a real number or +oo
    terms: Terms


def split_pieces(expr: sp.Expr, x: sp.Symbol) -> Optional[List[Piece]]:
    """Pieces of ``expr`` over the real line, ordered, or None if not piecewise exp-polynomial.

    Raises ValueError when ``expr`` holds free symbols other than ``x``.
    """
    expr = sp.sympify(expr)
    extra = sorted(str(s) for s in expr.free_symbols - {x})
    if extra:
        raise ValueError(f"expression {expr} has free symbols {extra} besides {x}; "
                         "substitute every parameter with a number first")
    folded = sp.piecewise_fold(expr.rewrite(sp.Piecewise))
    branches = list(folded.args) if isinstance(folded, sp.Piecewise) else [(folded, sp.true)]
    cuts = _breakpoints([cond for _, cond in branches], x)
    if cuts is None:
        return None
    bounds = [sp.S.NegativeInfinity] + cuts + [sp.S.Infinity]
    pieces: List[Piece] = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        branch = _active_branch(branches, x, _interior_point(lo, hi))
        terms = None if branch is None else exp_polynomial_terms(branch, x)
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


def _breakpoints(conditions: List[sp.Basic], x: sp.Symbol) -> Optional[List[sp.Expr]]:
    """Sorted distinct real roots of every relation in the conditions (polynomial roots, else
    solveset over the reals), or None when a relation has no finite set of roots."""
    roots = set()
    for cond in conditions:
        for rel in cond.atoms(sp.core.relational.Relational):
            diff = rel.lhs - rel.rhs
            if not diff.has(x):
                continue
            if diff.is_polynomial(x):
                roots.update(sp.real_roots(sp.Poly(diff, x)))
                continue
            solutions = sp.solveset(diff, x, sp.S.Reals)
            if not isinstance(solutions, sp.FiniteSet):
                return None
            roots.update(solutions)
    return sorted(roots, key=lambda r: float(r))


def _interior_point(lo: sp.Expr, hi: sp.Expr) -> sp.Expr:
    """A point strictly inside (lo, hi)."""
    if lo.is_infinite and hi.is_infinite:
        return sp.S.Zero
    if lo.is_infinite:
        return hi - 1
    if hi.is_infinite:
        return lo + 1
    return (lo + hi) / 2


def _active_branch(branches: List[Tuple[sp.Expr, sp.Basic]], x: sp.Symbol,
                   point: sp.Expr) -> Optional[sp.Expr]:
    """The expression of the first branch whose condition holds at ``point``."""
    for value, cond in branches:
        truth = cond.subs(x, point)
        if truth == sp.true:
            return value
        if truth != sp.false:
            return None
    return None
