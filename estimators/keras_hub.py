"""KerasHub layers (``keras_hub``, an optional package): embeddings, RMS normalizations, rotary
position embedding.

This family is imported only once ``keras_hub`` is (``registry.OPTIONAL_FAMILIES``): AutoInit never
imports it itself (2-6 s, and TensorFlow with it). keras_hub's composite blocks (TransformerEncoder,
GemmaDecoderBlock, ...) have no rule here: the walk opens them, and their inner Dense, EinsumDense,
attention, normalization and ops calls have rules of their own (``CachedMultiHeadAttention`` is a
MultiHeadAttention; ``ReversibleEmbedding`` is keras's, ``core.ReversibleEmbeddingEstimator``).
"""
from __future__ import annotations

import importlib
import math
from typing import Sequence

import keras
import numpy as np
from keras_hub.src.layers.modeling.position_embedding import PositionEmbedding
from keras_hub.src.layers.modeling.rotary_embedding import RotaryEmbedding
from keras_hub.src.layers.modeling.token_and_position_embedding import TokenAndPositionEmbedding

from autoinit_sym.statistics.state import TensorState

from .base import EXACT, LayerRule
from .core import embedding_output, rows_read, summand_variance, tied_variance
from .normalization import RMSScaling
from .registry import rule_for

__all__ = ["PositionEmbeddingEstimator", "TokenAndPositionEmbeddingEstimator", "RotaryEmbeddingEstimator",
           "HubRMSNormalization", "OffsetRMSNormalization", "RMS_NORMALIZATIONS", "OFFSET_RMS_NORMALIZATIONS"]


@rule_for(PositionEmbedding)
class PositionEmbeddingEstimator(LayerRule):
    """PositionEmbedding: its output is rows of its table, drawn N(0, :func:`core.summand_variance`)
    (its share of the sum with the token embedding it is added to)."""

    method = EXACT

    def propagate(self, inputs: Sequence[TensorState]) -> TensorState:
        variance = summand_variance(self)
        self.set_initializer(self.layer.position_embeddings, math.sqrt(variance), "initializer")
        return embedding_output(self, inputs, variance)


@rule_for(TokenAndPositionEmbedding)
class TokenAndPositionEmbeddingEstimator(LayerRule):
    """TokenAndPositionEmbedding: token + position rows. The sum takes the variance
    :func:`core.summand_variance` gives its output, in equal shares; a token embedding with tied
    weights keeps the variance its reverse role fixes (:func:`core.tied_variance`) and the position
    embedding takes the same (the sum has twice it)."""

    method = EXACT

    def propagate(self, inputs: Sequence[TensorState]) -> TensorState:
        token, position = self.layer.token_embedding, self.layer.position_embedding
        share = tied_variance(token) if token.tie_weights else summand_variance(self) / 2.0
        self.set_initializer(token.embeddings, math.sqrt(share), "embeddings_initializer", owner=token)
        self.set_initializer(position.position_embeddings, math.sqrt(share), "initializer", owner=position)
        # the token half shares share / K (K rows read): 2 share / 2K
        return embedding_output(self, inputs, 2.0 * share, rows_read(inputs[0], token.input_dim) * 2)


