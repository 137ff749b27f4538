"""GrowModel end to end: grow inside one model.fit, function preserved."""

import gc
import weakref

import keras
import numpy as np
import pytest
from conftest import TOL
from growth_helpers import LossProbe
from growth_helpers import data
from growth_helpers import mnist_model
from growth_helpers import numpy_weights
from growth_helpers import record_builds

import keras_net2net as kn
from keras_net2net import _keras_internals


def test_keras_internals_are_available():
    _keras_internals.check_supported()


def test_grow_wider_and_deeper_in_one_fit(kind, tmp_path):
    model = mnist_model(kind)
    x, y = data(32)
    xb, yb = x[:16], y[:16]
    before, after = LossProbe(xb, yb, "before"), LossProbe(xb, yb, "after")

    class Snapshot(keras.callbacks.Callback):
        values = {}

        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 4:
                for name in ("conv1", "fc1", "conv2_deeper", "fc1_deeper"):
                    self.values[name] = numpy_weights(self.model.get_layer(name))

    grow = kn.GrowModel(
        {
            2: [kn.Widen("conv1", 128), kn.Widen("fc1", 128)],
            4: [kn.Deepen(after="conv2"), kn.Deepen(after="fc1")],
        }
    )
    history = model.fit(
        x,
        y,
        epochs=6,
        batch_size=16,
        verbose=0,
        callbacks=[before, grow, after, snap := Snapshot()],
    )

    for epoch in (2, 4):  # function preserved across each growth event
        loss_before, params_before = before.at_epoch[epoch]
        loss_after, params_after = after.at_epoch[epoch]
        assert params_after > params_before
        assert abs(loss_before - loss_after) <= TOL
    # the model object itself is grown
    assert model.get_layer("conv1").kernel.shape == (3, 3, 1, 128)
    assert model.get_layer("fc1").kernel.shape == (7 * 7 * 64, 128)
    assert model.get_layer("conv2").kernel.shape == (3, 3, 128, 64)
    assert model.get_layer("fc2").kernel.shape == (128, 10)
    assert model.get_layer("conv2_deeper").kernel.shape == (3, 3, 64, 64)
    assert model.get_layer("fc1_deeper").kernel.shape == (128, 128)
    assert int(model.optimizer.iterations) == 6 * 2
    # the new variables were trained (they changed after the last growth)
    for name, values in snap.values.items():
        now = numpy_weights(model.get_layer(name))
        assert not np.allclose(now["kernel"], values["kernel"]), name
    # growth is recorded
    assert [r["epoch"] for r in model.growth_history] == [2, 4]
    assert [r.step for r in grow.records] == [4, 8]
    assert history.history["growth_events"] == [0, 0, 1, 1, 2, 2]
    assert history.history["num_params"][2] > history.history["num_params"][1]
    assert "widen 'conv1' 64 -> 128" in grow.records[0].requests[0]
    # save / load / continue
    path = tmp_path / "grown.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(
        model.predict(xb, verbose=0), loaded.predict(xb, verbose=0)
    )
    loaded.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert int(loaded.optimizer.iterations) == 6 * 2 + 2


def test_grow_at_a_step_inside_an_epoch(kind):
    model = mnist_model(kind)
    x, y = data(64)
    before, after = LossProbe(x[:8], y[:8], "b"), LossProbe(x[:8], y[:8], "a")
    grow = kn.GrowModel({kn.AtStep(6): kn.Widen("fc1", 80, seed=0)})
    model.fit(x, y, epochs=3, batch_size=16, verbose=0, callbacks=[before, grow, after])
    (record,) = grow.records
    assert (record.epoch, record.step) == (1, 6)
    assert abs(before.at_step[6][0] - after.at_step[6][0]) <= TOL
    assert after.at_step[6][1] > before.at_step[6][1]
    assert after.at_step[5][1] == before.at_step[5][1]
    assert model.get_layer("fc1").units == 80
    assert int(model.optimizer.iterations) == 12


def test_plateau_trigger_grows_after_patience(kind):
    # learning rate 0: the loss cannot improve, so the plateau comes after
    # exactly `patience + 1` epochs without improvement.
    model = mnist_model(kind, keras.optimizers.SGD(0.0, momentum=0.9), size=12)
    x, y = data(16, size=12)
    # min_delta absorbs float noise between epochs of an unchanged model
    trigger = kn.OnPlateau("loss", patience=1, min_delta=1e-6)
    grow = kn.GrowModel({trigger: kn.Widen("fc1", 70)})
    model.fit(x, y, epochs=5, batch_size=16, verbose=0, callbacks=[grow])
    (record,) = grow.records
    assert record.epoch == 3  # best at epoch 0, no improvement at 1 and 2
    assert "plateau of loss" in record.trigger
    assert model.get_layer("fc1").units == 70


