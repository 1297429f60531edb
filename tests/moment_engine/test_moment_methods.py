"""The moment methods are interchangeable objects behind one protocol (issue 11).

``activation_moments.METHODS`` is an ordered list of MomentMethod classes: the first whose
``match`` returns an instance is used, specialised closed forms before the generic quadrature.
Quadrature nodes come from one module, cached and read-only.
"""
import numpy as np
import pytest
import sympy

from autoinit_sym.moment_engine import activation_moments, gelu, nodes
from autoinit_sym.moment_engine.activation_moments import METHODS, ActivationMoments
from autoinit_sym.moment_engine.closed_form import ClosedForm
from autoinit_sym.moment_engine.expressions import X, breakpoints, numpy_function
from autoinit_sym.moment_engine.gelu import GELU, GeluClosedForm
from autoinit_sym.moment_engine.methods import Deadline, Integrand, MomentMethod
from autoinit_sym.moment_engine.quadrature import Quadrature

MU = np.array([[-2.0], [0.0], [0.7]])
VAR = np.array([0.01, 1.0, 9.0])


def integrand(expr: sympy.Expr) -> Integrand:
    return Integrand(expr, tuple(breakpoints(expr)), numpy_function(expr), Deadline(None))


def test_methods_are_tried_specialised_first():
    assert METHODS == (GeluClosedForm, ClosedForm, Quadrature)
    assert all(issubclass(method, MomentMethod) for method in METHODS)
    assert [m.name for m in METHODS] == ["closed_form", "closed_form", "quadrature"]


@pytest.mark.parametrize("expr,matching", [
    (GELU, {GeluClosedForm, Quadrature}),
    (sympy.Max(X, 0), {ClosedForm, Quadrature}),
    (sympy.tanh(X), {Quadrature}),
])
def test_match_returns_an_instance_or_none(expr, matching):
    for method in METHODS:
        found = method.match(integrand(expr))
        assert (found is not None) == (method in matching), method
        assert found is None or isinstance(found, method)


@pytest.mark.parametrize("expr", [GELU, sympy.Max(X, 0), sympy.Piecewise((X, X > 0), (sympy.exp(X) - 1, True))])
def test_every_matching_method_gives_the_same_moments(expr):
    found = [m.match(integrand(expr)) for m in METHODS]
    results = [(f.mean(*np.broadcast_arrays(MU, VAR)), f.variance(*np.broadcast_arrays(MU, VAR)),
                f.second_moment(*np.broadcast_arrays(MU, VAR))) for f in found if f is not None]
    assert len(results) == 2
    for reference, other in zip(results[0], results[1]):
        np.testing.assert_allclose(other, reference, rtol=1e-10, atol=1e-14)


class Identity(MomentMethod):
    """A specialised method for f(x) = x: E = mu, Var = var."""

    name = "exact"
    mean_expr = second_moment_expr = None

    @classmethod
    def match(cls, integrand):
        return cls() if integrand.expr == X else None

    def mean(self, mu, var):
        return mu

    def variance(self, mu, var):
        return var


def test_a_new_method_plugs_in_without_touching_the_facade(monkeypatch):
    monkeypatch.setattr(activation_moments, "METHODS", (Identity, *METHODS))
    m = ActivationMoments("identity", {}, X)
    assert m.method == "exact"
    np.testing.assert_array_equal(m.second_moment(MU, VAR), VAR + MU * MU)      # the generic base path
    assert ActivationMoments("relu", {}, sympy.Max(X, 0)).method == "closed_form"


def test_facade_reports_the_method_and_keeps_its_api():
    m = activation_moments.moments("gelu")
    assert (m.name, m.params, m.method) == ("gelu", {"approximate": False}, "closed_form")
    assert m.breakpoints == [] and m.notes == []
    expected_mean, expected_second = gelu.symbolic()       # built once, on first use
    assert m.mean_expr is expected_mean and m.second_moment_expr is expected_second
    mean, variance = m.mean_variance(MU, VAR)
    np.testing.assert_array_equal(mean, m.mean(MU, VAR))
    np.testing.assert_array_equal(variance, m.variance(MU, VAR))


def test_nodes_are_built_once_and_read_only():
    t, w = nodes.gauss_legendre(10)
    assert nodes.gauss_legendre(10)[0] is t
    reference = np.polynomial.legendre.leggauss(10)
    np.testing.assert_array_equal(t, reference[0])
    np.testing.assert_array_equal(w, reference[1])
    z, p = nodes.standard_normal_nodes(96)
    assert p.sum() == pytest.approx(1.0, abs=1e-15) and z @ p == pytest.approx(0.0, abs=1e-14)
    for array in (t, w, z, p):
        with pytest.raises(ValueError, match="read-only"):
            array[0] = 0.0
