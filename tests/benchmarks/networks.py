"""The unnormalized networks the benchmarks build (Keras imported on call)."""
from __future__ import annotations

from typing import Any


def _initializer_kwargs(kernel_initializer: str | None) -> dict:
    """Keras's default (glorot_uniform) when None, else the named initializer."""
    return {} if kernel_initializer is None else {"kernel_initializer": kernel_initializer}


def deep_mlp(depth: int, width: int, activation: str, input_dim: int, *,
             dropout: float = 0.0, separate_activation: bool = False,
             kernel_initializer: str | None = None, classes: int | None = None) -> Any:
    """``depth`` Dense(width) layers without normalization, each followed by ``activation``
    (fused, or as its own Activation layer) and optionally Dropout; a softmax head if ``classes``."""
    import keras

    init = _initializer_kwargs(kernel_initializer)
    inputs = keras.Input((input_dim,), name="input")
    x = inputs
    for i in range(depth):
        if separate_activation:
            x = keras.layers.Dense(width, name=f"dense_{i}", **init)(x)
            x = keras.layers.Activation(activation, name=f"act_{i}")(x)
        else:
            x = keras.layers.Dense(width, activation=activation, name=f"dense_{i}", **init)(x)
        if dropout:
            x = keras.layers.Dropout(dropout, name=f"dropout_{i}")(x)
    if classes:
        x = keras.layers.Dense(classes, activation="softmax", name="head", **init)(x)
    return keras.Model(inputs, x, name=f"mlp_{depth}x{width}_{activation}")


def plain_cnn(depth: int, filters: int, activation: str, input_shape: tuple[int, ...], *,
              dropout: float = 0.0, separate_activation: bool = False,
              kernel_initializer: str | None = None, classes: int | None = None) -> Any:
    """``depth`` 3x3 Conv2D(filters, padding="same") layers without normalization or skip
    connections, each followed by ``activation`` and optionally SpatialDropout2D; then global
    average pooling and a softmax head if ``classes``."""
    import keras

    init = _initializer_kwargs(kernel_initializer)
    inputs = keras.Input(input_shape, name="input")
    x = inputs
    for i in range(depth):
        if separate_activation:
            x = keras.layers.Conv2D(filters, 3, padding="same", name=f"conv_{i}", **init)(x)
            x = keras.layers.Activation(activation, name=f"act_{i}")(x)
        else:
            x = keras.layers.Conv2D(filters, 3, padding="same", activation=activation,
                                    name=f"conv_{i}", **init)(x)
        if dropout:
            x = keras.layers.SpatialDropout2D(dropout, name=f"dropout_{i}")(x)
    if classes:
        x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
        x = keras.layers.Dense(classes, activation="softmax", name="head", **init)(x)
    return keras.Model(inputs, x, name=f"cnn_{depth}x{filters}_{activation}")


def text_rnn(sequence_length: int = 40, vocabulary: int = 1000, units: int = 32) -> Any:
    """The recurrent text model of issue 4: Embedding, Conv1D, SpatialDropout1D, MaxPooling1D,
    LSTM, Bidirectional GRU, SimpleRNN and a sigmoid head."""
    import keras

    inputs = keras.Input((sequence_length,), dtype="int32", name="tokens")
    x = keras.layers.Embedding(vocabulary, units)(inputs)
    x = keras.layers.Conv1D(units, 5, activation="relu")(x)
    x = keras.layers.SpatialDropout1D(0.2)(x)
    x = keras.layers.MaxPooling1D(2)(x)
    x = keras.layers.LSTM(units, return_sequences=True)(x)
    x = keras.layers.Bidirectional(keras.layers.GRU(units, return_sequences=True))(x)
    x = keras.layers.SimpleRNN(units)(x)
    outputs = keras.layers.Dense(1, activation="sigmoid")(x)
    return keras.Model(inputs, outputs, name="text_rnn")
