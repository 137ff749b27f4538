"""Handlers declare what they can do; planning asks only that, and dry runs
build nothing they do not need."""

import keras
import numpy as np
import pytest
from conftest import TOL
from conftest import assert_unchanged
from conftest import randomize_weights
from conftest import snapshot
from growth_helpers import mnist_model
from growth_helpers import record_builds

import keras_net2net as kn
from keras_net2net.surgery import PassThroughHandler
from keras_net2net.surgery import UnitsHandler
from keras_net2net.surgery import dispatch
from keras_net2net.surgery import get_handler
from keras_net2net.surgery.handlers.core import DenseHandler
from keras_net2net.transforms import MappingRule


class Doubler(keras.layers.Layer):
    def call(self, x):
        return 2.0 * x


@pytest.mark.parametrize(
    "ability, method",
    [
        ("identity_deepening", "deeper_layer"),
        ("residual_deepening", "residual_layers"),
        ("copies_itself", "check_copy"),
    ],
)
def test_a_declared_ability_must_be_implemented(ability, method):
    handler = type("Claims", (UnitsHandler,), {ability: True})()
    with pytest.raises(TypeError, match=f"declares {ability}=True.*`{method}`"):
        kn.register_handler(Doubler, handler)


def test_builtin_handlers_declare_their_deepening():
    dense, conv = keras.layers.Dense(2), keras.layers.Conv2D(2, 3)
    embedding = keras.layers.Embedding(5, 2)
    transpose = keras.layers.Conv2DTranspose(2, 3)
    assert get_handler(dense).identity_deepening
    assert get_handler(dense).residual_deepening
    assert get_handler(conv).identity_deepening
    assert get_handler(embedding).identity_deepening  # an identity Dense
    assert get_handler(transpose).identity_deepening  # a plain Conv2D
    assert not get_handler(keras.layers.BatchNormalization()).identity_deepening


def test_deepening_after_a_layer_without_identity_copy_is_refused_by_name():
    inputs = keras.Input((4, 4, 3))
    norm = keras.layers.BatchNormalization(name="norm")(inputs)
    model = keras.Model(inputs, keras.layers.Flatten()(norm))
    with pytest.raises(
        ValueError, match=r"Layer 'norm' \(BatchNormalization\) cannot be"
    ):
        kn.deepen(model, after="norm")


def test_deepening_after_a_transposed_convolution_inserts_a_plain_one():
    inputs = keras.Input((3, 4, 4))
    up = keras.layers.Conv2DTranspose(
        5, 4, strides=2, data_format="channels_first", activation="relu", name="up"
    )(inputs)
    model = randomize_weights(keras.Model(inputs, keras.layers.Flatten()(up)))
    grown = kn.deepen(model, after="up")
    new = grown.get_layer("up_deeper")
    assert type(new) is keras.layers.Conv2D
    assert new.kernel_size == (5, 5) and new.strides == (1, 1)
    assert new.data_format == "channels_first" and new.filters == 5
    x = np.random.default_rng(0).normal(size=(2, 3, 4, 4)).astype("float32")
    before, after = model.predict(x, verbose=0), grown.predict(x, verbose=0)
    assert np.abs(before - after).max() <= 1e-5 * np.abs(before).max()
    with pytest.raises(ValueError, match=r"'up'.*even|'up'.*odd"):
        kn.deepen(model, after="up", kernel_size=2)


def test_deepening_after_an_embedding_or_a_recurrent_layer_is_exact():
    inputs = keras.Input((5,), dtype="int32")
    x = keras.layers.Embedding(10, 8, mask_zero=True, name="emb")(inputs)
    x = keras.layers.GRU(6, return_sequences=True, name="gru")(x)
    x = keras.layers.LSTM(4, name="lstm")(x)
    model = randomize_weights(keras.Model(inputs, keras.layers.Dense(3)(x)))
    ids = np.random.default_rng(0).integers(0, 10, (4, 5)).astype("int32")
    for after in ("emb", "gru", "lstm"):
        grown = kn.deepen(model, after=after)
        assert type(grown.get_layer(f"{after}_deeper")) is keras.layers.Dense
        assert kn.max_output_difference(model, grown, ids) <= TOL


