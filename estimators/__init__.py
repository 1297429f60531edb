"""Layer rules: one module per Keras layer family (installed as ``autoinit_sym.estimators``).

``base`` holds the contract, ``weighted`` the base every weighted layer shares, ``shapes``
the shape helpers; ``registry`` says which rule serves which layer and finds the family
modules itself.
"""
from .base import (CLOSED_FORM, EXACT, METHODS, MONTE_CARLO, PASS_THROUGH, PROBE, QUADRATURE,
                   EstimationContext, IdentityRule, LayerOutputDistributionEstimator, LayerRule)
from .registry import lookup, registered, rule_for

__all__ = [
    "LayerRule", "LayerOutputDistributionEstimator", "IdentityRule", "EstimationContext",
    "rule_for", "lookup", "registered",
    "EXACT", "CLOSED_FORM", "QUADRATURE", "MONTE_CARLO", "PROBE", "PASS_THROUGH", "METHODS",
]
