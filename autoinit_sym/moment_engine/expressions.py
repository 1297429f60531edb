"""Activation expressions: a whitelist parser, parameters, breakpoints and overflow-safe NumPy code.

An activation is a SymPy expression in the real symbol ``x`` and, optionally, named
real parameters. Strings are never evaluated as Python: :func:`parse` reads them with
:mod:`ast` and builds the SymPy expression itself from a fixed vocabulary: numbers,
``x``, the declared parameters, the constants ``pi`` and ``E``, the functions in
:data:`FUNCTIONS` (``exp``, ``log``, ``sqrt``, ``erf``, ``erfc``, ``tanh``, ...,
``Max``, ``Min``, ``Abs``, ``Heaviside``, ``sign``, ``sigmoid``, ``softplus``,
``relu``), ``Piecewise((value, condition), ...)``, arithmetic (``^`` is a power) and,
inside Piecewise conditions, comparisons, ``and``/``or``/``not``, ``&``/``|``/``~``.
Everything else (attributes, subscripts, lambdas, strings, keywords, other names and
calls) is refused with a ValueError before any SymPy object is built. Sizes are
bounded up front (:data:`MAX_EXPRESSION_LENGTH`, :data:`MAX_SYNTAX_NODES`,
:data:`MAX_NUMBER_DIGITS`, and powers of ``x`` up to :data:`MAX_DEGREE`), so no input
makes SymPy build a huge number or polynomial.
"""
from __future__ import annotations

import ast
import math
from typing import Callable, Iterable, NoReturn, Sequence

import numpy as np
import sympy
from scipy import optimize, special
from sympy.printing.numpy import SciPyPrinter

X = sympy.Symbol("x", real=True)

MAX_EXPRESSION_LENGTH = 10_000  # characters of an expression string
MAX_SYNTAX_NODES = 4_000        # Python syntax-tree nodes of an expression string
MAX_NESTING = 100               # nested calls, parentheses and operators of different precedence
MAX_NUMBER_DIGITS = 40          # digits of one number literal
MAX_DEGREE = 64                 # largest power of x (|exponent| * degree of the base)
MAX_CONSTANT_BITS = 4_096       # size of an exact constant built by a power of numbers


def _sigmoid(u: sympy.Expr) -> sympy.Expr:
    """1 / (1 + exp(-u))."""
    return 1 / (1 + sympy.exp(-u))


def _softplus(u: sympy.Expr) -> sympy.Expr:
    """log(1 + exp(u))."""
    return sympy.log(1 + sympy.exp(u))


def _relu(u: sympy.Expr) -> sympy.Expr:
    """Max(u, 0)."""
    return sympy.Max(u, 0)


# name -> (SymPy builder, least and most number of arguments; None: any number)
FUNCTIONS: dict[str, tuple[Callable[..., sympy.Expr], int, int | None]] = {
    "exp": (sympy.exp, 1, 1), "log": (sympy.log, 1, 1), "sqrt": (sympy.sqrt, 1, 1),
    "erf": (sympy.erf, 1, 1), "erfc": (sympy.erfc, 1, 1),
    "tanh": (sympy.tanh, 1, 1), "sinh": (sympy.sinh, 1, 1), "cosh": (sympy.cosh, 1, 1),
    "sin": (sympy.sin, 1, 1), "cos": (sympy.cos, 1, 1), "atan": (sympy.atan, 1, 1),
    "asinh": (sympy.asinh, 1, 1),
    "Abs": (sympy.Abs, 1, 1), "abs": (sympy.Abs, 1, 1), "sign": (sympy.sign, 1, 1),
    "Heaviside": (sympy.Heaviside, 1, 2), "Max": (sympy.Max, 1, None), "Min": (sympy.Min, 1, None),
    "sigmoid": (_sigmoid, 1, 1), "softplus": (_softplus, 1, 1), "relu": (_relu, 1, 1),
}
CONSTANTS: dict[str, sympy.Expr] = {"pi": sympy.pi, "E": sympy.E}
_CONDITION_FUNCTIONS: dict[str, Callable[..., sympy.Basic]] = {"And": sympy.And, "Or": sympy.Or,
                                                               "Not": sympy.Not}
