"""Core layers: Dense, EinsumDense, Embedding, ReversibleEmbedding, Identity, Masking, Lambda."""
from __future__ import annotations

import math
from typing import Any, Sequence

import keras
import numpy as np
from keras.src.ops import numpy as ops_np

from autoinit_sym.moment_engine.activation_moments import moments
from autoinit_sym.statistics.state import TensorState
from autoinit_sym.walk.probe import ProbeEstimator

from .base import CLOSED_FORM, EXACT, IdentityRule, LayerRule
from .registry import rule_for
from .shapes import consuming_nodes, producing_node
from .weighted import WeightedLayerEstimator, kernel_stddev


@rule_for(keras.layers.Dense)
class DenseEstimator(WeightedLayerEstimator):
    """Dense: fan_in = input features (kernel.shape[0])."""

    def fan_in(self, sums: np.ndarray | None) -> float:
        return float(self.layer.kernel.shape[0])


@rule_for(keras.layers.EinsumDense)
class EinsumDenseEstimator(WeightedLayerEstimator):
    """EinsumDense: fan_in = product of the kernel dimensions contracted with the input
    (letters shared by input and kernel that do not appear in the output)."""

    def fan_in(self, sums: np.ndarray | None) -> float:
        equation = self.layer.equation.replace(" ", "")
        operands, output = equation.split("->")
        inputs, kernel = operands.split(",")
        contracted = (set(inputs) & set(kernel)) - set(output)
        shape = self.layer.kernel.shape
        return float(np.prod([shape[i] for i, letter in enumerate(kernel) if letter in contracted]))


EMBEDDING_SUMS = (keras.layers.Add, ops_np.Add)
"""Operations whose inputs, when some are embeddings, share the sum's variance (:func:`summand_variance`)."""


def tied_variance(layer: Any) -> float:
    """Variance 1/d of a tied ``ReversibleEmbedding``'s table (d = output_dim), chosen for its
    reverse role: logits h @ E^T over d features have variance d Var(E) E[h^2] = signal_variance
    when E[h^2] = signal_variance (the output of a final normalization at that variance; AutoInit
    does not look for the reverse call's actual input, whose prediction then uses it)."""
    return 1.0 / float(layer.output_dim)


def is_tied_forward(node: Any) -> bool:
    """Whether ``node`` is a forward (lookup) call of a ReversibleEmbedding with tied weights."""
    operation = getattr(node, "operation", None)
    return (isinstance(operation, keras.layers.ReversibleEmbedding) and operation.tie_weights
            and not node.arguments.kwargs.get("reverse", False))


def summand_variance(rule: LayerRule) -> float:
    """The variance an embedding's output is drawn at. Alone: signal_variance. One of the k inputs
    of a sum (an ``Add``, as BERT and GPT2 sum token, position and segment embeddings): its share
    signal_variance / k, so that a sum of embeddings has the target variance with equal shares;
    where a summand is a tied embedding, whose variance its reverse role fixes
    (:func:`tied_variance`), every other embedding takes that variance (equal shares; the sum
    then has k times it). Other consumers (a PositionEmbedding reads only its input's shape) do not
    change the share."""
    sums = [n for n in consuming_nodes(rule.layer, rule.node) if isinstance(n.operation, EMBEDDING_SUMS)]
    if len(sums) != 1:
        return rule.signal_variance
    siblings = [producing_node(t) for t in sums[0].arguments.keras_tensors]
    tied = [n.operation for n in siblings if n is not None and is_tied_forward(n)]
    if tied:
        return tied_variance(tied[0])
    return rule.signal_variance / len(siblings)


def rows_read(state: TensorState, rows: int) -> int:
    """How many of a table's ``rows`` ids holding ``state``'s values reach: those in its discrete
    range (``TensorState.discrete``), else all."""
    values = state.discrete
    if values is None:
        return rows
    return max(1, min(values.high, rows) - max(values.low, 0))


def embedding_output(rule: LayerRule, inputs: Sequence[TensorState], variance: float,
                     rows: int | None = None) -> TensorState:
    """The record of rows of a table drawn N(0, ``variance``), looked up by independent ids uniform
    over ``rows`` rows (None: rows chosen by position, never shared): two positions read the same
    row with probability 1/rows, so a channel's positions share variance / rows (BERT's two
    segment rows: half)."""
    shared = 0.0 if rows is None else variance / rows
    return rule.output(inputs, 0.0, variance, shared=shared, sample_shared=shared, profile=None)


