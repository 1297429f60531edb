"""keras_hub layer rules (estimators/keras_hub.py, core.ReversibleEmbeddingEstimator) against the real
initialized layers: embeddings on uniform random token ids, normalizations and the rotary embedding
on Gaussian noise (narrow, wide and off-centre), averaged over independently seeded draws."""
import math
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

keras_hub = pytest.importorskip("keras_hub")

from autoinit_sym import AutoInit  # noqa: E402
from autoinit_sym.estimators.base import EstimationContext  # noqa: E402
from autoinit_sym.estimators.registry import lookup  # noqa: E402
from helpers import propagated  # noqa: E402

V, S, D = 200, 12, 32
DRAWS = range(8)
INPUTS = [(0.0, 1.0), (5.0, 0.01), (-3.0, 25.0)]


def averaged(model, outputs, seeds=DRAWS, rows=64, **settings):
    """Per named output: AutoInit's prediction (mean, var) and the mean over draws of the measured
    (mean, var), each draw a fresh weight draw fed fresh uniform token ids."""
    probe = keras.Model(model.inputs, [model.get_layer(n).output for n in outputs])
    measured = []
    for seed in seeds:
        _, estimates = AutoInit(weight_init_config={"seed": seed}, **settings).initialize_model(
            model, return_estimates=True)
        rng = np.random.default_rng(seed)
        data = [rng.integers(0, V if "token" in t.name else 2, (rows, S)).astype("int32") for t in model.inputs]
        values = probe(data if len(data) > 1 else data[0])
        values = values if isinstance(values, (list, tuple)) else [values]
        measured.append([(float(np.mean(v)), float(np.var(v))) for v in map(keras.ops.convert_to_numpy, values)])
    predicted = {n: (estimates[n].mean, estimates[n].var) for n in outputs}
    means = {n: tuple(np.mean([m[i] for m in measured], axis=0)) for i, n in enumerate(outputs)}
    return predicted, means


def numpy(tensor):
    """A backend tensor as float64 NumPy."""
    return np.asarray(keras.ops.convert_to_numpy(tensor), dtype=float)


def assert_tracks(predicted, measured, tol=0.06, mean_tol=0.05):
    """Means within ``mean_tol`` standard deviations, variances within ``tol`` in log."""
    for name, (mean, var) in predicted.items():
        got_mean, got_var = measured[name]
        assert abs(got_mean - mean) <= mean_tol * math.sqrt(var), (name, got_mean, mean)
        assert abs(math.log(got_var / var)) <= tol, (name, got_var, var)


def token_inputs(*names):
    return [keras.Input((S,), dtype="int32", name=n) for n in names]


@pytest.mark.parametrize("signal_variance", [1.0, 2.5])
def test_embedding_sum_has_target_variance_in_equal_shares(signal_variance):
    """BERT's sum: token + position + segment embeddings, each drawn for a third of the target."""
    tokens, segments = token_inputs("token_ids", "segment_ids")
    token = keras_hub.layers.ReversibleEmbedding(V, D, tie_weights=False, name="token")(tokens)
    position = keras_hub.layers.PositionEmbedding(S, name="position")(token)
    segment = keras.layers.Embedding(2, D, name="segment")(segments)
    model = keras.Model([tokens, segments], keras.layers.Add(name="sum")([token, position, segment]))
    predicted, measured = averaged(model, ["token", "position", "segment", "sum"], signal_variance=signal_variance)
    for name in ("token", "position", "segment"):
        assert predicted[name][1] == pytest.approx(signal_variance / 3)
    assert predicted["sum"][1] == pytest.approx(signal_variance)
    # the segment table has 2 x 32 entries: its mean over 8 draws has a standard error of 0.044 sd
    assert_tracks(predicted, measured, mean_tol=0.15)


