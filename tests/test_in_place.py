"""`grow_in_place` keeps the model a user holds: an empty growth changes nothing,
output names and other models sharing its layers survive, a failure after the
new graph is adopted rolls everything back (nested graphs too), grown configs
hold ordinary initializers, and EarlyStopping restores its best weights
through a growth."""

import json

import keras
import numpy as np
import pytest
from conftest import TOL
from conftest import assert_unchanged
from conftest import build
from conftest import randomize_weights
from conftest import snapshot
from growth_helpers import optimizer_snapshot
from growth_helpers import trained_small

import keras_net2net as kn
from keras_net2net import _keras_internals

L = keras.layers


def test_empty_growth_is_a_no_op(kind):
    model, x, y = trained_small(kind)
    before = snapshot(model)
    weights = list(model.weights)
    opt_before = optimizer_snapshot(model.optimizer)
    kn.grow_in_place(model, [])
    assert list(model.weights) == weights
    assert_unchanged(model, before)
    after = optimizer_snapshot(model.optimizer)
    assert len(after) == len(opt_before)
    for a, b in zip(after, opt_before):
        np.testing.assert_array_equal(a, b)
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)  # still trains everything
    for old, new in zip(before[0], snapshot(model)[0]):
        assert old.shape == new.shape
    assert any(not np.array_equal(a, b) for a, b in zip(before[0], snapshot(model)[0]))


def two_output_model():
    inputs = keras.Input((4,))
    h = L.Dense(6, activation="relu", name="trunk")(inputs)
    reg = L.Dense(1, name="reg")(h)
    cls = L.Dense(3, activation="softmax", name="cls")(h)
    model = keras.Model(inputs, [reg, cls])
    model.compile(
        "adam",
        loss={"reg": "mse", "cls": "sparse_categorical_crossentropy"},
        metrics={"reg": ["mae"]},
    )
    return model


def test_deepen_after_an_output_keeps_output_names(tmp_path):
    model = two_output_model()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 4)).astype("float32")
    y = {"reg": rng.normal(size=(16, 1)), "cls": rng.integers(0, 3, 16)}
    deeper = kn.deepen(model, after="reg")
    assert deeper.output_names == ["reg", "cls"]
    assert kn.max_output_difference(model, deeper, x) <= TOL
    deeper.fit(x, y, epochs=1, verbose=0)
    kn.grow_in_place(model, [kn.Deepen(after="reg")])
    assert model.output_names == ["reg", "cls"]
    assert model.get_layer("reg_deeper").units == 1  # the original, renamed
    model.fit(x, y, epochs=1, verbose=0)
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.output_names == ["reg", "cls"]
    loaded.evaluate(x, y, verbose=0)
    assert kn.max_output_difference(model, loaded, x) <= TOL


def test_other_models_sharing_layers_stay_intact(tmp_path, kind):
    model, x, y = trained_small(kind)
    encoder = keras.Model(model.inputs, model.get_layer("fc2").output)
    other_in = keras.Input((4,))
    other = keras.Model(other_in, model.get_layer("out")(L.Dense(5)(other_in)))
    expected = [keras.ops.convert_to_numpy(m(x)) for m in (encoder, other)]
    kn.grow_in_place(model, [kn.Widen("fc1", 9), kn.Deepen(after="fc2")])
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    for index, m in enumerate((encoder, other)):
        path = str(tmp_path / f"m{index}.keras")
        m.save(path)
        loaded = keras.models.load_model(path)
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(loaded(x)),
            keras.ops.convert_to_numpy(m(x)),
            atol=1e-6,
        )
    # the encoder still computes its own (old) layers' function on the
    # unchanged part; its shared "out"-free graph is still valid
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(encoder(x)).shape, expected[0].shape
    )
    path = str(tmp_path / "grown.keras")
    model.save(path)
    assert kn.max_output_difference(model, keras.models.load_model(path), x) <= TOL


@pytest.mark.parametrize(
    "failing", ["reset_compiled_functions", "after_variables_changed"]
)
def test_failure_after_adoption_rolls_back(failing, monkeypatch, kind):
    model, x, y = trained_small(kind)
    before = snapshot(model)
    layers_before = list(model.layers)
    opt_before = optimizer_snapshot(model.optimizer)
    iterations = int(model.optimizer.iterations)
    original = getattr(_keras_internals, failing)
    calls = {"n": 0}

    def flaky(m):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("simulated backend failure")
        return original(m)

    monkeypatch.setattr(_keras_internals, failing, flaky)
    with pytest.raises(RuntimeError, match="simulated backend failure"):
        kn.grow_in_place(model, [kn.Widen("fc1", 9)])
    monkeypatch.undo()
    assert_unchanged(model, before)
    assert model.layers == layers_before
    assert int(model.optimizer.iterations) == iterations
    for a, b in zip(optimizer_snapshot(model.optimizer), opt_before):
        np.testing.assert_array_equal(a, b)
    assert not getattr(model, "growth_history", [])
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    kn.grow_in_place(model, [kn.Widen("fc1", 9)])
    assert model.get_layer("fc1").units == 9


