"""Edge cases found in review: nested models reused across operations, compile
configs that cannot be deserialised, branches that cannot be zeroed, events
due at one execution boundary, nested Functional models in Sequential ones."""

import keras
import numpy as np
import pytest
from conftest import TOL
from conftest import assert_unchanged
from conftest import randomize_weights
from conftest import snapshot
from growth_helpers import small_data
from growth_helpers import small_model

import keras_net2net as kn
from keras_net2net import _keras_internals

L = keras.layers


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


def test_validation_and_dry_runs_do_not_compile():
    model = small_model("functional")
    model.compile("sgd", loss=lambda y, p: keras.ops.mean((y - p) ** 2))
    x, y = small_data()
    y = np.eye(3)[y].astype("float32")
    assert "changes:" in kn.describe_growth(model, kn.Widen("fc1", 9))
    grow = kn.GrowModel({1: kn.Widen("fc1", 9)})
    model.fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=[grow])
    assert model.get_layer("fc1").units == 9


def test_branch_ending_in_sigmoid_is_refused_not_changed():
    inputs = keras.Input((4,))
    x = L.Dense(4, name="a")(inputs)
    h = L.Dense(4, activation="sigmoid", name="gate")(x)
    x = L.Add(name="add")([x, h])
    model = randomize_weights(keras.Model(inputs, L.Dense(2)(x)))
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"'gate'.*does not map zeros to zeros"):
        kn.deepen(model, after="add")
    assert_unchanged(model, before)


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
    assert "6 -> 9" in record.operations[0] and "9 -> 12" in record.operations[1]


@pytest.mark.parametrize("in_place", [False, True])
def test_nested_functional_in_sequential_takes_the_wider_input(in_place):
    inner_in = keras.Input((6,))
    h = L.Dense(5, activation="relu", name="inner_hidden")(inner_in)
    inner = keras.Model(inner_in, L.Add()([h, L.Dense(5)(inner_in)]), name="inner")
    model = keras.Sequential(
        [keras.Input((4,)), L.Dense(6, name="fc1"), inner, L.Dense(2, name="out")]
    )
    randomize_weights(model)
    x = np.random.default_rng(0).normal(size=(3, 4)).astype("float32")
    before = keras.ops.convert_to_numpy(model(x))
    if in_place:
        kn.grow_in_place(model, [kn.Widen("fc1", 9), kn.Widen("inner_hidden", 7)])
        grown = model
    else:
        grown = kn.widen(kn.widen(model, "fc1", 9), "inner_hidden", 7)
    after = keras.ops.convert_to_numpy(grown(x))
    assert np.max(np.abs(after - before)) <= TOL * np.max(np.abs(before))
    assert grown.get_layer("inner").input.shape[-1] == 9


def test_random_pad_heads_use_the_pad_distribution():
    tokens = keras.Input((5,), dtype="int32")
    x = L.Embedding(10, 8, name="embed")(tokens)
    h = L.MultiHeadAttention(2, 4, name="mha")(x, x)
    model = keras.Model(tokens, L.Dense(2)(L.GlobalAveragePooling1D()(L.Add()([x, h]))))
    wide = kn.widen(model, "mha", 6, method="random-pad", pad_std=0.5, pad_bias=0.25)
    query_kernel, query_bias = [
        keras.ops.convert_to_numpy(v) for v in wide.get_layer("mha").weights[:2]
    ]
    np.testing.assert_allclose(query_bias[2:], 0.25)
    assert abs(query_kernel[:, 2:].std() - 0.5) < 0.15


def test_remote_backup_directories_are_refused():
    model = small_model("functional")
    x, y = small_data()
    with pytest.raises(ValueError, match=r"local backup directories only"):
        model.fit(
            x,
            y,
            epochs=1,
            verbose=0,
            callbacks=[
                keras.callbacks.BackupAndRestore("gs://bucket/run"),
                kn.GrowModel({1: kn.Widen("fc1", 9)}),
            ],
        )
    assert TOL