def tied_language_model(tie_weights=True, scale_by_root_d=False):
    """Token (+ position) embedding, a block, a final norm, and the same embedding reversed: logits."""
    tokens, = token_inputs("token_ids")
    embedding = keras_hub.layers.ReversibleEmbedding(V, D, tie_weights=tie_weights, name="token")
    x = embedding(tokens)
    if scale_by_root_d:  # Gemma
        x = keras.layers.Identity(name="scaled")(x * math.sqrt(D))
    else:  # GPT2
        x = keras.layers.Add(name="sum")([x, keras_hub.layers.PositionEmbedding(S, name="position")(x)])
    x = keras.layers.Dense(D, activation="gelu", name="block")(x)
    x = keras.layers.LayerNormalization(name="final_norm")(x)
    logits = keras.layers.Identity(name="logits")(embedding(x, reverse=True))
    return keras.Model(tokens, logits)


def test_tied_embedding_is_drawn_for_its_logits():
    """One variable in two roles: E ~ N(0, 1/d), so the logits h @ E^T of a normalized h have variance
    1 and the cross-entropy of random tokens is log V + 1/2 (was ~d/2 with N(0, 1) rows); the
    position embedding matches the token embedding's share."""
    model = tied_language_model()
    predicted, measured = averaged(model, ["token", "position", "sum", "final_norm", "logits"])
    assert predicted["token"][1] == pytest.approx(1.0 / D) and predicted["position"][1] == pytest.approx(1.0 / D)
    assert 0.9 < predicted["logits"][1] < 1.1
    assert_tracks(predicted, measured)
    logits = numpy(model(np.random.default_rng(9).integers(0, V, (64, S)).astype("int32")))
    targets = np.random.default_rng(10).integers(0, V, (64, S))
    log_norm = np.log(np.exp(logits).sum(-1))
    entropy = float(np.mean(log_norm - np.take_along_axis(logits, targets[..., None], -1)[..., 0]))
    assert abs(entropy / math.log(V) - 1) < 0.1


def test_root_d_scaling_restores_unit_variance():
    """Gemma multiplies the tied embedding by sqrt(d): the multiply op's rule brings 1/d back to 1."""
    predicted, measured = averaged(tied_language_model(scale_by_root_d=True), ["token", "scaled", "logits"])
    assert predicted["scaled"][1] == pytest.approx(1.0)
    assert_tracks(predicted, measured)


@pytest.mark.parametrize("signal_variance", [1.0, 2.0])
def test_untied_reverse_kernel_is_a_projection(signal_variance):
    predicted, measured = averaged(tied_language_model(tie_weights=False), ["token", "logits"],
                                   signal_variance=signal_variance)
    assert predicted["token"][1] == pytest.approx(signal_variance / 2)
    assert predicted["logits"][1] == pytest.approx(signal_variance)
    assert_tracks(predicted, measured)


@pytest.mark.parametrize("tie_weights", [False, True])
def test_token_and_position_embedding(tie_weights):
    tokens, = token_inputs("token_ids")
    x = keras_hub.layers.TokenAndPositionEmbedding(V, S, D, tie_weights=tie_weights, name="embed")(tokens)
    model = keras.Model(tokens, keras.layers.Dense(D, name="dense")(x))
    predicted, measured = averaged(model, ["embed", "dense"])
    assert predicted["embed"][1] == pytest.approx(2.0 / D if tie_weights else 1.0)
    assert_tracks(predicted, measured)


def rms_layers():
    from keras_hub.src.models.gemma.rms_normalization import RMSNormalization as GemmaRMS
    from keras_hub.src.models.llama.llama_layernorm import LlamaLayerNorm
    from keras_hub.src.models.qwen.qwen_layernorm import QwenLayerNorm
    from keras_hub.src.models.t5.t5_layer_norm import T5LayerNorm

    gemma = GemmaRMS(epsilon=1e-2)
    gemma.build((None, 16))
    gemma.scale.assign(np.linspace(-0.5, 1.0, 16))  # trained-looking offsets: 1 + scale
    return {"gemma": gemma, "llama": LlamaLayerNorm(), "qwen": QwenLayerNorm(epsilon=1e-3),
            "t5": T5LayerNorm(), "hub": keras_hub.layers.RMSNormalization(16)}


