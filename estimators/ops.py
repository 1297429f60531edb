"""keras.ops operations recorded as nodes of functional graphs, recognized by their class.

Constant operands (the 2.0 in ``keras.ops.multiply(x, 2.0)``) are read from the node's
arguments; tensor operands are independent Gaussians with their (mean, var), except a
tensor used twice in one call (``x * x``), which enters as a power. A constant array
acts per position: the result is the mixture over positions. A form this module has no
exact rule for (say ``2.0 / x``) is probed on Gaussian samples, with a warning.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Sequence

import keras
import numpy as np
from keras import tree
from keras.src.ops import core as ops_core
from keras.src.ops import nn as ops_nn
from keras.src.ops import numpy as ops_np
from scipy import special

from autoinit_sym.moment_engine.activation_moments import moments
from autoinit_sym.moment_engine.order_statistics import clark_max, clark_min
from autoinit_sym.statistics.activation import classify
from autoinit_sym.statistics.elementwise import activated
from autoinit_sym.statistics.linear import (affine_moments, contracted_product_moments, linear_moments,
                                            mixture_moments, product_moments)
from autoinit_sym.statistics.state import TensorState
from autoinit_sym.walk.probe import no_rule_warning, probed

from .base import CLOSED_FORM, EXACT, LayerRule
from .registry import rule_for
from .shapes import bernoulli_rate, concat_weights, consuming_nodes, elements_along, positive_axes


@dataclass
class Operand:
    """One argument of the call: a tensor (its record and identity) or a constant array."""

    state: TensorState | None = None  # the tensor's record; None for a constant
    ident: int | None = None          # id() of the KerasTensor; None for a constant
    value: np.ndarray | None = None   # the constant

    @property
    def is_tensor(self) -> bool:
        return self.ident is not None

    @property
    def mean(self) -> float:
        return self.state.mean

    @property
    def var(self) -> float:
        return self.state.var


def operands(node: Any, inputs: Sequence[TensorState]) -> list[Operand]:
    """The call's positional then keyword arguments, flattened, tensors matched to ``inputs``."""
    found, index = [], 0
    for arg in tree.flatten((list(node.arguments.args), dict(node.arguments.kwargs))):
        if isinstance(arg, keras.KerasTensor):
            found.append(Operand(inputs[index], id(arg)))
            index += 1
        elif arg is not None and not isinstance(arg, (str, bool)):
            found.append(Operand(value=np.asarray(keras.ops.convert_to_numpy(arg), dtype=float)))
    return found


class OpEstimator(LayerRule):
    """Base for operation rules: ``combine(operands)`` returns (mean, var), the output's record,
    or None when no exact rule applies (then the call is probed)."""

    method = EXACT

    def combine(self, args: list[Operand]) -> tuple[float, float] | TensorState | None:
        raise NotImplementedError

    def propagate(self, inputs: Sequence[TensorState]) -> TensorState | list[TensorState]:
        args = operands(self.node, inputs) if self.node is not None else \
            [Operand(s, i) for i, s in enumerate(inputs)]
        result = self.combine(args)
        if isinstance(result, TensorState):
            return result
        if result is not None:
            return self.output(inputs, float(result[0]), float(result[1]))
        return probed(self, inputs, no_rule_warning(self.layer, "called with these operands"))


def _tensor_groups(args: list[Operand]) -> list[list[int]]:
    groups: dict[int, list[int]] = {}
    for i, a in enumerate(args):
        groups.setdefault(a.ident, []).append(i)
    return list(groups.values())


def _linear(args: list[Operand], signs: list[float]) -> tuple[float, float]:
    """sum_i s_i a_i over tensors (independent unless identical) and constants (mixed over positions)."""
    tensors = [(a, s) for a, s in zip(args, signs) if a.is_tensor]
    offset = sum(s * a.value for a, s in zip(args, signs) if not a.is_tensor)
    tensor_args = [a for a, _ in tensors]
    mean, var = linear_moments([s for _, s in tensors], [a.mean for a in tensor_args],
                               [a.var for a in tensor_args], _tensor_groups(tensor_args))
    return affine_moments(1.0, offset, mean, var)


