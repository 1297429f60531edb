"""Model-level quality of the attention and recurrent estimators (issue 4).

A small transformer (Embedding, then three blocks of MultiHeadAttention, Add,
LayerNormalization and an EinsumDense feed-forward) and a text model (Conv1D,
SpatialDropout1D, MaxPooling1D, LSTM, Bidirectional GRU, SimpleRNN) are initialized
by AutoInit; Gaussian noise goes through them in training mode and, per layer call,
|log(measured var / predicted var)| must have median <= 0.15 and 90th percentile
<= 0.4, with no unsupported-layer warning. The text model is measured over several
independent draws pooled into one sample set (see :func:`log_errors`).
"""
import logging
import math

import keras
import numpy as np
import pytest
from keras import layers

from autoinit_sym import AutoInit
from autoinit_sym.measure import measure

VOCAB, LENGTH, WIDTH = 20000, 32, 64
TOKEN_MEAN, TOKEN_VAR = 10000.0, 1500.0**2  # token ids ~ N(10^4, 1500^2), rounded: few repeats, inside the vocabulary


def transformer(blocks: int = 3) -> keras.Model:
    tokens = keras.Input((LENGTH,), dtype="int32")
    x = layers.Embedding(VOCAB, WIDTH)(tokens)
    for block in range(blocks):
        attended = layers.MultiHeadAttention(num_heads=4, key_dim=WIDTH // 4, dropout=0.1,
                                             name=f"multi_head_attention_{block}")(x, x)
        x = layers.LayerNormalization()(layers.Add()([x, attended]))
        hidden = layers.EinsumDense("btd,dh->bth", output_shape=(LENGTH, 4 * WIDTH), bias_axes="h",
                                    activation="gelu")(x)
        hidden = layers.EinsumDense("bth,hd->btd", output_shape=(LENGTH, WIDTH), bias_axes="d")(hidden)
        x = layers.LayerNormalization()(layers.Add()([x, hidden]))
    return keras.Model(tokens, layers.Dense(2)(layers.GlobalAveragePooling1D()(x)))


