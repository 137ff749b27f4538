"""`Stack` of KerasHub models in their config vocabulary (``num_layers`` x
factor): the class kept, exact with zeroed copies, the trained blocks copied
as they are with ``copies="kept"``, in either order; inside `fit`."""

import numpy as np
import pytest
from conftest import TOL
from family_models import MOE
from family_models import build
from family_models import llama
from family_models import logits
from family_models import relative
from growth_helpers import tiny_llama

import keras_net2net as kn
from keras_net2net.surgery import apply_requests

keras_hub = pytest.importorskip("keras_hub")
keras = pytest.importorskip("keras")

FAMILIES = ["Llama", "GPT2", "OPT", "Mistral", "Phi3", "GPTNeoX", "Gemma", "Gemma3"]


def block_values(model, index):
    layer = model.backbone.transformer_layers[index]
    return [keras.ops.convert_to_numpy(w) for w in layer.weights]


@pytest.mark.parametrize("family", [*FAMILIES, *MOE])
def test_zeroed_stack_keeps_the_class_and_the_function(family):
    model = build(family)
    plan = kn.describe_growth(model, kn.Stack(2))
    assert "num_layers 2 -> 4" in plan and "exact" in plan
    grown = apply_requests(model, kn.Stack(2)).model
    assert type(grown) is type(model) and grown.backbone.num_layers == 4
    assert relative(logits(model), logits(grown)) <= TOL


@pytest.mark.parametrize(
    "order, sources", [("stack", [0, 1, 0, 1]), ("interleave", [0, 0, 1, 1])]
)
def test_kept_copies_are_the_trained_blocks_in_order(order, sources):
    model = llama()
    grown = apply_requests(model, kn.Stack(2, order=order, copies="kept")).model
    assert type(grown) is type(model) and grown.backbone.num_layers == 4
    for index, source in enumerate(sources):
        for a, b in zip(block_values(model, source), block_values(grown, index)):
            np.testing.assert_array_equal(a, b)
    assert "NOT function-preserving" in kn.describe_growth(
        model, kn.Stack(2, copies="kept")
    )
    assert relative(logits(model), logits(grown)) > 1e-3


def test_a_llama_stacked_inside_fit_keeps_its_class_and_trains_on():
    model, x, y = tiny_llama()
    grow = kn.GrowModel({kn.AtStep(3): kn.Stack(2, copies="kept")})
    history = model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[grow])
    assert type(model).__name__ == "LlamaCausalLM"
    assert model.backbone.num_layers == 4
    assert int(model.optimizer.iterations) == 8
    assert np.isfinite(history.history["loss"]).all()
    assert "num_layers 2 -> 4" in grow.records[0].describe()


def velocities_by_block(model):
    optimizer = model.optimizer
    slot = {
        id(v): keras.ops.convert_to_numpy(s)
        for v, s in zip(optimizer._trainable_variables, optimizer._velocities)
    }
    return [
        [slot[id(v)] for v in block.trainable_weights]
        for block in model.backbone.transformer_layers
    ]


@pytest.mark.parametrize("policy", ["carry", "reset_new"])
def test_kept_copies_state_is_carried_or_reset(policy):
    model, x, y = tiny_llama()
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    before = velocities_by_block(model)
    kn.grow_in_place(model, kn.Stack(2, copies="kept"), optimizer_state=policy)
    after = velocities_by_block(model)
    assert len(after) == 4
    for index in (0, 1):  # the trained blocks keep theirs
        for old, new in zip(before[index], after[index]):
            np.testing.assert_array_equal(old, new)
    for index in (2, 3):  # the copies of blocks 0 and 1
        for source, copy in zip(before[index - 2], after[index]):
            if policy == "carry":
                np.testing.assert_array_equal(source, copy)
            else:
                assert not copy.any()