@rule_for(ops_np.Add, ops_np.Subtract)
class AddSubtractOp(OpEstimator):
    """a + b, a - b: means add, variances of independent tensors add; constants shift."""

    def combine(self, args):
        return _linear(args, [1.0, -1.0] if isinstance(self.layer, ops_np.Subtract) else [1.0] * len(args))


@rule_for(ops_np.Negative)
class NegativeOp(OpEstimator):
    """-x: (-mean, var)."""

    def combine(self, args):
        return -args[0].mean, args[0].var


@rule_for(ops_np.Multiply)
class MultiplyOp(OpEstimator):
    """x * c: exact affine map (per-position c mixed); x * y: independent product
    (mean m1 m2, var (v1 + m1^2)(v2 + m2^2) - m1^2 m2^2); x * x: Gaussian raw moments of x^2."""

    def combine(self, args):
        tensors = [a for a in args if a.is_tensor]
        scale = functools.reduce(np.multiply, [a.value for a in args if not a.is_tensor], 1.0)
        mean, var = product_moments([a.mean for a in tensors], [a.var for a in tensors], _tensor_groups(tensors))
        return affine_moments(scale, 0.0, mean, var)


@rule_for(ops_np.Divide, ops_np.TrueDivide)
class DivideOp(OpEstimator):
    """x / c: exact affine map with scale 1/c. A tensor divisor has no finite moments (probed)."""

    def combine(self, args):
        x, c = args
        if not x.is_tensor or c.is_tensor:
            return None
        return affine_moments(1.0 / c.value, 0.0, x.mean, x.var)


@rule_for(ops_np.Square)
class SquareOp(OpEstimator):
    """x^2: mean v + m^2, var 2 v^2 + 4 m^2 v."""

    def combine(self, args):
        m, v = args[0].mean, args[0].var
        return v + m * m, 2 * v * v + 4 * m * m * v


@rule_for(ops_np.Absolute)
class AbsoluteOp(OpEstimator):
    """|x| (folded normal): mean sd sqrt(2/pi) exp(-m^2/2v) + m (1 - 2 Phi(-m/sd)), E[x^2] = v + m^2."""

    method = CLOSED_FORM

    def combine(self, args):
        m, v = args[0].mean, args[0].var
        if v <= 0:
            return abs(m), 0.0
        sd = math.sqrt(v)
        mean = sd * math.sqrt(2 / math.pi) * math.exp(-m * m / (2 * v)) + m * (1 - 2 * special.ndtr(-m / sd))
        return mean, max(v + m * m - mean * mean, 0.0)


@rule_for(ops_np.Maximum, ops_np.Minimum)
class ExtremumOp(OpEstimator):
    """max/min of two tensors (Clark, independent) or of a tensor and a constant (Clark with a
    zero-variance operand, exact; a constant array is mixed over positions)."""

    method = CLOSED_FORM

    def combine(self, args):
        pair = clark_min if isinstance(self.layer, ops_np.Minimum) else clark_max
        a, b = args
        if a.is_tensor and b.is_tensor and a.ident == b.ident:
            return a.mean, a.var
        x, other = (a, b) if a.is_tensor else (b, a)
        other_stats = (other.mean, other.var) if other.is_tensor else (other.value, 0.0)
        means, variances = (np.ravel(t) for t in pair(x.mean, x.var, *other_stats))
        return mixture_moments(np.ones_like(means), means, variances)


@rule_for(ops_np.Clip)
class ClipOp(OpEstimator):
    """clip(x, lo, hi) with scalar bounds: the moment engine's closed form of Min(Max(x, lo), hi)."""

    method = CLOSED_FORM

    def combine(self, args):
        lo, hi = (np.asarray(keras.ops.convert_to_numpy(b), dtype=float) for b in (self.layer.x_min, self.layer.x_max))
        if lo.size != 1 or hi.size != 1:
            return None
        engine = moments(f"Min(Max(x, {float(lo)!r}), {float(hi)!r})")
        self.method = engine.method
        return engine.mean(args[0].mean, args[0].var), engine.variance(args[0].mean, args[0].var)


