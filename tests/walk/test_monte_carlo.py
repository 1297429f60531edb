"""The Gaussian Monte Carlo engine: accuracy, reproducibility, chunking, progress, errors."""
import math

import keras
import numpy as np
import pytest

from autoinit_sym.walk import monte_carlo
from autoinit_sym.walk.monte_carlo import OutputStatistics, RunningMoments, gaussian_statistics


def test_relu_and_identity_match_closed_forms():
    (relu_mean, relu_var), (x_mean, x_var) = gaussian_statistics(
        lambda x: [keras.ops.relu(x), x], [(64,)], [0.0], [1.0], samples=4000, seed=3)
    # E[relu(Z)] = 1/sqrt(2 pi), Var = 1/2 - 1/(2 pi); 256k elements: standard errors ~0.2%.
    assert relu_mean == pytest.approx(1 / math.sqrt(2 * math.pi), abs=0.005)
    assert relu_var == pytest.approx(0.5 - 1 / (2 * math.pi), rel=0.01)
    assert x_mean == pytest.approx(0.0, abs=0.005)
    assert x_var == pytest.approx(1.0, rel=0.01)


def test_several_inputs_with_their_own_statistics():
    [(mean, var)] = gaussian_statistics(lambda x, y: x * y, [(8, 4), (8, 4)], [2.0, -1.0], [0.5, 4.0],
                                        samples=8000, seed=1)
    # X Y, independent: mean -2, var (0.5 + 4)(4 + 1) - 4 = 18.5
    assert mean == pytest.approx(-2.0, abs=0.05)
    assert var == pytest.approx(18.5, rel=0.02)


def test_same_seed_same_result_other_seed_differs():
    def run(seed):
        return gaussian_statistics(keras.ops.tanh, [(16,)], [0.3], [2.0], samples=500, seed=seed)

    assert run(7) == run(7)
    assert run(7) != run(8)


def test_chunks_stay_within_the_memory_budget(monkeypatch):
    monkeypatch.setattr(monte_carlo, "CHUNK_BYTES", 64 * 1024)
    batches = []

    def fn(x):
        batches.append(int(x.shape[0]))
        return x * 2.0

    [(mean, var)] = gaussian_statistics(fn, [(64,)], [1.0], [1.0], samples=5000, seed=0)
    row_bytes = 4 * 2 * 64  # input and output rows, float32
    assert sum(batches) == 5000 and len(batches) > 10
    assert max(batches) * row_bytes <= 64 * 1024
    assert mean == pytest.approx(2.0, abs=0.02) and var == pytest.approx(4.0, rel=0.02)


def test_chunked_and_single_chunk_agree_statistically():
    fn = keras.ops.sigmoid
    whole = gaussian_statistics(fn, [(32,)], [0.5], [3.0], samples=3000, seed=2, chunk_size=3000)[0]
    chunked = gaussian_statistics(fn, [(32,)], [0.5], [3.0], samples=3000, seed=2, chunk_size=97)[0]
    assert chunked[0] == pytest.approx(whole[0], abs=0.005)
    assert chunked[1] == pytest.approx(whole[1], rel=0.02)


def test_default_chunks_hold_at_most_chunk_bytes():
    batches = []

    def fn(x):
        batches.append(int(x.shape[0]))
        return x

    gaussian_statistics(fn, [(256,)], [0.0], [1.0], samples=70_000, seed=0)
    assert len(batches) > 2 and max(batches) * 4 * 2 * 256 <= monte_carlo.CHUNK_BYTES
    assert monte_carlo.CHUNK_BYTES <= 100 * 2**20


def test_progress_bar_once_it_runs_long(monkeypatch, capsys):
    monkeypatch.setattr(monte_carlo, "PROGRESS_AFTER_S", 0.0)
    gaussian_statistics(keras.ops.relu, [(4,)], [0.0], [1.0], samples=100, seed=0, chunk_size=10,
                        description="probe layer x")
    out = capsys.readouterr().out
    assert "probe layer x" in out and "100/100" in out


def test_no_progress_bar_for_short_runs(capsys):
    gaussian_statistics(keras.ops.relu, [(4,)], [0.0], [1.0], samples=100, seed=0)
    assert capsys.readouterr().out == ""


def test_running_moments_merge_matches_numpy():
    values = np.random.default_rng(0).normal(1e4, 1e-2, 10_000)  # tiny variance next to the mean
    acc = RunningMoments()
    for chunk in np.array_split(values, 7):
        acc.add(chunk.size, chunk.mean(), float(((chunk - chunk.mean()) ** 2).sum()))
    assert acc.mean == pytest.approx(values.mean(), rel=1e-12)
    assert acc.variance == pytest.approx(values.var(), rel=1e-9)


@pytest.mark.parametrize("kwargs, message", [
    (dict(input_shapes=[(None, 3)]), "fully known"),
    (dict(means=[0.0, 1.0]), "must match"),
    (dict(variances=[-1.0]), "finite and >= 0"),
    (dict(samples=0), "samples must be >= 1"),
    (dict(chunk_size=0), "chunk_size"),
])
def test_bad_arguments_are_rejected(kwargs, message):
    args = dict(fn=keras.ops.relu, input_shapes=[(3,)], means=[0.0], variances=[1.0], samples=10, seed=0)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        gaussian_statistics(**args)


def test_position_shared_variance():
    """x + a with a per-(sample, channel) offset a ~ N(0, 0.5) common to the 8 positions:
    shared 0.5 of var 1.5; an output without positions (batch, channels) has none."""
    statistics = OutputStatistics(positions=True)
    [(_, var), _] = gaussian_statistics(lambda x, a: [x + a, keras.ops.mean(x, axis=1)], [(8, 4), (1, 4)],
                                        [1.0, 0.0], [1.0, 0.5], samples=4000, seed=0, statistics=statistics)
    shared, none = statistics.position_shared()
    assert var == pytest.approx(1.5, rel=0.03)
    assert shared == pytest.approx(0.5, abs=0.03)
    assert none is None
    with pytest.raises(ValueError, match="positions=True"):
        OutputStatistics().position_shared()
