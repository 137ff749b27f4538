"""Coupled growth inside fit: gradients reach the new layers, optimizer slots follow
the group mapping, recurrent and bidirectional layers grow with Adam, and new
layer types save and load."""

import keras
import numpy as np
import pytest
from conftest import TOL
from coupled_models import BUILDERS
from coupled_models import relative_difference

import keras_net2net as kn

L = keras.layers


def _trainable_values(model, names):
    return {
        (name, i): np.array(keras.ops.convert_to_numpy(v))
        for name in names
        for i, v in enumerate(model.get_layer(name).trainable_weights)
    }


def test_new_layers_receive_gradient():
    model = BUILDERS["resnet"]()
    model = kn.deepen(model, after="b1_add")
    model = kn.deepen(model, after="stem", residual=True)
    new = [
        layer.name
        for layer in model.layers
        if layer.name.startswith(("b1_add_block", "stem_residual"))
        and layer.trainable_weights
    ]
    assert len(new) >= 6
    model.compile(keras.optimizers.SGD(0.05), "mse")
    x = np.random.default_rng(0).normal(size=(16, 8, 8, 3)).astype("float32")
    y = np.random.default_rng(1).normal(size=(16, 5)).astype("float32")
    before = _trainable_values(model, new)
    model.fit(x, y, epochs=3, batch_size=8, verbose=0)
    after = _trainable_values(model, new)
    unchanged = [k for k in before if np.array_equal(before[k], after[k])]
    # A conv bias right before a BatchNormalization never receives gradient in
    # training mode (the batch mean removes it), in the original block too.
    before_bn = {("b1_add_block_b1_c1", 1), ("b1_add_block_b1_c2", 1)}
    assert set(unchanged) <= before_bn


def test_growmodel_widens_a_stream_and_inserts_a_block_in_one_fit():
    model = BUILDERS["resnet"]()
    model.compile(keras.optimizers.Adam(0.01), "mse")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 8, 8, 3)).astype("float32")
    y = rng.normal(size=(32, 5)).astype("float32")
    probes = {}

    class Loss(keras.callbacks.Callback):
        def __init__(self, tag):
            super().__init__()
            self.tag = tag

        def on_train_batch_begin(self, batch, logs=None):
            out = keras.ops.convert_to_numpy(self.model(x[:8], training=False))
            probes.setdefault(self.tag, []).append(
                (float(np.mean((out - y[:8]) ** 2)), self.model.count_params())
            )

    grow = kn.GrowModel(
        {kn.AtStep(3): kn.Widen("b0_add", 12), kn.AtStep(6): kn.Deepen(after="b1_add")}
    )
    model.fit(
        x,
        y,
        epochs=3,
        batch_size=8,
        verbose=0,
        callbacks=[Loss("before"), grow, Loss("after")],
    )
    assert len(grow.records) == 2
    for step in (3, 6):
        (loss_b, params_b), (loss_a, params_a) = (
            probes["before"][step],
            probes["after"][step],
        )
        assert params_a > params_b
        assert abs(loss_a - loss_b) <= TOL * max(1.0, loss_b)
    assert model.get_layer("stem").filters == 12
    assert model.get_layer("b1_add_block_add") is not None
    assert int(model.optimizer.iterations) == 12


def test_optimizer_slots_follow_the_group_mapping():
    model = BUILDERS["convnext_block"]()
    model.compile(keras.optimizers.Adam(0.01), "mse")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 8, 8, 3)).astype("float32")
    y = rng.normal(size=(16, 5)).astype("float32")
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    optimizer = model.optimizer

    def slots(attr):
        return {
            id(v): np.array(keras.ops.convert_to_numpy(s))
            for v, s in zip(optimizer._trainable_variables, getattr(optimizer, attr))
        }

    before = {attr: slots(attr) for attr in ("_momentums", "_velocities")}
    result = kn.grow_in_place(model, kn.Widen("b0_pw2", 16))
    changed = 0
    for attr, kind in (("_momentums", "linear"), ("_velocities", "squared")):
        after = slots(attr)
        for variable in model.trainable_variables:
            source, chain = result.origins[id(variable)]
            expected = before[attr][id(source)]
            for step in chain:
                expected = step.apply(expected, kind=kind)
            np.testing.assert_allclose(after[id(variable)], expected, rtol=1e-6)
            changed += bool(chain)
    assert changed >= 2 * 12  # stem, LNs, depthwise convs, pw layers, LayerScales
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)


@pytest.mark.parametrize(
    "name, layer",
    [
        ("recurrent", "lstm"),
        ("bidirectional", "bi_lstm"),
        ("group_norm", "stem"),
        ("decoder", "up1"),
    ],
)
def test_new_layer_families_save_and_load_after_growth(tmp_path, name, layer):
    model = BUILDERS[name]()
    shape = (2,) + tuple(model.inputs[0].shape[1:])
    x = np.random.default_rng(0).normal(size=shape).astype("float32")
    group = kn.coupled_layers(model, layer)
    grown = kn.widen(model, layer, 2 * group.width, seed=0)
    grown.save(tmp_path / "grown.keras")
    loaded = keras.models.load_model(tmp_path / "grown.keras")
    assert kn.max_output_difference(grown, loaded, x) <= TOL
    assert relative_difference(model, loaded, x) <= TOL


