"""Core layers: Dense, EinsumDense, Embedding, Identity, Masking, Lambda."""
from __future__ import annotations

import math

import keras
import numpy as np

from autoinit_sym.walk.probe import ProbeEstimator

from .base import EXACT, LayerOutputDistributionEstimator
from .registry import estimates
from .weighted import WeightedLayerEstimator


@estimates(keras.layers.Dense)
class DenseEstimator(WeightedLayerEstimator):
    """Dense: fan_in = input features (kernel.shape[0])."""

    def fan_in(self) -> float:
        return float(self.layer.kernel.shape[0])


@estimates(keras.layers.EinsumDense)
class EinsumDenseEstimator(WeightedLayerEstimator):
    """EinsumDense: fan_in = product of the kernel dimensions contracted with the input
    (letters shared by input and kernel that do not appear in the output)."""

    def fan_in(self) -> float:
        equation = self.layer.equation.replace(" ", "")
        operands, output = equation.split("->")
        inputs, kernel = operands.split(",")
        contracted = (set(inputs) & set(kernel)) - set(output)
        shape = self.layer.kernel.shape
        return float(np.prod([shape[i] for i, letter in enumerate(kernel) if letter in contracted]))


@estimates(keras.layers.Embedding)
class EmbeddingEstimator(LayerOutputDistributionEstimator):
    """Embedding: its output is the embedding table, drawn N(0, signal_variance)."""

    method = EXACT

    def estimate(self, means_in, vars_in):
        self.set_initializer(self.layer.embeddings, math.sqrt(self.signal_variance),
                             "embeddings_initializer")
        return 0.0, self.signal_variance


@estimates(keras.layers.Identity, keras.layers.Masking)
class IdentityEstimator(LayerOutputDistributionEstimator):
    """Identity; Masking (a Gaussian time step equals mask_value with probability 0)."""

    method = EXACT

    def estimate(self, means_in, vars_in):
        return means_in[0], vars_in[0]


estimates(keras.layers.Lambda)(ProbeEstimator)
"""Lambda: arbitrary code, so it is probed (run on Gaussian samples) without a warning."""
