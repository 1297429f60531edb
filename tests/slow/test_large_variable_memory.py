"""Extra peak memory of ``initialize_model`` on very large variables (issue 15), each measured
in a fresh process (``benchmarks.bench_large_variables.measure``): at most 1.25x the largest
variable plus 100 MB over the resident memory before the call, for every distribution. Before
the write was chunked it kept 4.2x the kernel (10x for orthogonal)."""
import pytest

from benchmarks.bench_large_variables import DISTRIBUTIONS, in_fresh_process


@pytest.mark.parametrize("shape", [(4096, 4096), (10_000, 5_000)], ids=["64MB", "50M"])
@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
def test_extra_peak_memory_stays_near_the_largest_variable(distribution, shape):
    found = in_fresh_process("autoinit", "dense", distribution, shape)
    assert found["largest_mb"] == pytest.approx(shape[0] * shape[1] * 4 / 2**20)
    assert found["extra_mb"] <= 1.25 * found["largest_mb"] + 100.0, found