@rule_for(RotaryEmbedding)
class RotaryEmbeddingEstimator(LayerRule):
    """RotaryEmbedding rotates each pair (x_i, x_i') of a position by its angle: y_i = C x_i - S x_i',
    y_i' = C x_i' + S x_i (C, S the layer's own cos/sin factors, read by calling it: C^2 + S^2 = 1, or
    YaRN's factor^2). For independent elements of mean m, var v: E[y] = m (C -+ S) per element, so
    pooled over positions and features mean m avg(a), a = C -+ S, variance v avg(C^2 + S^2) +
    m^2 Var(a) (the second moment is kept: a rotation). A part c shared by a channel's positions
    stays shared as much as the angles agree: c avg_i[(avg_p C)^2 + (avg_p S)^2]."""

    method = EXACT

    def propagate(self, inputs: Sequence[TensorState]) -> TensorState:
        state = inputs[0]
        gain, shift, agreement = self.factors()
        var = state.var * float(np.mean(gain)) + state.mean ** 2 * float(np.var(shift))
        return self.output(inputs, state.mean * float(np.mean(shift)), var, shared=state.shared * agreement,
                           sample_shared=state.sample_shared * agreement, profile=None, lags=None)

    def factors(self) -> tuple[np.ndarray, np.ndarray, float]:
        """(C^2 + S^2, a = C -+ S) per element and the angles' agreement over positions, from the
        layer's outputs on one sample whose first (second) halves of features are ones."""
        shape = [1 if s is None else int(s) for s in self.input_shapes[0]]
        shape[0] = 1
        feature_axis = self.layer.feature_axis % len(shape)
        sequence_axis = self.layer.sequence_axis % len(shape)
        half = shape[feature_axis] // 2
        index = np.arange(shape[feature_axis]).reshape([-1 if a == feature_axis else 1 for a in range(len(shape))])
        first = np.broadcast_to(index < half, shape).astype("float32")
        start = self.node.arguments.kwargs.get("start_index", 0) if self.node is not None else 0
        start = start if isinstance(start, int) else 0
        a, b = (np.asarray(keras.ops.convert_to_numpy(self.layer(x, start_index=start)), dtype=float)
                for x in (first, 1.0 - first))
        # a: C on the first halves, S on the second; b: -S on the first halves, C on the second
        gain, shift = a ** 2 + b ** 2, a + b
        cos, sin = np.where(first > 0, a, b), np.where(first > 0, -b, a)
        agreement = float(np.mean(cos.mean(axis=sequence_axis) ** 2 + sin.mean(axis=sequence_axis) ** 2))
        return gain, shift, min(agreement, 1.0)


class HubRMSNormalization(RMSScaling):
    """keras_hub's RMS normalizations over the last axis, x / sqrt(mean(x^2) + eps) * scale
    (Llama, Mistral, Mixtral, Qwen, Qwen3, Phi3, GPT-OSS; keras_hub.layers.RMSNormalization with
    eps 1e-6; T5's with its ``weight``)."""

    def multiplier(self) -> np.ndarray:
        factor = getattr(self.layer, "scale", None)
        factor = self.layer.weight if factor is None else factor
        return np.asarray(keras.ops.convert_to_numpy(factor), dtype=float)

    def epsilon(self) -> float:
        return float(getattr(self.layer, "epsilon", 1e-6))


class OffsetRMSNormalization(HubRMSNormalization):
    """Gemma's RMS normalizations: x / sqrt(mean(x^2) + eps) * (1 + scale)."""

    def multiplier(self) -> np.ndarray:
        return 1.0 + super().multiplier()


RMS_NORMALIZATIONS = (
    "keras_hub.src.layers.modeling.rms_normalization.RMSNormalization",
    "keras_hub.src.models.llama.llama_layernorm.LlamaLayerNorm",
    "keras_hub.src.models.mistral.mistral_layer_norm.MistralLayerNormalization",
    "keras_hub.src.models.mixtral.mixtral_layer_norm.MixtralLayerNormalization",
    "keras_hub.src.models.qwen.qwen_layernorm.QwenLayerNorm",
    "keras_hub.src.models.qwen_moe.qwen_moe_layernorm.QwenMoeLayerNorm",
    "keras_hub.src.models.qwen3.qwen3_layernorm.Qwen3LayerNorm",
    "keras_hub.src.models.qwen3_moe.qwen3_moe_layernorm.Qwen3MoeLayerNorm",
    "keras_hub.src.models.phi3.phi3_layernorm.Phi3LayerNorm",
    "keras_hub.src.models.gpt_oss.gpt_oss_layer_norm.GptOssLayerNormalization",
    "keras_hub.src.models.t5.t5_layer_norm.T5LayerNorm",
)
"""keras_hub's x * rsqrt(mean(x^2) + eps) * scale layers, by module path and class name."""

OFFSET_RMS_NORMALIZATIONS = (
    "keras_hub.src.models.gemma.rms_normalization.RMSNormalization",
    "keras_hub.src.models.gemma3.gemma3_layers.RMSNormalization",
)
"""keras_hub's x * rsqrt(mean(x^2) + eps) * (1 + scale) layers (Gemma)."""


def _hub_classes(paths: Sequence[str]) -> list[type]:
    """The classes at ``paths`` ("module.Class") that this keras_hub version has."""
    found = []
    for path in paths:
        module_name, _, name = path.rpartition(".")
        try:
            found.append(getattr(importlib.import_module(module_name), name))
        except (ImportError, AttributeError):
            continue  # a model family this keras_hub version lacks
    return found


rule_for(*_hub_classes(RMS_NORMALIZATIONS))(HubRMSNormalization)
rule_for(*_hub_classes(OFFSET_RMS_NORMALIZATIONS))(OffsetRMSNormalization)
