"""Sparse upcycling (`upcycle`, `Upcycle`): a dense KerasHub causal LM becomes
its mixture-of-experts class, computing what the dense model did; greedy
decoding, `.keras` and preset round trips; the optimizer's state carried
into every expert in place; refusals named before anything changes."""

import re
import warnings

import numpy as np
import pytest
from conftest import TOL
from family_models import gpt
from family_models import llama
from family_models import logits
from family_models import moe
from family_models import relative
from growth_helpers import tiny_llama

import keras_net2net as kn

keras_hub = pytest.importorskip("keras_hub")
keras = pytest.importorskip("keras")

# KerasHub 0.32's Qwen 3 and Qwen3-MoE normalise queries and keys with
# different epsilons (1e-5, 1e-6; neither from the config): not bit-exact.
QWEN3_TOL = 1e-3


def dense(family, **extra):
    if family == "Qwen3":
        return moe("Qwen3", **extra)
    if family == "LlamaTied":
        return llama(tie=True, **extra)
    return llama(family=family, **extra)


# Every pair; the first three also generate, save and reload (below).
PAIRS = [
    ("Llama", "MixtralCausalLM"),
    ("Qwen", "QwenMoeCausalLM"),
    ("Qwen3", "Qwen3MoeCausalLM"),
    ("LlamaTied", "MixtralCausalLM"),
    ("Llama3", "MixtralCausalLM"),
    ("Mistral", "MixtralCausalLM"),
]


LLAMA31_ROPE = dict(
    rope_frequency_adjustment_factor=8.0,
    rope_low_freq_factor=1.0,
    rope_high_freq_factor=4.0,
    rope_pretraining_sequence_length=64,
)


