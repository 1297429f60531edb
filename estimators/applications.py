"""Layers that keras.applications defines for itself.

ConvNeXt's LayerScale and StochasticDepth, InceptionResNetV2's CustomScaleLayer. Inputs
are independent Gaussian elements; training mode. These rules give only (mean, var) and use
the reference contract (``estimate``); the carry policies fill in the rest.
"""
from __future__ import annotations

import keras
import numpy as np
from keras.src.applications.convnext import LayerScale, StochasticDepth
from keras.src.applications.inception_resnet_v2 import CustomScaleLayer

from autoinit_sym.statistics.linear import affine_moments, inverted_dropout_moments, linear_moments

from .base import EXACT, LayerOutputDistributionEstimator
from .registry import rule_for
from .shapes import identical_inputs


@rule_for(LayerScale)
class LayerScaleEstimator(LayerOutputDistributionEstimator):
    """x * gamma per channel (exact affine map, mixed over channels)."""

    method = EXACT

    def estimate(self, means_in, vars_in):
        gamma = np.asarray(keras.ops.convert_to_numpy(self.layer.gamma), dtype=float)
        return affine_moments(gamma, 0.0, means_in[0], vars_in[0])


@rule_for(StochasticDepth)
class StochasticDepthEstimator(LayerOutputDistributionEstimator):
    """Whole samples kept with probability 1 - rate and scaled by 1/(1 - rate): per element the
    dropout law, mean m, var (v + m^2)/(1 - rate) - m^2."""

    method = EXACT

    def estimate(self, means_in, vars_in):
        return inverted_dropout_moments(means_in[0], vars_in[0], float(self.layer.drop_path_rate))


@rule_for(CustomScaleLayer)
class CustomScaleEstimator(LayerOutputDistributionEstimator):
    """inputs[0] + scale * inputs[1] for independent inputs: mean m0 + s m1, var v0 + s^2 v1."""

    method = EXACT

    def estimate(self, means_in, vars_in):
        groups = identical_inputs(self.node, len(means_in))
        return linear_moments([1.0, float(self.layer.scale)], means_in, vars_in, groups)
