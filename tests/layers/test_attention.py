"""Attention estimators: Gaussian noise through the real initialized layer (training mode).

Projection layers (MultiHeadAttention, GroupQueryAttention) must come out at
signal_variance; Attention and AdditiveAttention predictions must track measurement.
Narrow, unit, wide and off-centre inputs; single weight draws unless stated.
"""
import math

import keras
import numpy as np
import pytest

from autoinit_sym.estimators import attention
from autoinit_sym.estimators.attention_weights import causal_square_sum, masked_weights, square_sum
from autoinit_sym.estimators.base import EstimationContext, WeightInitConfig
from autoinit_sym.estimators.registry import lookup
from autoinit_sym.statistics.state import TensorState
from autoinit_sym.walk.weights import write_pending
from helpers import propagated

T, F, BATCH = 24, 32, 128


def run(layer, inputs=2, mean=0.0, var=1.0, seed=0, call_kwargs=None, separate_key=False):
    """Initialize ``layer`` on (mean, var) inputs; return (prediction, measured outputs).

    ``inputs`` tensors: query and value (value is also the key), plus a distinct key
    when ``separate_key``."""
    call_kwargs = call_kwargs or {}
    projected = isinstance(layer, (keras.layers.MultiHeadAttention, keras.layers.GroupQueryAttention))
    symbolic = [keras.Input((T, F)) for _ in range(inputs + separate_key)]
    outputs = layer(*symbolic, **call_kwargs) if projected else layer(symbolic, **call_kwargs)
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    context = EstimationContext(config=WeightInitConfig(seed=seed))
    estimator = lookup(layer)(layer, context, [(None, T, F)] * len(symbolic),
                              [tuple(o.shape) for o in outputs], layer._inbound_nodes[0])
    prediction = propagated(estimator, [mean] * len(symbolic), [var] * len(symbolic))
    write_pending(context.pending.values(), "truncated_normal", False, context.seed_for)
    rng = np.random.default_rng(seed + 100)
    xs = [rng.normal(mean, math.sqrt(var), (BATCH, T, F)).astype("float32") for _ in symbolic]
    result = layer(*xs, training=True, **call_kwargs) if projected else layer(xs, training=True, **call_kwargs)
    result = result if isinstance(result, (list, tuple)) else [result]
    return prediction, [keras.ops.convert_to_numpy(r).astype(np.float64) for r in result], estimator, context


INPUTS = [(0.0, 0.01), (0.0, 1.0), (0.0, 25.0)]


@pytest.mark.parametrize("mean, var", INPUTS)
@pytest.mark.parametrize("make", [
    lambda: keras.layers.MultiHeadAttention(4, 16),
    lambda: keras.layers.MultiHeadAttention(4, 16, dropout=0.2),
    lambda: keras.layers.MultiHeadAttention(4, 8, value_dim=8 if keras.backend.backend() == "jax" else 12,
                                            use_gate=True),  # Keras on JAX fails to reshape a gate of value_dim != key_dim
    lambda: keras.layers.GroupQueryAttention(head_dim=16, num_query_heads=4, num_key_value_heads=2),
], ids=["mha", "mha_dropout", "mha_gate", "gqa"])
def test_projected_attention_output_has_signal_variance(make, mean, var):
    (pred_mean, pred_var), [y], estimator, context = run(make(), mean=mean, var=var)
    assert pred_var == pytest.approx(1.0) and abs(pred_mean) < 1e-9
    assert len(context.pending) >= 4  # query, key, value and output kernels (and the gate)
    assert 0.8 <= y.var() <= 1.25
    assert abs(y.mean()) < 0.15


def test_projected_attention_off_centre_inputs_over_twelve_draws():
    """A non-zero input mean becomes per-channel offsets that every position shares, so a
    single draw varies a lot; the arithmetic mean over draws (the prediction is 1) reads
    0.83 +- 0.05 over 24 draws: the rule overestimates this case by about 17%."""
    measured = [run(keras.layers.MultiHeadAttention(4, 16), mean=3.0, var=0.5, seed=s)[1][0].var()
                for s in range(12)]
    assert 0.75 <= np.mean(measured) <= 1.33, measured


