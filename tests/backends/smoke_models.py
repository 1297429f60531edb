"""The backend smoke tier's models: a dozen small Keras models, one per family of layers AutoInit
serves, built the same way on every backend (``MODELS``: name -> builder). ``DETERMINISTIC`` names
those whose initialization involves no sampling through Keras (no recurrent Monte Carlo, no
correlated max) and no backend-specific windows (``cnn_bn_pool``'s uneven average pool differs on
torch): their weights depend on the seed alone, so every backend draws them bit-identically."""
from __future__ import annotations

import hashlib
from typing import Any, Callable

import keras
from keras import layers


def mlp() -> Any:
    inputs = keras.Input((24,))
    x = inputs
    for width in (48, 48, 32, 32):
        x = layers.Dense(width, activation="relu")(x)
    return keras.Model(inputs, layers.Dense(16)(x), name="mlp")


def cnn_bn_pool() -> Any:
    """Conv-BN-ReLU blocks, an average pool with uneven 'same' padding (torch's own windows) and a max pool."""
    inputs = keras.Input((16, 16, 3))
    x = inputs
    for filters, pool in ((16, layers.AveragePooling2D(3, strides=2, padding="same")), (24, layers.MaxPooling2D(2))):
        x = layers.Conv2D(filters, 3, padding="same")(x)
        x = layers.BatchNormalization()(x)
        x = layers.Activation("relu")(x)
        x = pool(x)
    x = layers.Flatten()(x)
    return keras.Model(inputs, layers.Dense(16)(x), name="cnn_bn_pool")


def residual() -> Any:
    inputs = keras.Input((12, 12, 16))
    x = inputs
    for _ in range(2):
        y = layers.Conv2D(16, 3, padding="same")(x)
        y = layers.BatchNormalization()(y)
        y = layers.Activation("relu")(y)
        y = layers.Conv2D(16, 3, padding="same")(y)
        y = layers.BatchNormalization()(y)
        x = layers.Activation("relu")(layers.Add()([x, y]))
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(16)(x), name="residual")


def depthwise_separable() -> Any:
    inputs = keras.Input((12, 12, 8))
    x = layers.Conv2D(32, 3, padding="same", activation="relu")(inputs)
    x = layers.DepthwiseConv2D(3, padding="same")(x)
    x = layers.BatchNormalization()(x)
    x = layers.Activation("relu")(x)
    x = layers.SeparableConv2D(32, 3, padding="same", activation="relu")(x)
    x = layers.Conv2D(32, 1, activation="relu")(x)
    x = layers.Flatten()(x)
    return keras.Model(inputs, layers.Dense(16)(x), name="depthwise_separable")


def recurrent(kind: str) -> Callable[[], Any]:
    def build() -> Any:
        cell = getattr(layers, kind)
        inputs = keras.Input((10, 8))
        x = layers.Dense(16)(inputs)
        x = cell(16, return_sequences=True)(x)
        x = cell(16)(x)
        x = layers.Dense(32, activation="tanh")(x)
        return keras.Model(inputs, layers.Dense(16)(x), name=kind.lower())
    return build


def bidirectional() -> Any:
    inputs = keras.Input((10, 8))
    x = layers.Dense(16)(inputs)
    x = layers.Bidirectional(layers.LSTM(12, return_sequences=True))(x)
    x = layers.Bidirectional(layers.GRU(12), merge_mode="sum")(x)
    x = layers.Dense(32, activation="relu")(x)
    return keras.Model(inputs, layers.Dense(16)(x), name="bidirectional")


def transformer_block() -> Any:
    inputs = keras.Input((12, 32))
    x = layers.Dense(32)(inputs)
    attended = layers.MultiHeadAttention(num_heads=4, key_dim=8)(x, x)
    x = layers.LayerNormalization()(layers.Add()([x, attended]))
    y = layers.Dense(64, activation="gelu")(x)
    y = layers.Dense(32)(y)
    x = layers.LayerNormalization()(layers.Add()([x, y]))
    return keras.Model(inputs, layers.Dense(8)(x), name="transformer_block")


def embedding_pool() -> Any:
    inputs = keras.Input((20,), dtype="int32")
    x = layers.Embedding(200, 16)(inputs)
    x = layers.Dense(32, activation="relu")(x)
    x = layers.GlobalAveragePooling1D()(x)
    x = layers.Dense(32, activation="relu")(x)
    return keras.Model(inputs, layers.Dense(16)(x), name="embedding_pool")


def mixed_merges() -> Any:
    inputs = keras.Input((16,))
    a = layers.Dense(16, activation="relu")(inputs)
    b = layers.Dense(16, activation="tanh")(inputs)
    c = layers.Dense(16)(inputs)
    x = layers.Concatenate()([layers.Multiply()([a, b]), layers.Subtract()([a, c]),
                              layers.Average()([b, c]), layers.Maximum()([a, c])])
    x = layers.Dense(32, activation="relu")(x)
    return keras.Model(inputs, layers.Dense(16)(x), name="mixed_merges")


def nested_functional() -> Any:
    inner_in = keras.Input((16,))
    inner = keras.Model(inner_in, layers.Dense(16, activation="relu")(layers.Dense(16, activation="relu")(inner_in)),
                        name="inner")
    inputs = keras.Input((12,))
    x = layers.Dense(16)(inputs)
    x = inner(x)
    x = layers.Dense(32, activation="relu")(x)
    return keras.Model(inputs, layers.Dense(16)(x), name="nested_functional")


MODELS: dict[str, Callable[[], Any]] = {
    "mlp": mlp, "cnn_bn_pool": cnn_bn_pool, "residual": residual, "depthwise_separable": depthwise_separable,
    "lstm": recurrent("LSTM"), "gru": recurrent("GRU"), "simple_rnn": recurrent("SimpleRNN"),
    "bidirectional": bidirectional, "transformer_block": transformer_block, "embedding_pool": embedding_pool,
    "mixed_merges": mixed_merges, "nested_functional": nested_functional,
}

DETERMINISTIC = ("mlp", "residual", "depthwise_separable", "transformer_block", "embedding_pool", "mixed_merges",
                 "nested_functional")


def initialized_digests(names: tuple[str, ...] = DETERMINISTIC, seed: int = 0) -> dict[str, str]:
    """Per model, the SHA-256 of all its weights' bytes after ``initialize_model`` with ``seed`` on
    a freshly built copy (the weights AutoInit keeps are Keras's constant ones: zeros and ones)."""
    from autoinit_sym import AutoInit

    digests = {}
    for name in names:
        model = AutoInit(weight_init_config={"seed": seed}).initialize_model(MODELS[name]())
        digest = hashlib.sha256()
        for weight in model.weights:
            digest.update(keras.ops.convert_to_numpy(weight).tobytes())
        digests[name] = digest.hexdigest()
    return digests