class OutputProbe(keras.callbacks.Callback):
    """The model's outputs on a fixed batch at each epoch's start."""

    def __init__(self, x):
        super().__init__()
        self.x, self.out, self.slots = x, {}, {}

    def on_epoch_begin(self, epoch, logs=None):
        out = self.model(self.x, training=False)
        self.out[epoch] = keras.ops.convert_to_numpy(out)
        self.slots[epoch] = momentum_of_kernels(self.model)


def momentum_of_kernels(model):
    """Adam's first moment of each layer's kernel, by layer name."""
    optimizer = model.optimizer
    if not optimizer.built:
        return {}
    index = {id(v): i for i, v in enumerate(optimizer._trainable_variables)}
    kernels = {}
    for layer in model.layers:
        owner = getattr(layer, "cell", layer)  # a recurrent layer's cell
        kernel = getattr(owner, "kernel", None)
        if kernel is not None and id(kernel) in index:
            kernels[layer.name] = keras.ops.convert_to_numpy(
                optimizer._momentums[index[id(kernel)]]
            )
    return kernels


@pytest.mark.parametrize(
    "name, growth",
    [
        ("recurrent", [kn.Widen("lstm", 10), kn.Widen("gru", 9), kn.Deepen("gru")]),
        ("decoder", [kn.Widen("up1", 9), kn.Widen("up3", 7), kn.Deepen("up2")]),
        ("generator_stem", [kn.Widen("stem", 4 * 4 * 10), kn.Deepen("up")]),
    ],
)
def test_growmodel_with_adam_through_recurrent_and_transposed_layers(name, growth):
    model = BUILDERS[name]()
    model.compile(keras.optimizers.Adam(0.01), "mse")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, *model.inputs[0].shape[1:])).astype("float32")
    y = rng.normal(size=(16, *model.outputs[0].shape[1:])).astype("float32")
    params = model.count_params()
    before, after = OutputProbe(x[:4]), OutputProbe(x[:4])
    grow = kn.GrowModel({1: growth})
    history = model.fit(
        x, y, epochs=3, batch_size=8, verbose=0, callbacks=[before, grow, after]
    )
    b, a = before.out[1], after.out[1]
    assert np.abs(a - b).max() <= TOL * np.abs(b).max()  # exact at the growth
    assert model.count_params() > params and len(grow.records) == 1
    assert np.all(np.isfinite(history.history["loss"]))
    assert int(model.optimizer.iterations) == 6
    assert len(model.optimizer._trainable_variables) == len(model.trainable_variables)
    # Adam's first moments of the widened layer's kernel were carried through
    # the growth (not restarted at zero), at the new shape.
    name = growth[0].layer
    slot, old = after.slots[1][name], before.slots[1][name]
    assert slot.shape != old.shape and np.any(slot)
    kept = tuple(slice(0, n) for n in old.shape)
    np.testing.assert_allclose(slot[kept][..., :1], old[..., :1], atol=1e-6)


def test_growmodel_with_adam_through_bidirectional_layers():
    model = BUILDERS["bidirectional"]()
    model.compile(keras.optimizers.Adam(0.01), "mse")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 6, 5)).astype("float32")
    y = rng.normal(size=(16, 3)).astype("float32")
    before, after = OutputProbe(x[:4]), OutputProbe(x[:4])
    growth = [kn.Widen("bi_lstm", 16), kn.Widen("bi_gru", 8), kn.Deepen("bi_rnn")]
    grow = kn.GrowModel({1: growth})
    history = model.fit(
        x, y, epochs=2, batch_size=8, verbose=0, callbacks=[before, grow, after]
    )
    b, a = before.out[1], after.out[1]
    assert np.abs(a - b).max() <= TOL * np.abs(b).max()  # exact at the growth
    assert np.all(np.isfinite(history.history["loss"]))
    layer = model.get_layer("bi_lstm")
    assert layer.forward_layer.units == layer.backward_layer.units == 8
    assert model.get_layer("bi_gru").forward_layer.units == 8
    assert int(model.optimizer.iterations) == 4


def test_bidirectional_slots_follow_each_directions_mapping():
    model = BUILDERS["bidirectional"]()
    model.compile(keras.optimizers.Adam(0.01), "mse")
    rng = np.random.default_rng(0)
    model.train_on_batch(rng.normal(size=(8, 6, 5)), rng.normal(size=(8, 3)))

    def moment(layer):
        kernel = layer.backward_layer.cell.kernel
        optimizer = model.optimizer
        index = {id(v): i for i, v in enumerate(optimizer._trainable_variables)}
        return keras.ops.convert_to_numpy(optimizer._momentums[index[id(kernel)]])

    old = moment(model.get_layer("bi_lstm"))  # (8 inputs, 4 gates x 4 units)
    kn.grow_in_place(model, kn.Widen("bi_lstm", 16))
    new = moment(model.get_layer("bi_lstm"))  # (8, 4 gates x 8 units)
    assert old.shape == (8, 16) and new.shape == (8, 32)
    for gate in range(4):
        old_columns = old[:, 4 * gate : 4 * gate + 4].T
        new_columns = new[:, 8 * gate : 8 * gate + 8].T
        # every new unit's moments copy an old unit's of the same gate
        for column in new_columns:
            assert np.min(np.abs(old_columns - column).max(1)) <= 1e-7
        assert np.allclose(new_columns[:4], old_columns)  # old units stay first
