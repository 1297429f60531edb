"""Layers that keras.applications defines for itself.

ConvNeXt's LayerScale and StochasticDepth, InceptionResNetV2's CustomScaleLayer. Inputs
are independent Gaussian elements; training mode.
"""
from __future__ import annotations

import keras
import numpy as np
from keras.src.applications.convnext import LayerScale, StochasticDepth
from keras.src.applications.inception_resnet_v2 import CustomScaleLayer

from .base import EXACT, LayerOutputDistributionEstimator
from .merging import identical_inputs, linear_moments
from .normalization import affine_moments
from .registry import estimates
from .regularization import inverted_dropout_moments


@estimates(LayerScale)
class LayerScaleEstimator(LayerOutputDistributionEstimator):
    """x * gamma per channel (exact affine map, mixed over channels)."""

    method = EXACT

    def estimate(self, means_in, vars_in):
        gamma = np.asarray(keras.ops.convert_to_numpy(self.layer.gamma), dtype=float)
        return affine_moments(gamma, 0.0, means_in[0], vars_in[0])


@estimates(StochasticDepth)
class StochasticDepthEstimator(LayerOutputDistributionEstimator):
    """Whole samples kept with probability 1 - rate and scaled by 1/(1 - rate): per element the
    dropout law, mean m, var (v + m^2)/(1 - rate) - m^2."""

    method = EXACT

    def estimate(self, means_in, vars_in):
        return inverted_dropout_moments(means_in[0], vars_in[0], float(self.layer.drop_path_rate))


@estimates(CustomScaleLayer)
class CustomScaleEstimator(LayerOutputDistributionEstimator):
    """inputs[0] + scale * inputs[1] for independent inputs: mean m0 + s m1, var v0 + s^2 v1."""

    method = EXACT

    def estimate(self, means_in, vars_in):
        groups = identical_inputs(self.node, len(means_in))
        return linear_moments([1.0, float(self.layer.scale)], means_in, vars_in, groups)