def upcycled(model, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Qwen 3's epsilon note
        return kn.upcycle(model, *args, **kwargs)


def generated(model, prompt):
    return model.generate(prompt, max_length=8, stop_token_ids=None)["token_ids"]


def check_upcycled(model, grown, family, moe_class):
    assert type(grown).__name__ == moe_class
    assert type(grown.backbone).__name__ == moe_class.replace("CausalLM", "Backbone")
    config = grown.backbone.get_config()
    assert (config["num_experts"], config["top_k"]) == (4, 2)
    assert config["num_layers"] == 2 and config["hidden_dim"] == 16
    tol = QWEN3_TOL if family == "Qwen3" else TOL
    assert relative(logits(model), logits(grown)) <= tol


@pytest.mark.parametrize("family, moe_class", PAIRS[3:])
def test_upcycled_model_computes_the_dense_function(family, moe_class):
    model = dense(family)
    check_upcycled(model, upcycled(model, 4, top_k=2, seed=0), family, moe_class)


# One dense class per MoE class: also greedy decoding, `.keras` and presets.
@pytest.mark.parametrize("family, moe_class", PAIRS[:3])
def test_upcycled_model_generates_saves_and_reloads(tmp_path, family, moe_class):
    model = dense(family)
    grown = upcycled(model, 4, top_k=2, seed=0)
    check_upcycled(model, grown, family, moe_class)
    prompt = {
        "token_ids": np.array([[3, 4, 5, 0, 0, 0, 0, 0]], "int32"),
        "padding_mask": np.array([[1, 1, 1, 0, 0, 0, 0, 0]], "int32"),
    }
    model.compile(sampler="greedy")
    grown.compile(sampler="greedy")
    np.testing.assert_array_equal(generated(model, prompt), generated(grown, prompt))
    grown.save(tmp_path / "moe.keras")
    loaded = keras.models.load_model(tmp_path / "moe.keras")
    assert type(loaded) is type(grown)
    assert relative(logits(grown), logits(loaded)) <= TOL
    grown.backbone.save_to_preset(str(tmp_path / "preset"))
    backbone = type(grown.backbone).from_preset(str(tmp_path / "preset"))
    reloaded = type(grown)(backbone=backbone, preprocessor=None)
    assert relative(logits(grown), logits(reloaded)) <= TOL


def expert_banks(model):
    """``{block-local name: value}`` of the expert banks of block 0."""
    block = model.backbone.transformer_layers[0]
    return {
        v.path.split("/")[-1]: keras.ops.convert_to_numpy(v)
        for v in block.weights
        if "/experts/" in v.path
    }


@pytest.mark.parametrize("family", ["Llama", "Qwen"])
def test_every_expert_starts_as_the_dense_network(family):
    model = dense(family)
    block = model.backbone.transformer_layers[0]
    gate, up, down = (
        keras.ops.convert_to_numpy(layer.kernel)
        for layer in (
            block._feedforward_gate_dense,
            block._feedforward_intermediate_dense,
            block._feedforward_output_dense,
        )
    )
    banks = expert_banks(upcycled(model, 3, seed=0))
    for expert in range(3):
        if family == "Qwen":  # [gate | up] fused in one kernel
            fused = banks["expert_feedforward_gate_dense"][expert]
            np.testing.assert_array_equal(fused, np.concatenate([gate, up], -1))
        else:
            np.testing.assert_array_equal(
                banks["expert_feedforward_gate_dense"][expert], gate
            )
            np.testing.assert_array_equal(
                banks["expert_feedforward_intermediate_dense"][expert], up
            )
        np.testing.assert_array_equal(
            banks["expert_feedforward_output_dense"][expert], down
        )


def test_qwen3_every_second_block_sparse_and_the_rest_dense():
    model = moe("Qwen3")
    grown = upcycled(model, 4, every=2, seed=0)
    config = grown.backbone.get_config()
    assert config["decoder_sparse_step"] == 2 and config["mlp_only_layers"] == []
    paths = [v.path for v in grown.backbone.weights]
    # (KerasHub leaves these names to Keras: a suffix after earlier models.)
    assert any(re.search(r"layer_0/qwen3_moe_mlp(_\d+)?/", p) for p in paths)
    assert any("transformer_layer_1/qwen3_sparse_moe_block" in p for p in paths)
    assert relative(logits(model), logits(grown)) <= QWEN3_TOL


def test_the_description_says_what_upcycling_does():
    text = kn.describe_growth(llama(tie=True), kn.Upcycle(8, top_k=2, seed=3))
    assert "upcycle LlamaBackbone -> MixtralBackbone: 8 experts, top 2" in text
    assert "exact" in text and "seed 3" in text and "untied" in text
    text = kn.describe_growth(llama(family="Qwen"), kn.Upcycle(4, seed=0))
    assert "shared expert (width 32) starts silent" in text
    noisy = kn.describe_growth(llama(), kn.Upcycle(4, noise=0.1, seed=0))
    assert "NOT function-preserving" in noisy
    with pytest.warns(UserWarning, match="epsilon"):
        kn.describe_growth(moe("Qwen3"), kn.Upcycle(4, seed=0))


def test_expert_noise_makes_the_experts_differ_and_is_declared():
    model = llama()
    banks = expert_banks(upcycled(model, 3, noise=0.1, seed=0))
    gate = banks["expert_feedforward_gate_dense"]
    assert np.abs(gate[1] - gate[0]).max() > 1e-3
    assert np.abs(gate[2] - gate[1]).max() > 1e-3


def test_the_router_is_small_random_and_seeded():
    model = llama()
    a, b = upcycled(model, 4, seed=5), upcycled(model, 4, seed=5)

    def router(m):
        block = m.backbone.transformer_layers[0]
        return next(
            keras.ops.convert_to_numpy(v)
            for v in block.weights
            if "sparse_feedforward_gate_dense" in v.path
        )

    np.testing.assert_array_equal(router(a), router(b))
    assert 0.005 < router(a).std() < 0.05


def slots_by_path(model):
    optimizer = model.optimizer
    return {
        v.path: keras.ops.convert_to_numpy(m)
        for v, m in zip(optimizer._trainable_variables, optimizer._momentums)
    }


def slot(slots, suffix):
    [value] = [v for p, v in slots.items() if p.endswith(suffix)]
    return value


def test_in_place_upcycling_carries_the_optimizer_state_into_every_expert():
    model, x, y = tiny_llama()
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    before = slots_by_path(model)
    out = logits(model)
    optimizer = model.optimizer
    kn.grow_in_place(model, kn.Upcycle(4, seed=0))
    assert type(model).__name__ == "MixtralCausalLM" and model.optimizer is optimizer
    assert relative(out, logits(model)) <= TOL
    after = slots_by_path(model)
    dense_gate = slot(before, "transformer_layer_0/feedforward_gate_dense/kernel")
    [bank] = [
        value
        for path, value in after.items()
        if "transformer_layer_0" in path
        and path.endswith("expert_feedforward_gate_dense")
    ]
    assert np.abs(dense_gate).max() > 0
    for expert in range(4):
        np.testing.assert_allclose(bank[expert], dense_gate)
    routers = [v for p, v in after.items() if "sparse_feedforward_gate_dense" in p]
    assert len(routers) == 2 and not any(r.any() for r in routers)  # fresh state
    history = model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()


def trained_qwen():
    """A dense Qwen LM after one epoch of Adam (its slots are not zero)."""
    model = dense("Qwen")
    tokens = np.random.default_rng(0).integers(0, 50, (16, 8)).astype("int32")
    x = {"token_ids": tokens, "padding_mask": np.ones_like(tokens)}
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy"
    )
    model.fit(x, tokens, batch_size=8, epochs=1, verbose=0)
    return model


