"""The backend smoke tier: a dozen small models (``smoke_models.MODELS``: Dense, convolutions with
batch normalization and pooling, residual blocks, depthwise and separable convolutions, LSTM, GRU,
SimpleRNN, Bidirectional, a MultiHeadAttention block, Embedding with global pooling, merges, a
nested Functional model) initialized on the current backend (``KERAS_BACKEND``), their
predictions checked against the real initialized model fed Gaussian noise, and the weights of
the models that involve no sampling compared bit for bit with another backend's.
CI runs this folder on JAX and on torch (``make test-backends``)."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import keras
import pytest

from helpers import assert_quality, log_errors
from smoke_models import DETERMINISTIC, MODELS, initialized_digests

BACKEND = keras.backend.backend()
DRAWS = (0, 1, 2, 3)
"""Weight draws per model: each prediction is compared with the arithmetic mean over them of the
measured variance (64 Gaussian rows per draw)."""


@pytest.mark.parametrize("name", list(MODELS))
def test_predictions_track_measurement(name, caplog):
    """Every call has a rule (nothing probed); |log(mean measured var / predicted var)| has median
    <= 0.1 and p90 <= 0.35 over the model's layer calls."""
    with caplog.at_level(logging.WARNING, logger="autoinit_sym"):
        errors = log_errors(MODELS[name](), samples=64, seeds=DRAWS)
    assert "No LayerOutputDistributionEstimator" not in caplog.text
    assert_quality(errors)


def test_weights_are_bit_identical_across_backends():
    """The same seed draws the same weights on this backend and on another one (TensorFlow, or JAX
    when this is TensorFlow), in a fresh process, for every model without sampling (DETERMINISTIC)."""
    other = "jax" if BACKEND == "tensorflow" else "tensorflow"
    here = Path(__file__).resolve().parent
    code = "import json; from smoke_models import initialized_digests; print(json.dumps(initialized_digests()))"
    env = dict(os.environ, KERAS_BACKEND=other, PYTHONPATH=os.pathsep.join([str(here), str(here.parent)]))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    theirs = json.loads(result.stdout.strip().splitlines()[-1])
    ours = initialized_digests()
    assert set(ours) == set(DETERMINISTIC)
    assert ours == theirs, {name: (ours[name], theirs[name]) for name in ours if ours[name] != theirs[name]}
