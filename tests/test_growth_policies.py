"""The optimizer and the learning rate at growth: `optimizer_state` (carry,
reset the new parts, reset), `Rewarmed` (a re-warm after each growth, the
schedule continued; `GrowModel(rewarm_steps=...)`) and `WarmupStableDecay`."""

import keras
import numpy as np
import pytest
from conftest import assert_unchanged
from conftest import snapshot
from transformer_models import token_batch
from transformer_models import transformer_classifier

import keras_net2net as kn

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def rate(schedule, step):
    return float(keras.ops.convert_to_numpy(schedule(step)))


def test_warmup_stable_decay_warms_holds_and_decays():
    linear = kn.WarmupStableDecay(1.0, warmup_steps=10, stable_steps=20, decay_steps=10)
    assert rate(linear, 0) == pytest.approx(0.1)
    assert rate(linear, 9) == pytest.approx(1.0)
    assert rate(linear, 10) == rate(linear, 29) == pytest.approx(1.0)
    assert rate(linear, 35) == pytest.approx(0.5)
    assert rate(linear, 40) == rate(linear, 100) == pytest.approx(0.0)
    cosine = kn.WarmupStableDecay(2.0, 0, 5, 10, final=0.2, decay="cosine")
    assert rate(cosine, 0) == pytest.approx(2.0)
    assert rate(cosine, 10) == pytest.approx(1.1)
    assert rate(cosine, 15) == pytest.approx(0.2)
    again = kn.WarmupStableDecay.from_config(cosine.get_config())
    assert [rate(again, s) for s in range(20)] == [rate(cosine, s) for s in range(20)]


def test_rewarmed_drops_at_each_growth_and_continues_the_schedule():
    base = keras.optimizers.schedules.CosineDecay(1.0, 100)
    schedule = kn.Rewarmed(base, [10], 4).after_growth(50)
    assert rate(schedule, 9) == pytest.approx(rate(base, 9))
    for offset in range(4):
        expected = rate(base, 10 + offset) * (offset + 1) / 4
        assert rate(schedule, 10 + offset) == pytest.approx(expected)
    assert rate(schedule, 14) == pytest.approx(rate(base, 14))
    assert rate(schedule, 50) == pytest.approx(rate(base, 50) / 4)
    again = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(schedule)
    )
    assert [rate(again, s) for s in range(60)] == pytest.approx(
        [rate(schedule, s) for s in range(60)]
    )
    constant = kn.Rewarmed(0.5, [2], 2)
    assert [rate(constant, s) for s in range(5)] == [0.5, 0.5, 0.25, 0.5, 0.5]


class Rates(keras.callbacks.Callback):
    """The learning rate the optimizer applies at each step."""

    def __init__(self):
        super().__init__()
        self.rates = []

    def on_train_batch_begin(self, batch, logs=None):
        optimizer = self.model.optimizer
        self.rates.append(float(keras.ops.convert_to_numpy(optimizer.learning_rate)))


@pytest.mark.parametrize("schedule", ["float", "cosine"])
def test_grow_model_rewarms_after_each_growth_and_saves(schedule, tmp_path):
    model = transformer_classifier(blocks=1)
    lr = (
        1e-3 if schedule == "float" else keras.optimizers.schedules.CosineDecay(1e-3, 8)
    )
    model.compile(keras.optimizers.AdamW(lr), LOSS)
    x, y = token_batch(16), np.arange(16) % 2
    grow = kn.GrowModel({kn.AtStep(3): kn.Stack(2, copies="kept")}, rewarm_steps=4)
    rates = Rates()
    model.fit(x, y, batch_size=4, epochs=2, verbose=0, callbacks=[grow, rates])
    base = [1e-3] * 8 if schedule == "float" else [rate(lr, s) for s in range(8)]
    ramp = [1, 1, 1, 0.25, 0.5, 0.75, 1, 1]
    np.testing.assert_allclose(rates.rates, np.multiply(base, ramp), rtol=1e-5)
    path = tmp_path / "rewarmed.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    restored = loaded.optimizer._learning_rate
    assert isinstance(restored, kn.Rewarmed) and restored.growth_steps == (3,)


def velocity(model, name):
    optimizer = model.optimizer
    kernel = model.get_layer(name).kernel
    for variable, slot in zip(optimizer._trainable_variables, optimizer._velocities):
        if variable is kernel:
            return np.array(keras.ops.convert_to_numpy(slot))
    raise AssertionError(name)


@pytest.mark.parametrize("policy", ["carry", "reset_new", "reset"])
def test_optimizer_state_policy_of_a_growth(policy):
    model = transformer_classifier(blocks=1)
    model.compile(keras.optimizers.AdamW(1e-3), LOSS)
    x, y = token_batch(16), np.arange(16) % 2
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    trained = velocity(model, "ffn_in_0")
    assert trained.any()
    kn.grow_in_place(model, kn.Stack(2, copies="kept"), optimizer_state=policy)
    source, copy = velocity(model, "ffn_in_0"), velocity(model, "stack1_ffn_in_0")
    if policy == "carry":
        np.testing.assert_array_equal(source, trained)
        np.testing.assert_array_equal(copy, trained)
    elif policy == "reset_new":
        np.testing.assert_array_equal(source, trained)
        assert not copy.any()
    else:
        assert not source.any() and not copy.any()
    assert int(model.optimizer.iterations) == 4  # the step count goes on
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert int(model.optimizer.iterations) == 8


@pytest.mark.parametrize(
    "call, words",
    [
        (
            lambda m: kn.GrowModel({1: kn.Stack(2)}, optimizer_state="fresh"),
            ["optimizer_state", "'fresh'", "reset_new"],
        ),
        (
            lambda m: kn.GrowModel({1: kn.Stack(2)}, rewarm_steps=0),
            ["rewarm_steps", "0"],
        ),
        (
            lambda m: kn.grow_in_place(m, kn.Stack(2), optimizer_state="zero"),
            ["optimizer_state", "'zero'"],
        ),
        (lambda m: kn.WarmupStableDecay(0.0, 1, 1, 1), ["peak"]),
        (
            lambda m: kn.WarmupStableDecay(1.0, 1, 1, 1, decay="step"),
            ["decay", "'step'"],
        ),
        (lambda m: kn.Rewarmed(1.0, [2], 0), ["warmup_steps"]),
    ],
    ids=[
        "unknown state policy",
        "no re-warm length",
        "grow_in_place policy",
        "zero peak",
        "unknown decay",
        "zero re-warm",
    ],
)
def test_bad_policies_are_refused_before_anything_changes(call, words):
    model = transformer_classifier(blocks=1)
    before = snapshot(model)
    with pytest.raises((ValueError, TypeError)) as error:
        call(model)
    for word in words:
        assert word in str(error.value), (word, str(error.value))
    assert_unchanged(model, before)


def test_rewarm_refuses_a_callback_that_sets_the_rate():
    model = transformer_classifier(blocks=1)
    model.compile(keras.optimizers.AdamW(1e-3), LOSS)
    x, y = token_batch(16), np.arange(16) % 2
    grow = kn.GrowModel({kn.AtStep(2): kn.Stack(2)}, rewarm_steps=2)
    plateau = keras.callbacks.ReduceLROnPlateau("loss")
    before = snapshot(model)
    with pytest.raises(ValueError, match="rewarm_steps.*ReduceLROnPlateau"):
        model.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[grow, plateau])
    assert_unchanged(model, before)