def test_separate_key_and_value():
    (_, pred_var), [y], _, _ = run(keras.layers.MultiHeadAttention(4, 16), inputs=2, separate_key=True)
    assert 0.8 <= y.var() / pred_var <= 1.25


def test_attention_scores_output():
    layer = keras.layers.MultiHeadAttention(4, 16)
    prediction, (y, scores), _, _ = run(layer, call_kwargs={"return_attention_scores": True})
    (out_mean, out_var), (score_mean, score_var) = prediction
    assert score_mean == pytest.approx(1.0 / T)
    assert scores.mean() == pytest.approx(1.0 / T, rel=1e-3)
    assert scores.var() == pytest.approx(score_var, rel=0.15)
    assert 0.8 <= y.var() / out_var <= 1.25


def test_causal_mask_uses_fewer_keys():
    prediction, [y], _, _ = run(keras.layers.MultiHeadAttention(4, 16), call_kwargs={"use_causal_mask": True})
    assert 0.8 <= y.var() / prediction[1] <= 1.25
    full, _ = square_sum(1.0, T)
    causal, _ = causal_square_sum(1.0, T)
    assert causal > full  # early queries average over few keys


def test_causal_interpolation_matches_every_key_count():
    exact = np.mean([square_sum(0.7, n)[0] for n in range(1, 25)])
    assert causal_square_sum(0.7, 24)[0] == pytest.approx(exact, rel=0.01)


@pytest.mark.parametrize("mean, var", INPUTS + [(1.0, 0.25)])
@pytest.mark.parametrize("make, inputs", [
    (lambda: keras.layers.Attention(), 2),
    (lambda: keras.layers.Attention(use_scale=True, dropout=0.2), 2),
    (lambda: keras.layers.Attention(score_mode="concat"), 2),
    (lambda: keras.layers.Attention(score_mode="concat", use_scale=True), 3),
    (lambda: keras.layers.AdditiveAttention(), 2),
    (lambda: keras.layers.AdditiveAttention(use_scale=False), 3),
], ids=["dot", "dot_scale_dropout", "concat", "concat_separate_key", "additive", "additive_no_scale"])
def test_unprojected_attention_tracks_measurement(make, inputs, mean, var):
    (pred_mean, pred_var), [y], _, _ = run(make(), inputs=inputs, mean=mean, var=var)
    assert y.mean() == pytest.approx(pred_mean, abs=0.1 * math.sqrt(pred_var) + 0.02)
    assert 0.8 <= y.var() / pred_var <= 1.25


def test_additive_scale_is_redrawn_for_unit_logits():
    layer = keras.layers.AdditiveAttention()
    _, _, _, context = run(layer, inputs=2)
    [pending] = context.pending.values()
    assert pending.variable is layer.scale and pending.attr is None
    q = np.random.default_rng(0).normal(0, 1, (BATCH, T, 1, F))
    k = np.random.default_rng(1).normal(0, 1, (BATCH, 1, T, F))
    scores = (keras.ops.convert_to_numpy(layer.scale) * np.tanh(q + k)).sum(-1)
    assert scores.var(axis=-1).mean() == pytest.approx(1.0, rel=0.25)


def test_estimates_are_reproducible():
    def stds(seed):
        layer = keras.layers.MultiHeadAttention(2, 8)
        _, _, _, context = run(layer, seed=seed)
        return sorted(round(p.stddev, 12) for p in context.pending.values())

    assert stds(0) == stds(0)