# Names a user may expect from SymPy, with the reason they are refused.
_REFUSED_NAMES = {
    "I": "the imaginary unit I (activations are real functions)",
    "oo": "the non-finite constant oo", "zoo": "the non-finite constant zoo",
    "nan": "the non-finite constant nan",
    **{name: f"the function {name} (poles on the real line)"
       for name in ("gamma", "zeta", "tan", "cot", "sec", "csc", "digamma", "polygamma", "loggamma")},
    **{name: f"the function {name} (infinitely many breakpoints)" for name in ("floor", "ceiling", "frac")},
}
_SUM_OPS = (ast.Add, ast.Sub)
_PRODUCT_OPS = (ast.Mult, ast.Div)
_COMPARISONS = {ast.Lt: sympy.Lt, ast.LtE: sympy.Le, ast.Gt: sympy.Gt, ast.GtE: sympy.Ge,
                ast.Eq: sympy.Eq, ast.NotEq: sympy.Ne}
_SYNTAX = (ast.Expression, ast.Constant, ast.Name, ast.Load, ast.BinOp, ast.UnaryOp, ast.Call,
           ast.Compare, ast.BoolOp, ast.Tuple, ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Pow,
           ast.BitAnd, ast.BitOr, ast.USub, ast.UAdd, ast.Not, ast.Invert, ast.And, ast.Or,
           *_COMPARISONS)
_DESCRIPTIONS = {
    ast.Attribute: "attribute access", ast.Call: "the result of", ast.Subscript: "subscript", ast.Lambda: "lambda",
    ast.NamedExpr: "assignment expression (:=)", ast.JoinedStr: "f-string",
    ast.FormattedValue: "f-string", ast.Starred: "starred argument", ast.keyword: "keyword argument",
    ast.IfExp: "conditional expression (use Piecewise)", ast.List: "list", ast.Dict: "dict",
    ast.Set: "set", ast.ListComp: "comprehension", ast.SetComp: "comprehension",
    ast.DictComp: "comprehension", ast.GeneratorExp: "comprehension", ast.Await: "await",
    ast.Yield: "yield", ast.YieldFrom: "yield", ast.Slice: "slice",
    ast.FloorDiv: "operator //", ast.Mod: "operator %", ast.MatMult: "operator @",
    ast.LShift: "operator <<", ast.RShift: "operator >>",
    ast.Is: "operator is", ast.IsNot: "operator is not", ast.In: "operator in",
    ast.NotIn: "operator not in",
}


def _refuse(what: str) -> NoReturn:
    raise ValueError(f"not allowed in an activation expression: {what}")


def _vocabulary(parameters: Sequence[str]) -> str:
    return (f"valid names: x, parameters {list(parameters)}, constants {sorted(CONSTANTS)}, "
            f"functions {sorted(FUNCTIONS) + ['Piecewise']}")


def parameter_symbol(name: str) -> sympy.Symbol:
    """The real SymPy symbol used for the activation parameter ``name``."""
    return sympy.Symbol(name, real=True)


def check_power(base: sympy.Expr, exponent: sympy.Expr) -> None:
    """Refuse base**exponent where SymPy would build something huge: a power of x beyond
    MAX_DEGREE ((2*x)**(10**10) expands 2**(10**10)), or an exact number of more than
    MAX_CONSTANT_BITS bits."""
    if not exponent.is_number:
        return
    size = _magnitude(exponent)
    if base.has(X) and size * max(1, polynomial_degree(base)) > MAX_DEGREE:
        raise ValueError(f"the power {sympy.sstr(exponent)} of an expression in x is too large: "
                         f"activations are limited to degree {MAX_DEGREE} in x")
    if base.is_Rational and exponent.is_Rational and base not in (0, 1, -1):
        bits = size * (abs(base.p).bit_length() + abs(base.q).bit_length())
        if bits > MAX_CONSTANT_BITS:
            raise ValueError(f"the constant {base}**{sympy.sstr(exponent)} is too large "
                             f"(more than {MAX_CONSTANT_BITS} bits)")


