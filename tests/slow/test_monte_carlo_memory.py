"""Monte Carlo over a gigabyte of samples stays within bounded memory (slow: about 15 s)."""
import resource

from autoinit_sym.walk.monte_carlo import gaussian_statistics


def test_extra_peak_memory_under_500_mb_for_a_gigabyte_of_samples():
    # 2e6 rows of 128 float32 inputs and outputs would take 2 GB at once.
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    gaussian_statistics(lambda x: x + 1.0, [(128,)], [0.0], [1.0], samples=2_000_000, seed=0)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 500
