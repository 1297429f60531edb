"""Attention layers: MultiHeadAttention, GroupQueryAttention, Attention, AdditiveAttention.

Every attention output is a mix o = sum_j a_j v_j of n values with softmax weights a
over the n keys (training mode). For one query the logits over the keys are treated
as iid N(., logit_var), so Q = E[sum_j a_j^2] = n Var(s) + 1/n follows from the
softmax statistics (``statistics.softmax``); a causal mask averages Q over queries that see
1..n keys. The values split into a part common to all keys (from the input's mean,
and the input's position-shared variance that the walk tracks, ``statistics.state``) and
a part that varies with the key; only the latter is averaged down by the mix
(:func:`mix_statistics`). Attention dropout at rate p scales Q by 1/(1 - p). When the
values are (partly) the keys, the weights favour keys aligned with the query, which
Stein's lemma turns into an extra term (:func:`selection_term`). The output's shared
variance is the common part plus about 1/n of the varying one
(:func:`shared_output_fraction`).

MultiHeadAttention and GroupQueryAttention are initialized through the weighted-layer
rule of their EinsumDense sublayers: query, key and value projections for unit
variance (so the logits q.k / sqrt(key_dim) have unit variance), the output
projection for signal_variance given the mix. An unknown key length counts as
``shapes.DEFAULT_TIMESTEPS``.
"""
from __future__ import annotations

import dataclasses
import inspect
import math
from typing import Any, Sequence

import keras
import numpy as np
from keras.src.ops import nn as ops_nn

from autoinit_sym.moment_engine.activation_moments import moments
from autoinit_sym.moment_engine.nodes import standard_normal_nodes
from autoinit_sym.statistics.state import TensorState

from .base import MONTE_CARLO, LayerRule, moments_of
from .registry import rule_for
from .attention_weights import keys_seen, square_sum, weight_statistics
from .shapes import DEFAULT_TIMESTEPS

HERMITE_NODES = 64
"""Gauss-Hermite nodes for the expectation over the query in additive (tanh) scores."""


def mix_statistics(value_mean: float, value_var: float, squares: float, dropout: float = 0.0,
                   shared_var: float = 0.0, selection: float = 0.0) -> tuple[float, float]:
    """(mean, var) of sum_j a'_j v_j, a' the weights after dropout at rate p.

    v_j = value_mean + u + e_j: u (variance ``shared_var``) is common to all keys (the
    part of a projection driven by its input's mean), e_j (variance ``value_var``)
    varies with the key. With E[sum a^2] = ``squares`` = Q,

        Var = shared_var + (value_mean^2 + shared_var) Q p/(1-p) + value_var (Q/(1-p) + selection),

    where ``selection`` = rho g (1 - Q)^2 is the variance the weights add by favouring
    keys whose values are aligned with the query (see :func:`selection_term`)."""
    kept = 1.0 - dropout
    common = (value_mean**2 + shared_var) * squares * dropout / kept
    return value_mean, shared_var + common + value_var * (squares / kept + selection)


def selection_term(squares: float, gradient_square: float, correlation: float) -> float:
    """rho g (1 - Q)^2: when the values are (partly) the keys, the mix sum_j a_j k_j has
    by Stein's lemma the mean Var(k) (1 - Q) dl/dk per element, g = Var(k) E[(dl/dk)^2]
    in units of Var(k); ``correlation`` rho is the fraction of a value's varying part
    that is a linear function of its key (1 when value is key; key_dim / features for
    two projections of the same input)."""
    return correlation * gradient_square * (1.0 - squares) ** 2


def shared_output_fraction(shared_var: float, varying_var: float, n: int, mix_var: float) -> float:
    """Fraction of the mix's variance common to all queries: the shared values, plus
    about 1/n of the varying part (E[sum_j a_ij a_i'j] ~ 1/n for two different queries)."""
    return min(1.0, (shared_var + varying_var / n) / mix_var) if mix_var > 0 else 0.0


def _flag(node: Any, name: str) -> bool:
    """A boolean call argument of this layer call (False when not given)."""
    arguments = getattr(node, "arguments", None)
    return bool(arguments is not None and arguments.kwargs.get(name, False))


ROLES = ("query", "value", "key")