def _magnitude(number: sympy.Expr) -> float:
    """|number| as a float (inf where it overflows or cannot be evaluated)."""
    try:
        return abs(complex(sympy.N(number, 15)))
    except (TypeError, ValueError, OverflowError):
        return math.inf


def polynomial_degree(expr: sympy.Expr) -> float:
    """An upper bound on the degree in x of ``expr`` and of every argument inside it:
    sums and functions take the largest of their arguments, products add them, a power
    multiplies its base's by the exponent's size. Linear in the number of distinct nodes."""
    degrees: dict[sympy.Basic, float] = {}
    stack: list[tuple[sympy.Basic, bool]] = [(expr, False)]
    while stack:
        node, ready = stack.pop()
        if node in degrees:
            continue
        if not ready:
            stack.append((node, True))
            stack.extend((arg, False) for arg in node.args if arg not in degrees)
            continue
        inner = [degrees[arg] for arg in node.args]
        if node == X:
            degrees[node] = 1.0
        elif isinstance(node, sympy.Pow) and node.exp.is_number:
            degrees[node] = inner[0] * _magnitude(node.exp)
        elif isinstance(node, (sympy.Mul, sympy.Pow)):     # x**x, 2**x: the sum of both degrees
            degrees[node] = sum(inner)
        else:
            degrees[node] = max(inner, default=0.0)
    return degrees[expr]


