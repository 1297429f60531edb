"""Core layers: Dense, EinsumDense, Embedding, Identity, Masking, Lambda."""
from __future__ import annotations

import math
from typing import Sequence

import keras
import numpy as np

from autoinit_sym.walk.probe import ProbeEstimator

from autoinit_sym.statistics.state import TensorState

from .base import EXACT, IdentityRule, LayerRule
from .registry import rule_for
from .weighted import WeightedLayerEstimator


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


@rule_for(keras.layers.Embedding)
class EmbeddingEstimator(LayerRule):
    """Embedding: its output is the embedding table, drawn N(0, signal_variance)."""

    method = EXACT

    def propagate(self, inputs: Sequence[TensorState]) -> TensorState:
        self.set_initializer(self.layer.embeddings, math.sqrt(self.signal_variance),
                             "embeddings_initializer")
        return self.output(inputs, 0.0, self.signal_variance)


@rule_for(keras.layers.Identity, keras.layers.Masking)
class IdentityEstimator(IdentityRule):
    """Identity; Masking (a Gaussian time step equals mask_value with probability 0)."""


rule_for(keras.layers.Lambda)(ProbeEstimator)
"""Lambda: arbitrary code, so it is probed (run on Gaussian samples) without a warning."""
