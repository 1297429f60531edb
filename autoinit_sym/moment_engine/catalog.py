"""The activation registry: Keras 3 activation names -> SymPy expressions in x.

Each entry builds its expression from its parameter values (Keras names and Keras
defaults), so structural parameters (``relu``'s ``max_value=None``, ``gelu``'s
``approximate``) can select different expressions. Definitions follow
``keras/src/activations/activations.py`` and the TensorFlow backend ops.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Callable

import sympy
from sympy import Max, Min, Piecewise, exp, log, sqrt, tanh

from autoinit_sym.moment_engine.expressions import X, as_number, parse, substitute

Builder = Callable[[dict[str, Any]], sympy.Expr]

# SELU constants (Klambauer et al. 2017), as in keras.ops.selu.
SELU_ALPHA = sympy.Float("1.6732632423543772848170429916717", 32)
SELU_SCALE = sympy.Float("1.0507009873554804934193349852946", 32)
GELU_CUBIC = sympy.Rational(44715, 1_000_000)


@dataclass(frozen=True)
class Activation:
    """A registered activation: ``build(params)`` gives its expression in ``x``.

    ``defaults`` are the Keras defaults; ``required`` parameters have none in Keras
    (``example`` supplies values for tables only).
    """

    name: str
    build: Builder
    defaults: dict[str, Any] = field(default_factory=dict)
    required: tuple[str, ...] = ()
    example: dict[str, Any] = field(default_factory=dict)
    builtin: bool = True

    @property
    def parameters(self) -> tuple[str, ...]:
        return (*self.defaults, *self.required)

    def resolve(self, params: dict[str, Any]) -> dict[str, Any]:
        """Defaults merged with ``params``, after checking names and completeness."""
        unknown = sorted(set(params) - set(self.parameters))
        if unknown:
            valid = list(self.parameters) or "none"
            raise ValueError(f"unknown parameter(s) {unknown} for activation {self.name!r}; "
                             f"valid parameters: {valid}")
        missing = [p for p in self.required if p not in params]
        if missing:
            raise ValueError(f"activation {self.name!r} needs parameter(s) {missing} "
                             f"(Keras gives them no default)")
        return {**self.defaults, **params}

    def expression(self, params: dict[str, Any]) -> sympy.Expr:
        """The expression in ``x`` for the resolved parameter values."""
        return self.build(params)


def _number(params: dict[str, Any], key: str) -> sympy.Expr:
    try:
        return as_number(params[key])
    except ValueError:
        raise ValueError(f"parameter {key!r} must be a real number, got {params[key]!r}") from None


def _positive_part(slope: sympy.Expr, negative: sympy.Expr) -> sympy.Expr:
    """x for x > 0, ``slope * negative`` otherwise (the ELU-family template)."""
    return Piecewise((X, X > 0), (slope * negative, True))


def _relu(p: dict[str, Any]) -> sympy.Expr:
    """keras.activations.relu: where(x > t, x, 0) (plain relu when t == 0), clipped to
    [0, max_value] when given, minus negative_slope * relu(t - x)."""
    slope, t = _number(p, "negative_slope"), _number(p, "threshold")
    positive = Max(X, 0) if t == 0 else Piecewise((X, X > t), (0, True))
    if p["max_value"] is not None:
        positive = Min(Max(positive, 0), _number(p, "max_value"))
    return positive - slope * Max(t - X, 0)


def _gelu(p: dict[str, Any]) -> sympy.Expr:
    """x * Phi(x), or its tanh approximation when ``approximate`` is true."""
    if not isinstance(p["approximate"], bool):
        raise ValueError(f"parameter 'approximate' of 'gelu' must be a bool, got {p['approximate']!r}")
    if p["approximate"]:
        return X / 2 * (1 + tanh(sqrt(2 / sympy.pi) * (X + GELU_CUBIC * X**3)))
    return X / 2 * (1 + sympy.erf(X / sqrt(2)))


def _hard_sigmoid() -> sympy.Expr:
    return Piecewise((0, X <= -3), (1, X >= 3), (X / 6 + sympy.Rational(1, 2), True))


def _fixed(expr: sympy.Expr) -> Builder:
    return lambda p: expr


def _builtins() -> list[Activation]:
    n = _number
    return [
        Activation("celu", lambda p: _positive_part(n(p, "alpha"), exp(X / n(p, "alpha")) - 1),
                   {"alpha": 1.0}),
        Activation("elu", lambda p: _positive_part(n(p, "alpha"), exp(X) - 1), {"alpha": 1.0}),
        Activation("exponential", _fixed(exp(X))),
        Activation("gelu", _gelu, {"approximate": False}),
        Activation("hard_shrink", lambda p: Piecewise((X, X > n(p, "threshold")),
                                                      (X, X < -n(p, "threshold")), (0, True)),
                   {"threshold": 0.5}),
        Activation("hard_sigmoid", _fixed(_hard_sigmoid())),
        Activation("hard_silu", _fixed(X * _hard_sigmoid())),
        Activation("hard_swish", _fixed(X * _hard_sigmoid())),
        Activation("hard_tanh", _fixed(Piecewise((-1, X < -1), (1, X > 1), (X, True)))),
        Activation("leaky_relu", lambda p: Piecewise((X, X >= 0), (n(p, "negative_slope") * X, True)),
                   {"negative_slope": 0.2}),
        Activation("linear", _fixed(X)),
        Activation("log_sigmoid", _fixed(-log(1 + exp(-X)))),
        Activation("mish", _fixed(X * tanh(log(1 + exp(X))))),
        Activation("relu", _relu, {"negative_slope": 0.0, "max_value": None, "threshold": 0.0}),
        Activation("relu6", _fixed(Min(Max(X, 0), 6))),
        Activation("selu", _fixed(SELU_SCALE * _positive_part(SELU_ALPHA, exp(X) - 1))),
        Activation("sigmoid", _fixed(1 / (1 + exp(-X)))),
        Activation("silu", _fixed(X / (1 + exp(-X)))),
        Activation("swish", _fixed(X / (1 + exp(-X)))),
        Activation("soft_shrink", lambda p: Piecewise((X - n(p, "threshold"), X > n(p, "threshold")),
                                                      (X + n(p, "threshold"), X < -n(p, "threshold")),
                                                      (0, True)),
                   {"threshold": 0.5}),
        Activation("softplus", _fixed(log(1 + exp(X)))),
        Activation("softsign", _fixed(X / (1 + sympy.Abs(X)))),
        Activation("sparse_plus", _fixed(Piecewise((0, X <= -1), ((X + 1) ** 2 / 4, X < 1), (X, True)))),
        Activation("sparse_sigmoid", _fixed(Piecewise((0, X <= -1), (1, X >= 1), ((X + 1) / 2, True)))),
        Activation("squareplus", lambda p: (X + sqrt(X**2 + n(p, "b"))) / 2, {"b": 4}),
        Activation("tanh", _fixed(tanh(X))),
        Activation("tanh_shrink", _fixed(X - tanh(X))),
        Activation("threshold", lambda p: Piecewise((X, X > n(p, "threshold")),
                                                    (n(p, "default_value"), True)),
                   required=("threshold", "default_value"),
                   example={"threshold": 0.0, "default_value": 0.0}),
    ]


_REGISTRY: dict[str, Activation] = {a.name: a for a in _builtins()}


def names() -> list[str]:
    """All registered activation names, sorted."""
    return sorted(_REGISTRY)


def get(name: str) -> Activation:
    """The registered activation ``name``; a ValueError suggests close names otherwise."""
    if not isinstance(name, str):
        raise ValueError(f"activation name must be a str, got {type(name).__name__}")
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, _REGISTRY, n=3, cutoff=0.5)
        hint = f"did you mean {close}?" if close else f"registered: {names()}"
        raise ValueError(f"unknown activation {name!r}; {hint}") from None


def register(name: str, expr: str | sympy.Expr, **defaults: float) -> Activation:
    """Register ``expr`` (in x and the parameters named in ``defaults``) as ``name``.

    Re-registering a user activation replaces it; built-in names cannot be replaced.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"activation name must be an identifier string, got {name!r}")
    if name in _REGISTRY and _REGISTRY[name].builtin:
        raise ValueError(f"{name!r} is a built-in activation and cannot be re-registered")
    for key, value in defaults.items():
        try:
            as_number(value)
        except ValueError:
            raise ValueError(f"default for parameter {key!r} of {name!r} must be a real "
                             f"number, got {value!r}") from None
    parsed = parse(expr, defaults)
    entry = Activation(name, lambda p: substitute(parsed, p), dict(defaults), builtin=False)
    _REGISTRY[name] = entry
    return entry