class _Builder:
    """Builds the SymPy expression of a checked syntax tree (see :func:`parse`)."""

    def __init__(self, text: str, parameters: Sequence[str]) -> None:
        self.text = text
        self.parameters = tuple(parameters)
        self.names = {"x": X, **{p: parameter_symbol(p) for p in self.parameters}}

    def check(self, tree: ast.Expression) -> None:
        """Refuse every construct outside the vocabulary, too many nodes or too deep a nesting,
        without building anything (iterative: no recursion limit applies)."""
        count, unknown = 0, []
        stack: list[tuple[ast.AST, int, bool]] = [(tree.body, 0, False)]
        while stack:
            node, depth, called = stack.pop()
            count += 1
            if count > MAX_SYNTAX_NODES:
                raise ValueError(f"activation expression is too large (more than {MAX_SYNTAX_NODES} "
                                 f"syntax nodes)")
            if depth > MAX_NESTING:
                raise ValueError(f"activation expression is nested too deeply (more than {MAX_NESTING} levels)")
            if not isinstance(node, _SYNTAX):
                _refuse(self._describe(node))
            if isinstance(node, ast.Constant):
                self._check_constant(node)
            elif isinstance(node, ast.Name):
                unknown.extend(self._check_name(node.id, called))
            elif isinstance(node, ast.Call):
                if not isinstance(node.func, ast.Name):
                    _refuse(f"call of {self._describe(node.func)}")
                if node.keywords:
                    _refuse(f"keyword argument {self._segment(node.keywords[0])!r}")
            for child in reversed(list(ast.iter_child_nodes(node))):     # popped left to right
                if isinstance(child, (ast.operator, ast.unaryop, ast.cmpop, ast.boolop, ast.expr_context)):
                    if not isinstance(child, _SYNTAX):
                        _refuse(self._describe(child))
                    continue
                chained = (child is _spine(node) and isinstance(child, ast.BinOp)
                           and _group(node.op) == _group(child.op))
                is_func = isinstance(node, ast.Call) and child is node.func
                stack.append((child, depth if chained else depth + 1, is_func))
        if unknown:
            raise ValueError(f"not allowed in an activation expression: unknown symbol(s) "
                             f"{sorted(set(unknown))}; {_vocabulary(self.parameters)}")

    def _check_constant(self, node: ast.Constant) -> None:
        value = node.value
        if isinstance(value, bool):          # True/False: refused by the builder outside conditions
            return
        if not isinstance(value, (int, float)):
            kind = {str: "string", bytes: "bytes", complex: "complex number"}.get(type(value), repr(value))
            _refuse(f"{kind} {self._segment(node)!r}")
        digits = sum(ch.isdigit() for ch in self._source(node))
        if digits > MAX_NUMBER_DIGITS:
            raise ValueError(f"number literal with {digits} digits in activation expression "
                             f"(at most {MAX_NUMBER_DIGITS})")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"number {self._segment(node)!r} is out of range in activation expression")

    def _check_name(self, name: str, called: bool) -> list[str]:
        """[] if ``name`` may stand where it does, [name] if it is unknown; refuses others."""
        if name.startswith("__") or name.endswith("__"):
            _refuse(f"dunder name {name!r}")
        if name in _REFUSED_NAMES and name not in self.names:
            _refuse(f"{_REFUSED_NAMES[name]}; {_vocabulary(self.parameters)}")
        if called:
            if name in self.names or name in CONSTANTS:
                _refuse(f"call of {name!r}, which is not a function")
            if name not in FUNCTIONS and name not in _CONDITION_FUNCTIONS and name != "Piecewise":
                _refuse(f"call of {name!r}; allowed functions: {sorted(FUNCTIONS) + ['Piecewise']}")
            return []
        if name in FUNCTIONS or name in _CONDITION_FUNCTIONS or name == "Piecewise":
            _refuse(f"function {name!r} without arguments")
        return [] if name in self.names or name in CONSTANTS else [name]

    def _source(self, node: ast.AST) -> str:
        return ast.get_source_segment(self.text, node) or type(node).__name__

    def _segment(self, node: ast.AST) -> str:
        text = self._source(node)
        return text if len(text) <= 60 else text[:57] + "..."

    def _describe(self, node: ast.AST) -> str:
        what = _DESCRIPTIONS.get(type(node), type(node).__name__)
        if isinstance(node, (ast.expr, ast.keyword)):
            return f"{what} {self._segment(node)!r}"
        return what

    # -- building (the tree has passed check()) --

    def expr(self, node: ast.expr) -> sympy.Expr:
        """The SymPy expression of an arithmetic node."""
        if isinstance(node, ast.Constant):
            return self._number(node)
        if isinstance(node, ast.Name):
            return self.names.get(node.id, CONSTANTS.get(node.id))
        if isinstance(node, ast.BinOp) and isinstance(node.op, (*_SUM_OPS, *_PRODUCT_OPS)):
            return self._chain(node)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
            return self._power(node)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            sign, operand = 1, node
            while isinstance(operand, ast.UnaryOp) and isinstance(operand.op, (ast.USub, ast.UAdd)):
                sign = -sign if isinstance(operand.op, ast.USub) else sign
                operand = operand.operand
            value = self.expr(operand)
            return -value if sign < 0 else value
        if isinstance(node, ast.Call) and (node.func.id in FUNCTIONS or node.func.id == "Piecewise"):
            return self._call(node)
        if isinstance(node, ast.Tuple):
            _refuse(f"tuple {self._segment(node)!r} outside Piecewise")
        _refuse(f"condition {self._segment(node)!r} outside a Piecewise condition")

    def _number(self, node: ast.Constant) -> sympy.Expr:
        if isinstance(node.value, bool):
            _refuse(f"{node.value} outside a Piecewise condition")
        if isinstance(node.value, int):
            return sympy.Integer(node.value)
        return sympy.Float(self._source(node).replace("_", ""))   # keeps the written digits

    def _chain(self, node: ast.BinOp) -> sympy.Expr:
        """a + b - c ... or a * b / c ..., folded left to right as Python would."""
        group = _group(node.op)
        operations = []
        while isinstance(node, ast.BinOp) and _group(node.op) == group:
            operations.append((node.op, node.right))
            node = node.left
        value = self.expr(node)
        for op, right in reversed(operations):
            operand = self.expr(right)
            if isinstance(op, ast.Add):
                value = value + operand
            elif isinstance(op, ast.Sub):
                value = value - operand
            elif isinstance(op, ast.Mult):
                value = value * operand
            else:
                value = value / operand
        return value

    def _power(self, node: ast.BinOp) -> sympy.Expr:
        """a ** b ** c ..., right-associative, each power checked by :func:`check_power`."""
        operands = [node.left]
        while isinstance(node.right, ast.BinOp) and isinstance(node.right.op, ast.Pow):
            node = node.right
            operands.append(node.left)
        operands.append(node.right)
        value = self.expr(operands[-1])
        for base_node in reversed(operands[:-1]):
            base = self.expr(base_node)
            check_power(base, value)
            value = base**value
        return value

    def _call(self, node: ast.Call) -> sympy.Expr:
        name = node.func.id
        if name == "Piecewise":
            return self._piecewise(node)
        build, least, most = FUNCTIONS[name]
        count = len(node.args)
        if count < least or (most is not None and count > most):
            expected = f"{least}" if least == most else f"at least {least}" if most is None else f"{least} to {most}"
            raise ValueError(f"{name}() takes {expected} argument(s), got {count} in activation expression")
        return build(*(self.expr(arg) for arg in node.args))

    def _piecewise(self, node: ast.Call) -> sympy.Expr:
        pairs = []
        for arg in node.args:
            if not (isinstance(arg, ast.Tuple) and len(arg.elts) == 2):
                _refuse(f"Piecewise argument {self._segment(arg)!r}: each must be (value, condition)")
            pairs.append((self.expr(arg.elts[0]), self.condition(arg.elts[1])))
        if not pairs:
            raise ValueError("Piecewise() needs at least one (value, condition) pair in activation expression")
        return sympy.Piecewise(*pairs)

    def condition(self, node: ast.expr) -> sympy.Basic:
        """The SymPy boolean of a Piecewise condition."""
        if isinstance(node, ast.Constant) and isinstance(node.value, bool):
            return sympy.true if node.value else sympy.false
        if isinstance(node, ast.Compare):
            values = [self.expr(node.left), *(self.expr(c) for c in node.comparators)]
            return sympy.And(*(_COMPARISONS[type(op)](a, b)
                               for op, a, b in zip(node.ops, values[:-1], values[1:])))
        if isinstance(node, ast.BoolOp):
            combine = sympy.And if isinstance(node.op, ast.And) else sympy.Or
            return combine(*(self.condition(v) for v in node.values))
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.BitAnd, ast.BitOr)):
            combine = sympy.And if isinstance(node.op, ast.BitAnd) else sympy.Or
            return combine(self.condition(node.left), self.condition(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.Invert)):
            return sympy.Not(self.condition(node.operand))
        if isinstance(node, ast.Call) and node.func.id in _CONDITION_FUNCTIONS:
            return _CONDITION_FUNCTIONS[node.func.id](*(self.condition(a) for a in node.args))
        _refuse(f"Piecewise condition {self._segment(node)!r} (use comparisons such as x > 0, or True)")


