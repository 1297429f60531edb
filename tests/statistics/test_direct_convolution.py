"""``lag_correlation.convolve``, the direct N-d convolution that replaces ``scipy.signal``'s."""
import numpy as np
import pytest
from scipy import signal

from autoinit_sym.statistics.lag_correlation import convolve


@pytest.mark.parametrize("values_shape,kernel_shape", [((15,), (5,)), ((15, 15), (5, 5)), ((9, 11), (4, 3)),
                                                       ((7, 7, 7), (3, 5, 3)), ((3,), (7,)), ((6, 6), (1, 1))])
@pytest.mark.parametrize("mode", ["same", "full"])
def test_matches_scipy_signal(values_shape, kernel_shape, mode):
    """Odd and even kernel sizes, kernels larger than the values, sparse kernels (zero taps skipped)."""
    rng = np.random.default_rng(0)
    values = rng.standard_normal(values_shape)
    kernel = rng.standard_normal(kernel_shape) * (rng.random(kernel_shape) < 0.7)
    np.testing.assert_allclose(convolve(values, kernel, mode), signal.convolve(values, kernel, mode=mode,
                                                                                method="direct"),
                               rtol=1e-12, atol=1e-12)


def test_correlation_of_a_kernel_with_itself():
    """correlate(h, h, full) = convolve(h, flipped h, full): the form correlated_max needs."""
    kernel = np.random.default_rng(1).standard_normal((5, 4))
    np.testing.assert_allclose(convolve(kernel, kernel[::-1, ::-1], "full"),
                               signal.correlate(kernel, kernel, mode="full", method="direct"), rtol=1e-12, atol=1e-12)
