"""The symbolic moment engine (no Keras): E[f(X)] and Var[f(X)] for X ~ N(mu, sigma^2).

``expressions`` parses activation text; ``catalog`` names the Keras activations;
``closed_form``/``piecewise``/``gaussian_integrals`` and ``gelu`` give closed forms,
``quadrature`` the numerical fallback; ``activation_moments`` chooses between them
(``moments()``); ``order_statistics`` and ``tables`` build on it.
"""