@rule_for(ops_np.Matmul)
class MatmulOp(OpEstimator):
    """x @ y over the contracted length n: independent tensors give mean n m1 m2,
    var n [(v1 + m1^2)(v2 + m2^2) - m1^2 m2^2]; a constant matrix W gives per output column j
    (mean m sum_i W_ij, var v sum_i W_ij^2), mixed over columns (rows for W @ x)."""

    def combine(self, args):
        a, b = args
        if a.is_tensor and b.is_tensor:
            n = self.input_shapes[0][-1]
            if n is None:
                return None
            return contracted_product_moments(n, [a.mean, b.mean], [a.var, b.var], a.ident == b.ident)
        x, w, axis = (a, b.value, 0) if a.is_tensor else (b, a.value, 1)
        if w.ndim != 2:
            return None
        sums, squares = w.sum(axis=axis), (w ** 2).sum(axis=axis)
        centres = x.mean * sums
        return float(centres.mean()), float(x.var * squares.mean() + centres.var())


def subscript_sizes(subscripts: str, shape: Sequence[int | None]) -> dict[str, int | None]:
    """Size of each letter of one einsum operand (``...`` spans the dimensions no letter names)."""
    left, _, right = subscripts.partition("...")
    sizes = dict(zip(left, shape[:len(left)]))
    sizes.update(zip(right, shape[len(shape) - len(right):] if right else ()))
    return sizes


@rule_for(ops_np.Einsum)
class EinsumOp(OpEstimator):
    """einsum of one or two tensors. Letters summed away that only one operand has sum n_a of its
    independent elements (mean n_a m, var n_a v); letters both operands share and the output lacks
    are contracted over n_c independent products (:func:`contracted_product_moments`, x_k^2 when
    the operands are one tensor). Where the contraction runs over the positions of one operand y
    (attention weights times values), y = m_y + u + e_k with u (variance c, ``shared``) common to
    them, and S = sum x_k has mean n m_x and variance n v_x:
    Var = (n v_x + n^2 m_x^2)(m_y^2 + c) - n^2 m_x^2 m_y^2 + n (v_x + m_x^2)(v_y - c), of which
    (n m_x)^2 c + n m_x^2 (v_y - c) is common to two of the output's positions (u, and the e_k both
    weigh by about m_x each: 1/n of the rest for softmax weights without a mask). A constant operand
    (a weight) is probed."""

    def combine(self, args):
        if not all(a.is_tensor for a in args) or len(args) not in (1, 2):
            return None
        equation = self.layer.subscripts.replace(" ", "")
        operand_text, _, output = equation.partition("->")
        subscripts = operand_text.split(",")
        sizes = [subscript_sizes(s, shape) for s, shape in zip(subscripts, self.input_shapes)]
        summed = [{k: n for k, n in own.items() if k not in output} for own in sizes]
        common = set(summed[0]).intersection(*summed[1:]) if len(args) == 2 else set()
        counts = [[n for k, n in own.items() if k not in common] for own in summed]
        contracted = [summed[0][k] for k in common]
        if any(n is None for n in contracted + [n for c in counts for n in c]):
            return None
        totals = [float(np.prod(c)) for c in counts]
        means = [t * a.mean for t, a in zip(totals, args)]
        variances = [t * a.var for t, a in zip(totals, args)]
        if len(args) == 1:
            return (means[0], variances[0]) if totals[0] > 1 else rearranged(self, args[0].state)
        same = args[0].ident == args[1].ident
        if same and max(totals) > 1:
            return None  # sums of one tensor's elements multiplied together: not written here
        n = int(np.prod(contracted))
        spread = [0.0 if same or max(totals) > 1 else
                  _contracted_shared(s, shape, a.state, common)
                  for s, shape, a in zip(subscripts, self.input_shapes, args)]
        if min(spread) > 0 or max(spread) == 0:
            return contracted_product_moments(n, means, variances, same)
        y = 0 if spread[0] > 0 else 1
        (m_x, v_x), (m_y, v_y), c = (means[1 - y], variances[1 - y]), (means[y], variances[y]), spread[y]
        var = (n * v_x + (n * m_x) ** 2) * (m_y ** 2 + c) - (n * m_x * m_y) ** 2 + n * (v_x + m_x ** 2) * (v_y - c)
        shared = (n * m_x) ** 2 * c + n * m_x ** 2 * (v_y - c)
        return self.output([a.state for a in args], n * m_x * m_y, var, shared=min(shared, var))


