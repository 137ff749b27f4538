"""Handlers declare what they can do; planning asks only that, and dry runs
build nothing they do not need."""

import keras
import pytest
from growth_helpers import mnist_model
from growth_helpers import record_builds

import keras_net2net as kn
from keras_net2net.surgery import UnitsHandler
from keras_net2net.surgery import get_handler
from keras_net2net.surgery import operations


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
    assert get_handler(dense).identity_deepening
    assert get_handler(dense).residual_deepening
    assert get_handler(conv).identity_deepening
    assert not get_handler(embedding).identity_deepening


def test_deepening_after_a_layer_without_identity_copy_is_refused_by_name():
    inputs = keras.Input((4,), dtype="int32")
    outputs = keras.layers.Dense(3)(keras.layers.Embedding(10, 8, name="emb")(inputs))
    model = keras.Model(inputs, outputs)
    with pytest.raises(ValueError, match=r"Layer 'emb' \(Embedding\) cannot be"):
        kn.deepen(model, after="emb")


def test_describe_growth_builds_only_what_later_requests_need(monkeypatch):
    model = mnist_model("functional", size=12)
    requests = [kn.Widen("fc1", 70), kn.Deepen(after="fc1")]
    built = record_builds(monkeypatch)
    text = kn.describe_growth(model, requests)
    assert len(built) == 1  # the widened model, to plan the deepening on
    built.clear()
    full = operations.apply_operations(model, requests, compile=False)
    assert len(built) == 2
    assert text == "\n".join(full.details)
    assert text.count("changes:") == 2
