"""Position-shared variance (the covariance between two positions of one channel, see
``estimators.base``): each rule checked against noise through the real layers.

A prediction is an expectation over weight draws; a single draw carries finitely many
per-channel offsets, so model checks take the geometric mean of the measured variance
over three draws (AutoInit seeds), as the issue-3 MLP figures do.
"""
import math

import keras
import numpy as np
import pytest
from keras import layers

from autoinit_sym import AutoInit
from autoinit_sym.statistics.activation import activation_shared
from autoinit_sym.statistics.state import TensorState, derived
from autoinit_sym.measure import measure

SEEDS = (0, 1, 2)


def measured_shared(y: np.ndarray) -> float:
    """Covariance between two distinct positions of one channel (same sample), over the
    whole tensor: (E[(sum_p d_p)^2] - E[sum_p d_p^2]) / (P (P - 1)), d = y - mean(y)."""
    d = keras.ops.convert_to_numpy(y).astype(np.float64)
    d = (d - d.mean()).reshape(d.shape[0], -1, d.shape[-1])
    positions = d.shape[1]
    total = (d.sum(axis=1) ** 2).mean() - (d ** 2).sum(axis=1).mean()
    return float(total / (positions * (positions - 1)))


def model_log_errors(build, input_mean: float, input_var: float, keys, samples: int = 64,
                     seeds=SEEDS) -> dict:
    """log(geometric mean over seeds of the measured var / predicted var) for ``keys``;
    the prediction is the same for every seed (it does not depend on the draw)."""
    logs: dict[str, list[float]] = {key: [] for key in keys}
    for seed in seeds:
        keras.backend.clear_session()
        model = build()
        model, est = AutoInit(input_data_mean=input_mean, input_data_var=input_var,
                              weight_init_config={"seed": seed}).initialize_model(model, return_estimates=True)
        measured = measure(model, input_mean, input_var, samples=samples, seed=seed, batch_size=samples)
        for key in keys:
            logs[key].append(math.log(measured[key][1] / est[key].var))
    return {key: float(np.mean(v)) for key, v in logs.items()}


@pytest.mark.parametrize("activation", ["tanh", "relu", "elu"])
@pytest.mark.parametrize("mean,var,shared", [(0.0, 1.0, 0.5), (2.0, 0.25, 0.2), (-1.0, 4.0, 0.4)])
def test_activation_shared_against_sampling(activation, mean, var, shared):
    """x = mean + a + e with a common to two positions: sampled Cov(f(x_1), f(x_2)) matches."""
    rng = np.random.default_rng(0)
    n = 400_000
    a = rng.normal(0.0, math.sqrt(shared), n)
    x1, x2 = (mean + a + rng.normal(0.0, math.sqrt(var - shared), n) for _ in range(2))
    f = getattr(keras.activations, activation)
    y1, y2 = (keras.ops.convert_to_numpy(f(x.astype("float32"))).astype(np.float64) for x in (x1, x2))
    predicted = activation_shared(activation, mean, var, shared, float(y1.var()))
    assert predicted == pytest.approx(np.cov(y1, y2)[0, 1], rel=0.03, abs=2e-3 * y1.var())


def test_activation_shared_limits():
    assert activation_shared("tanh", 0.3, 1.0, 0.0, 0.4) == 0.0
    assert activation_shared("tanh", 0.3, 1.0, 1.0, 0.4) == 0.4
    assert activation_shared(None, 0.3, 1.0, 0.6, 1.0) == 0.6
    assert derived([TensorState(0.0, 2.0, 1.0), TensorState(0.0, 2.0, 0.0)], 0.0, 8.0).shared == 2.0
    assert derived([TensorState(0.0, 1.0, 1.0)], 0.0, 3.0).shared == 3.0


