"""Activation text is parsed with a whitelist and never evaluated (issue 12, the moment engine).

Every payload must be refused with a ValueError and must leave no trace: each test runs in
an empty temporary folder, which has to stay empty, and checks that no environment variable
was set and no module imported.
"""
import builtins
import os
import sys

import pytest
import sympy

from autoinit_sym import moments, register_activation
from autoinit_sym.moment_engine import catalog
from autoinit_sym.moment_engine.closed_form import derive
from autoinit_sym.moment_engine.expressions import MAX_EXPRESSION_LENGTH, X, parse
from autoinit_sym.moment_engine.piecewise import split_pieces

REFUSED = "not allowed in an activation expression"
PAYLOADS = [
    "x + __import__('os').system('touch pwned')",
    "__import__('os').system('touch pwned')",
    "open('pwned', 'w')",
    "x + open('pwned', 'w').write('1')",
    "exec(\"open('pwned', 'w')\")",
    "exec('import os')",
    "eval('1+1')*x",
    "eval",
    "(lambda: open('pwned', 'w'))()",
    "(lambda f: (lambda: f('pwned', 'w'))())(open)",
    "x.__class__",
    "__class__",
    "x.__class__.__mro__[1].__subclasses__()",
    "().__class__.__base__.__subclasses__()",
    "x.func.__globals__['os'].system('touch pwned')",
    "getattr(x, '__class__')",
    "getattr(__builtins__, 'open')('pwned', 'w')",
    "__builtins__",
    "(y := open('pwned', 'w')) and x",
    "f\"{open('pwned', 'w')}\"",
    "f'{x}'",
    "[open('pwned', 'w') for _ in (1,)]",
    "x if open('pwned', 'w') else x",
    "Max(x, evaluate=open('pwned', 'w'))",
    "Max(*[open('pwned', 'w')])",
    "{'a': open('pwned', 'w')}",
    "\uff4f\uff50\uff45\uff4e('pwned', 'w')",          # fullwidth 'open', NFKC-normalized by Python
    "compile('1', 'f', 'eval')",
    "globals()",
    "vars()",
    "breakpoint()",
    "sympify('x')",
    "Symbol('y')*x",
    "S('x')",
    "b'x'",
    "x[0]",
    "Piecewise((x, open('pwned', 'w')), (0, True))",
    "Piecewise((x, x > 0), (0, True))(1)",
    "pi.evalf()",
]


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """An empty working folder; afterwards it must still be empty and nothing else changed."""
    monkeypatch.chdir(tmp_path)
    modules = set(sys.modules)
    environment = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
    yield tmp_path
    assert list(tmp_path.iterdir()) == [], "a payload wrote a file"
    assert {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"} == environment
    assert not {m for m in set(sys.modules) - modules if m in ("os.path", "subprocess", "pty", "socket")}


@pytest.mark.parametrize("payload", PAYLOADS)
def test_payload_is_refused_without_side_effect(sandbox, payload):
    # a bare identifier is looked up as a registered activation name, never parsed
    with pytest.raises(ValueError, match="unknown activation" if payload.isidentifier() else REFUSED) as info:
        moments(payload)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("payload", PAYLOADS[:8] + ["__class__", "__builtins__"])
def test_register_activation_and_parse_refuse_too(sandbox, payload):
    with pytest.raises(ValueError, match=REFUSED):
        register_activation("payload", payload, a=1.0)
    with pytest.raises(ValueError, match=REFUSED):
        parse(payload, ["a"])
    assert "payload" not in catalog.names()


def test_environment_payload_sets_nothing(sandbox):
    with pytest.raises(ValueError, match=REFUSED):
        moments("x + __import__('os').environ.setdefault('AUTOINIT_PWNED', '1')")
    assert "AUTOINIT_PWNED" not in os.environ


def test_very_long_input_is_refused_before_parsing(sandbox, monkeypatch):
    def no_parse(*args, **kwargs):
        raise AssertionError("parsed")

    monkeypatch.setattr("ast.parse", no_parse)
    text = "x + " * (MAX_EXPRESSION_LENGTH // 4) + "open('pwned', 'w')"
    with pytest.raises(ValueError, match="too long"):
        moments(text)


@pytest.mark.parametrize("text,match", [
    ("x" + " + x" * 2000, "too large"),                      # syntax nodes
    ("-" * 150 + "x", "nested too deeply"),
    ("exp(" * 120 + "x" + ")" * 120, "nested too deeply"),
    ("(" * 300 + "x" + ")" * 300, "could not parse"),          # Python's own parenthesis limit
    ("1" * 60 + "*x", "digits"),
    ("10**10**10*x", "too large"),
    ("(2*x)**(10**10)", "degree 64"),
])
def test_size_limits_apply_before_anything_is_built(sandbox, text, match):
    with pytest.raises(ValueError, match=match):
        parse(text)


def test_parsing_never_calls_eval_or_exec(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("eval/exec called while parsing")

    monkeypatch.setattr(builtins, "eval", refuse)
    monkeypatch.setattr(builtins, "exec", refuse)
    a = sympy.Symbol("a", real=True)
    assert parse("x^2 + 1") == X**2 + 1
    assert parse("a*Max(x, 0) - sigmoid(x)/2", ["a"]) == a * sympy.Max(X, 0) - (1 / (1 + sympy.exp(-X))) / 2
    assert parse("Piecewise((x, 0 < x < 1), (0, True))") == sympy.Piecewise(
        (X, (X > 0) & (X < 1)), (0, True))
    assert parse("0.5*x") == sympy.Float("0.5") * X
    assert parse("1/2*x") == X / 2


def test_vocabulary_is_kept():
    """Every name the catalog and the README use parses to the SymPy it always meant."""
    a, c = sympy.Symbol("a", real=True), sympy.Symbol("c", real=True)
    assert parse("Min(Piecewise((x, x > 0), (a*(exp(x) - 1), True)), c)", ["a", "c"]) == sympy.Min(
        sympy.Piecewise((X, X > 0), (a * (sympy.exp(X) - 1), True)), c)
    assert parse("x/2*(1 + erf(x/sqrt(2)))") == X / 2 * (1 + sympy.erf(X / sympy.sqrt(2)))
    assert parse("abs(x) + Abs(x) + Heaviside(x, 0) + sign(x)") == (
        2 * sympy.Abs(X) + sympy.Heaviside(X, 0) + sympy.sign(X))
    assert parse("tanh(x) + sinh(x) + cosh(x) + sin(x) + cos(x) + atan(x) + erfc(x) + log(x)") == (
        sympy.tanh(X) + sympy.sinh(X) + sympy.cosh(X) + sympy.sin(X) + sympy.cos(X) + sympy.atan(X)
        + sympy.erfc(X) + sympy.log(X))
    assert parse("softplus(x) + relu(x) + pi + E**x") == (
        sympy.log(1 + sympy.exp(X)) + sympy.Max(X, 0) + sympy.pi + sympy.exp(X))
    assert parse("Piecewise((x, (x > 0) & ~(x > 1) | And(x > 5, Not(x > 6))), (0, x == 7), (1, True))") == (
        sympy.Piecewise((X, ((X > 0) & ~(X > 1)) | ((X > 5) & ~(X > 6))), (0, sympy.Eq(X, 7)), (1, True)))


@pytest.mark.parametrize("text,match", [
    ("x*y + z", r"unknown symbol\(s\) \['y', 'z'\]; valid names: x"),
    ("foo(x)", r"call of 'foo'; allowed functions: \['Abs'"),
    ("gamma(x)", "gamma .poles on the real line"),
    ("I*x", "imaginary unit"),
    ("exp + x", "function 'exp' without arguments"),
    ("x // 2", "operator //"),
    ("Max(x, x > 0)", "outside a Piecewise condition"),
    ("(x, 1)", "tuple"),
])
def test_refusals_say_what_and_list_the_choices(text, match):
    with pytest.raises(ValueError, match=match):
        parse(text)


def test_sympy_objects_are_still_accepted():
    m = moments(sympy.Max(sympy.Symbol("x"), 0))
    assert m.method == "closed_form"
    assert float(m.mean(0.0, 1.0)) == pytest.approx(0.3989422804014327, rel=1e-14)


def test_symbolic_entry_points_refuse_strings(sandbox):
    with pytest.raises(TypeError, match="SymPy expression"):
        derive("open('pwned', 'w')")
    with pytest.raises(TypeError, match="SymPy expression"):
        split_pieces("open('pwned', 'w')", X)
