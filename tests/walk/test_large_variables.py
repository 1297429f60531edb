"""Very large variables (issue 15): draws that do not depend on how a variable is cut into
chunks or shards, the in-place orthogonal factorization, old values spilled to a temporary
file with the write still all or nothing, and no TensorFlow variable left copying on read.
The extra peak memory of whole initializations is checked in
``tests/slow/test_large_variable_memory.py``."""
import math

import keras
import numpy as np
import pytest

from autoinit_sym.walk import backup, drawing, weights
from autoinit_sym.walk.drawing import BLOCK, Draw, orthogonal
from autoinit_sym.walk.weights import PendingWeight, write_pending

STREAMS = ["truncated_normal", "untruncated_normal", "uniform"]


def seed_for(*key, weights=False):
    return 11 + len("|".join(map(str, key)))


@pytest.mark.parametrize("distribution", STREAMS)
def test_rows_and_shards_are_cut_from_one_stream(distribution, monkeypatch):
    """Any row range or shard of a 2.6-block variable equals the same part of the whole draw,
    whatever the chunk size."""
    shape = (13, BLOCK // 5)
    whole = Draw(distribution, 0.5, shape, 4, "float32").full()
    assert whole.std() == pytest.approx(0.5, rel=3e-3) and abs(whole.mean()) < 3e-3
    monkeypatch.setattr(drawing, "CHUNK_BYTES", 3 * (BLOCK // 5) * 4)  # 3 rows per chunk
    draw = Draw(distribution, 0.5, shape, 4, "float32")
    assert draw.chunks()[:2] == [(0, 3), (3, 6)]
    np.testing.assert_array_equal(np.concatenate([draw.rows(a, b) for a, b in draw.chunks()]), whole)
    for index in [(slice(2, 9), slice(None)), (slice(None), slice(1000, 90000)), (slice(5, 6), slice(7, 8))]:
        np.testing.assert_array_equal(draw.block(index), whole[index])
    assert not np.array_equal(whole, Draw(distribution, 0.5, shape, 5, "float32").full())


@pytest.mark.parametrize("shape", [(300, 120), (120, 300), (3, 3, 16, 40), (50,)])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_orthogonal_matrix_is_orthogonal_with_the_gain_in_the_draw_precision(shape, dtype):
    rows, cols = drawing.matrix_shape(shape)
    matrix = orthogonal(0.2, shape, 9, np.dtype(dtype))
    assert matrix.shape == (rows, cols) and matrix.dtype == np.dtype(dtype)
    gain2 = 0.04 * max(rows, cols)
    gram = matrix.T @ matrix if rows >= cols else matrix @ matrix.T
    np.testing.assert_allclose(gram / gain2, np.eye(min(rows, cols)), atol=1e-5 if dtype == "float32" else 1e-12)
    assert float(np.mean(matrix.astype(np.float64) ** 2)) == pytest.approx(0.04, rel=1e-5)
    values = Draw("orthogonal", 0.2, shape, 9, dtype).full()
    np.testing.assert_array_equal(values.reshape(rows, cols), matrix)


def test_orthogonal_columns_signs_follow_r_as_in_keras():
    """Q * sign(diag(R)) makes the draw a function of the Gaussian matrix: the diagonal of
    Q^T A (= R's) is positive."""
    matrix = orthogonal(1.0, (40, 10), 2, np.dtype(np.float64))
    gaussian = np.empty((40, 10), order="F")
    drawing.standard_stream("untruncated_normal", 2, 0, gaussian.T.reshape(-1))
    r = (matrix / math.sqrt(40)).T @ gaussian
    assert np.all(np.diagonal(r) > 0)
    np.testing.assert_allclose(np.tril(r, -1), 0, atol=1e-10)


def dense(units, inputs, name, dtype=None):
    layer = keras.layers.Dense(units, name=name, dtype=dtype)
    layer.build((None, inputs))
    return layer


@pytest.mark.parametrize("error", [None, KeyboardInterrupt])
def test_old_values_spill_to_a_deleted_file_and_all_or_nothing_holds(monkeypatch, error):
    """With no memory budget every old value goes to the temporary file; an interrupt during
    the fourth variable's write (after three were written) puts every value back, float16 and
    bfloat16 included, and the file is closed either way."""
    layers = [dense(64, 48, "a"), dense(32, 64, "b", "float16"), dense(16, 32, "c", "bfloat16"), dense(8, 16, "d")]
    before = [np.array(keras.ops.convert_to_numpy(v)) for layer in layers for v in layer.weights]
    files = []
    monkeypatch.setattr(backup, "MEMORY_BUDGET", 0)
    real_file = backup.tempfile.TemporaryFile
    monkeypatch.setattr(backup.tempfile, "TemporaryFile", lambda **kw: files.append(real_file(**kw)) or files[-1])
    real_write, writes = weights.write, []

    def counted_write(variable, values):
        writes.append(variable.path)
        if error is not None and len(writes) == 4:
            raise error()
        real_write(variable, values)

    monkeypatch.setattr(weights, "write", counted_write)
    pending = [PendingWeight(layer, layer.kernel, 0.3, "kernel_initializer") for layer in layers]
    if error is None:
        write_pending(pending, "uniform", False, seed_for)
        after = [np.array(keras.ops.convert_to_numpy(v)) for layer in layers for v in layer.weights]
        for old, new, layer in zip(before[::2], after[::2], layers):
            assert not np.array_equal(old, new) and np.all(np.isfinite(new.astype(np.float32))), layer.name
        assert writes == ["a/kernel", "b/kernel", "c/kernel", "d/kernel"]
    else:
        with pytest.raises(error):
            write_pending(pending, "uniform", False, seed_for)
        assert writes[:4] == ["a/kernel", "b/kernel", "c/kernel", "d/kernel"]
        assert writes[4:] == ["d/kernel", "c/kernel", "b/kernel", "a/kernel"]  # put back, last first
        after = [np.array(keras.ops.convert_to_numpy(v)) for layer in layers for v in layer.weights]
        for old, new in zip(before, after):
            np.testing.assert_array_equal(old, new)
    assert len(files) == 1 and files[0].closed


def test_chunk_size_does_not_change_the_written_weights(monkeypatch):
    def written():
        layer = dense(700, 300, "k")
        write_pending([PendingWeight(layer, layer.kernel, 0.1)], "truncated_normal", False, seed_for)
        return np.array(layer.kernel.numpy())

    whole = written()
    monkeypatch.setattr(drawing, "CHUNK_BYTES", 7 * 700 * 4)
    np.testing.assert_array_equal(written(), whole)


def test_tensorflow_variables_are_not_left_copying_on_read():
    """Slice writes and row reads put a TensorFlow variable in copy-on-read mode (every read
    copies it); the write pass takes it out again, so a read after it shares the buffer."""
    if keras.backend.backend() != "tensorflow":
        pytest.skip("TensorFlow's copy-on-read mode")
    from benchmarks.cost_meter import resident_bytes

    layer = dense(2048, 4096, "big")  # a 32 MB kernel
    write_pending([PendingWeight(layer, layer.kernel, 0.01)], "uniform", False, seed_for)
    start = resident_bytes()
    held = layer.kernel.value.read_value()
    assert resident_bytes() - start < 8 * 2**20
    assert float(keras.ops.std(held)) == pytest.approx(0.01, rel=0.01)