def conv_gap(activation: str = "relu", channels: int = 128) -> keras.Model:
    """16 input channels: with a fan-in of only a few dozen, each channel's own weight norm
    gives ReLU outputs a per-channel mean of its own, an offset the rules do not model."""
    inputs = keras.Input((12, 12, 16))
    x = layers.Conv2D(channels, 3, padding="same", activation=activation, name="conv")(inputs)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, layers.Dense(256, name="head")(x))


@pytest.mark.parametrize("mean,var", [(2.0, 1.0), (5.0, 0.01), (0.0, 9.0)])
def test_conv_offsets_survive_global_average_pooling(mean, var):
    """An input mean becomes per-channel offsets that global average pooling keeps:
    Var = c + (v - c)/k, not v/k (narrow, far-off-centre and wide inputs). The pooled values
    are nearly constant per channel, so one draw measures only 128 channel offsets: five draws."""
    errors = model_log_errors(lambda: conv_gap(), mean, var, ["conv", "gap", "head"], seeds=range(5))
    assert all(abs(e) <= 0.2 for e in errors.values()), errors


def test_conv_shared_variance_measured_directly():
    """The weighted rule's shared variance sv (m^2 + c)/E[x^2] after ReLU, against the
    covariance between positions of the real layer's output (three draws of 64 channels)."""
    keras.backend.clear_session()
    inputs = keras.Input((10, 10, 3))
    conv = layers.Conv2D(64, 3, padding="same", activation="relu", name="conv")
    model = keras.Model(inputs, conv(inputs))
    found = []
    for seed in SEEDS:
        _, est = AutoInit(input_data_mean=1.0, input_data_var=1.0, weight_init_config={"seed": seed}
                          ).initialize_model(model, return_estimates=True)
        xs = np.random.default_rng(seed).normal(1.0, 1.0, (64, 10, 10, 3)).astype("float32")
        found.append(measured_shared(model(xs)))
    assert 0.2 < est["conv"].shared / est["conv"].var < 0.9
    assert np.mean(found) == pytest.approx(est["conv"].shared, rel=0.2)


def spatial_dropout_pool() -> keras.Model:
    inputs = keras.Input((32, 8))
    x = layers.Conv1D(64, 3, padding="same", activation="relu", name="conv")(inputs)
    x = layers.SpatialDropout1D(0.3, name="drop")(x)
    x = layers.MaxPooling1D(2, name="maxpool")(x)
    x = layers.GlobalAveragePooling1D(name="gap")(x)
    return keras.Model(inputs, x)


def test_spatial_dropout_then_max_pooling():
    """Spatial dropout masks whole channels: Cov = (c + m^2)/(1 - rate) - m^2; max pooling of
    the (scaled) ReLU outputs is the ReLU of the max, and global average pooling keeps the
    shared part."""
    errors = model_log_errors(spatial_dropout_pool, 0.5, 1.0, ["drop", "maxpool", "gap"])
    assert all(abs(e) <= 0.2 for e in errors.values()), errors


def concat_pool() -> keras.Model:
    a, b = keras.Input((16, 8), name="a"), keras.Input((16, 8), name="b")
    x = layers.Concatenate(name="concat")([a, b])
    return keras.Model([a, b], layers.GlobalAveragePooling1D(name="gap")(x))


def test_concatenated_means_become_channel_offsets():
    """Channels from inputs with different means: their means are offsets shared by all
    positions, sum w_i (c_i + m_i^2) - mean^2, which average pooling keeps (exact, no weights)."""
    keras.backend.clear_session()
    model = concat_pool()
    means, variances = {"a": -1.0, "b": 3.0}, {"a": 1.0, "b": 0.5}
    _, est = AutoInit(input_data_mean=means, input_data_var=variances).initialize_model(model, return_estimates=True)
    measured = measure(model, means, variances, samples=512, batch_size=512)
    assert est["concat"].shared == pytest.approx(4.0)
    assert est["gap"].var == pytest.approx(measured["gap"][1], rel=0.05)


