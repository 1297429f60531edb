"""Test-wide settings: quiet TensorFlow, the TensorFlow backend, a headless plot backend;
the ``keras_seed`` fixture (autouse); every test under ``tests/slow/`` is marked ``slow``.

The folders say what a test checks: ``moment_engine/``, ``statistics/``, ``layers/`` (one
module per Keras family), ``walk/``, ``models/`` (whole models against measurement),
``surface/`` (CLI, plots, notebooks, benchmarks), ``security/``, ``architecture/`` (the import
graph); ``slow/`` holds the long tier (``make test-all``). Shared helpers live in ``helpers.py``.
"""
import os
import sys
from pathlib import Path

import pytest

SLOW_FOLDER = Path(__file__).resolve().parent / "slow"

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")


@pytest.fixture(autouse=True)
def keras_seed():
    """Keras's global seed set to 0 before every test once Keras is imported, so the weights a
    test's layers build with, and AutoInit's draws without a configured seed (which come from
    Keras's seeding), are the same on every run."""
    if "keras" in sys.modules:
        sys.modules["keras"].utils.set_random_seed(0)


def pytest_collection_modifyitems(items):
    """Mark the tests of ``tests/slow/`` slow (``make test`` leaves that folder out)."""
    for item in items:
        if SLOW_FOLDER in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.slow)
