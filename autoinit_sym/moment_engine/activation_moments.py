"""Moments of activations of a Gaussian input: the public facade of the moment engine.

``moments(activation, **params)`` returns an :class:`ActivationMoments` with
E[f(X)], Var[f(X)] and E[f(X)^2] for X ~ N(mu, var), evaluated with NumPy over
broadcast arrays. The activation is validated first (:mod:`.validation`: size, degree,
breakpoints, real and finite values, no poles, at most exponential growth; ValueError
otherwise). Then the methods of :data:`METHODS` are tried in order, each a
:class:`~autoinit_sym.moment_engine.methods.MomentMethod`: GELU's closed form, the
derived closed form of piecewise exp-polynomials (``method == "closed_form"``), and the
generic vectorized quadrature (``"quadrature"``). A closed form that applies but exceeds
its size limits or the time budget (:data:`CLOSED_FORM_TIME_BUDGET` seconds, or the
``time_budget`` argument of :class:`ActivationMoments`) is skipped with a
:class:`ClosedFormSkipped` warning, and ``notes`` says why.
Objects are derived on first use and cached by (activation, parameters).
"""
from __future__ import annotations

import warnings
from typing import Any, Optional

import numpy as np
import sympy

from autoinit_sym.moment_engine import catalog, validation
from autoinit_sym.moment_engine.closed_form import ClosedForm
from autoinit_sym.moment_engine.expressions import breakpoints, numpy_function, parse, substitute
from autoinit_sym.moment_engine.gelu import GeluClosedForm
from autoinit_sym.moment_engine.methods import Deadline, Integrand, MethodUnavailable, MomentMethod
from autoinit_sym.moment_engine.quadrature import Quadrature

CLOSED_FORM = ClosedForm.name
QUADRATURE = Quadrature.name
METHODS: tuple[type[MomentMethod], ...] = (GeluClosedForm, ClosedForm, Quadrature)
CLOSED_FORM_TIME_BUDGET: Optional[float] = 2.0    # seconds per activation for closed-form derivation

ArrayLike = Any


class ClosedFormSkipped(UserWarning):
    """A closed form applied but was not used (size limit, time budget or a derivation error)."""


class MomentsOverflow(RuntimeWarning):
    """Some moments are NaN: they overflow float64 in every method (inf - inf)."""


def _numeric(value: ArrayLike, name: str) -> np.ndarray:
    """``value`` as a float64 array; TypeError unless it is a real number or numeric array."""
    array = np.asarray(value)
    if array.dtype.kind not in "iuf":
        raise TypeError(f"{name} must be a real number or an array of real numbers, got "
                        f"{type(value).__name__}" + (f" of dtype {array.dtype}" if array.dtype != object else ""))
    return array.astype(np.float64, copy=False)