def _contracted_shared(subscripts: str, shape: Sequence[int | None], state: TensorState, common: set) -> float:
    """The operand's position-shared variance where a contracted letter names one of its position
    axes (1..rank-2), else 0."""
    if "..." in subscripts or len(subscripts) != len(shape):
        return 0.0
    positions = set(subscripts[1:-1])
    return state.shared if positions & common else 0.0


def _reduced_size(shape: tuple, axis: Any) -> int | None:
    """Elements reduced per output (batch axis excluded when axis is None)."""
    rank = len(shape)
    return elements_along(shape, range(1, rank) if axis is None else positive_axes(axis, rank))


@rule_for(ops_np.Mean, ops_np.Sum)
class ReductionOp(OpEstimator):
    """mean over n independent elements: (m, v/n); sum: (n m, n v). ``axis=None`` reduces the
    per-sample elements (the batch axis's size is not known when initializing)."""

    def combine(self, args):
        n = _reduced_size(self.input_shapes[0], self.layer.axis)
        if n is None:
            raise ValueError(f"{type(self.layer).__name__} {self.layer.name!r} reduces an axis of unknown size "
                             f"(input shape {tuple(self.input_shapes[0])}, axis={self.layer.axis!r})")
        m, v = args[0].mean, args[0].var
        return (m, v / n) if isinstance(self.layer, ops_np.Mean) else (n * m, n * v)


def rearranged(rule: LayerRule, state: TensorState, index: int = 0) -> TensorState:
    """The record of output ``index`` of an operation whose every output element is an input
    element: ``state`` where the per-sample shape is unchanged, without its profile and lag
    correlation otherwise."""
    shape_in = tuple(rule.input_shapes[0][1:]) if rule.input_shapes else None
    shape_out = tuple(rule.output_shapes[index][1:]) if index < len(rule.output_shapes) else None
    if shape_in is not None and shape_in == shape_out and None not in shape_in:
        return state
    return state.replace(profile=None, lags=None)


@rule_for(ops_np.Reshape, ops_np.Transpose, ops_np.ExpandDims, ops_np.Squeeze, ops_np.Repeat, ops_np.Tile,
           ops_np.Ravel, ops_np.Moveaxis, ops_core.Cast, ops_core.StopGradient, ops_core.ConvertToTensor)
class RearrangingOp(OpEstimator):
    """Moves, repeats or casts elements: the input record where the per-sample shape is
    unchanged, without its profile and lag correlation otherwise."""

    keeps_values = True

    def combine(self, args):
        return rearranged(self, args[0].state)


@rule_for(ops_np.GetItem)
class SelectingOp(LayerRule):
    """``x[...]``: a subset of the input's elements (each position as likely as
    any other), so the record of the first tensor operand without its profile and lag
    correlation; index tensors only choose positions."""

    method = EXACT
    keeps_values = True

    def propagate(self, inputs: Sequence[TensorState]) -> TensorState:
        return rearranged(self, inputs[0])


@rule_for(ops_np.Split)
class SplitOp(LayerRule):
    """``split``: every piece is a subset of the input's elements, with the input's record."""

    method = EXACT
    keeps_values = True

    def propagate(self, inputs: Sequence[TensorState]) -> list[TensorState]:
        return [rearranged(self, inputs[0], i) for i in range(max(len(self.output_shapes), 1))]


COPYING_PAD_MODES = ("reflect", "symmetric", "edge", "wrap")
"""``ops.pad`` modes whose padded elements are copies of input elements."""

MAX_CONSUMERS = (keras.layers.MaxPooling1D, keras.layers.MaxPooling2D, keras.layers.MaxPooling3D,
                 keras.layers.GlobalMaxPooling1D, keras.layers.GlobalMaxPooling2D,
                 keras.layers.GlobalMaxPooling3D, keras.layers.AdaptiveMaxPooling1D,
                 keras.layers.AdaptiveMaxPooling2D, keras.layers.AdaptiveMaxPooling3D,
                 ops_nn.MaxPool, ops_nn.AdaptiveMaxPool, ops_np.Max)
"""Operations over which a -inf element never wins (a window holding one real element)."""