def test_plateau_trigger_with_fake_logs():
    model = mnist_model("sequential", size=12)
    grow = kn.GrowModel(
        {kn.OnPlateau("val_acc", patience=0, min_delta=0.01): kn.Widen("fc1", 70)}
    )
    grow.set_model(model)
    grow.on_train_begin()
    for epoch, acc in enumerate([0.5, 0.6, 0.605]):
        grow.on_epoch_begin(epoch)
        grow.on_epoch_end(epoch, {"val_acc": acc})
    assert not grow.records  # growth waits for the next step boundary
    grow.on_epoch_begin(3)
    assert len(grow.records) == 1 and model.get_layer("fc1").units == 70


def test_plateau_missing_metric_warns():
    model = mnist_model("sequential", size=12)
    grow = kn.GrowModel({kn.OnPlateau("val_loss"): kn.Widen("fc1", 70)})
    grow.set_model(model)
    grow.on_train_begin()
    with pytest.warns(UserWarning, match="Available metrics are: loss"):
        grow.on_epoch_end(0, {"loss": 1.0})


def test_old_layers_are_garbage_collected(kind):
    gc.collect()
    earlier = {id(o) for o in gc.get_objects() if isinstance(o, keras.layers.Dense)}
    model = mnist_model(kind, size=12)
    x, y = data(16, size=12)
    model.fit(x, y, epochs=1, verbose=0)
    refs = []
    for i in range(10):
        refs.append(weakref.ref(model.get_layer("fc1")))
        kn.grow_in_place(model, [kn.Widen("fc1", 65 + i)])
        model.fit(x, y, epochs=1, verbose=0)
    gc.collect()
    assert sum(r() is not None for r in refs) == 0
    layers = [
        o
        for o in gc.get_objects()
        if isinstance(o, keras.layers.Dense) and id(o) not in earlier
    ]
    assert len(layers) == 2  # fc1 and fc2 of the current model only


def test_works_with_standard_callbacks(kind, tmp_path):
    model = mnist_model(kind, size=12)
    x, y = data(48, size=12)
    path = tmp_path / "best.keras"
    callbacks = [
        kn.GrowModel({1: kn.Widen("fc1", 80), 2: kn.Deepen(after="fc1")}, lr_scale=0.5),
        keras.callbacks.EarlyStopping("val_loss", patience=10),
        keras.callbacks.ModelCheckpoint(path, monitor="val_loss", save_best_only=False),
        keras.callbacks.ReduceLROnPlateau("val_loss", patience=0, factor=0.5),
        keras.callbacks.TensorBoard(tmp_path / "tb"),
    ]
    history = model.fit(
        x,
        y,
        epochs=4,
        batch_size=16,
        validation_split=0.25,
        verbose=0,
        callbacks=callbacks,
    )
    assert len(history.history["val_loss"]) == 4
    assert all(np.isfinite(history.history["val_loss"]))
    saved = keras.models.load_model(path)  # last epoch: the grown model
    assert saved.get_layer("fc1").units == 80
    assert "fc1_deeper" in [layer.name for layer in saved.layers]
    np.testing.assert_allclose(
        saved.predict(x[:4], verbose=0), model.predict(x[:4], verbose=0), atol=1e-6
    )
    assert any((tmp_path / "tb").rglob("*"))


def test_verbose_prints_one_line_per_event(capsys):
    model = mnist_model("sequential", size=12)
    x, y = data(16, size=12)
    model.fit(
        x,
        y,
        epochs=2,
        verbose=0,
        callbacks=[kn.GrowModel({1: kn.Widen("fc1", 70)}, verbose=1)],
    )
    lines = [
        line
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("GrowModel")
    ]
    assert len(lines) == 1
    assert "widen 'fc1' 64 -> 70" in lines[0] and "params" in lines[0]


def test_lr_scale_float_and_schedule(tmp_path):
    model = mnist_model("functional", keras.optimizers.SGD(0.1), size=12)
    x, y = data(16, size=12)
    model.fit(
        x,
        y,
        epochs=2,
        verbose=0,
        callbacks=[kn.GrowModel({1: kn.Widen("fc1", 70)}, lr_scale=0.1)],
    )
    assert float(model.optimizer.learning_rate) == pytest.approx(0.01)

    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.5)
    model = mnist_model("functional", keras.optimizers.SGD(schedule), size=12)
    model.fit(
        x,
        y,
        epochs=2,
        verbose=0,
        callbacks=[kn.GrowModel({1: kn.Widen("fc1", 70)}, lr_scale=0.1)],
    )
    step = int(model.optimizer.iterations)
    assert float(model.optimizer.learning_rate) == pytest.approx(
        0.01 * 0.5 ** (step / 10), rel=1e-5
    )
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert isinstance(loaded.optimizer._learning_rate, kn.ScaledSchedule)