def _spine(node: ast.AST) -> ast.AST | None:
    """The operand the builder folds into ``node``'s chain without recursing: the left one of a
    sum or product, the right one of a power (so long chains do not count as nesting)."""
    if not isinstance(node, ast.BinOp):
        return None
    return node.right if isinstance(node.op, ast.Pow) else node.left


def _group(op: ast.operator) -> str:
    """Operators folded together as one left-associative chain."""
    return "sum" if isinstance(op, _SUM_OPS) else "product" if isinstance(op, _PRODUCT_OPS) else type(op).__name__


def _parse_text(text: str, parameters: Sequence[str]) -> sympy.Basic:
    """The SymPy expression of ``text``, read by :mod:`ast` and the vocabulary check; never evaluated."""
    if len(text) > MAX_EXPRESSION_LENGTH:
        raise ValueError(f"activation expression is too long ({len(text)} characters; at most "
                         f"{MAX_EXPRESSION_LENGTH})")
    source = text.replace("^", "**")                 # as SymPy's convert_xor: ^ is a power
    try:
        tree = ast.parse(source, mode="eval")
    except (SyntaxError, ValueError, MemoryError, RecursionError) as err:
        message = getattr(err, "msg", None) or str(err) or type(err).__name__
        raise ValueError(f"could not parse activation expression {_short(text)}: "
                         f"{message}".replace("\n", " ")) from None
    builder = _Builder(source, parameters)
    builder.check(tree)
    if isinstance(tree.body, (ast.Compare, ast.BoolOp)):
        raise ValueError(f"could not parse activation expression {_short(text)}: it is a condition, "
                         f"not an expression in x")
    try:
        return builder.expr(tree.body)
    except (TypeError, AttributeError, ZeroDivisionError, NotImplementedError) as err:
        raise ValueError(f"could not parse activation expression {_short(text)}: "
                         f"{type(err).__name__}: {err}".replace("\n", " ")) from None