@rule_for(ops_np.Pad)
class PadOp(LayerRule):
    """``ops.pad``. Constant c (default 0): a fraction k = input/output elements of the result is
    the input, the rest c: mean k m + (1 - k) c, E[x^2] = k (v + m^2) + (1 - k) c^2, shared k^2 of
    the input's. Reflect, symmetric, edge, wrap: copies of input elements (the input's record).
    -inf before max pooling only: a padded element never wins a window that holds a real one, so the pool sees the input's elements (the input's record; border windows hold fewer
    of them, which the pooling rule does not see). Other modes are probed."""

    method = EXACT

    def propagate(self, inputs: Sequence[TensorState]) -> TensorState:
        state, mode = inputs[0], self.layer.mode
        if mode in COPYING_PAD_MODES:
            return rearranged(self, state)
        if mode != "constant":
            return probed(self, inputs, no_rule_warning(self.layer, f"with mode={mode!r}"))
        value = self.node.arguments.kwargs.get("constant_values", 0) if self.node is not None else 0
        value = 0.0 if value is None else float(np.asarray(keras.ops.convert_to_numpy(value)))
        if math.isinf(value):
            return self.infinite(state, value)
        kept = self.kept_fraction()
        if kept is None:
            return probed(self, inputs, no_rule_warning(self.layer, "on axes of unknown size"))
        mean, var = mixture_moments([kept, 1.0 - kept], [state.mean, value], [state.var, 0.0])
        return self.output(inputs, mean, var, shared=kept ** 2 * state.shared, profile=None)

    def kept_fraction(self) -> float | None:
        """Input elements over output elements (per sample; None where a padded axis is unknown)."""
        shape = self.input_shapes[0]
        pairs = np.broadcast_to(np.asarray(self.layer.pad_width, dtype=int).reshape(-1, 2), (len(shape), 2))
        fraction = 1.0
        for size, (before, after) in zip(shape, pairs):
            if before or after:
                if size is None:
                    return None
                fraction *= size / (size + before + after)
        return fraction

    def infinite(self, state: TensorState, value: float) -> TensorState:
        """-inf padding read by max pooling only (anything else would see infinite values)."""
        consumers = [n.operation for n in consuming_nodes(self.layer, self.node)]
        if value < 0 and consumers and all(isinstance(c, MAX_CONSUMERS) for c in consumers):
            return rearranged(self, state)
        raise ValueError(f"{type(self.layer).__name__} {self.layer.name!r} pads with {value}: AutoInit "
                         "estimates infinite padding only where every consumer is a max pooling "
                         f"(consumers: {[type(c).__name__ for c in consumers]})")


@rule_for(ops_np.Concatenate, ops_np.Stack)
class JoinOp(OpEstimator):
    """concatenate: mixture weighted by size along the axis; stack: equal weights. A constant
    operand (ViT's class token tiled over the batch) enters with the mean and variance of its values."""

    def combine(self, args):
        if isinstance(self.layer, ops_np.Stack):
            weights = [1.0] * len(args)
        else:
            shapes = iter(self.input_shapes)
            weights = concat_weights([next(shapes) if a.is_tensor else a.value.shape for a in args],
                                     self.layer.axis, len(args))
        return mixture_moments(weights, [a.mean if a.is_tensor else float(a.value.mean()) for a in args],
                               [a.var if a.is_tensor else float(a.value.var()) for a in args])


@rule_for(ops_np.Equal, ops_np.NotEqual)
class EqualityOp(OpEstimator):
    """x == c, x != c for a 0/1 tensor x (a mask, :func:`shapes.bernoulli_rate` f) and a constant c:
    0/1 with rate P(x = c) (f for c = 1, 1 - f for c = 0, 0 otherwise), or its complement."""

    def combine(self, args):
        x, c = args if args[0].is_tensor else args[::-1]
        f = bernoulli_rate(x.state) if x.is_tensor and not c.is_tensor and c.value.size == 1 else None
        if f is None:
            return None
        value = float(c.value)
        p = f if value == 1.0 else 1.0 - f if value == 0.0 else 0.0
        p = 1.0 - p if isinstance(self.layer, ops_np.NotEqual) else p
        return p, p * (1.0 - p)


