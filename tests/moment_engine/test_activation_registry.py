"""Every registered expression equals the real keras.activations function, parameters included."""
import numpy as np
import pytest

from autoinit_sym.moment_engine import catalog
from autoinit_sym.moment_engine.expressions import numpy_function

keras = pytest.importorskip("keras")

KERAS_NAMES = {
    "celu", "elu", "exponential", "gelu", "hard_shrink", "hard_sigmoid", "hard_silu",
    "hard_swish", "hard_tanh", "leaky_relu", "linear", "log_sigmoid", "mish", "relu",
    "relu6", "selu", "sigmoid", "silu", "swish", "soft_shrink", "softplus", "softsign",
    "sparse_plus", "sparse_sigmoid", "squareplus", "tanh", "tanh_shrink", "threshold",
}

# (name, parameters) checked against Keras; defaults first, then non-default parameters.
CASES = [(name, {}) for name in sorted(KERAS_NAMES - {"threshold"})] + [
    ("celu", {"alpha": 0.5}),
    ("elu", {"alpha": 2.0}),
    ("gelu", {"approximate": True}),
    ("hard_shrink", {"threshold": 1.5}),
    ("leaky_relu", {"negative_slope": 0.01}),
    ("relu", {"negative_slope": 0.1}),
    ("relu", {"max_value": 6.0}),
    ("relu", {"max_value": 2.5, "threshold": 0.5}),
    ("relu", {"negative_slope": 0.3, "threshold": -1.0}),
    ("relu", {"negative_slope": 0.2, "max_value": 4.0, "threshold": 1.0}),
    ("relu", {"threshold": -0.5, "max_value": 3.0}),
    ("soft_shrink", {"threshold": 1.0}),
    ("squareplus", {"b": 1.0}),
    ("threshold", {"threshold": 0.5, "default_value": -1.0}),
    ("threshold", {"threshold": -2.0, "default_value": 3.0}),
]

GRID = np.unique(np.concatenate([
    np.linspace(-12.0, 12.0, 961),
    [-6.0, -3.0, -2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.5, 3.0, 4.0, 6.0],
]))


def test_registry_holds_exactly_the_elementwise_keras_activations():
    assert {n for n in catalog.names() if catalog.get(n).builtin} == KERAS_NAMES
    for name in KERAS_NAMES:
        assert callable(getattr(keras.activations, name))


def test_defaults_match_keras_signatures():
    import inspect

    for name in KERAS_NAMES:
        signature = inspect.signature(getattr(keras.activations, name))
        keras_defaults = {k: p.default for k, p in signature.parameters.items()
                          if k != "x" and p.default is not inspect.Parameter.empty}
        keras_required = [k for k, p in signature.parameters.items()
                          if k != "x" and p.default is inspect.Parameter.empty]
        entry = catalog.get(name)
        assert entry.defaults == keras_defaults, name
        assert list(entry.required) == keras_required, name


@pytest.mark.parametrize("name,params", CASES, ids=[f"{n}-{p}" for n, p in CASES])
def test_expression_matches_keras(name, params):
    entry = catalog.get(name)
    ours = numpy_function(entry.expression(entry.resolve(params)))(GRID)
    theirs = keras.ops.convert_to_numpy(getattr(keras.activations, name)(GRID, **params)).astype(np.float64)
    # Keras casts slopes to float32 (0.2 -> 0.2000000030) and forms gelu as
    # x/2 * (1 + erf/tanh), which cancels in the left tail; ours are the exact values.
    np.testing.assert_allclose(ours, theirs, rtol=1e-7, atol=1e-8)


def test_gelu_tail_is_exact_where_keras_cancels():
    import mpmath

    entry = catalog.get("gelu")
    for approximate in (False, True):
        f = numpy_function(entry.expression(entry.resolve({"approximate": approximate})))
        for x in (-4.9, -9.0, -20.0):
            with mpmath.workdps(50):
                xm = mpmath.mpf(x)
                u = mpmath.sqrt(2 / mpmath.pi) * (xm + mpmath.mpf("0.044715") * xm**3)
                # x/2 (1 + tanh u) = x / (1 + exp(-2u)), written without cancellation
                exact = xm * mpmath.ncdf(xm) if not approximate else xm / (1 + mpmath.exp(-2 * u))
            assert f(np.array([x]))[0] == pytest.approx(float(exact), rel=1e-13, abs=0)
