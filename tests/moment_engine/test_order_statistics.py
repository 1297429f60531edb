"""Moments of the max of k iid normals and Clark's max/min of two Gaussians."""
import math

import mpmath as mp
import numpy as np
import pytest

from autoinit_sym.moment_engine.order_statistics import clark_max, clark_min, max_of_iid_normal_moments, max_pool_moments


def mp_reference(k: int) -> tuple[float, float]:
    """mpmath at 30 digits, split around the bulk of the density."""
    with mp.workdps(30):
        density = lambda x: k * mp.npdf(x) * mp.ncdf(x) ** (k - 1)
        points = [-mp.inf, -6, -3, -1, 0, 1, 2, 3, 4, 5, 6, 8, mp.inf]
        mean = mp.quad(lambda x: x * density(x), points)
        var = mp.quad(lambda x: (x - mean) ** 2 * density(x), points)
        return float(mean), float(var)


def test_exact_small_k():
    sqrt_pi = math.sqrt(math.pi)
    assert max_of_iid_normal_moments(1) == (0.0, 1.0)
    m2, v2 = max_of_iid_normal_moments(2)
    assert m2 == pytest.approx(1 / sqrt_pi, rel=1e-12) and v2 == pytest.approx(1 - 1 / math.pi, rel=1e-12)
    m3, v3 = max_of_iid_normal_moments(3)
    assert m3 == pytest.approx(1.5 / sqrt_pi, rel=1e-12)
    assert v3 == pytest.approx(1 + math.sqrt(3) / (2 * math.pi) - 9 / (4 * math.pi), rel=1e-12)


@pytest.mark.parametrize("k", [4, 9, 27, 100, 1000, 100_000])
def test_against_mpmath(k):
    mean, var = max_of_iid_normal_moments(k)
    ref_mean, ref_var = mp_reference(k)
    assert mean == pytest.approx(ref_mean, rel=1e-6) and var == pytest.approx(ref_var, rel=1e-6)


def test_known_values_and_asymptotics():
    # tabulated expected maxima of k standard normals
    assert max_of_iid_normal_moments(10)[0] == pytest.approx(1.5387527, abs=1e-7)
    assert max_of_iid_normal_moments(100)[0] == pytest.approx(2.5075937, abs=1e-7)
    # extreme-value limit: sd of the max ~ pi / sqrt(6) / sqrt(2 log k), mean grows like sqrt(2 log k)
    k = 10 ** 6
    mean, var = max_of_iid_normal_moments(k)
    b = math.sqrt(2 * math.log(k))
    assert abs(mean - (b - (math.log(math.log(k)) + math.log(4 * math.pi) - 2 * 0.5772156649) / (2 * b))) < 0.05
    assert math.sqrt(var) == pytest.approx(math.pi / math.sqrt(6) / b, rel=0.15)


def test_monte_carlo_moderate_k():
    k, n = 16, 200_000
    samples = np.random.default_rng(0).standard_normal((n, k)).max(axis=1)
    mean, var = max_of_iid_normal_moments(k)
    assert abs(samples.mean() - mean) < 4 * math.sqrt(var / n)
    assert abs(samples.var() / var - 1) < 4 * math.sqrt(2 / n) * 1.5


def test_scaled_and_bad_k():
    m, v = max_of_iid_normal_moments(5)
    assert max_pool_moments(3.0, 4.0, 5) == pytest.approx((3.0 + 2 * m, 4 * v))
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="positive integer"):
            max_of_iid_normal_moments(bad)


@pytest.mark.parametrize("m1,v1,m2,v2", [(0, 1, 0, 1), (5, 0.01, 4.9, 0.04), (-3, 25, 1, 0.5), (100, 1e-6, 0, 1)])
def test_clark_against_samples(m1, v1, m2, v2):
    rng = np.random.default_rng(1)
    n = 400_000
    x1, x2 = rng.normal(m1, math.sqrt(v1), n), rng.normal(m2, math.sqrt(v2), n)
    for pair, ref in ((clark_max, np.maximum(x1, x2)), (clark_min, np.minimum(x1, x2))):
        mean, var = pair(m1, v1, m2, v2)
        assert abs(ref.mean() - mean) < 5 * math.sqrt(var / n) + 1e-12
        assert abs(ref.var() / var - 1) < 0.02


def test_clark_exact_identities():
    mean, var = clark_max(0.0, 1.0, 0.0, 1.0)
    assert mean == pytest.approx(1 / math.sqrt(math.pi)) and var == pytest.approx(1 - 1 / math.pi)
    assert tuple(map(float, clark_max(2.0, 0.0, 1.0, 0.0))) == (2.0, 0.0)
    assert tuple(map(float, clark_min(2.0, 0.0, 2.0, 0.0))) == (2.0, 0.0)
