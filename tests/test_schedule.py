"""When a `GrowModel` schedule's events apply: layer objects as targets, events
due together (at one step, at one epoch and step, at a plateau and a step, at
one `steps_per_execution` boundary) validated and applied in order, as one
event where they are due at once."""

import keras
import pytest
from conftest import assert_unchanged
from conftest import snapshot
from growth_helpers import StepCounter
from growth_helpers import small_data
from growth_helpers import small_model
from growth_helpers import trained_small

import keras_net2net as kn

L = keras.layers


def test_layer_object_in_a_schedule(kind):
    model, x, y = trained_small(kind)
    grow = kn.GrowModel({1: kn.Widen(model.get_layer("fc1"), 9)})
    model.fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=[grow])
    assert model.get_layer("fc1").units == 9
    assert kn.Deepen(after=model.get_layer("fc2")).after == "fc2"


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


@pytest.mark.skipif(
    keras.backend.backend() == "torch",
    reason="the PyTorch backend has no steps_per_execution > 1",
)
def test_step_events_due_at_one_execution_boundary_apply_in_order():
    model = small_model("functional")
    model.compile(
        keras.optimizers.SGD(0.05),
        "sparse_categorical_crossentropy",
        steps_per_execution=3,
    )
    x, y = small_data(72)
    # 9 steps per epoch; executions begin at steps 0, 3, 6: both come due at 6
    grow = kn.GrowModel(
        {kn.AtStep(5): kn.Widen("fc1", 12), kn.AtStep(4): kn.Widen("fc1", 9)}
    )
    model.fit(x, y, epochs=1, batch_size=8, verbose=0, callbacks=[grow])
    assert model.get_layer("fc1").units == 12
    (record,) = grow.records
    assert record.step == 6
    assert "6 -> 9" in record.requests[0] and "9 -> 12" in record.requests[1]
