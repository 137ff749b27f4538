"""Plain-Keras Transformers grown to target configurations in stages:
`transformer_config`, `transformer_requests` and `transformer_schedule`."""

import keras
import numpy as np
import pytest
from conftest import TOL
from conftest import assert_unchanged
from conftest import snapshot
from transformer_models import token_batch
from transformer_models import transformer_classifier

import keras_net2net as kn

SMALL = {"hidden_dim": 16, "num_heads": 2, "intermediate_dim": 32, "num_layers": 2}


def relative_difference(before, model, x):
    after = keras.ops.convert_to_numpy(model(x, training=False))
    return float(np.max(np.abs(after - before)) / np.max(np.abs(before)))


def outputs(model, x):
    return keras.ops.convert_to_numpy(model(x, training=False))


@pytest.mark.parametrize("pre_ln", [True, False], ids=["pre-LN", "post-LN"])
def test_config_is_read_from_the_graph(pre_ln):
    model = transformer_classifier(pre_ln=pre_ln)
    assert kn.transformer_config(model) == SMALL
    blocks = kn.growth.transformer.transformer_blocks(model)
    assert [(b.attention, b.ffn_in, b.ffn_out, b.end) for b in blocks] == [
        (f"mha_{i}", f"ffn_in_{i}", f"ffn_out_{i}", f"add_ffn_{i}") for i in (0, 1)
    ]


@pytest.mark.parametrize(
    "target",
    [
        {"hidden_dim": 32, "num_heads": 4, "intermediate_dim": 64, "num_layers": 4},
        {"num_layers": 3},
        {"intermediate_dim": 48},
        {"hidden_dim": 24, "num_layers": 3},  # 1.5x: LayerNorm at any width
    ],
    ids=["everything x2", "3 layers from 2", "feed-forward only", "stream 1.5x"],
)
def test_requests_reach_the_target_exactly(target):
    model = transformer_classifier()
    x = token_batch()
    before = outputs(model, x)
    requests = kn.transformer_requests(model, target, seed=0)
    kn.grow_in_place(model, requests)
    assert kn.transformer_config(model) == {**SMALL, **target}
    assert relative_difference(before, model, x) <= TOL


def test_the_stream_is_widened_from_its_first_writer():
    requests = kn.transformer_requests(transformer_classifier(), {"hidden_dim": 32})
    assert requests == [kn.Widen("token_embedding", 32)]


def test_two_stages_where_the_second_widens_the_inserted_blocks():
    model = transformer_classifier()
    x = token_batch()
    schedule = kn.transformer_schedule(
        model,
        {
            kn.AtStep(2): {"num_layers": 4},
            kn.AtStep(4): {"hidden_dim": 32, "num_heads": 4},
        },
        noise=0.0,
        seed=7,
    )
    assert [trigger for trigger, _ in schedule] == [kn.AtStep(2), kn.AtStep(4)]
    second = {r.layer for r in schedule[1][1]}
    assert len(second) == 1 + 4  # the stream and the heads of all 4 blocks
    assert kn.transformer_config(model) == SMALL  # the schedule changes nothing
    # The requests fit the model as the earlier stages leave it in place.
    before = outputs(model, x)
    for _, requests in schedule:
        kn.grow_in_place(model, requests)
        assert relative_difference(before, model, x) <= TOL
    assert kn.transformer_config(model) == {
        **SMALL,
        "hidden_dim": 32,
        "num_heads": 4,
        "num_layers": 4,
    }


def test_schedule_grows_inside_fit():
    model = transformer_classifier()
    model.compile(keras.optimizers.AdamW(1e-3), "sparse_categorical_crossentropy")
    x = token_batch(16)
    y = np.arange(16) % 2
    schedule = kn.transformer_schedule(
        model,
        [
            (kn.AtStep(1), {"hidden_dim": 32, "intermediate_dim": 64}),
            (kn.AtStep(2), {"num_layers": 4, "num_heads": 4}),
        ],
        noise=0.01,
        seed=0,
    )
    grow = kn.GrowModel(schedule)
    model.fit(x, y, batch_size=4, epochs=1, callbacks=[grow], verbose=0)
    assert len(grow.records) == 2
    assert kn.transformer_config(model) == {
        "hidden_dim": 32,
        "num_heads": 4,
        "intermediate_dim": 64,
        "num_layers": 4,
    }