def call_roles(layer: Any, node: Any, count: int) -> dict[str, int]:
    """The index among the call's ``count`` tensor inputs of each tensor argument of ``layer.call``
    by name (``query``, ``value``, ``key``, ``attention_mask``, ...; a list passed as ``inputs``
    holds query, value and key); query, value, key in input order where the node is unknown."""
    tensors = list(node.arguments.keras_tensors) if node is not None else []
    if len(tensors) != count:
        return dict(zip(ROLES, range(count)))
    first = {}
    for index, tensor in enumerate(tensors):
        first.setdefault(id(tensor), index)
    bound = inspect.signature(layer.call).bind_partial(*node.arguments.args, **node.arguments.kwargs).arguments
    named = dict(zip(ROLES, bound.pop("inputs"))) if isinstance(bound.get("inputs"), (list, tuple)) else {}
    named.update(bound)
    return {name: first[id(value)] for name, value in named.items()
            if isinstance(value, keras.KerasTensor) and id(value) in first}


def _length(shape: tuple, axes: tuple[int, ...]) -> int:
    sizes = [shape[a] for a in axes]
    return int(np.prod([DEFAULT_TIMESTEPS if s is None else s for s in sizes]))


class _AttentionBase(LayerRule):
    """Shared plumbing: which inputs are query/value/key, key count, call flags, outputs."""

    method = MONTE_CARLO  # the softmax variance's; each call records its own
    scores_after_dropout = True  # whether returned attention scores include dropout

    value_is_key: bool = True
    mask: TensorState | None = None
    """The record of the call's ``attention_mask`` (None without one)."""

    def propagate(self, inputs: Sequence[TensorState]) -> TensorState | list[TensorState]:
        roles = call_roles(self.layer, self.node, len(inputs))
        order = [roles[r] for r in ("query", "value", "key") if r in roles]
        self.value_is_key = roles.get("key", roles.get("value")) == roles.get("value")
        mask = roles.get("attention_mask", roles.get("mask"))
        self.mask = None if mask is None else inputs[mask]
        if self.input_shapes:
            self.input_shapes = [self.input_shapes[i] for i in order]
        inputs = [inputs[i] for i in order]
        mix, shared, squares, n, dropout, self.method = self.mix(inputs)
        # every query mixes the values of all positions: a uniform profile
        out = self.output(inputs, *mix, shared=shared, profile=None)
        if len(self.output_shapes) < 2:
            return out
        scores = weight_statistics(squares, n, dropout if self.scores_after_dropout else 0.0)
        return [out, self.output(inputs, *scores, 1, shared=shared, profile=None)]

    def mix(self, inputs: Sequence[TensorState]) -> tuple[tuple[float, float], float, float, int, float, str]:
        """((mean, var) of the output, its shared variance, E[sum a^2], key count, dropout rate, method)."""
        raise NotImplementedError

    def _inputs(self, means_in, vars_in) -> dict[str, tuple[float, float, tuple]]:
        shapes = self.input_shapes or [None] * len(means_in)
        stats = [(float(m), float(v), tuple(s) if s is not None else None)
                 for m, v, s in zip(means_in, vars_in, shapes)]
        query = stats[0]
        value = stats[1] if len(stats) > 1 else query
        key = stats[2] if len(stats) > 2 else value
        return {"query": query, "value": value, "key": key}

    @staticmethod
    def shared_fractions(inputs: Sequence[TensorState]) -> tuple[float, float]:
        """Position-shared variance fractions of the (value, key) inputs."""
        fractions = [min(s.shared / s.var, 1.0) if s.var > 0 else 0.0 for s in inputs]
        value = fractions[1] if len(fractions) > 1 else fractions[0]
        key = fractions[2] if len(fractions) > 2 else value
        return value, key


def varying_fraction(mean: float, var: float) -> float:
    """Share var / (var + mean^2) of a projection's variance that varies from position to
    position; the rest comes from the input's mean and is common to all positions."""
    second = var + mean**2
    return var / second if second > 0 else 1.0