def test_position_sharing_through_residual_streams():
    """The walk carries the attention output's shared variance through residual sums,
    normalization and projections (the rules of estimators.base)."""
    from autoinit_sym import AutoInit

    x = keras.Input((T, F))
    attended = keras.layers.MultiHeadAttention(2, 8, name="mha")(x, x)
    post_norm = keras.layers.LayerNormalization(name="norm")(keras.layers.Add(name="add")([x, attended]))
    projected = keras.layers.Dense(F, name="projected")(post_norm)
    hidden = keras.layers.Dense(F, activation="relu", name="hidden")(post_norm)
    after_relu = keras.layers.Dense(F, name="after_relu")(hidden)
    model = keras.Model(x, [projected, after_relu])
    _, est = AutoInit().initialize_model(model, return_estimates=True)
    fraction = est["mha"].shared / est["mha"].var
    assert 0.0 < fraction < 1.0
    added = (est["mha"].shared) / (1.0 + est["mha"].var)
    assert est["add"].shared / est["add"].var == pytest.approx(added)
    assert est["norm"].shared / est["norm"].var == pytest.approx(added)
    assert est["projected"].shared == pytest.approx(added, rel=1e-6)
    # relu keeps less than the fraction it receives; its mean m becomes shared offsets m^2
    (m, v), kept = est["hidden"], est["hidden"].shared
    assert m == pytest.approx(1 / math.sqrt(2 * math.pi)) and kept < added * v
    assert est["after_relu"].shared == pytest.approx((m**2 + kept) / (m**2 + v))


@pytest.mark.parametrize("axes", [None, (2,), (1, 2)])
def test_multi_head_attention_over_several_axes(axes):
    layer = keras.layers.MultiHeadAttention(4, 16, attention_axes=axes)
    x = keras.Input((4, 6, F))
    layer(x, x)
    context = EstimationContext()
    estimator = lookup(layer)(layer, context, [(None, 4, 6, F)] * 2, [(None, 4, 6, F)],
                              layer._inbound_nodes[0])
    assert propagated(estimator, [0.0] * 2, [1.0] * 2) == pytest.approx((0.0, 1.0))
    write_pending(context.pending.values(), "truncated_normal", False, context.seed_for)
    xs = np.random.default_rng(0).normal(0, 1, (BATCH, 4, 6, F)).astype("float32")
    assert 0.8 <= keras.ops.convert_to_numpy(layer(xs, xs, training=True)).var() <= 1.25


@pytest.mark.parametrize("rho", [0.0, 0.3, 0.8])
def test_correlated_relu_matches_the_arc_cosine_kernel(rho):
    """Cov(relu(z_1), relu(z_2)) for unit Gaussians of correlation rho (the arc-cosine kernel)
    equals the activation rule's shared variance for shared = rho."""
    from autoinit_sym.statistics.activation import activation_shared

    theta = math.acos(rho)
    joint = (math.sin(theta) + (math.pi - theta) * math.cos(theta)) / (2 * math.pi)
    mean, var = 1 / math.sqrt(2 * math.pi), 0.5 - 1 / (2 * math.pi)
    assert activation_shared("relu", 0.0, 1.0, rho, var) == pytest.approx(joint - mean**2, abs=2e-4)


def test_cached_attention_with_a_causal_mask_tensor():
    """keras_hub's decoders pass query and value by name and a causal mask as a tensor (the minimum
    of an all-ones padding mask and a lower triangle): the rule binds the arguments by name and reads
    the mask's allowed fraction (T + 1) / 2T as causal. Measured over 8 draws; without the mask read
    as causal the prediction was 3.5 times too low at T = 32 in GPT2's first block."""
    from autoinit_sym import AutoInit
    from keras_hub.layers import CachedMultiHeadAttention

    x = keras.Input((T, F), name="x")
    padding = keras.Input((T,), dtype="int32", name="padding_mask")
    mask = keras.ops.minimum(keras.ops.expand_dims(padding, 1), np.tril(np.ones((T, T), "int32")))
    out = CachedMultiHeadAttention(4, 16, name="attention")(query=x, value=x, attention_mask=mask)
    model = keras.Model([x, padding], out)
    ratios = []
    for seed in range(8):
        _, estimates = AutoInit(weight_init_config={"seed": seed}).initialize_model(model, return_estimates=True)
        rng = np.random.default_rng(seed)
        y = np.asarray(keras.ops.convert_to_numpy(model([rng.normal(0.0, 1.0, (BATCH, T, F)).astype("float32"),
                                                         np.ones((BATCH, T), "int32")], training=True)),
                       dtype=np.float64)
        ratios.append(y.var() / estimates["attention"].var)
    assert 0.85 <= np.mean(ratios) <= 1.15, ratios