def test_fused_experts_carry_both_dense_projections_state():
    model = trained_qwen()
    before = slots_by_path(model)
    kn.grow_in_place(model, kn.Upcycle(2, seed=0))
    after = slots_by_path(model)
    gate = slot(before, "transformer_layer_1/feedforward_gate_dense/kernel")
    up = slot(before, "transformer_layer_1/feedforward_intermediate_dense/kernel")
    [fused] = [
        v
        for p, v in after.items()
        if "transformer_layer_1" in p and p.endswith("expert_feedforward_gate_dense")
    ]
    np.testing.assert_allclose(fused[1], np.concatenate([gate, up], -1))


def test_upcycled_inside_fit_keeps_training():
    model, x, y = tiny_llama()
    grow = kn.GrowModel({kn.AtStep(2): kn.Upcycle(4, top_k=2, seed=0)})
    history = model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[grow])
    assert type(model).__name__ == "MixtralCausalLM"
    assert int(model.optimizer.iterations) == 8
    assert np.isfinite(history.history["loss"]).all()
    assert "MixtralBackbone" in grow.records[0].describe()


@pytest.mark.parametrize(
    "make, request_, message",
    [
        (lambda: gpt("GPT2"), kn.Upcycle(4), "GPT2Backbone has no mixture-of-experts"),
        (
            lambda: llama(family="Llama3", **LLAMA31_ROPE),
            kn.Upcycle(4),
            "Llama 3.1 rotary",
        ),
        (
            lambda: llama(family="Mistral", head_dim=8),
            kn.Upcycle(4),
            "head_dim=8",
        ),
        (lambda: llama(), kn.Upcycle(4, every=2), "makes every block sparse"),
        (lambda: llama(family="Qwen"), kn.Upcycle(4, every=2), "layer index 0"),
        (
            lambda: llama(family="Qwen", use_sliding_window_attention=True),
            kn.Upcycle(4),
            "sliding window on TensorFlow only",
        ),
        (lambda: moe("Qwen3"), kn.Upcycle(4, every=3), "leaves no block sparse"),
        (lambda: _functional(), kn.Upcycle(4), "no mixture-of-experts layer"),
        (lambda: moe("Mixtral"), kn.Upcycle(4), "a mixture of experts already"),
        (lambda: llama(), kn.Upcycle(4, shared_expert_dim=8), "no shared expert"),
    ],
)
def test_refusals_name_the_reason_and_change_nothing(make, request_, message):
    model = make()
    weights = [keras.ops.convert_to_numpy(v).copy() for v in model.weights]
    with pytest.raises(ValueError, match=message):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            kn.describe_growth(model, request_)
    for old, variable in zip(weights, model.weights):
        np.testing.assert_array_equal(old, keras.ops.convert_to_numpy(variable))


def test_request_arguments_are_checked():
    with pytest.raises(ValueError, match="top_k"):
        kn.Upcycle(2, top_k=3)
    with pytest.raises(ValueError, match="num_experts"):
        kn.Upcycle(1)
    with pytest.raises(ValueError, match="init_stddev"):
        kn.Upcycle(4, init_stddev=0)


def _functional():
    inputs = keras.Input((4,))
    return keras.Model(inputs, keras.layers.Dense(2, name="fc")(inputs))


@pytest.mark.parametrize("first", ["num_key_value_heads", "intermediate_dim"])
def test_upcycling_after_another_growth_in_one_list(first):
    model = trained_qwen()
    before, out = slots_by_path(model), logits(model)
    units = 4 if first == "num_key_value_heads" else 64
    kn.grow_in_place(model, [kn.Widen(first, units), kn.Upcycle(2, seed=0)])
    assert type(model).__name__ == "QwenMoeCausalLM"
    assert relative(out, logits(model)) <= TOL
    [fused] = [
        v
        for p, v in slots_by_path(model).items()
        if "transformer_layer_0" in p and p.endswith("expert_feedforward_gate_dense")
    ]
    gate = slot(before, "transformer_layer_0/feedforward_gate_dense/kernel")
    up = slot(before, "transformer_layer_0/feedforward_intermediate_dense/kernel")
    width = fused.shape[-1] // 2  # both halves carried through the first growth
    np.testing.assert_allclose(fused[1][:, :32], gate)
    np.testing.assert_allclose(fused[1][:, width : width + 32], up)
    for column in fused[1][:, 32:width].T:  # copies of the widened units
        assert np.isclose(gate.T, column).all(axis=1).any()