def test_grown_configs_hold_ordinary_initializers(kind):
    model, x, y = trained_small(kind)
    conv = build(
        [L.Conv2D(4, 3, padding="same", name="c"), L.Flatten(), L.Dense(2)],
        (5, 5, 1),
        kind,
    )
    grown = [
        kn.widen(model, "fc1", 9, noise=0.1),
        kn.deepen(model, after="fc2"),
        kn.widen(conv, "c", 6),
        kn.deepen(conv, after="c"),
    ]
    kn.grow_in_place(model, [kn.Widen("fc1", 9), kn.Deepen(after="fc1")])
    for m in grown + [model]:
        config = json.dumps(m.get_config())
        assert "keras_net2net" not in config and "Net2WiderInit" not in config
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)


class Score(keras.callbacks.Callback):
    """Puts a scripted metric in the epoch logs and records the best outputs."""

    def __init__(self, scores, x):
        super().__init__()
        self.scores, self.x = scores, x
        self.outputs = {}

    def on_epoch_end(self, epoch, logs=None):
        logs["score"] = self.scores[epoch]
        self.outputs[epoch] = np.array(
            keras.ops.convert_to_numpy(self.model(self.x, training=False))
        )


def test_early_stopping_restores_best_weights_through_growth(kind):
    model, x, y = trained_small(kind)
    score = Score([1.0, 0.2, 0.9, 0.8, 0.7], x)  # best at epoch 1, before growth
    stop = keras.callbacks.EarlyStopping(
        "score", mode="min", patience=10, restore_best_weights=True
    )
    grow = kn.GrowModel(
        {2: [kn.Widen("fc1", 9), kn.Deepen(after="fc2")], 4: kn.Widen("fc1", 11)}
    )
    model.fit(x, y, epochs=5, batch_size=8, verbose=0, callbacks=[score, grow, stop])
    assert model.get_layer("fc1").units == 11  # still grown
    restored = keras.ops.convert_to_numpy(model(x, training=False))
    np.testing.assert_allclose(restored, score.outputs[1], atol=TOL)
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)  # and trainable


def model_with_encoder():
    enc_in = keras.Input((4,))
    h = L.Dense(6, activation="relu", name="enc_fc")(enc_in)
    encoder = keras.Model(enc_in, L.Dense(5, activation="relu", name="enc_out")(h))
    inputs = keras.Input((4,))
    x = encoder(inputs)
    x = L.Dense(7, activation="relu", name="head_fc")(x)
    model = keras.Model(inputs, L.Dense(3, name="out")(x))
    model.compile("adam", "mse")
    return randomize_weights(model), encoder


def test_reused_then_replaced_nested_model_survives(tmp_path):
    model, encoder = model_with_encoder()
    x = np.random.default_rng(0).normal(size=(8, 4)).astype("float32")
    expected = keras.ops.convert_to_numpy(encoder(x))
    # the first operation keeps `encoder`, the second replaces it
    kn.grow_in_place(model, [kn.Widen("head_fc", 9), kn.Widen("enc_fc", 8)])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(encoder(x)), expected)
    encoder.save(str(tmp_path / "encoder.keras"))
    loaded = keras.models.load_model(str(tmp_path / "encoder.keras"))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(x)), expected)
    model.fit(x, np.zeros((8, 3)), epochs=1, verbose=0)


def test_failure_after_adoption_restores_nested_graphs(monkeypatch):
    model, encoder = model_with_encoder()
    x = np.random.default_rng(0).normal(size=(8, 4)).astype("float32")
    model.fit(x, np.zeros((8, 3)), epochs=1, verbose=0)
    before = snapshot(model)
    reference = keras.ops.convert_to_numpy(model(x))

    def fail(m):
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(_keras_internals, "reset_compiled_functions", fail)
    with pytest.raises(RuntimeError, match="simulated"):
        kn.grow_in_place(model, [kn.Widen("head_fc", 9), kn.Widen("enc_fc", 8)])
    monkeypatch.undo()
    assert_unchanged(model, before)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(x)), reference)
    model.fit(x, np.zeros((8, 3)), epochs=1, verbose=0)
    kn.grow_in_place(model, [kn.Widen("enc_fc", 8)])
    assert model.get_layer(encoder.name).get_layer("enc_fc").units == 8