@rule_for(ops_np.All, ops_np.Any)
class AllAnyOp(OpEstimator):
    """all / any over k elements of a 0/1 tensor of rate p, taken as independent: rate p^k, or
    1 - (1 - p)^k."""

    def combine(self, args):
        p = bernoulli_rate(args[0].state)
        k = _reduced_size(self.input_shapes[0], self.layer.axis)
        if p is None or k is None:
            return None
        rate = p ** k if isinstance(self.layer, ops_np.All) else 1.0 - (1.0 - p) ** k
        return rate, rate * (1.0 - rate)


@rule_for(ops_np.Where)
class WhereOp(OpEstimator):
    """where(c, x, y) with a 0/1 condition of rate p independent of x and y (tensors or constants):
    the mixture p x + (1 - p) y (Gemma zeroes the rows a mask leaves empty)."""

    def combine(self, args):
        if len(args) != 3 or not args[0].is_tensor:
            return None
        p = bernoulli_rate(args[0].state)
        if p is None:
            return None
        moments_of = [(a.mean, a.var) if a.is_tensor else (float(a.value.mean()), float(a.value.var()))
                      for a in args[1:]]
        return mixture_moments([p, 1.0 - p], [m for m, _ in moments_of], [v for _, v in moments_of])


@rule_for(ops_np.ZerosLike, ops_np.OnesLike)
class FilledOp(OpEstimator):
    """zeros_like / ones_like: the constant 0 or 1."""

    def combine(self, args):
        return (1.0 if isinstance(self.layer, ops_np.OnesLike) else 0.0), 0.0


# operation class -> (activation name, names of its parameters as attributes)
ACTIVATION_OPS: dict[type, tuple[str, tuple[str, ...]]] = {
    ops_nn.Relu: ("relu", ()), ops_nn.Relu6: ("relu6", ()), ops_nn.Sigmoid: ("sigmoid", ()),
    ops_nn.SparseSigmoid: ("sparse_sigmoid", ()), ops_nn.Softplus: ("softplus", ()),
    ops_nn.Softsign: ("softsign", ()), ops_nn.SoftShrink: ("soft_shrink", ("threshold",)),
    ops_nn.SparsePlus: ("sparse_plus", ()), ops_nn.Silu: ("silu", ()), ops_nn.Squareplus: ("squareplus", ("b",)),
    ops_nn.LogSigmoid: ("log_sigmoid", ()), ops_nn.LeakyRelu: ("leaky_relu", ("negative_slope",)),
    ops_nn.HardSigmoid: ("hard_sigmoid", ()), ops_nn.HardSilu: ("hard_silu", ()), ops_nn.Elu: ("elu", ("alpha",)),
    ops_nn.Selu: ("selu", ()), ops_nn.Gelu: ("gelu", ("approximate",)), ops_nn.Celu: ("celu", ("alpha",)),
    ops_nn.TanhShrink: ("tanh_shrink", ()), ops_nn.HardTanh: ("hard_tanh", ()),
    ops_nn.HardShrink: ("hard_shrink", ("threshold",)),
    ops_nn.Threshold: ("threshold", ("threshold", "default_value")),
    ops_np.Tanh: ("tanh", ()), ops_np.Exp: ("exponential", ()),
    ops_nn.Softmax: ("softmax", ()), ops_nn.LogSoftmax: ("log_softmax", ()),
}


@rule_for(*ACTIVATION_OPS)
class ActivationOp(OpEstimator):
    """Elementwise activation f(x): the moment engine's E[f(X)], Var[f(X)] (closed form or
    quadrature) through ``activation_statistics``; softmax over the length of its axis. Its
    position-shared variance and origin as for the activation layers."""

    method_label = "closed_form or quadrature (per activation)"

    def combine(self, args):
        name, attributes = ACTIVATION_OPS[type(self.layer)]
        params = {a: getattr(self.layer, a) for a in attributes}
        axis_size = None
        if name in ("softmax", "log_softmax"):
            shape, axis = self.input_shapes[0], self.layer.axis
            axis_size = shape[axis if isinstance(axis, int) else axis[0]]
        state, self.method = activated(args[0].state, classify(name, **params), axis_size)
        return state
