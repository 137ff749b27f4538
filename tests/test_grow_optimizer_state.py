"""Optimizer state across growth: slots mapped like the weights, kept or zeroed."""

import keras
import numpy as np
import pytest
from conftest import TOL
from growth_helpers import LossProbe
from growth_helpers import small_data
from growth_helpers import small_model

import keras_net2net as kn
from keras_net2net.growth import optimizer_state


def slots_by_variable(model, attr):
    """``"layer/variable"`` -> slot value, for every trainable variable."""
    optimizer = model.optimizer
    slot_of = {
        id(v): s
        for v, s in zip(optimizer._trainable_variables, getattr(optimizer, attr))
    }
    return {
        f"{layer.name}/{v.name}": np.array(keras.ops.convert_to_numpy(slot_of[id(v)]))
        for layer in model.layers
        for v in layer.trainable_weights
    }


def trained(kind, optimizer):
    model = small_model(kind, optimizer)
    x, y = small_data()
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    return model, x, y


@pytest.mark.parametrize(
    "optimizer,attr,kind_of_slot",
    [
        (lambda: keras.optimizers.SGD(0.05, momentum=0.9), "momentums", "linear"),
        (lambda: keras.optimizers.Adam(0.01), "_momentums", "linear"),
        (lambda: keras.optimizers.Adam(0.01), "_velocities", "squared"),
        (
            lambda: keras.optimizers.RMSprop(0.01, momentum=0.5, centered=True),
            "_average_gradients",
            "linear",
        ),
    ],
)
def test_slots_follow_the_weight_mapping(kind, optimizer, attr, kind_of_slot):
    model, x, y = trained(kind, optimizer())
    opt = model.optimizer
    before = slots_by_variable(model, attr)
    iterations = int(opt.iterations)
    result = kn.grow_in_place(
        model, [kn.Widen("fc1", 10, seed=0), kn.Deepen(after="fc2")]
    )
    assert model.optimizer is opt and int(opt.iterations) == iterations
    after = slots_by_variable(model, attr)
    fc1, bn, fc2 = (model.get_layer(n) for n in ("fc1", "bn", "fc2"))
    # widened layer: output side; consumer (through BN): input side
    for layer, var in (
        (fc1, "kernel"),
        (fc1, "bias"),
        (bn, "gamma"),
        (bn, "beta"),
        (fc2, "kernel"),
    ):
        variable = next(v for v in layer.weights if v.name == var)
        _, chain = result.origins[id(variable)]
        assert len(chain) == 1
        path = f"{layer.name}/{var}"
        expected = chain[0].apply(before[path], kind=kind_of_slot)
        np.testing.assert_allclose(after[path], expected, rtol=1e-6, atol=1e-7)
        # the grown layer's config holds its ordinary initializer again
        assert not isinstance(getattr(layer, f"{var}_initializer"), kn.Net2WiderInit)
    # an input-side copy is divided by the count (squared for second moments)
    mapping = result.origins[id(fc2.kernel)][1][0].mapping
    g = mapping.indices
    j = int(np.argmax(mapping.counts[g] > 1))
    power = 2 if kind_of_slot == "squared" else 1
    np.testing.assert_allclose(
        after["fc2/kernel"][j],
        before["fc2/kernel"][g[j]] / mapping.counts[g[j]] ** power,
        rtol=1e-6,
    )
    # unchanged variables keep their slots; inserted layers start at zero
    np.testing.assert_array_equal(after["out/kernel"], before["out/kernel"])
    np.testing.assert_array_equal(after["fc2/bias"], before["fc2/bias"])
    assert not np.any(after["fc2_deeper/kernel"])
    # training continues from the same function
    probe_b, probe_a = LossProbe(x[:8], y[:8], "b"), LossProbe(x[:8], y[:8], "a")
    model.fit(
        x,
        y,
        epochs=2,
        batch_size=8,
        verbose=0,
        callbacks=[probe_b, kn.GrowModel({1: kn.Widen("fc2", 9)}), probe_a],
    )
    assert abs(probe_b.at_epoch[1][0] - probe_a.at_epoch[1][0]) <= TOL