@pytest.mark.parametrize("mean,var", INPUTS + [(0.0, 1e-3)])
@pytest.mark.parametrize("name", ["gemma", "llama", "qwen", "t5", "hub"])
def test_rms_normalizations_match_noise(name, mean, var):
    layer = rms_layers()[name]
    x = np.random.default_rng(0).normal(mean, math.sqrt(var), (8192, 16)).astype("float32")
    y = numpy(layer(x))
    rule = lookup(layer)(layer, EstimationContext(), [(None, 16)], [(None, 16)])
    pred_mean, pred_var = propagated(rule, [mean], [var])
    assert abs(y.mean() - pred_mean) <= 0.03 * math.sqrt(pred_var) + 1e-6
    assert abs(math.log(y.var() / pred_var)) <= 0.03


@pytest.mark.parametrize("mean,var", INPUTS)
@pytest.mark.parametrize("settings", [{}, {"max_wavelength": 100, "start_index": 5},
                                      {"rope_type": "yarn", "scaling_factor": 4.0}])
def test_rotary_embedding_matches_noise(settings, mean, var):
    """A rotation of pairs: the second moment is kept, the mean follows the average cosine."""
    settings = dict(settings)
    start = settings.pop("start_index", 0)
    inputs = keras.Input((S, 2, 8))
    outputs = keras_hub.layers.RotaryEmbedding(**settings)(inputs, start_index=start)
    model = keras.Model(inputs, outputs)
    layer = model.layers[-1]
    x = np.random.default_rng(1).normal(mean, math.sqrt(var), (4096, S, 2, 8)).astype("float32")
    y = numpy(model(x))
    rule = lookup(layer)(layer, EstimationContext(), [(None, S, 2, 8)], [(None, S, 2, 8)], layer._inbound_nodes[0])
    pred_mean, pred_var = propagated(rule, [mean], [var])
    assert abs(y.mean() - pred_mean) <= 0.03 * math.sqrt(pred_var) + 1e-6, (y.mean(), pred_mean)
    assert abs(math.log(y.var() / pred_var)) <= 0.03, (y.var(), pred_var)


def test_keras_hub_family_waits_for_keras_hub():
    """AutoInit never imports keras_hub itself (2-6 s, TensorFlow with it): its rules are loaded on
    the first lookup after the user imported it."""
    code = ("import sys\n"
            "from autoinit_sym.estimators.registry import lookup, registered\n"
            "registered()\n"
            "assert 'keras_hub' not in sys.modules, 'keras_hub imported'\n"
            "import keras_hub\n"
            "layer = keras_hub.layers.PositionEmbedding(4)\n"
            "assert lookup(layer).__name__ == 'PositionEmbeddingEstimator', lookup(layer)\n")
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_untied_reverse_kernel_is_drawn_without_a_reverse_call():
    """A backbone alone (Llama's) holds the untied reverse kernel but never calls it: it is drawn for
    inputs of second moment signal_variance, so a later reverse call on normalized states reads
    logits of variance 1 (8 draws)."""
    tokens, = token_inputs("token_ids")
    embedding = keras_hub.layers.ReversibleEmbedding(V, D, tie_weights=False, name="token")
    model = keras.Model(tokens, keras.layers.LayerNormalization()(keras.layers.Dense(D)(embedding(tokens))))
    variances = []
    for seed in DRAWS:
        AutoInit(weight_init_config={"seed": seed}).initialize_model(model)
        h = model(np.random.default_rng(seed).integers(0, V, (64, S)).astype("int32"))
        variances.append(float(np.var(numpy(embedding(h, reverse=True)))))
    assert abs(math.log(np.mean(variances))) < 0.06, variances
