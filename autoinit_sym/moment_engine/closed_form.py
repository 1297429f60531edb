"""Closed-form Gaussian moments of piecewise exp-polynomial activations.

For X ~ N(mu, sigma**2) and f piecewise (between numeric breakpoints) a finite sum of
c * x**n * exp(a*x), ``derive(expr, x)`` gives E[f(X)] and E[f(X)**2] exactly: with
x = mu + sigma*z each term becomes a sum of z**k * exp(a*x), and E[z**k exp(a*X); lo < X < hi]
is a truncated Gaussian moment (``gaussian_integrals.truncated_moments``).  f**2 is of the
same form.  ``mean_expr`` / ``second_moment_expr`` are these formulas in exp and erfc.

What is compiled is an equal but float-safe arrangement of the same sums:
- polynomial parts are expanded at a breakpoint, where their Taylor coefficients are exact;
- a piece far out in a tail is expanded at its near endpoint (``one_sided_moment``);
- c*exp(a*x) - c (elu) and exp(a*x) - exp(a*mu) use series primitives when a*sigma is small;
- the variance is never E[f**2] - E[f]**2: with P the piece holding mu, g = f - f_P(mu) is
  again piecewise exp-polynomial and on P starts at z**1, so Var = E[g**2] - E[g]**2 keeps
  full relative precision for narrow inputs (relu at mu=50, var=1e-8).  One branch per P,
  each run only where mu falls in P.

Sizes are bounded before the derivation starts (MAX_PIECES pieces, MAX_TERMS terms per piece,
powers of x up to MAX_POLYNOMIAL_DEGREE on the whole line, MAX_PIECE_DEGREE on a piece with a
finite end, MAX_EXPONENTIAL_DEGREE next to an exp(a*x): the truncated-moment recursion, the
tail expansions and the variance branches grow fast beyond; each step then takes well under a
second), and a
:class:`~autoinit_sym.moment_engine.methods.Deadline` is checked between the steps; both
raise :class:`~autoinit_sym.moment_engine.methods.MethodUnavailable`, and the engine then
integrates numerically.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from math import comb
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import sympy as sp
from sympy.printing.numpy import SciPyPrinter

from autoinit_sym.moment_engine.expressions import X, polynomial_degree
from autoinit_sym.moment_engine.gaussian_integrals import (NUMPY_FUNCTIONS, TAIL_START, gauss_expm1,
                                                           gauss_expm1_centered, one_sided_moment,
                                                           truncated_moments)
from autoinit_sym.moment_engine.methods import Deadline, Integrand, MethodUnavailable, MomentMethod
from autoinit_sym.moment_engine.piecewise import Piece, Terms, split_pieces

MU = sp.Symbol("mu", real=True)
SIGMA = sp.Symbol("sigma", positive=True)

# (k, a) -> coefficient (in MU, SIGMA) of z**k * exp(a*x), x = MU + SIGMA*z.
ZTerms = Dict[Tuple[int, sp.Expr], sp.Expr]

_MODULES = [NUMPY_FUNCTIONS, "scipy", "numpy"]

MAX_PIECES = 6                  # intervals between breakpoints
MAX_POLYNOMIAL_DEGREE = 16      # largest power of x
MAX_PIECE_DEGREE = 8            # largest power of x on a piece with a finite end (tail expansions ~ n**3)
MAX_EXPONENTIAL_DEGREE = 4      # largest n in x**n * exp(a*x), a != 0 (the recursion's size grows ~1.6**(2n))
MAX_TERMS = 8                   # terms c * x**n * exp(a*x) per piece (f**2 has up to MAX_TERMS**2)


@dataclass(frozen=True)
class ClosedForm(MomentMethod):
    """Closed-form moments of f(X), X ~ N(mu, sigma**2), compiled for NumPy.

    ``mean_expr`` and ``second_moment_expr`` use exp and erfc; ``variance_expr`` is the
    cancellation-free form that ``variance`` evaluates (Piecewise in mu, with the
    tail-safe functions of ``gaussian_integrals``; each branch is compiled alone and run
    only where mu falls in its piece).  All callables take (mu, var) with NumPy
    broadcasting and return float64 arrays.
    """

    mean_expr: sp.Expr
    second_moment_expr: sp.Expr
    variance_expr: sp.Expr
    _mean: Callable = field(repr=False, compare=False)
    _second_moment: Callable = field(repr=False, compare=False)
    _variance_cuts: Tuple[float, ...] = field(repr=False, compare=False)
    _variance_branches: Tuple[Callable, ...] = field(repr=False, compare=False)

    name = "closed_form"

    @classmethod
    def match(cls, integrand: Integrand) -> Optional["ClosedForm"]:
        """The derivation for ``integrand``'s expression if it is piecewise exp-polynomial
        (None otherwise); MethodUnavailable beyond the size limits or the deadline."""
        degree = polynomial_degree(integrand.expr)
        if degree > MAX_POLYNOMIAL_DEGREE:
            raise MethodUnavailable(f"degree {degree:g} in x is above the closed form's limit "
                                    f"{MAX_POLYNOMIAL_DEGREE}")
        if len(integrand.breakpoints) >= MAX_PIECES:
            raise MethodUnavailable(f"{len(integrand.breakpoints)} breakpoints; the closed form takes "
                                    f"at most {MAX_PIECES - 1}")
        return derive(integrand.expr, X, integrand.deadline)

    def mean(self, mu, var) -> np.ndarray:
        """E[f(X)]."""
        return _evaluate(self._mean, mu, var)

    def second_moment(self, mu, var) -> np.ndarray:
        """E[f(X)**2]."""
        return _evaluate(self._second_moment, mu, var)

    def variance(self, mu, var) -> np.ndarray:
        """Var[f(X)], never negative."""
        mu, var = np.broadcast_arrays(np.asarray(mu, dtype=np.float64), np.asarray(var, dtype=np.float64))
        home = np.searchsorted(self._variance_cuts, mu, side="right")
        out = np.empty(mu.shape)
        for index, branch in enumerate(self._variance_branches):
            where = home == index
            if np.any(where):
                out[where] = _evaluate(branch, mu[where], var[where])
        return np.maximum(out, 0.0)


def derive(expr: sp.Expr, x: sp.Symbol = X, deadline: Optional[Deadline] = None) -> Optional[ClosedForm]:
    """Closed-form moments of the SymPy expression ``expr`` (in ``x``), or None if it is not
    piecewise exp-polynomial. MethodUnavailable beyond the size limits (module docstring) or
    when ``deadline`` runs out."""
    if not isinstance(expr, sp.Basic):
        raise TypeError(f"expr must be a SymPy expression, got {type(expr).__name__} "
                        f"(parse text with autoinit_sym.moment_engine.expressions.parse)")
    deadline = deadline or Deadline(None)
    pieces = split_pieces(expr.subs(x, X), X, deadline)
    if pieces is None:
        return None
    _check_size(pieces)
    mean_plain, mean = _sum_pairs(_checked(_expect_x(p.terms, p), deadline, "mean") for p in pieces)
    second_plain, second = _sum_pairs(_checked(_expect_x(_square(p.terms), p), deadline, "second moment")
                                      for p in pieces)
    variances = [_centered_variance(pieces, home, deadline) for home in pieces]
    conditions = [MU < home.hi for home in pieces[:-1]] + [sp.true]
    compiled = [_checked(_compile(e), deadline, "compiling") for e in (mean, second, *variances)]
    return ClosedForm(
        mean_expr=mean_plain.rewrite(sp.erfc),
        second_moment_expr=second_plain.rewrite(sp.erfc),
        variance_expr=variances[0] if len(pieces) == 1 else sp.Piecewise(*zip(variances, conditions)),
        _mean=compiled[0],
        _second_moment=compiled[1],
        _variance_cuts=tuple(float(home.hi) for home in pieces[:-1]),
        _variance_branches=tuple(compiled[2:]),
    )


def _check_size(pieces: List[Piece]) -> None:
    """MethodUnavailable beyond MAX_PIECES, MAX_TERMS and the degree limits."""
    if len(pieces) > MAX_PIECES:
        raise MethodUnavailable(f"{len(pieces)} pieces; the closed form takes at most {MAX_PIECES}")
    for piece in pieces:
        if len(piece.terms) > MAX_TERMS:
            raise MethodUnavailable(f"{len(piece.terms)} terms c*x**n*exp(a*x) on one piece; the closed "
                                    f"form takes at most {MAX_TERMS}")
        whole_line = piece.lo.is_infinite and piece.hi.is_infinite
        for n, a in piece.terms:
            limit = (MAX_EXPONENTIAL_DEGREE if not a.is_zero else
                     MAX_POLYNOMIAL_DEGREE if whole_line else MAX_PIECE_DEGREE)
            if n > limit:
                where = "next to exp(a*x)" if not a.is_zero else "on the whole line" if whole_line else "on a piece"
                raise MethodUnavailable(f"the term {sp.sstr(X**n * sp.exp(a * X))} is above the closed form's "
                                        f"limit of x**{limit} {where}")


def _checked(value, deadline: Deadline, step: str):
    """``value``, once ``deadline`` is checked after computing it."""
    deadline.check(step)
    return value


def _expect_x(terms: Terms, piece: Piece) -> Tuple[sp.Expr, sp.Expr]:
    """E[sum c x**n exp(a X); piece] as (plain formula, tail-safe formula).

    Plain: the polynomial part in powers of (x - e), e an endpoint of the piece
    (``_z_coefficients``), then x - e = (MU - e) + SIGMA*z, truncated moments of z.
    Tail-safe: each c*exp(a x) is taken with its share of the constant as c*(exp(a x) - 1)
    (``gauss_expm1``, a series for small a*SIGMA), and where the piece lies TAIL_START or more
    standard deviations out in a tail of the (exp-shifted) Gaussian, where the binomial sum
    would cancel, the polynomial is re-expanded at the near endpoint (``one_sided_moment``).
    """
    plain = sp.Add(*(inside for _, _, inside in _inside_by_rate(terms, piece)))
    rest, pairs = _pair_exponentials(terms, centered=False)
    stable = sp.Add(*(_tail_safe(entries, a, piece, inside) for a, entries, inside in _inside_by_rate(rest, piece)),
                    *(c * gauss_expm1(a, piece.lo, piece.hi, MU, SIGMA) for a, c in pairs))
    return plain, stable


def _inside_by_rate(terms: Dict[Tuple[int, sp.Expr], sp.Expr],
                    piece: Piece) -> List[Tuple[sp.Expr, List[Tuple[int, sp.Expr]], sp.Expr]]:
    """[(a, [(n, c)], E[sum c x**n exp(a X); piece])] from the truncated moments of z."""
    out = []
    for a, entries in _by_rate(terms).items():
        moments = truncated_moments(a, piece.lo, piece.hi, max(n for n, _ in entries), MU, SIGMA)
        out.append((a, entries, sp.Add(*(c * moments[k] for k, c in _z_coefficients(entries, piece).items()))))
    return out


def _pair_exponentials(terms: Dict[Tuple[int, sp.Expr], sp.Expr],
                       centered: bool) -> Tuple[Dict[Tuple[int, sp.Expr], sp.Expr], List[Tuple[sp.Expr, sp.Expr]]]:
    """Split off every c*exp(a x) (power 0, a != 0) as c*(exp(a x) - r) with r = 1, or
    r = exp(a*MU) if ``centered``, moving c*r to the constant term: returns (rest, [(a, c)]).
    Uncentered, only when there is a constant term to pair with (elu's c*(exp(x) - 1)):
    a lone exp(x) must not become (exp(x) - 1) + 1, which cancels where exp(x) is tiny."""
    rest = dict(terms)
    pairs = []
    if not centered and (0, sp.S.Zero) not in terms:
        return rest, pairs
    for (power, a), c in terms.items():
        if power == 0 and not a.is_zero:
            del rest[(0, a)]
            pairs.append((a, c))
            _accumulate(rest, (0, sp.S.Zero), c * sp.exp(a * MU) if centered else c)
    return rest, pairs


def _z_coefficients(entries: List[Tuple[int, sp.Expr]], piece: Piece) -> Dict[int, sp.Expr]:
    """{k: coefficient of z**k} for sum c x**n, x = MU + SIGMA*z, through powers of (x - e).

    e is the finite endpoint where the polynomial (its numeric part) is smallest, 0 on the whole
    line: near a
    kink such as sparse_plus's (x + 1)**2/4 at -1 the Taylor coefficients at e are exact and
    MU - e is exact, so a narrow input next to the kink loses nothing to cancellation.
    """
    ends = [end for end in (piece.lo, piece.hi) if not end.is_infinite]
    e = min(ends, key=lambda end: abs(float(sum((c * end**n for n, c in entries if c.is_number), sp.S.Zero))),
            default=sp.S.Zero)
    taylor: Dict[int, sp.Expr] = {}
    for n, c in entries:
        for j in range(n + 1):
            taylor[j] = taylor.get(j, sp.S.Zero) + c * comb(n, j) * e ** (n - j)
    out: Dict[int, sp.Expr] = {}
    for j, d in taylor.items():
        if d.is_zero:
            continue
        for k in range(j + 1):
            out[k] = out.get(k, sp.S.Zero) + d * comb(j, k) * (MU - e) ** (j - k) * SIGMA**k
    return out


def _tail_safe(entries: List[Tuple[int, sp.Expr]], a: sp.Expr, piece: Piece, inside: sp.Expr) -> sp.Expr:
    """``inside`` = E[sum c X**n exp(a X); piece], switched to one-sided expansions in the far tails."""
    if all(n == 0 for n, _ in entries):
        return inside  # no binomial sum: the tail-safe exp/erfcx primitives suffice
    branches = []
    for near, far, side in ((piece.lo, piece.hi, 1), (piece.hi, piece.lo, -1)):
        if near.is_infinite:
            continue
        form = sp.expand(sp.Add(*(c * one_sided_moment(n, a, near, far, side, MU, SIGMA) for n, c in entries)))
        distance = side * ((near - MU) / SIGMA - a * SIGMA)
        branches.append((form, distance >= TAIL_START))
    return sp.Piecewise(*branches, (inside, True))


def _expect_z(terms: ZTerms, piece: Piece) -> sp.Expr:
    """E[sum c z**k exp(a X); piece] on the piece holding MU: truncated moments of z, each
    c*exp(a x) taken as c*(exp(a x) - exp(a MU)) (``gauss_expm1_centered``)."""
    rest, pairs = _pair_exponentials(terms, centered=True)
    total = [c * gauss_expm1_centered(a, piece.lo, piece.hi, MU, SIGMA) for a, c in pairs]
    for a, entries in _by_rate(rest).items():
        moments = truncated_moments(a, piece.lo, piece.hi, max(k for k, _ in entries), MU, SIGMA)
        total.extend(c * moments[k] for k, c in entries)
    return sp.Add(*total)


def _home_z_terms(home: Piece) -> ZTerms:
    """z-terms of g = f_home(x) - f_home(MU) on the piece holding MU: the z**0 parts of the
    polynomial terms are dropped rather than subtracted, so nothing cancels numerically."""
    terms: ZTerms = {}
    for (n, a), c in home.terms.items():
        for k in range(0 if a else 1, n + 1):
            _accumulate(terms, (k, a), c * comb(n, k) * MU ** (n - k) * SIGMA**k)
        if a:
            _accumulate(terms, (0, sp.S.Zero), -c * MU**n * sp.exp(a * MU))
    return terms


def _centered_variance(pieces: List[Piece], home: Piece, deadline: Deadline) -> sp.Expr:
    """Var[f(X)] = E[g**2] - E[g]**2 with g = f - f_home(MU), for MU in the piece ``home``."""
    at_mu = sum((c * MU**n * sp.exp(a * MU) for (n, a), c in home.terms.items()), sp.S.Zero)
    first, second = [], []
    for piece in pieces:
        deadline.check("variance")
        if piece is home:
            g = _home_z_terms(home)
            first.append(_expect_z(g, piece))
            second.append(_expect_z(_square(g), piece))
        else:
            g = dict(piece.terms)
            _accumulate(g, (0, sp.S.Zero), -at_mu)
            first.append(_expect_x(g, piece)[1])
            second.append(_expect_x(_square(g), piece)[1])
    return sp.Add(*second) - sp.Add(*first) ** 2


def _square(terms: Dict[Tuple[int, sp.Expr], sp.Expr]) -> Dict[Tuple[int, sp.Expr], sp.Expr]:
    """Terms of the square (x- or z-terms): p**k exp(a x) * p**j exp(b x) = p**(k+j) exp((a+b) x)."""
    out: Dict[Tuple[int, sp.Expr], sp.Expr] = {}
    items = list(terms.items())
    for i, ((k1, a1), c1) in enumerate(items):
        _accumulate(out, (2 * k1, 2 * a1), c1 * c1)
        for (k2, a2), c2 in items[i + 1:]:
            _accumulate(out, (k1 + k2, a1 + a2), 2 * c1 * c2)
    return out


def _by_rate(terms: Dict[Tuple[int, sp.Expr], sp.Expr]) -> Dict[sp.Expr, List[Tuple[int, sp.Expr]]]:
    """Group {(power, a): c} by the exponential rate a."""
    groups: Dict[sp.Expr, List[Tuple[int, sp.Expr]]] = {}
    for (power, a), c in terms.items():
        groups.setdefault(a, []).append((power, c))
    return groups


def _sum_pairs(pairs) -> Tuple[sp.Expr, sp.Expr]:
    """Element-wise sum of (plain, stable) pairs."""
    plain, stable = zip(*pairs)
    return sp.Add(*plain), sp.Add(*stable)


def _accumulate(terms: Dict[Tuple[int, sp.Expr], sp.Expr], key: Tuple[int, sp.Expr], value: sp.Expr) -> None:
    """terms[key] += value, dropping exact zeros."""
    total = terms.get(key, sp.S.Zero) + value
    if total.is_zero:
        terms.pop(key, None)
    else:
        terms[key] = total


def _compile(expr: sp.Expr) -> Callable:
    """lambdify over (MU, SIGMA) with the tail-safe NumPy functions and common subexpressions
    (found and printed without sorting terms, which is most of the compile time)."""
    printer = SciPyPrinter({"order": "none", "fully_qualified_modules": False, "inline": True,
                            "allow_unknown_functions": True, "user_functions": {}})
    return sp.lambdify((MU, SIGMA), expr, modules=_MODULES, printer=printer,
                       cse=lambda expr: sp.cse(expr, order="none", list=False))


def _evaluate(function: Callable, mu, var) -> np.ndarray:
    """Call a compiled moment at broadcast (mu, var) with sigma = sqrt(var), as float64."""
    mu = np.asarray(mu, dtype=np.float64)
    var = np.asarray(var, dtype=np.float64)
    if np.any(~(var > 0)):
        raise ValueError(f"var must be > 0 (got min {np.min(var)!r}): the input variance of a Gaussian")
    with np.errstate(over="ignore", invalid="ignore", under="ignore", divide="ignore"):
        out = function(mu, np.sqrt(var))
    return np.array(np.broadcast_to(out, np.broadcast(mu, var).shape), dtype=np.float64)