def test_describe_growth_builds_only_what_later_requests_need(monkeypatch):
    model = mnist_model("functional", size=12)
    requests = [kn.Widen("fc1", 70), kn.Deepen(after="fc1")]
    built = record_builds(monkeypatch)
    text = kn.describe_growth(model, requests)
    assert len(built) == 1  # the widened model, to plan the deepening on
    built.clear()
    full = dispatch.apply_requests(model, requests, compile=False)
    assert len(built) == 2
    assert text == "\n".join(full.details)
    assert text.count("changes:") == 2


class PairSwap(keras.layers.Layer):
    """Swaps channels 2k and 2k+1: exact only if whole pairs are copied."""

    def call(self, x):
        pairs = keras.ops.reshape(x, (-1, x.shape[-1] // 2, 2))
        return keras.ops.reshape(keras.ops.flip(pairs, axis=-1), (-1, x.shape[-1]))


class PairSwapHandler(PassThroughHandler):
    def mapping_rule(self, layer, node, graph, axis):
        return MappingRule(block=2, reason=f"'{layer.name}' swaps channel pairs")


def _relative(model, grown, x):
    scale = np.max(np.abs(keras.ops.convert_to_numpy(model(x))))
    return kn.max_output_difference(model, grown, x) / scale


def test_a_handler_constrains_its_groups_mapping():
    kn.register_handler(PairSwap, PairSwapHandler())
    inputs = keras.Input((5,))
    hidden = keras.layers.Dense(4, name="a")(inputs)
    swapped = PairSwap(name="swap")(keras.layers.ReLU()(hidden))
    model = randomize_weights(keras.Model(inputs, keras.layers.Dense(3)(swapped)))
    assert "copies whole blocks of 2 channels: swap" in str(
        kn.coupled_layers(model, "a")
    )
    x = np.random.default_rng(0).normal(size=(8, 5)).astype("float32")
    for seed in range(4):  # each seed's plain random mapping splits a pair
        assert _relative(model, kn.widen(model, "a", 8, seed=seed), x) <= TOL
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"`units`=7 for layer 'a': 'swap' swaps"):
        kn.widen(model, "a", 7)
    assert_unchanged(model, before)


class TwinDense(keras.layers.Dense):
    """A Dense layer with two outputs on its channels: ``y`` and ``-y``."""

    def call(self, x):
        y = super().call(x)
        return y, -y

    def compute_output_shape(self, input_shape):
        shape = super().compute_output_shape(input_shape)
        return shape, shape


def test_every_output_of_a_writer_joins_the_group():
    kn.register_handler(TwinDense, DenseHandler("units"))
    inputs = keras.Input((5,))
    a, b = TwinDense(4, name="twin")(inputs)
    out = keras.layers.Add()([keras.layers.Dense(3)(a), keras.layers.Dense(3)(b)])
    model = randomize_weights(keras.Model(inputs, out))
    group = kn.coupled_layers(model, "twin")
    assert len(group.readers) == 2 and len(group.core) == 2
    x = np.random.default_rng(0).normal(size=(8, 5)).astype("float32")
    assert _relative(model, kn.widen(model, "twin", 7, seed=0), x) <= TOL


def test_attention_scores_are_not_channels():
    inputs = keras.Input((5, 6))
    hidden = keras.layers.Dense(8, name="d")(inputs)
    attended, scores = keras.layers.MultiHeadAttention(2, 4, name="mha")(
        hidden, hidden, return_attention_scores=True
    )
    stream = keras.layers.Add()([hidden, attended])
    out = keras.layers.Dense(3)(keras.layers.Flatten()(stream))
    model = randomize_weights(keras.Model(inputs, [out, scores]))
    grown = kn.widen(model, "d", 12, seed=0)
    x = np.random.default_rng(0).normal(size=(2, 5, 6)).astype("float32")
    for before, after in zip(model(x), grown(x)):
        before = keras.ops.convert_to_numpy(before)
        after = keras.ops.convert_to_numpy(after)
        assert np.max(np.abs(before - after)) <= TOL * np.max(np.abs(before))


def test_a_layer_reading_channels_on_another_axis_is_refused_by_name():
    inputs = keras.Input((3, 9, 10))
    x = keras.layers.Conv2D(4, 3, data_format="channels_first", name="cf")(inputs)
    x = keras.layers.Conv2D(2, 3, name="cl")(x)  # channels_last: reads axis 3
    model = keras.Model(inputs, keras.layers.Flatten()(x))
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"'cl'.*axis 3.*'cf' are on axis 1"):
        kn.widen(model, "cf", 6)
    assert_unchanged(model, before)