@rule_for(keras.layers.Embedding)
class EmbeddingEstimator(LayerRule):
    """Embedding: its output is the embedding table, drawn N(0, :func:`summand_variance`)."""

    method = EXACT

    def propagate(self, inputs: Sequence[TensorState]) -> TensorState:
        variance = summand_variance(self)
        self.set_initializer(self.layer.embeddings, math.sqrt(variance), "embeddings_initializer")
        return embedding_output(self, inputs, variance, rows_read(inputs[0], self.layer.input_dim))


@rule_for(keras.layers.ReversibleEmbedding)
class ReversibleEmbeddingEstimator(EmbeddingEstimator):
    """ReversibleEmbedding: a lookup, or with ``reverse=True`` logits h @ K over the d features.

    Tied weights (K = E^T, one variable in two roles): E is drawn N(0, 1/d) for the reverse role
    (:func:`tied_variance`), at every call; a lookup then has variance 1/d (a model's own sqrt(d)
    scaling, as Gemma's, is an op in the graph that restores it), and logits have mean 0 and
    variance d Var(E) E[h^2] = E[h^2], with E[h^2] the reverse call's actual input. Untied: the
    lookup is an Embedding and K a projection drawn for logit variance signal_variance,
    Var(K) = signal_variance / (d E[h^2]) at the reverse call, or with E[h^2] = signal_variance (1/d)
    at the lookup when the graph has no reverse call (a backbone alone). ``logit_soft_cap`` c: c tanh(z / c) (Gaussian z)."""

    def propagate(self, inputs: Sequence[TensorState]) -> TensorState:
        reverse = self.node is not None and self.node.arguments.kwargs.get("reverse", False)
        if not self.layer.tie_weights:
            if reverse:
                return self.projected(inputs)
            # a backbone without the reverse call: K drawn for inputs of second moment signal_variance
            # (a reverse call later in the walk draws it again for its actual input)
            d = float(self.layer.output_dim)
            self.set_initializer(self.layer.reverse_embeddings, math.sqrt(1.0 / d), "embeddings_initializer", d)
            return super().propagate(inputs)
        variance = tied_variance(self.layer)
        self.set_initializer(self.layer.embeddings, math.sqrt(variance), "embeddings_initializer")
        if not reverse:
            return embedding_output(self, inputs, variance, rows_read(inputs[0], self.layer.input_dim))
        return self.logits(inputs, variance * float(self.layer.output_dim))

    def projected(self, inputs: Sequence[TensorState]) -> TensorState:
        """The untied reverse call: K drawn as a weighted layer's kernel (fan_in d)."""
        d, second = float(self.layer.output_dim), inputs[0].second_moment
        if not (second > 0 and math.isfinite(second)):
            raise ValueError(f"layer {self.layer.name!r} receives inputs with second moment {second!r}; "
                             "AutoInit needs a finite, positive one")
        self.set_initializer(self.layer.reverse_embeddings, kernel_stddev(self.signal_variance, d, second),
                             "embeddings_initializer", d)
        return self.logits(inputs, self.signal_variance / second)

    def logits(self, inputs: Sequence[TensorState], gain: float) -> TensorState:
        """Logits sum_i h_i K_ij with d Var(K) = ``gain``: mean 0, variance gain E[h^2], shared
        between positions gain (m^2 + c) (the same K for every position), then the soft cap."""
        state = inputs[0]
        var = gain * state.second_moment
        shared = gain * (state.mean ** 2 + state.shared)
        cap = self.layer.logit_soft_cap
        if cap is not None and var > 0:
            self.method = CLOSED_FORM
            capped = float(cap) ** 2 * float(moments("tanh").second_moment(0.0, var / float(cap) ** 2))
            shared, var = shared * capped / var, capped
        return self.output(inputs, 0.0, var, shared=min(shared, var), sample_shared=0.0, profile=None)


@rule_for(keras.layers.Identity, keras.layers.Masking)
class IdentityEstimator(IdentityRule):
    """Identity; Masking (a Gaussian time step equals mask_value with probability 0)."""


rule_for(keras.layers.Lambda)(ProbeEstimator)
"""Lambda: arbitrary code, so it is probed (run on Gaussian samples) without a warning."""