@rule_for(keras.layers.MultiHeadAttention)
class MultiHeadAttentionEstimator(_AttentionBase):
    """MultiHeadAttention: unit-variance query/key/value projections, logits
    q.k / sqrt(key_dim) with variance E[q^2] Var(k) over the keys, the softmax mix of
    the values (:func:`mix_statistics`), the optional sigmoid gate, then the output
    projection scaled for signal_variance. Inputs independent Gaussian, training mode."""

    scores_after_dropout = False

    def dropout_rate(self) -> float:
        return float(self.layer._dropout)

    def gate(self) -> Any:
        return self.layer._gate_dense if self.layer._use_gate else None

    def attention_axes(self) -> tuple[int, ...]:
        return tuple(self.layer._attention_axes)

    def key_dim(self) -> int:
        return int(self.layer._key_dim)

    def _project(self, sublayer: Any, context: Any, stats: tuple[float, float, tuple]
                 ) -> tuple[float, float]:
        out = context.rule_for(sublayer, [stats[2]]).propagate([TensorState(stats[0], stats[1])])
        return out.mean, out.var

    def mix(self, states):
        means_in, vars_in = moments_of(states)
        inputs = self._inputs(means_in, vars_in)
        unit = dataclasses.replace(self.context, signal_variance=1.0)
        q_mean, q_var = self._project(self.layer._query_dense, unit, inputs["query"])
        k_mean, k_var = self._project(self.layer._key_dense, unit, inputs["key"])
        v_mean, v_var = self._project(self.layer._value_dense, unit, inputs["value"])
        key_shape = inputs["key"][2] or (None, None)
        n = _length(key_shape, self.attention_axes())
        value_shared, key_shared = self.shared_fractions(states)
        logit_var = (q_var + q_mean**2) * k_var * varying_fraction(*inputs["key"][:2]) * (1.0 - key_shared)
        causal, seen = keys_seen(self.mask, n, _flag(self.node, "use_causal_mask"))
        squares, method = square_sum(logit_var, seen, causal)
        features = float(self.layer._key_dense.kernel.shape[0])
        correlation = min(self.key_dim(), features) / features if self.value_is_key else 0.0
        selection = selection_term(squares, logit_var / self.key_dim(), correlation)
        varying = varying_fraction(*inputs["value"][:2]) * (1.0 - value_shared)
        dropout = self.dropout_rate()
        mean, var = mix_statistics(v_mean, v_var * varying, squares, dropout,
                                   v_var * (1.0 - varying), selection)
        shared = shared_output_fraction(v_var * (1.0 - varying), v_var * varying, n, var)
        gate = self.gate()
        if gate is not None:
            g_mean, g_var = self._project(gate, unit, inputs["query"])
            mean, var = mean * g_mean, (var + mean**2) * (g_var + g_mean**2) - (mean * g_mean) ** 2
        query_shape = inputs["query"][2]
        out_shape = None if query_shape is None else tuple(query_shape[:-1]) + tuple(
            self.layer._output_dense.kernel.shape[:-1])
        out = self.context.rule_for(self.layer._output_dense, [out_shape]).propagate(
            [TensorState(mean, var, shared * var)])
        return (out.mean, out.var), out.shared, squares, n, dropout, method


@rule_for(keras.layers.GroupQueryAttention)
class GroupQueryAttentionEstimator(MultiHeadAttentionEstimator):
    """GroupQueryAttention: as MultiHeadAttention (key/value heads shared by query
    groups change no per-element statistics), attention over the key sequence axis."""

    def dropout_rate(self) -> float:
        return float(self.layer.dropout)

    def gate(self) -> Any:
        return self.layer._gate_dense if self.layer.use_gate else None

    def attention_axes(self) -> tuple[int, ...]:
        return (1,)

    def key_dim(self) -> int:
        return int(self.layer.head_dim)


def tanh_score_terms(q_mean: float, q_var: float, k_mean: float, k_var: float, scale: float = 1.0
                     ) -> tuple[float, float, float]:
    """For t = tanh(scale (q + k)), q ~ N(q_mean, q_var), k ~ N(k_mean, k_var) independent:
    E_q[Var_k t] (the spread of one additive score term over the keys), and the mean and
    variance over q of the slope E_k[1 - t^2] (E[tanh^2] by the moment engine, the
    expectation over q by Gauss-Hermite)."""
    tanh = moments("tanh")
    total = float(tanh.second_moment(scale * (q_mean + k_mean), scale**2 * (q_var + k_var)))
    nodes, weights = standard_normal_nodes(HERMITE_NODES)
    shifted = scale * (q_mean + math.sqrt(q_var) * nodes + k_mean)
    conditional_mean = tanh.mean(shifted, scale**2 * k_var)
    slope = 1.0 - tanh.second_moment(shifted, scale**2 * k_var)
    spread = max(total - float(np.sum(weights * conditional_mean**2)), 0.0)
    slope_mean = float(np.sum(weights * slope))
    return spread, slope_mean, max(float(np.sum(weights * slope**2)) - slope_mean**2, 0.0)


