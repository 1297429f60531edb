"""Mixed precision (``mixed_float16``, ``mixed_bfloat16``) on every installed backend: the
estimates are float64 numbers and do not depend on the policy, each weight is written in its
variable's dtype with AutoInit's scale, and the global policy, the layers' dtype policies,
names and trainable flags are what they were. One process per backend."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import json
import numpy as np
import keras
from autoinit_sym import AutoInit


def model(frozen_dtype):
    inputs = keras.Input((128,), name="x")
    x = keras.layers.Dense(256, activation="relu", name="wide")(inputs)
    x = keras.layers.Dense(256, activation="tanh", name="frozen", dtype=frozen_dtype, trainable=False)(x)
    return keras.Model(inputs, keras.layers.Dense(64, name="head", dtype="float32")(x))


def describe(m):
    return {"policy": keras.config.dtype_policy().name,
            "layers": [[l.name, l.dtype_policy.name, l.trainable] for l in m.layers],
            "variables": [[v.path, str(v.dtype), bool(v.trainable)] for v in m.weights]}


def run(policy, narrow):
    keras.config.set_dtype_policy(policy)
    m = model(narrow)
    before = describe(m)
    m, estimates = AutoInit(weight_init_config={"seed": 1}).initialize_model(m, layers="all", return_estimates=True)
    stds = {p: s for e in estimates.values() for p, s in e.weights.items()}
    written = {v.path: [float(np.asarray(keras.ops.convert_to_numpy(v), dtype=np.float64).std()),
                        keras.backend.standardize_dtype(v.value.dtype)] for v in m.weights if v.path in stds}
    return {"before": before, "after": describe(m), "stds": stds,
            "std_types": sorted({type(s).__name__ for s in stds.values()}),
            "stat_types": sorted({type(x).__name__ for e in estimates.values() for x in tuple(e)
                                  if isinstance(x, (float, np.floating))}),
            "written": written}


out = {"float32": run("float32", "float32")}
for policy, narrow in (("mixed_float16", "float16"), ("mixed_bfloat16", "bfloat16")):
    out[policy] = run(policy, narrow)
print(json.dumps(out))
"""

BACKENDS = [b for b, module in (("tensorflow", "tensorflow"), ("jax", "jax"), ("torch", "torch"))
            if importlib.util.find_spec(module) is not None]


@pytest.mark.parametrize("backend", BACKENDS)
def test_mixed_precision_estimates_in_float64_weights_in_their_dtype_policies_kept(backend):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "KERAS_BACKEND": backend}
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    runs = json.loads(done.stdout.strip().splitlines()[-1])
    reference = runs.pop("float32")["stds"]
    for policy, found in runs.items():
        narrow = policy.split("_")[1]
        assert found["after"] == found["before"], policy
        assert found["after"]["policy"] == policy
        layers = {name: (dtype_policy, trainable) for name, dtype_policy, trainable in found["after"]["layers"]}
        assert layers["wide"] == (policy, True) and layers["frozen"] == (narrow, False)
        assert layers["head"] == ("float32", True)
        assert found["std_types"] == ["float"] and set(found["stat_types"]) <= {"float", "float64"}
        assert found["stds"] == pytest.approx(reference, rel=1e-9), policy  # float64 estimates, policy-free
        dtypes = {path: dtype for path, dtype, _ in found["after"]["variables"]}
        assert dtypes["wide/kernel"] == "float32" and dtypes["frozen/kernel"] == narrow
        for path, (std, dtype) in found["written"].items():
            assert dtype == dtypes[path], path
            assert std == pytest.approx(found["stds"][path], rel=0.05), (policy, path)
