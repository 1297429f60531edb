"""Moments of activations of a Gaussian input: the public facade of the moment engine.

``moments(activation, **params)`` returns an :class:`ActivationMoments` with
E[f(X)], Var[f(X)] and E[f(X)^2] for X ~ N(mu, var), evaluated with NumPy over
broadcast arrays. A closed form is used where one exists (``method == "closed_form"``:
derived with SymPy for piecewise exp-polynomials, written out for GELU's x Phi(x)),
vectorized quadrature otherwise (``"quadrature"``).
Objects are derived on first use and cached by (activation, parameters).
"""
from __future__ import annotations

import functools
import warnings
from typing import Any

import numpy as np
import sympy

from autoinit_sym.moment_engine import catalog, quadrature
from autoinit_sym.moment_engine.closed_form import ClosedForm, derive
from autoinit_sym.moment_engine.expressions import X, breakpoints, numpy_function, parse, substitute
from autoinit_sym.moment_engine.gelu import GeluClosedForm, is_gelu

CLOSED_FORM = "closed_form"
QUADRATURE = "quadrature"

ArrayLike = Any


def _derive_closed_form(expr: sympy.Expr) -> ClosedForm | GeluClosedForm | None:
    """The closed form: GELU's (x Phi(x), :mod:`autoinit_sym.moment_engine.gelu`), else the derivation
    for piecewise exp-polynomials (:func:`autoinit_sym.moment_engine.closed_form.derive`), or None when there
    is none."""
    try:
        return GeluClosedForm() if is_gelu(expr) else derive(expr, X)
    except Exception as err:  # a derivation bug must not make the activation unusable
        warnings.warn(f"closed-form derivation failed for {expr} ({type(err).__name__}: {err}); "
                      f"using quadrature", RuntimeWarning, stacklevel=3)
        return None