def _inputs(mu: ArrayLike, var: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    mu, var = np.broadcast_arrays(_numeric(mu, "mu (the input mean)"), _numeric(var, "var (the input variance)"))
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
    (SymPy in mu and sigma, or None without a closed form), ``breakpoints``, ``notes``
    (why a closed form was skipped, if one was). ``time_budget``: seconds for closed-form
    derivation (default :data:`CLOSED_FORM_TIME_BUDGET`; None: unlimited).
    """

    def __init__(self, name: str, params: dict[str, Any], expr: sympy.Expr,
                 time_budget: Optional[float] = None) -> None:
        validation.check_structure(expr)
        self.name = name
        self.params = dict(params)
        self.expr = expr
        self.breakpoints = breakpoints(expr)
        f = numpy_function(expr)
        validation.check_values(expr, f, self.breakpoints)
        self.notes: list[str] = []
        integrand = Integrand(expr, tuple(self.breakpoints), f,
                              Deadline(CLOSED_FORM_TIME_BUDGET if time_budget is None else time_budget))
        self._method = self._choose(integrand)
        self._generic: Optional[Quadrature] = None      # built on first NaN of a closed form
        self._f = f
        self.method = self._method.name
        self.mean_expr = self._method.mean_expr
        self.second_moment_expr = self._method.second_moment_expr

    def _choose(self, integrand: Integrand) -> MomentMethod:
        """The first method of METHODS that matches (Quadrature always does)."""
        for method in METHODS:
            try:
                chosen = method.match(integrand)
            except MethodUnavailable as why:
                self._skip(f"{method.__name__} not used: {why}")
                continue
            except Exception as err:  # a derivation bug must not make the activation unusable
                self._skip(f"{method.__name__} failed ({type(err).__name__}: {err})")
                continue
            if chosen is not None:
                return chosen
        raise AssertionError("Quadrature matches every activation")

    def _skip(self, note: str) -> None:
        self.notes.append(note)
        name = self.name if len(self.name) <= 60 else self.name[:57] + "..."
        warnings.warn(f"{name}: {note}; using quadrature", ClosedFormSkipped, stacklevel=5)

    def __repr__(self) -> str:
        return f"ActivationMoments({self.name!r}, params={self.params}, method={self.method!r})"

    def _finite(self, values: np.ndarray, index: int, mu: np.ndarray, var: np.ndarray) -> np.ndarray:
        """``values`` (part ``index``: 0 mean, 1 variance) with NaN (float64 overflow in a closed
        form: inf - inf) replaced by the generic quadrature's result there (+-inf); a
        MomentsOverflow warning where NaN remains."""
        bad = np.isnan(values)
        if not np.any(bad):
            return values
        if not isinstance(self._method, Quadrature):
            self._generic = self._generic or Quadrature(self._f, self.breakpoints)
            values = np.array(values)
            values[bad] = self._generic.mean_variance(mu[bad], var[bad])[index]
        if np.any(np.isnan(values)):
            warnings.warn(f"{self.name}: the moments overflow float64 at some (mu, var); NaN returned there",
                          MomentsOverflow, stacklevel=3)
        return values

    def mean_variance(self, mu: ArrayLike, var: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """(E[f(X)], Var[f(X)]), computed together."""
        mu, var = _inputs(mu, var)
        with np.errstate(all="ignore"):
            mean, variance = self._method.mean_variance(mu, var)
            mean, variance = self._finite(mean, 0, mu, var), self._finite(variance, 1, mu, var)
        return _shaped(mean, mu.shape), _shaped(variance, mu.shape)

    def mean(self, mu: ArrayLike, var: ArrayLike) -> np.ndarray:
        """E[f(X)] for X ~ N(mu, var)."""
        mu, var = _inputs(mu, var)
        with np.errstate(all="ignore"):
            return _shaped(self._finite(self._method.mean(mu, var), 0, mu, var), mu.shape)

    def variance(self, mu: ArrayLike, var: ArrayLike) -> np.ndarray:
        """Var[f(X)] for X ~ N(mu, var) (computed without E[f^2] - E[f]^2 cancellation)."""
        mu, var = _inputs(mu, var)
        with np.errstate(all="ignore"):
            return _shaped(self._finite(self._method.variance(mu, var), 1, mu, var), mu.shape)

    def second_moment(self, mu: ArrayLike, var: ArrayLike) -> np.ndarray:
        """E[f(X)^2] for X ~ N(mu, var)."""
        mu, var = _inputs(mu, var)
        with np.errstate(all="ignore"):
            second = self._method.second_moment(mu, var)
            if np.any(np.isnan(second)):
                mean, variance = self.mean_variance(mu, var)
                second = np.where(np.isnan(second), variance + mean * mean, second)
        return _shaped(second, mu.shape)


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
    expression in ``x`` (str or SymPy; keyword values substitute its parameters).
    ValueError for unknown names, unsafe or malformed text, and activations without
    well-defined Gaussian moments."""
    if isinstance(activation, sympy.Basic):
        validation.check_size(activation)
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
            raise ValueError(f"parameter(s) {unused} do not appear in expression {_text(activation)}")
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


def _text(activation: Any) -> str:
    text = str(activation)
    return repr(text if len(text) <= 80 else text[:77] + "...")


def register_activation(name: str, expr: str | sympy.Expr, **default_params: float) -> None:
    """Register ``expr`` (in x and parameters with the given defaults) under ``name``."""
    catalog.register(name, expr, **default_params)
    for key in [k for k, v in _CACHE.items() if v.name == name or k[0] == name]:
        del _CACHE[key]


def registered_names() -> list[str]:
    """All registered activation names."""
    return catalog.names()
