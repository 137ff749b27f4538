"""Growth never corrupts a model: one regression test per reliability fix.

Each test here failed on the release before these fixes (0.1.0).
"""

import json

import keras
import numpy as np
import pytest
from conftest import TOL
from conftest import assert_unchanged
from conftest import build
from conftest import randomize_weights
from conftest import snapshot
from growth_helpers import StepCounter
from growth_helpers import small_data
from growth_helpers import small_model

import keras_net2net as kn
from keras_net2net import _keras_internals

L = keras.layers


def optimizer_snapshot(optimizer):
    return [np.array(keras.ops.convert_to_numpy(v)) for v in optimizer.variables]


def trained_small(kind):
    model = small_model(kind)
    x, y = small_data()
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    return model, x, y


# 1. An empty operation list is a no-op.


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


# 2. Channel-mixing activations are refused by name, before any change.


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


# 3. keras.ops calls in Functional graphs: carried over off the path, handled or
# refused by name on it.


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


# 5. Layer objects are accepted in growth requests (resolved to their name).


def test_layer_object_in_a_schedule(kind):
    model, x, y = trained_small(kind)
    grow = kn.GrowModel({1: kn.Widen(model.get_layer("fc1"), 9)})
    model.fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=[grow])
    assert model.get_layer("fc1").units == 9
    assert kn.Deepen(after=model.get_layer("fc2")).after == "fc2"


# 6. Events are validated in the order they are applied; events due together
# are one event.


def test_events_due_at_the_same_step_are_validated_in_application_order(kind):
    model = small_model(kind)
    x, y = small_data(32)  # 4 steps per epoch at batch 8
    before = snapshot(model)
    counter = StepCounter()
    # Applied epoch first (6 -> 12), then the step event (12 -> 10): invalid.
    schedule = {kn.AtStep(4): kn.Widen("fc1", 10), kn.AtEpoch(1): kn.Widen("fc1", 12)}
    with pytest.raises(ValueError, match=r"step 4.*'fc1'.*larger than.*12"):
        model.fit(
            x,
            y,
            epochs=3,
            batch_size=8,
            verbose=0,
            callbacks=[counter, kn.GrowModel(schedule)],
        )
    assert counter.steps == 0
    assert_unchanged(model, before)


def test_epoch_and_step_events_due_together_apply_as_one_event(kind):
    model = small_model(kind)
    x, y = small_data(32)
    grow = kn.GrowModel(
        {kn.AtStep(4): kn.Widen("fc1", 12), kn.AtEpoch(1): kn.Widen("fc2", 9)}
    )
    model.fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=[grow])
    assert len(grow.records) == 1
    assert grow.records[0].trigger == "epoch 1, step 4"
    assert model.get_layer("fc1").units == 12 and model.get_layer("fc2").units == 9


def test_plateau_and_step_events_due_together_apply_as_one_event(kind):
    model = small_model(kind)
    x, y = small_data(32)

    class Flat(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs["score"] = 1.0  # never improves: plateau after epoch 1

    grow = kn.GrowModel(
        {
            kn.OnPlateau("score", patience=0): kn.Widen("fc1", 12),
            kn.AtStep(8): kn.Widen("fc2", 9),
        }
    )
    model.fit(x, y, epochs=3, batch_size=8, verbose=0, callbacks=[Flat(), grow])
    assert len(grow.records) == 1
    assert grow.records[0].step == 8
    assert model.get_layer("fc1").units == 12 and model.get_layer("fc2").units == 9


# 7. Output names survive deepening after an output.


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


# 8. Another model sharing the grown model's layers stays intact.


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


# 9. Everything a growth event does is inside the atomic part.


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


# 10. EarlyStopping(restore_best_weights=True) across growth.


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


# 12. Grown models load with plain Keras (no keras_net2net import).


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
