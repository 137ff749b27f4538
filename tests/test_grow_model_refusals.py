"""Bad schedules fail before the first step; a failed growth changes nothing."""

import keras
import numpy as np
import pytest
from conftest import assert_unchanged
from conftest import snapshot
from growth_helpers import StepCounter
from growth_helpers import small_data
from growth_helpers import small_model

import keras_net2net as kn
from keras_net2net.growth import optimizer_state

BAD_SCHEDULES = [
    ({1: kn.Widen("nope", 9)}, r"epoch 1.*no layer 'nope'"),
    ({1: kn.Widen("fc1", 6)}, r"'fc1'.*larger than its current width 6"),
    (
        {1: kn.Widen("fc1", 9), 2: kn.Widen("fc1", 8)},
        r"epoch 2.*'fc1'.*larger than its current width 9",
    ),
    ({kn.AtStep(3): kn.Widen("out", 5)}, r"step 3.*'out'.*model output"),
    (
        {1: kn.Deepen(after="out", method="random", residual=True)},
        r"'out'.*(Sequential|method='random')",
    ),
    ({1: kn.Deepen(after="bn")}, r"'bn'.*Dense, Conv"),
    ({kn.OnPlateau("loss"): kn.Widen("fc2", 4)}, r"plateau.*'fc2'.*larger"),
    (
        {1: [kn.Widen("fc1", 9), kn.Widen("nope", 3)]},
        r"Widen\(layer='nope'.*failed.*no layer 'nope'",
    ),
]


@pytest.mark.parametrize("schedule,pattern", BAD_SCHEDULES)
def test_bad_schedule_raises_before_first_step(schedule, pattern, kind):
    model = small_model(kind)
    x, y = small_data()
    before = snapshot(model)
    counter = StepCounter()
    with pytest.raises(ValueError, match=pattern):
        model.fit(
            x, y, epochs=3, verbose=0, callbacks=[counter, kn.GrowModel(schedule)]
        )
    assert counter.steps == 0
    assert_unchanged(model, before)
    assert int(model.optimizer.iterations) == 0


def test_unsupported_consumer_in_schedule():
    inputs = keras.Input((4,))
    h = keras.layers.Dense(6, name="fc1")(inputs)
    h = keras.layers.Reshape((3, 2), name="reshape")(h)
    out = keras.layers.Dense(2, name="out")(keras.layers.Flatten()(h))
    model = keras.Model(inputs, out)
    model.compile("sgd", "mse")
    with pytest.raises(
        ValueError, match=r"'fc1'.*split by 'reshape' into 3.*multiple of 3"
    ):
        model.fit(
            np.zeros((4, 4)),
            np.zeros((4, 2)),
            verbose=0,
            callbacks=[kn.GrowModel({0: kn.Widen("fc1", 8)})],
        )


@pytest.mark.parametrize(
    "schedule,error,pattern",
    [
        ({}, ValueError, "non-empty"),
        ({1.5: kn.Widen("fc1", 9)}, TypeError, "trigger"),
        ({-1: kn.Widen("fc1", 9)}, ValueError, "integer >= 0"),
        ({1: "widen"}, TypeError, "a growth request"),
        ({1: []}, TypeError, "non-empty list"),
        ([(1,)], ValueError, "pair"),
    ],
)
def test_malformed_schedule_is_rejected_at_construction(schedule, error, pattern):
    with pytest.raises(error, match=pattern):
        kn.GrowModel(schedule)


def test_bad_options_are_rejected():
    with pytest.raises(ValueError, match="lr_scale"):
        kn.GrowModel({1: kn.Widen("a", 2)}, lr_scale=0)
    with pytest.raises(ValueError, match="mode"):
        kn.OnPlateau(mode="up")


def optimizer_snapshot(optimizer):
    return [
        (v.path, np.array(keras.ops.convert_to_numpy(v))) for v in optimizer.variables
    ]


def test_failed_growth_leaves_model_and_optimizer_untouched(kind, monkeypatch):
    model = small_model(kind, keras.optimizers.Adam(0.01))
    x, y = small_data()
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    before, opt_before = snapshot(model), optimizer_snapshot(model.optimizer)
    layers_before = list(model.layers)

    def broken(*args, **kwargs):
        raise RuntimeError("simulated failure while writing optimizer state")

    monkeypatch.setattr(optimizer_state, "assign_state", broken)
    with pytest.raises(RuntimeError, match="simulated failure"):
        kn.grow_in_place(model, [kn.Widen("fc1", 9), kn.Deepen(after="fc2")])
    assert_unchanged(model, before)
    assert model.layers == layers_before
    after = optimizer_snapshot(model.optimizer)
    assert [p for p, _ in after] == [p for p, _ in opt_before]
    for (_, a), (_, b) in zip(after, opt_before):
        np.testing.assert_array_equal(a, b)
    # training still works on the untouched model, and growth still works
    monkeypatch.undo()
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    kn.grow_in_place(model, [kn.Widen("fc1", 9)])
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    assert model.get_layer("fc1").units == 9


def test_failure_inside_fit_names_the_operation(kind, monkeypatch):
    """An operation that passes validation but fails when applied."""
    model = small_model(kind)
    x, y = small_data()
    names = [layer.name for layer in model.layers]
    grow = kn.GrowModel({1: [kn.Widen("fc1", 9), kn.Deepen(after="fc2")]})
    from keras_net2net.surgery import handlers

    original = handlers.core.DenseHandler.deeper_layer
    calls = {"n": 0}

    def flaky(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 1:  # first call: validation; second: the real growth
            raise ValueError("Layer 'fc2' (Dense) refused at growth time")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(handlers.core.DenseHandler, "deeper_layer", flaky)
    with pytest.raises(ValueError, match=r"Deepen\(after='fc2'.*failed.*refused"):
        model.fit(x, y, epochs=3, batch_size=8, verbose=0, callbacks=[grow])
    # one epoch of training happened, but the growth itself left no trace
    assert int(model.optimizer.iterations) == 4
    assert model.get_layer("fc1").units == 6
    assert [layer.name for layer in model.layers] == names
    assert len(model.optimizer._trainable_variables) == len(model.trainable_variables)
