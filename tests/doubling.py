"""A layer without a built-in rule and a reference-style estimator for it, shared by the tests
of custom estimators, probing and the walk's default rules."""
import keras

from autoinit_sym.estimators import LayerOutputDistributionEstimator


class Doubling(keras.layers.Layer):
    """y = 2 x."""

    def call(self, x):
        return 2.0 * x

    def compute_output_shape(self, input_shape):
        return input_shape


class DoublingEstimator(LayerOutputDistributionEstimator):
    """Mean 2m, variance 4v; returns only (mean, var), as estimators written for the reference do."""

    def estimate(self, means_in, vars_in):
        return 2.0 * means_in[0], 4.0 * vars_in[0]