def pre_norm_transformer(blocks: int = 4) -> keras.Model:
    """The pre-LN variant: x + MHA(LN(x)), x + FFN(LN(x)); the residual stream grows."""
    tokens = keras.Input((LENGTH,), dtype="int32")
    x = layers.Embedding(VOCAB, WIDTH)(tokens)
    for block in range(blocks):
        normed = layers.LayerNormalization()(x)
        attention = layers.MultiHeadAttention(4, WIDTH // 4, name=f"multi_head_attention_{block}")
        x = layers.Add()([x, attention(normed, normed)])
        normed = layers.LayerNormalization()(x)
        hidden = layers.Dense(4 * WIDTH, activation="relu")(normed)
        x = layers.Add()([x, layers.Dense(WIDTH)(hidden)])
    return keras.Model(tokens, layers.Dense(2)(layers.GlobalAveragePooling1D()(x)))


def text_model() -> keras.Model:
    """Named layers (the wrapped GRU too: its copies are named forward_/backward_ + its name),
    so AutoInit's name-derived seeds do not depend on what the process built before."""
    inputs = keras.Input((LENGTH, 16))
    x = layers.Conv1D(32, 5, padding="same", activation="relu", name="conv1d")(inputs)
    x = layers.SpatialDropout1D(0.2, name="spatial_dropout1d")(x)
    x = layers.MaxPooling1D(2, name="max_pooling1d")(x)
    x = layers.LSTM(32, return_sequences=True, name="lstm")(x)
    x = layers.Bidirectional(layers.GRU(16, return_sequences=True, name="gru"), name="bidirectional")(x)
    x = layers.SimpleRNN(16, name="simple_rnn")(x)
    return keras.Model(inputs, layers.Dense(1, activation="sigmoid", name="head")(x))


def initialize_and_measure(model, input_mean, input_var, samples=128, seed=0):
    """AutoInit with weight seed ``seed`` (its weight draws are seeded by it and the layer
    name; the attention layers are named, the rest are normalized or redrawn), then
    measurement in training mode on noise seed ``seed + 1``."""
    model, estimates = AutoInit(input_data_mean=input_mean, input_data_var=input_var,
                                weight_init_config={"seed": seed}
                                ).initialize_model(model, return_estimates=True)
    measured = measure(model, input_mean, input_var, samples=samples, seed=seed + 1, batch_size=samples)
    return estimates, measured


def pooled_variance(pairs: list[tuple[float, float]]) -> float:
    """Variance of the union of equal-sized sample sets with these (mean, var): the mean of
    the variances plus the variance of the means."""
    means, variances = np.array(pairs, dtype=float).T
    return float(variances.mean() + means.var())


def log_errors(runs: list[tuple[dict, dict]]) -> dict[str, float]:
    """|log(measured var / predicted var)| per single-output layer call, each side pooled over
    the (estimates, measured) runs of independent draws (one run: that draw's own figures).

    The prediction is the expectation over the weight draw of the variance pooled over units
    and samples. One draw sees w.mu + b, each unit's offset (mu: the per-unit means of its
    input), as a fixed mean: a layer with few units hides that part of its variance, which
    only pooling draws shows, and its few effective degrees of freedom scatter it widely. The
    Dense(1) head of the text model reads 16 SimpleRNN features whose per-unit offsets hold
    35-60% of their variance: with the upstream weights fixed, one head draw measures -0.5 to
    -1.1 in log on average (standard deviation 0.4-0.6) and 2000 head draws pooled -0.02 to
    +0.06, for four upstream draws."""
    pairs: dict[str, tuple[list, list]] = {}
    for estimates, measured in runs:
        for key, estimate in estimates.items():
            if key in measured and not isinstance(estimate.var, tuple):
                predicted, observed = pairs.setdefault(key, ([], []))
                predicted.append((estimate.mean, estimate.var))
                observed.append(measured[key])
    errors = {}
    for key, (predicted, observed) in pairs.items():
        pred, meas = pooled_variance(predicted), pooled_variance(observed)
        if len(predicted) == len(runs) and pred > 0 and meas > 0:
            errors[key] = abs(math.log(meas / pred))
    return errors


def assert_quality(errors: dict[str, float]) -> None:
    values = np.array(list(errors.values()))
    worst = sorted(errors.items(), key=lambda kv: -kv[1])[:5]
    assert len(values) >= 5
    assert np.median(values) <= 0.15 and np.quantile(values, 0.9) <= 0.4, (
        f"median {np.median(values):.3f}, p90 {np.quantile(values, 0.9):.3f}; worst {worst}")


def attention_keys(estimates):
    return [k for k in estimates if k.startswith("multi_head_attention")]


@pytest.fixture(scope="module")
def transformer_run():
    return initialize_and_measure(transformer(), TOKEN_MEAN, TOKEN_VAR)


def test_transformer_quality(transformer_run):
    assert_quality(log_errors([transformer_run]))


def test_transformer_attention_output_variance(transformer_run):
    estimates, measured = transformer_run
    keys = attention_keys(estimates)
    assert len(keys) == 3
    for key in keys:
        assert 0.75 <= measured[key][1] <= 1.33, (key, measured[key])


TEXT_DRAWS = 16
"""Independent initializations of the text model pooled by the quality test."""
TEXT_MAX_ERROR = 0.6
"""Bound on every pooled layer call of the text model: with seven calls the p90 figure
would pass one layer off by 2x (0.69); the pooled head, the widest, reached 0.35 over 16
sets of 16 draws (0.43 over 24 sets of 8)."""


@pytest.fixture(scope="module")
def text_runs():
    """(estimates, measured) of TEXT_DRAWS draws of the text model, and every log message.
    Draw d builds the model under keras.utils.set_random_seed(d) (the weights AutoInit keeps:
    recurrent kernels, biases), initializes it with AutoInit seed d and measures it."""
    logger = logging.getLogger()
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger.addHandler(handler)
    runs = []
    try:
        for draw in range(TEXT_DRAWS):
            keras.utils.set_random_seed(draw)
            runs.append(initialize_and_measure(text_model(), 0.0, 1.0, samples=512, seed=draw))
    finally:
        logger.removeHandler(handler)
    return runs, [r.getMessage() for r in records]


def test_pre_norm_transformer():
    estimates, measured = initialize_and_measure(pre_norm_transformer(), TOKEN_MEAN, TOKEN_VAR)
    assert_quality(log_errors([(estimates, measured)]))
    keys = attention_keys(estimates)
    assert len(keys) == 4
    for key in keys:
        assert 0.75 <= measured[key][1] <= 1.33, (key, measured[key])


def test_text_model_recurrent_layers_track_measurement(text_runs):
    """Each draw on its own: the Monte Carlo runs through that draw's recurrent weights, so
    its prediction is for that draw (at most 0.06 over 448 draws, 512 noise samples each)."""
    runs, _ = text_runs
    for run in runs:
        errors = log_errors([run])
        recurrent = {k: e for k, e in errors.items() if k.split("_")[0] in ("lstm", "bidirectional", "simple")}
        assert len(recurrent) == 3, errors
        assert max(recurrent.values()) <= 0.1, recurrent


def test_text_model_quality(text_runs):
    """All layer calls, pooled over the draws. These 16: median 0.002, p90 0.047, head 0.107;
    16 sets of 16 draws (these included): median <= 0.017, p90 <= 0.144, every call but the
    head <= 0.02. Unpooled, 6 of these 16 draws fail the figures (head -1.87 to +0.21)."""
    runs, messages = text_runs
    assert not any("No LayerOutputDistributionEstimator" in m for m in messages)
    errors = log_errors(runs)
    assert len(errors) == 7, errors
    assert_quality(errors)
    assert max(errors.values()) <= TEXT_MAX_ERROR, errors


def test_transformer_no_unsupported_warning(caplog):
    with caplog.at_level(logging.WARNING):
        AutoInit().initialize_model(transformer(blocks=1))
    assert "No LayerOutputDistributionEstimator" not in caplog.text
