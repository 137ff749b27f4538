"""`Stack`: a residual stack repeated by a whole factor (G_stack), of a
Functional Transformer and of KerasHub models in their config vocabulary;
exact with zeroed copies, the copies' weights equal to the originals' when
kept, inside `fit` with the optimizer's state, refusals before anything
changes."""

import keras
import numpy as np
import pytest
from conftest import TOL
from conftest import assert_unchanged
from conftest import snapshot
from transformer_models import token_batch
from transformer_models import transformer_classifier

import keras_net2net as kn
from keras_net2net.surgery import apply_requests

L = keras.layers


def relative_difference(a, b, x):
    scale = np.max(np.abs(keras.ops.convert_to_numpy(a(x, training=False))))
    return kn.max_output_difference(a, b, x) / scale


def attention_names(model):
    return [x.name for x in model.layers if isinstance(x, L.MultiHeadAttention)]


def value(layer):
    return [keras.ops.convert_to_numpy(w) for w in layer.weights]


ORDERS = {
    "stack": ["mha_0", "mha_1", "stack1_mha_0", "stack1_mha_1", "stack2_mha_0"],
    "interleave": ["mha_0", "copy1_mha_0", "copy2_mha_0", "mha_1", "copy1_mha_1"],
}


@pytest.mark.parametrize("order", list(ORDERS))
def test_zeroed_copies_keep_the_function_in_either_order(order):
    model = transformer_classifier()
    x = token_batch()
    grown = apply_requests(model, kn.Stack(3, order=order)).model
    assert kn.transformer_config(grown)["num_layers"] == 6
    assert attention_names(grown)[:5] == ORDERS[order]
    assert relative_difference(model, grown, x) <= TOL
    # The copies are the trained blocks, only their output projections zero.
    source, copy = (
        model.get_layer("ffn_in_1"),
        grown.get_layer("stack2_ffn_in_1" if order == "stack" else "copy2_ffn_in_1"),
    )
    for a, b in zip(value(source), value(copy)):
        np.testing.assert_array_equal(a, b)
    zeroed = grown.get_layer(
        "copy1_ffn_out_0" if order == "interleave" else "stack1_ffn_out_0"
    )
    assert not any(w.any() for w in value(zeroed))


def test_kept_copies_are_the_trained_blocks_and_change_the_function():
    model = transformer_classifier()
    x = token_batch()
    plan_lines = kn.describe_growth(model, kn.Stack(2, copies="kept"))
    assert "NOT function-preserving" in plan_lines
    grown = apply_requests(model, kn.Stack(2, copies="kept")).model
    for name in ("mha_0", "ffn_in_1", "ffn_out_1", "ln_attn_0"):
        for a, b in zip(
            value(model.get_layer(name)), value(grown.get_layer(f"stack1_{name}"))
        ):
            np.testing.assert_array_equal(a, b)
    assert relative_difference(model, grown, x) > 1e-2


def test_a_stacked_model_saves_and_loads_with_plain_keras(tmp_path):
    model = transformer_classifier()
    grown = apply_requests(model, kn.Stack(2)).model
    path = tmp_path / "stacked.keras"
    grown.save(path)
    loaded = keras.saving.load_model(path)
    x = token_batch()
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(x)),
        keras.ops.convert_to_numpy(grown(x)),
        atol=1e-6,
    )


def velocities(model):
    optimizer = model.optimizer
    return {
        id(v): keras.ops.convert_to_numpy(s)
        for v, s in zip(optimizer._trainable_variables, optimizer._velocities)
    }


class SlotsAfterGrowth(keras.callbacks.Callback):
    """The AdamW velocities of two layers' kernels as the step after growth begins."""

    def __init__(self, step, names):
        super().__init__()
        self.step, self.names, self.seen = step, names, None

    def on_train_batch_begin(self, batch, logs=None):
        if int(self.model.optimizer.iterations) == self.step and self.seen is None:
            slots = velocities(self.model)
            self.seen = [slots[id(self.model.get_layer(n).kernel)] for n in self.names]


def test_stack_inside_fit_starts_copies_from_their_sources_optimizer_state():
    model = transformer_classifier(blocks=1)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(keras.optimizers.AdamW(1e-3), loss)
    x, y = token_batch(16), np.arange(16) % 2
    grow = kn.GrowModel({kn.AtStep(2): kn.Stack(4, copies="kept")})
    probe = SlotsAfterGrowth(2, ["ffn_in_0", "stack3_ffn_in_0"])
    model.fit(x, y, batch_size=4, epochs=2, verbose=0, callbacks=[grow, probe])
    assert kn.transformer_config(model)["num_layers"] == 4
    assert int(model.optimizer.iterations) == 8
    source, copy = probe.seen
    assert source.any()
    np.testing.assert_array_equal(source, copy)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: kn.Stack(1), "factor"),
        (lambda: kn.Stack(2.0), "factor"),
        (lambda: kn.Stack(2, order="blocks"), "order"),
        (lambda: kn.Stack(2, copies="random"), "copies"),
    ],
)
def test_bad_stack_arguments_are_refused(call, message):
    with pytest.raises((TypeError, ValueError), match=message):
        call()


def test_a_model_without_residual_blocks_is_refused_before_anything_changes():
    model = keras.Sequential([keras.Input((4,)), L.Dense(3, name="fc")])
    before = snapshot(model)
    with pytest.raises(ValueError, match="has no residual block to stack"):
        kn.grow_in_place(model, kn.Stack(2))
    assert_unchanged(model, before)


def test_post_ln_blocks_that_are_not_one_run_are_refused_by_name():
    model = transformer_classifier(pre_ln=False)
    with pytest.raises(
        ValueError, match="'add_attn_1' before it is not part of the run"
    ):
        kn.describe_growth(model, kn.Stack(2))


def test_a_shared_add_is_refused_by_name():
    inputs = keras.Input((8,))
    add = L.Add(name="shared_add")
    x = add([inputs, L.Dense(8, name="f")(inputs)])
    x = add([x, L.Dense(8, name="g")(x)])
    model = keras.Model(inputs, L.Dense(2, name="head")(x))
    with pytest.raises(ValueError, match="'shared_add'.*shared"):
        kn.describe_growth(model, kn.Stack(2))


def test_the_dry_run_says_what_is_stacked():
    text = kn.describe_growth(transformer_classifier(), kn.Stack(2, order="interleave"))
    first, found = text.splitlines()[:2]
    assert "stack 2 Transformer block(s) ending at 'add_ffn_1' x2 -> 4" in first
    assert "each block followed by its copies" in first
    assert "function-preserving" in first
    assert "4 residual blocks found ('add_attn_0' to 'add_ffn_1'), 2 unit(s)" in found