def _short(text: str) -> str:
    return repr(text) if len(text) <= 80 else repr(text[:77] + "...")


def parse(expr: str | sympy.Expr, parameters: Iterable[str] = ()) -> sympy.Expr:
    """Parse ``expr`` (a string or SymPy expression in ``x``) and check its free symbols.

    Strings go through the whitelist parser (never ``eval``); every free symbol must be
    ``x`` or one of ``parameters``; symbols given as plain ``Symbol('x')`` are identified
    with the real ``x`` by name.
    """
    parameters = tuple(parameters)
    for name in parameters:
        if not isinstance(name, str) or not name.isidentifier() or name == "x" or name.startswith("__"):
            raise ValueError(f"invalid parameter name {name!r}: an identifier other than x")
    names = {"x": X, **{p: parameter_symbol(p) for p in parameters}}
    if isinstance(expr, str):
        parsed = _parse_text(expr, parameters)
    elif isinstance(expr, sympy.Basic):
        parsed = expr
    else:
        raise ValueError(f"activation expression must be a str or sympy.Expr, got {type(expr).__name__}")
    if not isinstance(parsed, sympy.Expr):
        raise ValueError(f"could not parse activation expression {_short(str(expr))}: it is a "
                         f"{type(parsed).__name__}, not an expression in x")
    parsed = parsed.subs({s: names[s.name] for s in parsed.free_symbols
                          if s.name in names and s != names[s.name]})
    unknown = sorted(s.name for s in parsed.free_symbols if s.name not in names)
    if unknown:
        raise ValueError(f"activation expression {_short(str(expr))} has unknown symbol(s) "
                         f"{unknown}; allowed: {['x', *parameters]}")
    return parsed


def substitute(expr: sympy.Expr, values: dict[str, float]) -> sympy.Expr:
    """``expr`` with each parameter symbol replaced by its number (ints stay exact); powers
    whose exponent holds a parameter are checked by :func:`check_power` first."""
    numbers = {parameter_symbol(k): as_number(v) for k, v in values.items()}
    for power in expr.atoms(sympy.Pow):
        if power.exp.free_symbols & set(numbers):
            check_power(power.base.subs(numbers), power.exp.subs(numbers))
    return expr.subs(numbers)