def test_backend_tracks_exactly_the_current_variables(kind):
    """torch: parameters() must be the current variables (no stale, none missing)."""
    model = mnist_model(kind, size=12)
    x, y = data(16, size=12)
    model.fit(
        x,
        y,
        epochs=2,
        verbose=0,
        callbacks=[kn.GrowModel({1: [kn.Widen("fc1", 70), kn.Deepen(after="conv2")]})],
    )
    if keras.backend.backend() == "torch":
        params = {id(p) for p in model.parameters()}
        assert params == {id(v.value) for v in model.variables}
    paths = [v.path for v in model.variables]
    assert len(paths) == len(set(paths))
    # a second fit trains and stays finite (no gradient accumulation)
    history = model.fit(x, y, epochs=3, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))


def test_checking_pending_events_leaves_the_model_untouched(kind):
    """GrowModel simulates its events at fit start on graphs sharing the
    unchanged layers; the model, its layers' call history and its variables
    are exactly as before, and a later growth still works."""
    from conftest import assert_unchanged
    from conftest import snapshot

    model = mnist_model(kind, size=12)
    x, y = data(16, size=12)
    model.fit(x, y, epochs=1, verbose=0)
    before = snapshot(model)
    nodes = {
        layer.name: (len(layer._inbound_nodes), len(layer._outbound_nodes))
        for layer in model.layers
    }
    variables = [id(v) for v in model.weights]
    # An invalid schedule (its second event would narrow conv1) is refused,
    # after simulating the first event, with the model untouched.
    bad = kn.GrowModel(
        {5: [kn.Widen("fc1", 70), kn.Deepen(after="conv2")], 6: kn.Widen("conv1", 40)}
    )
    bad.set_model(model)
    with pytest.raises(ValueError, match="event at epoch 6 is invalid"):
        bad.on_train_begin()
    assert_unchanged(model, before)
    grow = kn.GrowModel(
        {
            5: [kn.Widen("fc1", 70), kn.Deepen(after="conv2")],
            6: kn.Widen("conv1", 96),
        }
    )
    grow.set_model(model)
    grow.on_train_begin()
    assert_unchanged(model, before)
    assert [id(v) for v in model.weights] == variables
    assert {
        layer.name: (len(layer._inbound_nodes), len(layer._outbound_nodes))
        for layer in model.layers
    } == nodes
    model.fit(x, y, epochs=8, verbose=0, callbacks=[grow])
    assert len(grow.records) == 2 and model.get_layer("fc1").units == 70


@pytest.mark.skipif(
    keras.backend.backend() == "tensorflow",
    reason="Keras calls batch hooks on the main thread on TensorFlow",
)
def test_growmodel_leaves_keras_batch_end_hooks_asynchronous():
    """A callback with ``on_train_batch_end`` makes Keras wait for every step's
    logs unless it is ``async_safe``: GrowModel is, and counts steps right."""
    import threading

    from growth_helpers import small_data
    from growth_helpers import small_model

    threads = set()

    class Probe(kn.GrowModel):
        def on_train_batch_end(self, batch, logs=None):
            threads.add(threading.get_ident())
            super().on_train_batch_end(batch, logs)

    model = small_model("functional")
    x, y = small_data(72)  # 9 steps per epoch at batch 8
    grow = Probe({kn.AtStep(12): kn.Widen("fc1", 9), kn.AtStep(20): kn.Deepen("fc1")})
    model.fit(x, y, epochs=3, batch_size=8, verbose=0, callbacks=[grow])
    assert threads and threading.get_ident() not in threads
    assert [r.step for r in grow.records] == [12, 20]
    assert [r.epoch for r in grow.records] == [1, 2]


def test_fixed_costs_walk_no_heap(kind, monkeypatch):
    """Neither the fit-start check nor an event walks or collects the heap.

    `gc.get_referrers` and a full `gc.collect` cost O(Python heap), not
    O(change): a process with a large data pipeline would pay them at every
    `fit` call and every growth.
    """
    model = mnist_model(kind, size=12)
    x, y = data(16, size=12)
    model.fit(x, y, epochs=1, verbose=0)
    built = record_builds(monkeypatch)

    def heap_walk(*args):
        raise AssertionError("a heap-wide gc call")

    monkeypatch.setattr(gc, "get_referrers", heap_walk)
    monkeypatch.setattr(gc, "collect", heap_walk)
    grow = kn.GrowModel({10**6: [kn.Widen("fc1", 70), kn.Deepen(after="fc1")]})
    model.fit(x, y, epochs=1, verbose=0, callbacks=[grow])
    # The check builds what a later operation is checked against, not the
    # last operation's model.
    assert len(built) == 1
    bad = kn.GrowModel({10**6: [kn.Widen("fc1", 70), kn.Widen("fc1", 40)]})
    with pytest.raises(ValueError, match="is invalid.*Widen"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[bad])
    kn.grow_in_place(model, [kn.Widen("fc1", 80)])
    assert model.get_layer("fc1").units == 80
