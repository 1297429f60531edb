"""Test-wide settings: quiet TensorFlow, the TensorFlow backend, a headless plot backend;
the ``keras_seed`` fixture."""
import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")


@pytest.fixture
def keras_seed():
    """Keras's global seed set to 0, so the weights a test's layers build with are the same on
    every run (AutoInit's own draws are seeded by its config)."""
    import keras

    keras.utils.set_random_seed(0)