def as_number(value: float) -> sympy.Expr:
    """A SymPy number for a parameter value: integral floats become Integers."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating,
                                                        sympy.Number)):
        raise ValueError(f"activation parameter must be a real number, got {value!r}")
    if not np.isfinite(float(value)):
        raise ValueError(f"activation parameter must be finite, got {value!r}")
    if float(value) == int(value):
        return sympy.Integer(int(value))
    return sympy.Float(float(value))


_SWITCHES = (sympy.Abs, sympy.sign, sympy.Heaviside)
MAX_BREAKPOINTS = 256           # switch points an activation may have
# Where breakpoints of non-polynomial switch arguments are looked for: exact binary fractions
# (1/64 apart) near 0, geometric steps out to 1e6.
_SCAN = np.unique(np.concatenate([np.linspace(-64.0, 64.0, 8193), np.geomspace(64.0, 1e6, 400),
                                  -np.geomspace(64.0, 1e6, 400)]))


def exact_real_roots(expr: sympy.Expr, x: sympy.Symbol = X) -> list[sympy.Expr] | None:
    """Real roots of ``expr`` in ``x`` for polynomials (irrational roots of degree > 2 as
    30-digit Floats, never CRootOf) and for c*exp(a*x) + d; None for other forms."""
    if not expr.has(x):
        return []
    if expr.is_polynomial(x):
        return [sympy.Float(root.evalf(30), 30) if isinstance(root, sympy.CRootOf) else root
                for root in sympy.real_roots(sympy.Poly(expr, x))]
    return _single_exponential_root(expr, x)


def real_roots(expr: sympy.Expr, x: sympy.Symbol = X) -> list[sympy.Expr]:
    """Real roots of ``expr`` in ``x``: :func:`exact_real_roots` where it applies, otherwise
    sign changes on a grid out to |x| = 1e6, refined by Brent's method (roots where the
    function only touches zero, or closer together than the grid, can be missed)."""
    exact = exact_real_roots(expr, x)
    if exact is not None:
        return exact
    return [sympy.Float(r) for r in _scan_roots(numpy_function(expr.subs(x, X)))]


def _single_exponential_root(expr: sympy.Expr, x: sympy.Symbol) -> list[sympy.Expr] | None:
    """Root of c*exp(a*x) + d (a, c, d numbers): log(-d/c)/a, or None if not of that form."""
    expanded = sympy.expand(expr)
    terms = sympy.Add.make_args(expanded)
    constant = sympy.Add(*(t for t in terms if not t.has(x)))
    varying = [t for t in terms if t.has(x)]
    if len(varying) != 1:
        return None
    coefficient, factor = varying[0].as_independent(x, as_Add=False)
    if not (isinstance(factor, sympy.exp) and coefficient.is_number and constant.is_number):
        return None
    rate = sympy.expand(factor.args[0]).coeff(x, 1)
    if not rate.is_number or sympy.expand(factor.args[0] - rate * x).has(x) or rate == 0:
        return None
    ratio = -constant / coefficient
    return [sympy.log(ratio) / rate - sympy.expand(factor.args[0] - rate * x) / rate] if ratio.is_positive else []


def _scan_roots(f: Callable[[np.ndarray], np.ndarray]) -> list[float]:
    """Sign changes of f on :data:`_SCAN` (exact zeros included), each refined by brentq."""
    values = f(_SCAN)
    sign = np.where(np.isfinite(values), np.sign(values), 0.0)
    roots = [float(p) for p, s, left, right in zip(_SCAN[1:-1], sign[1:-1], sign[:-2], sign[2:])
             if s == 0 and left * right < 0]
    crossings = np.flatnonzero(sign[:-1] * sign[1:] < 0)
    if len(roots) + crossings.size > MAX_BREAKPOINTS:
        raise ValueError(f"activation has more than {MAX_BREAKPOINTS} breakpoints")

    def scalar(t: float) -> float:
        return float(f(np.array([t]))[0])

    for i in crossings:
        roots.append(optimize.brentq(scalar, _SCAN[i], _SCAN[i + 1], xtol=1e-300, rtol=4 * np.finfo(float).eps))
    return roots


def breakpoints(expr: sympy.Expr) -> list[float]:
    """Real x where ``expr`` is not smooth: Piecewise/Max/Min boundaries and Abs/sign/
    Heaviside arguments' zeros (:func:`real_roots`; numeric expression required). At most
    MAX_BREAKPOINTS (ValueError beyond)."""
    candidates: list[sympy.Expr] = []
    for node in sympy.preorder_traversal(expr):
        if isinstance(node, sympy.Piecewise):
            for _, cond in node.args:
                candidates.extend(r.lhs - r.rhs for r in cond.atoms(sympy.core.relational.Relational))
        elif isinstance(node, (sympy.Max, sympy.Min)):
            args = node.args
            candidates.extend(a - b for i, a in enumerate(args) for b in args[i + 1:])
        elif isinstance(node, _SWITCHES):
            candidates.append(node.args[0])
    points: set[float] = set()
    for c in dict.fromkeys(candidates):
        for root in real_roots(c, X):
            value = float(root)
            if np.isfinite(value):
                points.add(value)
        if len(points) > MAX_BREAKPOINTS:
            raise ValueError(f"activation has more than {MAX_BREAKPOINTS} breakpoints")
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
        (sympy.exp, sympy.log(1 + sympy.exp(u)), lambda u: _Softplus(u)),
        (sympy.exp, 1 / (1 + sympy.exp(u)), lambda u: _Expit(-u)),
        (sympy.tanh, 1 + sympy.tanh(u), lambda u: 2 * _Expit(2 * u)),
        (sympy.tanh, 1 - sympy.tanh(u), lambda u: 2 * _Expit(-2 * u)),
        (sympy.erf, 1 + sympy.erf(u), lambda u: _Erfc(-u)),
        (sympy.erf, 1 - sympy.erf(u), lambda u: _Erfc(u)),
    ]
    for function, pattern, build in rules:
        if expr.has(function):  # pattern matching is slow; most activations hold none of these
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


_COMPILED: dict[str, Callable[[np.ndarray], np.ndarray]] = {}
MAX_COMPILED = 256   # numpy_function keeps this many compiled expressions (oldest dropped first)


def numpy_function(expr: sympy.Expr) -> Callable[[np.ndarray], np.ndarray]:
    """Vectorized float64 f(x) for a numeric expression, overflow-safe for the usual
    activation patterns (softplus, sigmoid, tanh/erf complements); the result is a new
    writable array of x's shape. Compiled once per expression (keyed by its ``srepr``, so
    equal-valued Floats of different precision stay apart)."""
    key = sympy.srepr(expr)
    if key not in _COMPILED:
        if len(_COMPILED) >= MAX_COMPILED:
            _COMPILED.pop(next(iter(_COMPILED), None), None)   # tolerant of a concurrent drop
        _COMPILED[key] = _compile(expr)
    return _COMPILED[key]


def _compile(expr: sympy.Expr) -> Callable[[np.ndarray], np.ndarray]:
    """:func:`numpy_function` without the cache."""
    printer = _ProductPowerPrinter({"fully_qualified_modules": False, "inline": True,
                                    "allow_unknown_functions": True,
                                    "user_functions": {name: name for name in _NUMPY_FUNCTIONS}})
    compiled = sympy.lambdify(X, _stable_form(expr), modules=[_NUMPY_FUNCTIONS, "scipy", "numpy"],
                              printer=printer)

    def f(x: np.ndarray) -> np.ndarray:
        with np.errstate(all="ignore"):
            out = np.asarray(compiled(x), dtype=np.float64)
        if out is x or out.shape != np.shape(x) or not out.flags.writeable:
            out = np.array(np.broadcast_to(out, np.shape(x)))
        return out

    return f