def test_call_roles_bind_arguments_by_name():
    layer = keras.layers.MultiHeadAttention(2, 8)
    q, v, k = (keras.Input((T, F)) for _ in range(3))
    layer(value=v, query=q, key=k)
    roles = attention.call_roles(layer, layer._inbound_nodes[0], 3)
    tensors = layer._inbound_nodes[0].arguments.keras_tensors
    assert [tensors[roles[r]] for r in ("query", "value", "key")] == [q, v, k]


@pytest.mark.parametrize("mean, var", [(0.0, 1.0), (0.5, 2.0), (0.0, 0.05)])
@pytest.mark.parametrize("causal, masked, shared_value", [(False, False, False), (True, False, False),
                                                           (False, True, False), (False, False, True)])
def test_dot_product_attention_op_matches_noise(causal, masked, shared_value, mean, var):
    """ops.dot_product_attention on Gaussian query/key/value (the value the key when ``shared_value``),
    plain, causal, or under a 0/1 causal mask tensor."""
    shape = (T, 2, 16)
    q, k, v = (keras.Input(shape) for _ in range(3))
    padding = keras.Input((T,), dtype="int32")
    mask = keras.ops.minimum(keras.ops.expand_dims(padding, 1), np.tril(np.ones((T, T), "int32")))
    mask = keras.ops.cast(mask[:, None], "bool")
    value = k if shared_value else v
    out = keras.ops.dot_product_attention(q, k, value, mask=mask if masked else None, is_causal=causal)
    model = keras.Model([q, k, v, padding], out)
    op = out._keras_history.operation
    node = op._inbound_nodes[0]
    stats = {id(t): (mean, var) for t in (q, k, v)}
    mask_rate = (T + 1) / (2 * T)
    records = [stats.get(id(t), (mask_rate, mask_rate * (1 - mask_rate))) for t in node.arguments.keras_tensors]
    estimator = lookup(op)(op, EstimationContext(), [tuple(t.shape) for t in node.arguments.keras_tensors],
                           [tuple(out.shape)], node)
    pred_mean, pred_var = propagated(estimator, [m for m, _ in records], [s for _, s in records])
    rng = np.random.default_rng(5)
    data = [rng.normal(mean, math.sqrt(var), (BATCH, *shape)).astype("float32") for _ in range(3)]
    y = np.asarray(keras.ops.convert_to_numpy(model(data + [np.ones((BATCH, T), "int32")])), dtype=np.float64)
    assert abs(y.mean() - pred_mean) <= 0.05 * math.sqrt(y.var()) + 1e-6, (y.mean(), pred_mean)
    assert abs(math.log(y.var() / pred_var)) <= 0.1, (y.var(), pred_var)


@pytest.mark.parametrize("causal", [True, False])
def test_masked_softmax_weights_match_noise(causal):
    """Softmax weights over n keys of Gaussian logits under a 0/1 mask (causal, or a window of n/2
    keys per query): mean 1/n and E[a^2] = E[sum a^2] / n over all elements, masked zeros included."""
    n, logit_var = T, 1.5
    allowed = np.tril(np.ones((n, n))) if causal else (np.arange(n)[None, :] < n // 2) * np.ones((n, 1))
    f = allowed.mean()
    mean, var, _ = masked_weights(logit_var, n, TensorState(f, f * (1 - f)))
    logits = np.random.default_rng(6).normal(0.0, math.sqrt(logit_var), (4000, n, n))
    weights = np.where(allowed > 0, np.exp(logits), 0.0)
    weights /= weights.sum(-1, keepdims=True)
    assert mean == pytest.approx(weights.mean(), rel=1e-6)
    assert var == pytest.approx(weights.var(), rel=0.03)
    assert masked_weights(logit_var, n, TensorState(1.0, 0.0)) is None  # nothing hidden