def _inputs(mu: ArrayLike, var: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    mu, var = np.broadcast_arrays(np.asarray(mu, dtype=np.float64), np.asarray(var, dtype=np.float64))
    if not np.all(var > 0):
        bad = var[~(var > 0)].flat[0]
        raise ValueError(f"input variance must be > 0, got {bad!r}")
    if not np.all(np.isfinite(mu)) or not np.all(np.isfinite(var)):
        raise ValueError("input mean and variance must be finite")
    return mu, var


class ActivationMoments:
    """Moments of f(X), X ~ N(mu, var), for one activation with fixed parameters.

    Attributes: ``name``, ``params``, ``expr`` (SymPy in ``x``), ``method``
    ("closed_form" or "quadrature"), ``mean_expr`` and ``second_moment_expr``
    (SymPy in mu and sigma, or None without a closed form), ``breakpoints``.
    """

    def __init__(self, name: str, params: dict[str, Any], expr: sympy.Expr) -> None:
        self.name = name
        self.params = dict(params)
        self.expr = expr
        self._closed = _derive_closed_form(expr)
        self.method = QUADRATURE if self._closed is None else CLOSED_FORM
        self.mean_expr = None if self._closed is None else self._closed.mean_expr
        self.second_moment_expr = None if self._closed is None else self._closed.second_moment_expr
        self._f = None if self._closed is not None else numpy_function(expr)
        self._kept: tuple | None = None        # (part index, mu, var, values) from the last call

    @functools.cached_property
    def breakpoints(self) -> list[float]:
        """Real x where f is not smooth (quadrature panel edges)."""
        return breakpoints(self.expr)

    def __repr__(self) -> str:
        return f"ActivationMoments({self.name!r}, params={self.params}, method={self.method!r})"

    def mean_variance(self, mu: ArrayLike, var: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """(E[f(X)], Var[f(X)]), computed together."""
        mu, var = _inputs(mu, var)
        if self._closed is not None:
            mean, variance = self._closed.mean(mu, var), self._closed.variance(mu, var)
        else:
            mean, variance = quadrature.gaussian_moments(self._f, self.breakpoints, mu.ravel(), var.ravel())
        return _shaped(mean, mu.shape), _shaped(variance, mu.shape)

    def _quadrature_part(self, index: int, mu: ArrayLike, var: ArrayLike) -> np.ndarray:
        """Part ``index`` (0 mean, 1 variance) of a quadrature run. The other part is kept
        for one call, so ``mean`` then ``variance`` at the same points integrates once."""
        mu, var = _inputs(mu, var)
        kept, self._kept = self._kept, None
        if kept and kept[0] == index and kept[1].shape == mu.shape \
                and np.array_equal(kept[1], mu) and np.array_equal(kept[2], var):
            return kept[3]
        both = self.mean_variance(mu, var)
        self._kept = (1 - index, mu.copy(), var.copy(), both[1 - index])
        return both[index]

    def mean(self, mu: ArrayLike, var: ArrayLike) -> np.ndarray:
        """E[f(X)] for X ~ N(mu, var)."""
        if self._closed is None:
            return self._quadrature_part(0, mu, var)
        mu, var = _inputs(mu, var)
        return _shaped(self._closed.mean(mu, var), mu.shape)

    def variance(self, mu: ArrayLike, var: ArrayLike) -> np.ndarray:
        """Var[f(X)] for X ~ N(mu, var) (computed without E[f^2] - E[f]^2 cancellation)."""
        if self._closed is None:
            return self._quadrature_part(1, mu, var)
        mu, var = _inputs(mu, var)
        return _shaped(self._closed.variance(mu, var), mu.shape)

    def second_moment(self, mu: ArrayLike, var: ArrayLike) -> np.ndarray:
        """E[f(X)^2] for X ~ N(mu, var)."""
        if self._closed is None:
            mean, variance = self.mean_variance(mu, var)
            return variance + mean * mean
        mu, var = _inputs(mu, var)
        return _shaped(self._closed.second_moment(mu, var), mu.shape)


def _shaped(values: ArrayLike, shape: tuple[int, ...]) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    out = values.reshape(shape) if values.size == np.prod(shape) else np.broadcast_to(values, shape).copy()
    return out[()] if out.ndim == 0 else out


_CACHE: dict[Any, ActivationMoments] = {}


def _key(activation: Any, params: dict[str, Any]) -> Any:
    expr_key = activation if isinstance(activation, str) else sympy.srepr(activation)
    return expr_key, tuple(sorted(params.items()))


def moments(activation: str | sympy.Expr, **params: Any) -> ActivationMoments:
    """Moments object for a registered activation name (with Keras parameters) or an
    expression in ``x`` (str or SymPy; keyword values substitute its parameters)."""
    try:
        return _CACHE[_key(activation, params)]
    except (KeyError, TypeError):
        pass
    if isinstance(activation, str) and (activation.isidentifier() and activation != "x"):
        entry = catalog.get(activation)
        resolved = entry.resolve(params)
        name, expr = activation, entry.expression(resolved)
    else:
        parsed = parse(activation, params)
        unused = sorted(set(params) - {s.name for s in parsed.free_symbols})
        if unused:
            raise ValueError(f"parameter(s) {unused} do not appear in expression {str(activation)!r}")
        expr = substitute(parsed, params)
        name, resolved = str(expr), dict(params)
    canonical = (sympy.srepr(expr), tuple(sorted(resolved.items(), key=str)), name)
    result = _CACHE.get(canonical) or ActivationMoments(name, resolved, expr)
    _CACHE[canonical] = result
    try:
        _CACHE[_key(activation, params)] = result
    except TypeError:
        pass
    return result


def register_activation(name: str, expr: str | sympy.Expr, **default_params: float) -> None:
    """Register ``expr`` (in x and parameters with the given defaults) under ``name``."""
    catalog.register(name, expr, **default_params)
    for key in [k for k, v in _CACHE.items() if v.name == name or k[0] == name]:
        del _CACHE[key]


def registered_names() -> list[str]:
    """All registered activation names."""
    return catalog.names()
