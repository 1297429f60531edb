"""Layer estimators: one module per Keras layer family (installed as ``autoinit_sym.estimators``).

``base`` holds the contract; ``registry`` says which rule serves which layer.
"""
from .base import (CLOSED_FORM, EXACT, METHODS, MONTE_CARLO, PASS_THROUGH, PROBE, QUADRATURE,
                   EstimationContext, LayerOutputDistributionEstimator, WeightInitConfig)
from .registry import estimates, lookup, registered

__all__ = [
    "LayerOutputDistributionEstimator", "EstimationContext", "WeightInitConfig",
    "estimates", "lookup", "registered",
    "EXACT", "CLOSED_FORM", "QUADRATURE", "MONTE_CARLO", "PROBE", "PASS_THROUGH", "METHODS",
]