def test_batch_normalization_removes_offsets():
    """BatchNormalization (training mode) subtracts each channel's batch mean: after it the
    offsets are gone, and global average pooling averages the rest down."""
    def build():
        inputs = keras.Input((12, 12, 3))
        x = layers.Conv2D(32, 3, padding="same", activation="relu", name="conv")(inputs)
        x = layers.BatchNormalization(name="bn")(x)
        return keras.Model(inputs, layers.GlobalAveragePooling2D(name="gap")(x))

    errors = model_log_errors(build, 1.0, 1.0, ["bn", "gap"])
    assert all(abs(e) <= 0.25 for e in errors.values()), errors


def test_residual_sum_and_zero_padding():
    """Add sums the branches' shared parts; zero padding dilutes them by (kept fraction)^2."""
    def build():
        inputs = keras.Input((12, 12, 16))
        x = layers.Conv2D(128, 3, padding="same", activation="relu", name="conv1")(inputs)
        y = layers.Conv2D(128, 3, padding="same", activation="relu", name="conv2")(x)
        x = layers.Add(name="add")([x, y])
        pooled = layers.AveragePooling2D(2, name="pool")(x)
        padded = layers.GlobalAveragePooling2D(name="gap")(layers.ZeroPadding2D(2, name="pad")(x))
        return keras.Model(inputs, [pooled, padded])

    errors = model_log_errors(build, 0.5, 1.0, ["add", "pool", "pad", "gap"])
    assert all(abs(e) <= 0.2 for e in errors.values()), errors


def test_gate_broadcast_over_positions():
    """A per-sample gate of shape (1, 1, C) multiplies every position alike (squeeze and
    excitation): the product shares E[g^2] c + m^2 Var(g), which global pooling keeps."""
    def build():
        inputs = keras.Input((12, 12, 16))
        x = layers.Conv2D(128, 3, padding="same", activation="relu", name="conv")(inputs)
        gate = layers.GlobalAveragePooling2D(keepdims=True, name="squeeze")(inputs)
        gate = layers.Conv2D(128, 1, activation="sigmoid", name="excite")(gate)
        x = layers.Multiply(name="gated")([x, gate])
        return keras.Model(inputs, layers.GlobalAveragePooling2D(name="gap")(x))

    errors = model_log_errors(build, 0.0, 1.0, ["gated", "gap"])
    assert all(abs(e) <= 0.2 for e in errors.values()), errors


@pytest.mark.parametrize("gate,pool_limit", [("spatial_dropout", 0.25), ("squeeze_excitation", 0.08)])
def test_per_sample_sharing_survives_batch_normalization(gate, pool_limit):
    """Batch normalization subtracts per-channel offsets fixed by the draw but keeps what a
    spatial-dropout mask or a squeeze-and-excitation gate shares per sample: the global pool
    after it sees that part undiminished. Before the walk told the two apart the pool read
    +3.87 (spatial dropout) and +0.14 (gate) in log variance; now +0.16 and +0.02."""
    def build():
        inputs = keras.Input((16, 16, 8))
        x = layers.Conv2D(64, 3, padding="same", activation="relu", name="conv")(inputs)
        if gate == "spatial_dropout":
            x = layers.SpatialDropout2D(0.5, name="gated")(x)
        else:
            g = layers.GlobalAveragePooling2D(keepdims=True, name="squeeze")(x)
            g = layers.Conv2D(64, 1, activation="sigmoid", name="excite")(layers.Conv2D(16, 1, activation="relu")(g))
            x = layers.Multiply(name="gated")([x, g])
        x = layers.BatchNormalization(name="bn")(layers.Conv2D(64, 1, name="mix")(x))
        return keras.Model(inputs, layers.GlobalAveragePooling2D(name="gap")(x))

    errors = model_log_errors(build, 0.0, 1.0, ["gated", "bn", "gap"], samples=128)
    assert abs(errors["gap"]) <= pool_limit and abs(errors["gated"]) <= 0.2 and abs(errors["bn"]) <= 0.05, errors
    keras.backend.clear_session()
    model, est = AutoInit().initialize_model(build(), return_estimates=True)
    assert 0 < est["bn"].sample_shared_out[0] <= est["bn"].shared
    assert est["gap"].sample_shared_out[0] == 0.0  # no positions left to share


