"""The symbolic moment engine (no Keras): E[f(X)] and Var[f(X)] for X ~ N(mu, sigma^2).

``expressions`` parses activation text with a whitelist (never eval); ``validation`` checks
that an activation has well-defined moments and bounded size; ``catalog`` names the Keras
activations; ``methods`` is the protocol of the moment methods: ``gelu`` and
``closed_form`` (with ``piecewise``/``gaussian_integrals``) give closed forms, ``quadrature``
the generic numerical method; ``nodes`` builds every quadrature rule; ``activation_moments``
tries the methods in order (``moments()``); ``order_statistics`` and ``tables`` build on it.
"""