def test_random_method_builds_the_baseline():
    model = transformer_classifier()
    x = token_batch()
    before = outputs(model, x)
    requests = kn.transformer_requests(
        model, {"hidden_dim": 32, "num_layers": 4}, method="random", seed=1
    )
    assert {type(r).__name__: r.method for r in requests} == {
        "Widen": "random-pad",
        "Deepen": "random",
    }
    assert all(r.init == "random" for r in requests if isinstance(r, kn.Deepen))
    kn.grow_in_place(model, requests)
    assert kn.transformer_config(model)["num_layers"] == 4
    assert relative_difference(before, model, x) > 1e-2  # not function-preserving


@pytest.mark.parametrize(
    "call, words",
    [
        (
            lambda m: kn.transformer_requests(m, {"hidden_dim": 8}),
            ["hidden_dim=8", "current hidden_dim=16", "transformer"],
        ),
        (
            lambda m: kn.transformer_requests(m, {"width": 32}),
            ["'width'", "hidden_dim", "num_layers"],
        ),
        (
            lambda m: kn.transformer_requests(m, {"num_layers": 4}, method="stack"),
            ["method", "'stack'", "net2net"],
        ),
        (
            lambda m: kn.transformer_requests(
                m, {"num_layers": 4}, method="random", noise=0.1
            ),
            ["noise=0.1", "random"],
        ),
        (
            lambda m: kn.transformer_requests(m, {"num_layers": 3}, order="stack"),
            ["order='stack'", "whole multiple", "num_layers=3"],
        ),
        (
            lambda m: kn.transformer_requests(
                m, {"num_layers": 4}, method="random", copies="kept"
            ),
            ["method='random'", "copies='kept'"],
        ),
        (
            lambda m: kn.transformer_schedule(m, {}),
            ["stages", "non-empty"],
        ),
        (
            lambda m: kn.transformer_schedule(m, {kn.AtStep(3): dict(SMALL)}),
            ["stage 0", "AtStep(step=3)", "already has"],
        ),
        (
            lambda m: kn.transformer_schedule(
                m, {kn.AtStep(3): {"num_layers": 4}, kn.AtStep(6): {"hidden_dim": 12}}
            ),
            ["stage 1", "AtStep(step=6)", "12"],
        ),
    ],
    ids=[
        "below current",
        "unknown key",
        "unknown method",
        "noise with random",
        "a stack to no whole multiple",
        "kept copies with random",
        "no stage",
        "a stage that grows nothing",
        "a later stage that shrinks",
    ],
)
def test_bad_targets_fail_clearly_and_change_nothing(call, words):
    model = transformer_classifier()
    before = snapshot(model)
    with pytest.raises(ValueError) as error:
        call(model)
    for word in words:
        assert word in str(error.value), (word, str(error.value))
    assert_unchanged(model, before)


def test_post_ln_grows_in_width_and_refuses_depth():
    model = transformer_classifier(pre_ln=False)
    x = token_batch()
    before = outputs(model, x)
    with pytest.raises(ValueError, match="stage 0.*post-LN"):
        kn.transformer_schedule(model, {kn.AtStep(1): {"num_layers": 4}})
    # Post-LN, the stream grows to multiples only (pre-LN: any width).
    with pytest.raises(ValueError, match="stage 0.*post-norm.*multiple of 16"):
        kn.transformer_schedule(model, {kn.AtStep(1): {"hidden_dim": 24}})
    ((_, requests),) = kn.transformer_schedule(
        model, {kn.AtStep(1): {"hidden_dim": 32, "num_heads": 4}}
    )
    kn.grow_in_place(model, requests)
    assert relative_difference(before, model, x) <= TOL


def test_a_model_without_transformer_blocks_is_refused():
    inputs = keras.Input((8,))
    h = keras.layers.Dense(8, name="fc")(inputs)
    model = keras.Model(inputs, keras.layers.Add()([inputs, h]), name="mlp")
    with pytest.raises(ValueError, match="'mlp' has no Transformer block"):
        kn.transformer_config(model)


@pytest.mark.parametrize("order", ["stack", "interleave"])
@pytest.mark.parametrize("copies", ["zeroed", "kept"])
def test_a_whole_multiple_of_the_depth_is_one_stack(order, copies):
    model = transformer_classifier()
    requests = kn.transformer_requests(
        model, {"num_layers": 6}, order=order, copies=copies
    )
    assert requests == [kn.Stack(3, order=order, copies=copies)]
    x = token_batch()
    before = outputs(model, x)
    kn.grow_in_place(model, requests)
    assert kn.transformer_config(model)["num_layers"] == 6
    difference = relative_difference(before, model, x)
    assert difference <= TOL if copies == "zeroed" else difference > 1e-2