@pytest.mark.parametrize(
    "optimizer",
    [
        lambda: keras.optimizers.SGD(0.05),
        lambda: keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True),
        lambda: keras.optimizers.Adam(0.01, amsgrad=True),
        lambda: keras.optimizers.AdamW(0.01, weight_decay=0.01),
        lambda: keras.optimizers.RMSprop(0.01),
    ],
)
def test_supported_optimizers_grow_and_continue(optimizer):
    model = small_model("functional", optimizer())
    x, y = small_data()
    before, after = LossProbe(x[:8], y[:8], "b"), LossProbe(x[:8], y[:8], "a")
    history = model.fit(
        x,
        y,
        epochs=3,
        batch_size=8,
        verbose=0,
        callbacks=[
            before,
            kn.GrowModel({1: [kn.Widen("fc1", 9), kn.Deepen(after="fc2")]}),
            after,
        ],
    )
    assert abs(before.at_epoch[1][0] - after.at_epoch[1][0]) <= TOL
    assert np.all(np.isfinite(history.history["loss"]))
    assert int(model.optimizer.iterations) == 12
    assert len(model.optimizer._trainable_variables) == len(model.trainable_variables)


@pytest.mark.parametrize(
    "optimizer,match",
    [
        (lambda: keras.optimizers.Adagrad(), "Adagrad"),
        (lambda: keras.optimizers.Lion(), "Lion"),
        (lambda: keras.optimizers.SGD(use_ema=True), "use_ema"),
        (
            lambda: keras.optimizers.SGD(gradient_accumulation_steps=2),
            "gradient_accumulation_steps",
        ),
    ],
)
def test_unsupported_optimizer_fails_before_training(optimizer, match):
    model = small_model("sequential", optimizer())
    x, y = small_data()
    with pytest.raises(ValueError, match=match):
        model.fit(
            x, y, epochs=2, verbose=0, callbacks=[kn.GrowModel({1: kn.Widen("fc1", 9)})]
        )
    assert int(model.optimizer.iterations) == 0


def test_slot_registry_names_supported_optimizers():
    with pytest.raises(
        ValueError, match="Supported optimizers: AdamW, Adam, RMSprop, SGD"
    ):
        optimizer_state.slot_kinds(keras.optimizers.Adamax())


@pytest.mark.parametrize(
    "optimizer",
    [
        lambda: keras.optimizers.Adam(0.01, amsgrad=True),
        lambda: keras.optimizers.SGD(0.05, momentum=0.9),
    ],
    ids=["adam-amsgrad", "sgd-momentum"],
)
def test_unchanged_variables_keep_their_slot_variables(kind, optimizer):
    """A growth creates optimizer state only for the variables it changes."""
    model, x, y = trained(kind, optimizer())
    opt = model.optimizer
    before = {id(v): v for v in opt.variables}
    values = {id(v): np.array(keras.ops.convert_to_numpy(v)) for v in opt.variables}
    kn.grow_in_place(model, kn.Widen("fc1", 10, seed=0))
    slot_lists = [
        getattr(opt, attr)
        for attr in optimizer_state.slot_kinds(opt)
        if getattr(opt, attr, None)
    ]
    assert slot_lists
    changed = {"fc1", "bn", "fc2"}  # fc2 reads the widened channels
    for layer in model.layers:
        for variable in layer.trainable_weights:
            index = opt._get_variable_index(variable)
            for slots in slot_lists:
                slot = slots[index]
                if layer.name in changed:
                    assert id(slot) not in before, (layer.name, variable.name)
                else:
                    assert before.get(id(slot)) is slot, (layer.name, variable.name)
                    np.testing.assert_array_equal(
                        keras.ops.convert_to_numpy(slot), values[id(slot)]
                    )
    # The optimizer lists each variable once and training goes on.
    assert len({id(v) for v in opt.variables}) == len(opt.variables)
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