@rule_for(keras.layers.Attention)
class AttentionEstimator(_AttentionBase):
    """Attention (no projections): dot scores scale * q.k have variance over the keys
    scale^2 dim E[q^2] Var(k); concat scores c * sum_d tanh(scale (q_d + k_d)) have
    c^2 dim E_q[Var_k tanh]. When the value is the key, the weights favour keys aligned
    with the query: by Stein's lemma sum_j a_j k_j gains (1 - Q) Var(k) D per element,
    D = E_k[dl/dk | q], which shifts the mean by (1 - Q) Var(k) E[D] and adds
    (1 - Q)^2 Var(k)^2 Var(D). The current scale weights are read, not redrawn. Inputs
    independent Gaussian, training mode."""

    def causal(self) -> bool:
        return _flag(self.node, "use_causal_mask")

    def dropout_rate(self) -> float:
        return float(self.layer.dropout)

    def _scalar(self, weight: Any) -> float:
        return 1.0 if weight is None else float(keras.ops.convert_to_numpy(weight))

    def logit_terms(self, q_mean, q_var, k_mean, k_var, dim: int) -> tuple[float, float, float]:
        """(variance of the logits over the keys, mean and variance of D = E_k[dl/dk | q])."""
        scale = self._scalar(self.layer.scale)
        if self.layer.score_mode == "dot":
            return scale**2 * dim * (q_var + q_mean**2) * k_var, scale * q_mean, scale**2 * q_var
        weight = self._scalar(self.layer.concat_score_weight)
        spread, slope_mean, slope_var = tanh_score_terms(q_mean, q_var, k_mean, k_var, scale)
        return (weight**2 * dim * spread, weight * scale * slope_mean,
                (weight * scale) ** 2 * slope_var)

    def mix(self, states):
        means_in, vars_in = moments_of(states)
        inputs = self._inputs(means_in, vars_in)
        (q_mean, q_var, q_shape), (k_mean, k_var, k_shape) = inputs["query"], inputs["key"]
        if k_shape is None or q_shape is None or q_shape[-1] is None:
            raise ValueError(f"{type(self.layer).__name__} {self.layer.name!r}: input shapes unknown")
        n = _length(k_shape, (1,))
        value_shared, key_shared = self.shared_fractions(states)
        k_var = k_var * (1.0 - key_shared)
        logit_var, slope_mean, slope_var = self.logit_terms(q_mean, q_var, k_mean, k_var,
                                                            int(q_shape[-1]))
        causal, seen = keys_seen(self.mask, n, self.causal())
        squares, method = square_sum(logit_var, seen, causal)
        aligned = 1.0 if self.value_is_key else 0.0
        dropout = self.dropout_rate()
        v_mean, v_var, _ = inputs["value"]
        mean, var = mix_statistics(v_mean, v_var * (1.0 - value_shared), squares, dropout,
                                   v_var * value_shared, selection_term(squares, k_var * slope_var, aligned))
        mix = (mean + aligned * (1.0 - squares) * k_var * slope_mean, var)
        shared = var * shared_output_fraction(v_var * value_shared, v_var * (1.0 - value_shared), n, var)
        return mix, shared, squares, n, dropout, method


@rule_for(keras.layers.AdditiveAttention)
class AdditiveAttentionEstimator(AttentionEstimator):
    """AdditiveAttention: scores sum_d w_d tanh(q_d + k_d). With use_scale the weights w
    are redrawn with mean 0 and Var(w) = 1 / (dim E_q[Var_k tanh]), so the logits have
    unit variance over the keys; without it w = 1."""

    def logit_terms(self, q_mean, q_var, k_mean, k_var, dim: int) -> tuple[float, float, float]:
        spread, slope_mean, slope_var = tanh_score_terms(q_mean, q_var, k_mean, k_var)
        if self.layer.scale is None:
            return dim * spread, slope_mean, slope_var
        if spread <= 0.0:
            return 0.0, 0.0, 0.0
        weight_var = 1.0 / (dim * spread)
        self.set_initializer(self.layer.scale, math.sqrt(weight_var), None, float(dim))
        return 1.0, 0.0, weight_var * (slope_var + slope_mean**2)


@rule_for(ops_nn.DotProductAttention)
class DotProductAttentionOp(AttentionEstimator):
    """``ops.dot_product_attention`` (the fused attention keras_hub's Gemma and Llama layers call on
    accelerators): dot scores scale q.k over the head size H (scale 1/sqrt(H) unless given), causal
    with ``is_causal`` or as a 0/1 ``mask`` says (:func:`keys_seen`), no dropout; a logit soft cap
    and an additive ``bias`` are not modelled."""

    def causal(self) -> bool:
        return bool(self.layer.is_causal)

    def dropout_rate(self) -> float:
        return 0.0

    def logit_terms(self, q_mean, q_var, k_mean, k_var, dim: int) -> tuple[float, float, float]:
        scale = self.node.arguments.kwargs.get("scale") if self.node is not None else None
        scale = 1.0 / math.sqrt(dim) if scale is None else float(scale)
        return scale**2 * dim * (q_var + q_mean**2) * k_var, scale * q_mean, scale**2 * q_var
