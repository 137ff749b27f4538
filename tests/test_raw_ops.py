"""Raw `keras.ops` calls and activations in a model's graph: grown through where
they act on each channel alone, refused by name (before any change) where they
mix channels or hold a constant of the channel width."""

import keras
import numpy as np
import pytest
from conftest import TOL
from conftest import assert_unchanged
from conftest import build
from conftest import randomize_weights
from conftest import snapshot

import keras_net2net as kn

L = keras.layers


def _custom_activation(x):
    return x / (1.0 + keras.ops.sum(keras.ops.abs(x), axis=-1, keepdims=True))


@pytest.mark.parametrize(
    "layers,pattern",
    [
        (lambda: [L.Dense(4, activation="softmax", name="a")], r"'a'.*'softmax'"),
        (
            lambda: [L.Dense(4, activation="log_softmax", name="a")],
            r"'a'.*'log_softmax'",
        ),
        (
            lambda: [L.Dense(4, name="a"), L.Activation("softmax", name="act")],
            r"'act'.*'softmax'.*mixes channels",
        ),
        (
            lambda: [L.Dense(4, name="a"), L.Activation("sparsemax", name="act")],
            r"'act'.*'sparsemax'",
        ),
        (
            lambda: [
                L.Dense(4, name="a"),
                L.Activation(_custom_activation, name="act"),
            ],
            r"'act'.*not known to act on each channel",
        ),
        (lambda: [L.Dense(4, name="a"), L.Softmax(name="sm")], r"'sm'.*channel axis"),
    ],
)
def test_channel_mixing_activations_are_refused(layers, pattern, kind):
    model = randomize_weights(build(layers() + [L.Dense(2, name="out")], (3,), kind))
    before = snapshot(model)
    with pytest.raises(ValueError, match=pattern):
        kn.widen(model, "a", 8)
    assert_unchanged(model, before)


def ops_model():
    inputs = keras.Input((6,))
    side = L.Dense(5, name="side")(inputs)
    side = side + keras.ops.relu(side)  # raw ops off the widened path
    h = L.Dense(4, name="a")(inputs)
    h = keras.ops.multiply(h, 2.0)  # raw op with a scalar on the path
    h = keras.ops.gelu(h)
    h = L.Dense(3, name="b")(h)
    out = L.Dense(2, name="out")(L.Concatenate()([h, side]))
    return randomize_weights(keras.Model(inputs, out))


def test_raw_ops_off_and_on_the_path():
    model = ops_model()
    x = np.random.default_rng(0).normal(size=(5, 6)).astype("float32")
    for grown in (
        kn.widen(model, "a", 7),
        kn.widen(model, "side", 9),
        kn.deepen(model, after="b"),
    ):
        assert kn.max_output_difference(model, grown, x) <= TOL
    model.compile("adam", "mse")
    grow = kn.GrowModel({1: [kn.Widen("a", 8), kn.Widen("side", 7)]})
    model.fit(x, np.zeros((5, 2)), epochs=2, verbose=0, callbacks=[grow])
    assert model.get_layer("a").units == 8 and len(grow.records) == 1


def test_masked_embedding_graph_grows():
    inputs = keras.Input((5,), dtype="int32")
    h = L.Embedding(10, 4, mask_zero=True, name="emb")(inputs)
    h = L.Dense(6, name="a")(h)
    h = L.GlobalAveragePooling1D()(h)
    out = L.Dense(2, name="out")(h)
    model = randomize_weights(keras.Model(inputs, out))
    x = np.array([[1, 2, 0, 0, 0], [3, 4, 5, 6, 0]], "int32")
    assert kn.max_output_difference(model, kn.widen(model, "a", 9), x) <= TOL


def test_raw_op_with_a_channel_constant_is_refused():
    inputs = keras.Input((4,))
    h = L.Dense(4, name="a")(inputs)
    h = keras.ops.multiply(h, np.arange(4, dtype="float32"))
    model = keras.Model(inputs, L.Dense(2)(h))
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"Operation 'multiply.*constant of shape"):
        kn.widen(model, "a", 8)
    assert_unchanged(model, before)


def test_unsupported_raw_op_on_the_path_is_refused_by_name():
    inputs = keras.Input((4,))
    h = L.Dense(4, name="a")(inputs)
    h = keras.ops.cumsum(h, axis=-1)
    model = keras.Model(inputs, L.Dense(2)(h))
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"Operation 'cumsum.*not supported"):
        kn.widen(model, "a", 8)
    assert_unchanged(model, before)


def test_a_reduction_over_other_axes_passes_the_channels():
    tokens = keras.Input((6, 3))
    x = keras.layers.Conv1D(5, 2, name="conv")(tokens)
    pooled = keras.layers.Lambda(lambda t: keras.ops.mean(t, axis=1), name="pool")(x)
    peak = keras.ops.max(x, axis=1, keepdims=True)[:, 0, :]
    model = keras.Model(tokens, keras.layers.Dense(2)(pooled + peak))
    randomize_weights(model)
    data = np.random.default_rng(0).normal(size=(3, 6, 3)).astype("float32")
    grown = kn.widen(model, "conv", 8)
    assert kn.max_output_difference(model, grown, data) <= 1e-5


def test_a_reduction_over_the_channels_is_refused_by_name():
    inputs = keras.Input((4,))
    x = keras.layers.Dense(5, name="fc")(inputs)
    norm = keras.ops.sum(keras.ops.square(x), axis=-1, keepdims=True)
    model = keras.Model(inputs, keras.layers.Dense(2)(x * norm))
    with pytest.raises(ValueError, match=r"'sum.*reduces over the widened channels"):
        kn.widen(model, "fc", 8)