def test_relu_op_then_max_pooling():
    """keras.ops.relu in a functional graph: the same shared variance and max-pooling rule as the
    ReLU layer (offsets from a non-zero input mean, pooled as ReLU of the max)."""
    def build():
        inputs = keras.Input((16, 16, 16))
        x = layers.Conv2D(128, 3, padding="same", name="conv")(inputs)
        x = layers.MaxPooling2D(2, name="maxpool")(keras.ops.relu(x))
        return keras.Model(inputs, layers.GlobalAveragePooling2D(name="gap")(x))

    errors = model_log_errors(build, 1.0, 1.0, ["maxpool", "gap"])
    assert all(abs(e) <= 0.2 for e in errors.values()), errors


def test_walk_records_shared_and_keeps_reference_estimators_working():
    """A reference-style estimator (estimate -> (mean, var) only) gets the carry policies; a rule
    that returns the wrong number of records is rejected with a clear error."""
    from helpers import Doubling, DoublingEstimator

    class BadEstimator(DoublingEstimator):
        def propagate(self, inputs):
            return [inputs[0], inputs[0]]

    keras.backend.clear_session()
    inputs = keras.Input((8, 4))
    x = layers.Dense(4, name="dense")(inputs)
    model = keras.Model(inputs, Doubling(name="double")(x))
    _, est = AutoInit(input_data_mean=1.0, custom_distribution_estimators={Doubling: DoublingEstimator}
                      ).initialize_model(model, return_estimates=True)
    assert est["dense"].shared_in == [0.0] and est["dense"].shared == pytest.approx(0.5)
    assert est["double"].shared_in == [pytest.approx(0.5)] and est["double"].shared == pytest.approx(2.0)
    with pytest.raises(ValueError, match="expected 1 TensorState record"):
        AutoInit(custom_distribution_estimators={Doubling: BadEstimator}).initialize_model(model)


@pytest.mark.parametrize("activation,rate", [("tanh", 0.0), ("relu", 0.25), ("elu", 0.0)])
def test_max_of_activation_against_sampling(activation, rate):
    """s f(max of k z_i), z_i = m + a + e_i sharing a, s a per-channel dropout factor: mean, var,
    and the covariance of two windows (same a and s), against direct sampling; k = 2 and 4 mixed."""
    import dataclasses

    from autoinit_sym.statistics.activation import activation_output
    from autoinit_sym.estimators.pooling import max_of_activation_moments

    mean, var, shared, n = 0.3, 1.5, 0.5, 400_000
    origin = dataclasses.replace(activation_output(activation, mean, var, shared),
                                 scale_second=1.0 / (1.0 - rate))
    rng = np.random.default_rng(1)
    f = {"tanh": np.tanh, "relu": lambda x: np.maximum(x, 0.0),
         "elu": lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0.0)))}[activation]
    a = rng.normal(0.0, math.sqrt(shared), n)
    scale = (rng.random(n) >= rate) / (1.0 - rate)
    windows = []
    for _ in range(2):  # two windows, each of 2 or 4 elements
        sizes = rng.choice([2, 4], n)
        e = rng.normal(0.0, math.sqrt(var - shared), (n, 4))
        e[sizes == 2, 2:] = -np.inf
        windows.append(scale * f(mean + a + e.max(axis=1)))
    got = max_of_activation_moments(origin, np.array([2, 4]), np.array([0.5, 0.5]))
    y1, y2 = windows
    assert got[0] == pytest.approx(y1.mean(), abs=0.01 * y1.std())
    assert got[1] == pytest.approx(y1.var(), rel=0.02)
    assert got[2] == pytest.approx(np.cov(y1, y2)[0, 1], rel=0.05, abs=0.01 * y1.var())
