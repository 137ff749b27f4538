"""KerasHub models grown in their own config vocabulary keep their class.

Tiny random configs, built offline; every weight (norm scales included)
random, so each request is checked for exact function preservation.
"""

import numpy as np
import pytest
from conftest import TOL
from growth_helpers import StepProbe

import keras_net2net as kn

keras_hub = pytest.importorskip("keras_hub")
keras = pytest.importorskip("keras")

TOKENS = {
    "token_ids": np.random.default_rng(0).integers(0, 50, (2, 7)).astype("int32"),
    "padding_mask": np.ones((2, 7), "int32"),
}


def randomize(model, seed=1):
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        scale = 1.0 / np.sqrt(variable.shape[0]) if len(variable.shape) > 1 else 0.5
        variable.assign(
            rng.normal(
                1.0 if len(variable.shape) == 1 else 0.0, scale, variable.shape
            ).astype("float32")
        )


def llama(tie=False, family="Llama", **extra):
    backbone_class = getattr(keras_hub.models, f"{family}Backbone")
    if family != "Qwen":
        extra["tie_word_embeddings"] = tie
    backbone = backbone_class(
        **extra,
        vocabulary_size=50,
        num_layers=2,
        num_query_heads=4,
        hidden_dim=16,
        intermediate_dim=32,
        num_key_value_heads=2,
    )
    randomize(backbone)
    lm_class = getattr(keras_hub.models, f"{family}CausalLM")
    return lm_class(backbone=backbone, preprocessor=None)


def logits(model):
    return keras.ops.convert_to_numpy(model(TOKENS))


def relative(a, b):
    return float(np.max(np.abs(a - b)) / np.max(np.abs(a)))


def weights(model):
    return [keras.ops.convert_to_numpy(v).copy() for v in model.weights]


REQUESTS = [
    ("intermediate_dim", 64, {"intermediate_dim": 64}),
    ("hidden_dim", 32, {"hidden_dim": 32, "num_query_heads": 8}),
    ("num_query_heads", 8, {"hidden_dim": 32, "num_query_heads": 8}),
    ("num_key_value_heads", 4, {"num_key_value_heads": 4, "num_query_heads": 4}),
]


def gpt(family):
    backbone = getattr(keras_hub.models, f"{family}Backbone")(
        vocabulary_size=50,
        num_layers=2,
        num_heads=2,
        hidden_dim=16,
        intermediate_dim=32,
        max_sequence_length=12,
    )
    randomize(backbone)
    return getattr(keras_hub.models, f"{family}CausalLM")(
        backbone=backbone, preprocessor=None
    )


GPT_REQUESTS = [
    ("intermediate_dim", 48, {"intermediate_dim": 48}),
    ("hidden_dim", 32, {"hidden_dim": 32, "num_heads": 4}),
    ("num_heads", 6, {"hidden_dim": 48, "num_heads": 6}),
]


def other(family):
    common = dict(vocabulary_size=50, num_layers=2, hidden_dim=16, intermediate_dim=32)
    if family == "Phi3":
        backbone = keras_hub.models.Phi3Backbone(
            num_query_heads=4, num_key_value_heads=2, **common
        )
    elif family == "GPTNeoX":
        backbone = keras_hub.models.GPTNeoXBackbone(num_heads=2, **common)
    elif family == "Gemma":
        backbone = keras_hub.models.GemmaBackbone(
            num_query_heads=4, num_key_value_heads=2, head_dim=4, **common
        )
    elif family == "Gemma3":  # text only, post-norms and soft caps on
        backbone = keras_hub.models.Gemma3Backbone(
            num_query_heads=4,
            num_key_value_heads=2,
            head_dim=4,
            image_size=16,
            use_post_ffw_norm=True,
            use_post_attention_norm=True,
            attention_logit_soft_cap=50.0,
            final_logit_soft_cap=30.0,
            **common,
        )
    else:
        backbone = keras_hub.models.FalconBackbone(num_attention_heads=2, **common)
    randomize(backbone)
    return getattr(keras_hub.models, f"{family}CausalLM")(
        backbone=backbone, preprocessor=None
    )


CASES = [
    (f, *r) for f in ["Llama", "Llama3", "Mistral", "Qwen", "Phi3"] for r in REQUESTS
]
CASES += [(f, *r) for f in ["GPT2", "OPT", "GPTNeoX"] for r in GPT_REQUESTS]
CASES += [("Falcon", *GPT_REQUESTS[0])]
CASES += [
    ("Gemma", "hidden_dim", 32, {"hidden_dim": 32, "num_query_heads": 4}),
    ("Gemma", "intermediate_dim", 48, {"intermediate_dim": 48}),
    ("Gemma", "num_query_heads", 8, {"num_query_heads": 8, "hidden_dim": 16}),
    ("Gemma", "num_key_value_heads", 4, {"num_key_value_heads": 4}),
    ("Gemma3", "hidden_dim", 32, {"hidden_dim": 32, "num_query_heads": 4}),
    ("Gemma3", "intermediate_dim", 40, {"intermediate_dim": 40}),
    ("Gemma3", "num_query_heads", 8, {"num_query_heads": 8, "hidden_dim": 16}),
    ("Gemma3", "num_key_value_heads", 4, {"num_key_value_heads": 4}),
]


def moe(family, **extra):
    common = dict(
        vocabulary_size=50,
        num_layers=2,
        num_query_heads=4,
        num_key_value_heads=2,
        hidden_dim=16,
        intermediate_dim=32,
    )
    if family == "Qwen3":
        extra.setdefault("head_dim", 4)
    elif family == "Mixtral":
        extra.update(num_experts=4, top_k=2)
    else:
        extra.update(moe_intermediate_dim=8, num_experts=4, top_k=2)
    if family == "QwenMoe":
        extra.update(shared_expert_intermediate_dim=16)
    if family == "Qwen3Moe":
        extra.setdefault("mlp_only_layers", [1])  # one dense block, one sparse
    backbone = getattr(keras_hub.models, f"{family}Backbone")(**common, **extra)
    randomize(backbone)
    return getattr(keras_hub.models, f"{family}CausalLM")(
        backbone=backbone, preprocessor=None
    )


MOE = ["Qwen3", "Mixtral", "QwenMoe", "Qwen3Moe"]
CASES += [("Mixtral", *r) for r in REQUESTS]
CASES += [
    ("MistralHeadDim", "hidden_dim", 32, {"hidden_dim": 32, "num_query_heads": 4}),
    ("MistralHeadDim", "num_query_heads", 8, {"hidden_dim": 16, "num_query_heads": 8}),
]
CASES += [
    ("Qwen3", "hidden_dim", 32, {"hidden_dim": 32, "num_query_heads": 4}),
    ("Qwen3", "num_query_heads", 8, {"num_query_heads": 8, "hidden_dim": 16}),
    ("Qwen3", "num_key_value_heads", 4, {"num_key_value_heads": 4}),
    ("Qwen3", "intermediate_dim", 48, {"intermediate_dim": 48}),
    ("QwenMoe", "moe_intermediate_dim", 16, {"moe_intermediate_dim": 16}),
    (
        "QwenMoe",
        "shared_expert_intermediate_dim",
        24,
        {"shared_expert_intermediate_dim": 24, "intermediate_dim": 32},
    ),
    ("QwenMoe", "hidden_dim", 32, {"hidden_dim": 32, "num_query_heads": 8}),
    ("QwenMoe", "num_key_value_heads", 4, {"num_key_value_heads": 4}),
    ("Qwen3Moe", "moe_intermediate_dim", 12, {"moe_intermediate_dim": 12}),
    ("Qwen3Moe", "intermediate_dim", 48, {"intermediate_dim": 48}),
    ("Qwen3Moe", "hidden_dim", 32, {"hidden_dim": 32, "num_query_heads": 8}),
    ("Qwen3Moe", "num_key_value_heads", 4, {"num_key_value_heads": 4}),
]


def block(family, index):
    gemma = family in ("Gemma", "Gemma3")
    return f"{'decoder_block' if gemma else 'transformer_layer'}_{index}"


def build(family):
    if family in ("GPT2", "OPT"):
        return gpt(family)
    if family in ("Phi3", "GPTNeoX", "Falcon", "Gemma", "Gemma3"):
        return other(family)
    if family in MOE:
        return moe(family)
    if family == "MistralHeadDim":  # head_dim its own entry: 4 heads of 8
        return llama(family="Mistral", head_dim=8)
    return llama(family=family)


@pytest.mark.parametrize("family, key, units, expected", CASES)
def test_widen_keeps_the_class_and_the_function(family, key, units, expected):
    model = build(family)
    before, saved = logits(model), weights(model)
    grown = kn.widen(model, key, units, seed=3)
    assert type(grown) is type(model)
    assert type(grown.backbone) is type(model.backbone)
    config = grown.backbone.get_config()
    for name, value in expected.items():
        assert config[name] == value
    assert relative(before, logits(grown)) <= TOL
    for old, new in zip(saved, weights(model)):  # the input model is unchanged
        np.testing.assert_array_equal(old, new)


def test_tied_embeddings_are_compensated_in_the_final_norm():
    model = llama(tie=True)
    grown = kn.widen(model, "hidden_dim", 48)
    assert grown.backbone.token_embedding.tie_weights
    assert relative(logits(model), logits(grown)) <= TOL


@pytest.mark.parametrize(
    "family",
    ["GPT2", "OPT", "Mistral", "Phi3", "GPTNeoX", "Falcon", "Gemma", "Gemma3", *MOE],
)
def test_deepen_keeps_the_class_and_the_function(family):
    model = build(family)
    grown = kn.deepen(model, after=block(family, 1))
    assert type(grown) is type(model) and grown.backbone.num_layers == 3
    assert relative(logits(model), logits(grown)) <= TOL


def test_qwen3_moe_blocks_keep_their_kind_when_blocks_are_inserted():
    model = moe("Qwen3Moe")  # block 0 sparse, block 1 dense (mlp_only_layers)
    grown = kn.deepen(model, after="transformer_layer_0")
    assert grown.backbone.get_config()["mlp_only_layers"] == [2]
    kinds = [
        "sparse" if any("experts" in v.path for v in block.weights) else "dense"
        for block in grown.backbone.transformer_layers
    ]
    assert kinds == ["sparse", "sparse", "dense"]
    assert relative(logits(model), logits(grown)) <= TOL
    # Blocks 1, 3, ... sparse: the old block 1 (sparse) would become block 2
    # (dense by the step).
    stepped = moe("Qwen3Moe", mlp_only_layers=[], decoder_sparse_step=2)
    for after in ("transformer_layer_0", "transformer_layer_1"):
        with pytest.raises(ValueError, match="decoder_sparse_step=2"):
            kn.deepen(stepped, after=after)


def test_moe_experts_grow_with_one_mapping_and_the_router_reads_the_stream():
    model = moe("Mixtral")
    grown = kn.widen(model, "intermediate_dim", 48, seed=0)
    old = model.backbone.transformer_layers[0]
    new = grown.backbone.transformer_layers[0]
    gate = [v for v in new.weights if "expert_feedforward_gate_dense" in v.path][0]
    old_gate = [v for v in old.weights if "expert_feedforward_gate_dense" in v.path][0]
    gate, old_gate = (keras.ops.convert_to_numpy(v) for v in (gate, old_gate))
    assert gate.shape == (4, 16, 48)

    # Column j of every expert copies one old column: the same one for all.
    def source(e, j):
        return int(np.argmin(np.abs(old_gate[e] - gate[e][:, [j]]).sum(0)))

    match = [[source(e, j) for j in range(48)] for e in range(4)]
    assert all(row == match[0] for row in match)
    assert sorted(set(match[0])) == list(range(32))
    wider = kn.widen(model, "hidden_dim", 32)
    router = [v for v in wider.backbone.weights if "sparse_feedforward_gate" in v.path]
    assert tuple(router[0].shape) == (32, 4)
    assert relative(logits(model), logits(wider)) <= TOL


def test_deepen_inserts_identity_blocks_in_order():
    model = llama()
    grown = kn.deepen(model, after=["transformer_layer_0", "transformer_layer_1"])
    assert type(grown) is type(model)
    names = [layer.name for layer in grown.backbone.transformer_layers]
    assert names == [f"transformer_layer_{i}" for i in range(4)]
    assert relative(logits(model), logits(grown)) <= TOL
    new = grown.backbone.get_layer("transformer_layer_1")
    old = model.backbone.get_layer("transformer_layer_0")
    kernel = new._feedforward_gate_dense.kernel
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(kernel),
        keras.ops.convert_to_numpy(old._feedforward_gate_dense.kernel),
    )
    out = keras.ops.convert_to_numpy(new._feedforward_output_dense.kernel)
    assert not out.any()


FAMILIES = ["Llama", "Llama3", "Mistral", "Qwen", "Phi3", "GPT2", "OPT", "GPTNeoX"]
FAMILIES += ["Gemma", "Gemma3", *MOE]


def generated(model, prompt):
    return model.generate(prompt, max_length=8, stop_token_ids=None)["token_ids"]


def greedy(model, prompt):
    ids, mask = prompt["token_ids"].copy(), prompt["padding_mask"].copy()
    for position in range(int(mask.sum()), ids.shape[1]):
        out = model({"token_ids": ids, "padding_mask": mask})
        ids[0, position] = int(np.argmax(logits_at(out, position - 1)))
        mask[0, position] = 1
    return ids


def logits_at(out, position):
    return keras.ops.convert_to_numpy(out)[0, position]


@pytest.mark.parametrize("family", FAMILIES + ["Falcon"])
def test_generate_save_and_preset_after_growth(tmp_path, family):
    # KerasHub 0.32's Qwen3MoeCausalLM.generate needs head_dim set (its
    # cache shape reads it): with head_dim=None it fails before any growth.
    model = moe(family, head_dim=4) if family == "Qwen3Moe" else build(family)
    model.compile(sampler="greedy")
    prompt = {
        "token_ids": np.array([[3, 4, 5, 0, 0, 0, 0, 0]], "int32"),
        "padding_mask": np.array([[1, 1, 1, 0, 0, 0, 0, 0]], "int32"),
    }
    # KerasHub 0.32's Gemma3CausalLM.generate without a preprocessor fails
    # before any growth (it concatenates an object array): greedy decoding by
    # hand instead.
    generate = greedy if family == "Gemma3" else generated
    before = generate(model, prompt)
    key, units = ("intermediate_dim", 48) if family == "Falcon" else ("hidden_dim", 32)
    grown = kn.deepen(kn.widen(model, key, units), after=block(family, 1))
    np.testing.assert_array_equal(before, generate(grown, prompt))
    path = tmp_path / "grown.keras"
    grown.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded) is type(model)
    assert relative(logits(grown), logits(loaded)) <= TOL
    grown.backbone.save_to_preset(str(tmp_path / "preset"))
    backbone = type(model.backbone).from_preset(str(tmp_path / "preset"))
    config = backbone.get_config()
    assert config[key] == units and config["num_layers"] == 3
    reloaded = type(model)(backbone=backbone, preprocessor=None)
    assert relative(logits(grown), logits(reloaded)) <= TOL


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda m: kn.widen(m, "hidden_dim", 24), r"'hidden_dim'.*multiple of it.*24"),
        (lambda m: kn.widen(m, "num_key_value_heads", 3), r"divides num_query_heads"),
        (lambda m: kn.widen(m, "intermediate_dim", 32), r"larger than.*32"),
        (
            lambda m: kn.widen(m, "hidden_dim", 32, noise=0.1, noise_on="consumers"),
            r"noise_on='copies' only",
        ),
        (lambda m: kn.widen(m, "hiden_dim", 32), r"'hiden_dim'.*'hidden_dim'"),
        (lambda m: kn.deepen(m, after="transformer_layer_7"), r"'transformer_layer_1'"),
        (
            lambda m: kn.deepen(m, after="transformer_layer_0", residual=True),
            r"'token_embedding'.*cannot load again.*config vocabulary",
        ),
    ],
)
def test_bad_requests_are_refused_before_anything_changes(call, message):
    model = llama()
    saved = weights(model)
    with pytest.raises(ValueError, match=message):
        call(model)
    for old, new in zip(saved, weights(model)):
        np.testing.assert_array_equal(old, new)


def test_grouped_query_mappings_keep_each_query_with_its_key_value_head():
    from keras_net2net.transforms import grouped_query_mappings

    for q, kv, new_q, new_kv in [
        (4, 2, 8, 2),
        (4, 2, 4, 4),
        (4, 2, 12, 4),
        (6, 3, 9, 3),
    ]:
        queries, keys = grouped_query_mappings(q, kv, new_q, new_kv, seed=0)
        assert queries.counts.min() >= 1  # every old query head survives
        for head, old in enumerate(queries.indices):
            new_group = head // (new_q // new_kv)
            assert keys.indices[new_group] == old // (q // kv)
    with pytest.raises(ValueError, match="multiple of 2"):
        grouped_query_mappings(4, 2, 6, 3)


def test_per_layer_growth_of_a_task_model_is_refused_not_lost(tmp_path):
    # GPT2CausalLM calls its tied embedding inside and outside the backbone:
    # a plain grown copy would save but never load again.
    model = gpt("GPT2")
    saved = weights(model)
    target = "transformer_layer_0/feedforward_intermediate_dense"
    with pytest.raises(ValueError, match=r"'token_embedding'.*cannot load again"):
        kn.widen(model, target, 48)
    for old, new in zip(saved, weights(model)):
        np.testing.assert_array_equal(old, new)
    # the backbone alone still grows through its layers, and reloads
    grown = kn.widen(model.backbone, target, 48)
    grown.save(tmp_path / "backbone.keras")
    loaded = keras.models.load_model(tmp_path / "backbone.keras")
    inputs = {"token_ids": TOKENS["token_ids"], "padding_mask": TOKENS["padding_mask"]}
    a = keras.ops.convert_to_numpy(grown(inputs))
    b = keras.ops.convert_to_numpy(loaded(inputs))
    assert relative(a, b) <= TOL


def test_falcon_heads_are_refused_with_the_reason():
    model = other("Falcon")
    for key in ("hidden_dim", "num_attention_heads"):
        with pytest.raises(ValueError, match=rf"ALiBi.*'{key}'"):
            kn.widen(model, key, 32)


def test_gemma_head_dim_and_sliding_window_depth_are_refused():
    model = other("Gemma")
    with pytest.raises(ValueError, match=r"'head_dim'.*rotary"):
        kn.widen(model, "head_dim", 8)
    with pytest.raises(ValueError, match=r"even integer"):
        kn.widen(model, "intermediate_dim", 47)
    config = model.backbone.get_config()
    config.update(use_sliding_window_attention=True, sliding_window_size=4)
    windowed = keras_hub.models.GemmaBackbone.from_config(config)
    with pytest.raises(ValueError, match=r"sliding-window"):
        kn.deepen(windowed, after="decoder_block_0")
    config = other("Gemma3").backbone.get_config()
    config.update(use_sliding_window_attention=True, sliding_window_size=4)
    windowed = keras_hub.models.Gemma3Backbone.from_config(config)
    with pytest.raises(ValueError, match=r"five of every six blocks"):
        kn.deepen(windowed, after="decoder_block_0")


def test_llama_pro_trains_only_the_inserted_blocks():
    model = llama()
    after = ["transformer_layer_0", "transformer_layer_1"]
    grown = kn.deepen(model, after=after)
    new = kn.families.inserted_blocks(model, after)
    assert new == ["transformer_layer_1", "transformer_layer_3"]
    trainable = kn.families.train_only(grown, new)
    assert trainable and all(p.split("/")[0] in new for p in trainable)
    before = {v.path: keras.ops.convert_to_numpy(v).copy() for v in grown.weights}
    grown.compile(
        optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy"
    )
    labels = np.random.default_rng(2).integers(0, 50, (2, 7))
    grown.fit(TOKENS, labels, epochs=1, batch_size=2, verbose=0)
    changed = {
        v.path
        for v in grown.weights
        if not np.array_equal(before[v.path], keras.ops.convert_to_numpy(v))
    }
    assert changed and all(p.split("/")[0] in new for p in changed)
    with pytest.raises(ValueError, match=r"`blocks` must name blocks"):
        kn.families.train_only(grown, ["transformer_layer_9"])


def test_requests_dry_runs_and_origins_use_the_config_vocabulary():
    from keras_net2net.transforms import Chain

    model = llama()
    requests = [
        kn.Widen("hidden_dim", 32, seed=0),
        kn.Deepen(after="transformer_layer_1"),
        kn.Widen("intermediate_dim", 48, seed=1),
    ]
    text = kn.describe_growth(model, requests)
    assert "'hidden_dim' 16 -> 32" in text and "num_query_heads 4 -> 8" in text
    assert "'intermediate_dim' 32 -> 48" in text
    result = kn.surgery.apply_requests(model, requests)
    assert type(result.model) is type(model)
    assert relative(logits(model), logits(result.model)) <= TOL
    traced = 0
    for variable in result.model.weights:
        source, steps = result.origins[id(variable)]
        if source is None:  # the inserted block's zeroed projections
            continue
        expected = Chain(steps).apply(keras.ops.convert_to_numpy(source))
        np.testing.assert_allclose(keras.ops.convert_to_numpy(variable), expected)
        traced += 1
    assert traced == len(result.model.weights) - 2
    # In place, only the config vocabulary (which keeps the class) is taken.
    per_layer = kn.Widen("transformer_layer_0/feedforward_intermediate_dense", 48)
    saved = weights(model)
    with pytest.raises(ValueError, match=r"feedforward.*config vocabulary"):
        kn.grow_in_place(model, [requests[0], per_layer])
    assert type(model.backbone).__name__ == "LlamaBackbone"
    assert model.backbone.hidden_dim == 16
    for old, new in zip(saved, weights(model)):
        np.testing.assert_array_equal(old, new)


def test_block_names_and_gemma_query_scaling_are_checked():
    model = llama()
    for after in ([], ["transformer_layer_01"]):
        with pytest.raises(ValueError, match=r"`after`"):
            kn.deepen(model, after=after)
    gemma = other("Gemma")
    for block in gemma.backbone.transformer_layers:
        block.attention.query_head_dim_normalize = False  # as if KerasHub honoured it
    with pytest.raises(ValueError, match=r"1/sqrt\(hidden_dim // num_query_heads\)"):
        kn.widen(gemma, "hidden_dim", 32)
    grown = kn.widen(gemma, "num_key_value_heads", 4)  # unaffected
    assert grown.backbone.num_key_value_heads == 4


def lm_batch(n=8, length=7, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, 50, (n, length + 1)).astype("int32")
    x = {"token_ids": ids[:, :-1], "padding_mask": np.ones((n, length), "int32")}
    return x, ids[:, 1:]


@pytest.mark.parametrize("family", ["Llama", "GPT2", "Gemma", "Mixtral"])
def test_grow_in_place_keeps_the_task_object_and_its_class(family):
    model = build(family)
    model.compile(
        optimizer=keras.optimizers.AdamW(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        sampler="greedy",
    )
    x, y = lm_batch()
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)  # AdamW has state
    before, old_backbone, cls = logits(model), model.backbone, type(model)
    prompt = {
        "token_ids": np.array([[3, 4, 5, 0, 0, 0, 0, 0]], "int32"),
        "padding_mask": np.array([[1, 1, 1, 0, 0, 0, 0, 0]], "int32"),
    }
    generated = model.generate(prompt, max_length=8, stop_token_ids=None)
    result = kn.grow_in_place(
        model, [kn.Widen("hidden_dim", 32), kn.Deepen(after=block(family, 1))]
    )
    assert result.model is model and type(model) is cls
    assert model.backbone is not old_backbone
    assert type(model.backbone) is type(old_backbone)
    assert model.backbone.hidden_dim == 32 and model.backbone.num_layers == 3
    assert len(model.backbone.transformer_layers) == 3
    assert model.get_config()["backbone"]["config"]["hidden_dim"] == 32
    assert {id(v) for v in model.weights} == {id(v) for v in model.backbone.weights}
    assert relative(before, logits(model)) <= TOL
    again = model.generate(prompt, max_length=8, stop_token_ids=None)
    np.testing.assert_array_equal(generated["token_ids"], again["token_ids"])
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 2
    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][-1])


def test_growmodel_grows_a_llama_causal_lm_inside_fit(tmp_path):
    model = llama()
    model.compile(
        optimizer=keras.optimizers.AdamW(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        sampler="greedy",
    )
    x, y = lm_batch(16)
    fixed = {k: v[:4] for k, v in x.items()}
    seen = {}

    def probe(tag):
        return StepProbe(tag, seen, lambda m: keras.ops.convert_to_numpy(m(fixed)))

    grow = kn.GrowModel(
        {
            kn.AtStep(2): kn.Widen("hidden_dim", 32),
            kn.AtStep(3): [
                kn.Widen("intermediate_dim", 64),
                kn.Deepen(after="transformer_layer_1"),
            ],
        }
    )
    model.fit(
        x,
        y,
        batch_size=4,
        epochs=1,
        verbose=0,
        callbacks=[probe("before"), grow, probe("after")],
    )
    assert len(grow.records) == 2
    for step in (2, 3):
        (before, params_before), (after, params_after) = (
            seen[("before", step)],
            seen[("after", step)],
        )
        assert params_after > params_before
        assert relative(before, after) <= TOL, step
    assert type(model).__name__ == "LlamaCausalLM"
    config = model.backbone.get_config()
    assert (config["hidden_dim"], config["intermediate_dim"]) == (32, 64)
    assert config["num_layers"] == 3
    model.backbone.save_to_preset(str(tmp_path / "preset"))
    backbone = type(model.backbone).from_preset(str(tmp_path / "preset"))
    reloaded = type(model)(backbone=backbone, preprocessor=None)
    assert relative(logits(model), logits(reloaded)) <= TOL
    path = tmp_path / "grown.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded) is type(model)
    assert relative(logits(model), logits(loaded)) <= TOL


def test_growmodel_refuses_a_per_layer_request_on_a_task_before_training():
    model = llama()
    model.compile(
        optimizer=keras.optimizers.AdamW(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    x, y = lm_batch()
    saved = weights(model)
    grow = kn.GrowModel(
        {kn.AtStep(1): kn.Deepen(after="transformer_layer_0", init="random")}
    )
    with pytest.raises(ValueError, match=r"step 1.*config vocabulary"):
        model.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[grow])
    for old, new in zip(saved, weights(model)):
        np.testing.assert_array_equal(old, new)


@pytest.mark.parametrize("family", ["Llama", "GPT2"])
def test_noise_breaks_the_symmetry_of_the_copies_and_only_slightly(family):
    model = build(family)
    before = logits(model)
    key = "hidden_dim"
    exact = kn.widen(model, key, 32, seed=0)
    noisy = kn.widen(model, key, 32, seed=0, noise=0.05)
    again = kn.widen(model, key, 32, seed=0, noise=0.05)
    assert relative(before, logits(exact)) <= TOL
    change = relative(before, logits(noisy))
    assert TOL < change < 0.2, change
    np.testing.assert_array_equal(logits(noisy), logits(again))  # seeded
    # The copied columns of the token embedding differ from their originals
    # in the noisy model, and equal them in the exact one.
    old = keras.ops.convert_to_numpy(model.backbone.token_embedding.embeddings)
    for grown, differs in ((exact, False), (noisy, True)):
        new = keras.ops.convert_to_numpy(grown.backbone.token_embedding.embeddings)
        copies = new[:, 16:]
        matches = [
            any(np.allclose(copies[:, j], old[:, i]) for i in range(16))
            for j in range(16)
        ]
        assert (not any(matches)) if differs else all(matches)
    assert "noise 0.05" in kn.describe_growth(model, [kn.Widen(key, 32, noise=0.05)])


def encoder(family, intermediate_dim=None):
    if family == "Bert":
        backbone = keras_hub.models.BertBackbone(
            vocabulary_size=50,
            num_layers=2,
            num_heads=2,
            hidden_dim=16,
            intermediate_dim=32,
            max_sequence_length=12,
        )
        task = keras_hub.models.BertTextClassifier(
            backbone=backbone, num_classes=3, preprocessor=None
        )
        inputs = {
            "token_ids": TOKENS["token_ids"],
            "segment_ids": np.zeros((2, 7), "int32"),
            "padding_mask": TOKENS["padding_mask"],
        }
    else:
        backbone = keras_hub.models.ViTBackbone(
            image_shape=(8, 8, 3),
            patch_size=4,
            num_layers=2,
            num_heads=2,
            hidden_dim=16,
            mlp_dim=32,
        )
        task = keras_hub.models.ViTImageClassifier(
            backbone=backbone,
            num_classes=3,
            preprocessor=None,
            intermediate_dim=intermediate_dim,
        )
        inputs = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype("float32")
    randomize(task)
    return task, inputs


ENCODER_CASES = [
    ("Bert", None, "hidden_dim", 32, {"hidden_dim": 32, "num_heads": 4}),
    ("Bert", None, "num_heads", 6, {"hidden_dim": 48, "num_heads": 6}),
    ("Bert", None, "intermediate_dim", 48, {"intermediate_dim": 48}),
    ("ViT", None, "hidden_dim", 32, {"hidden_dim": 32, "num_heads": 4}),
    ("ViT", 8, "hidden_dim", 32, {"hidden_dim": 32, "num_heads": 4}),
    ("ViT", 8, "num_heads", 4, {"hidden_dim": 32, "num_heads": 4}),
    ("ViT", None, "mlp_dim", 48, {"mlp_dim": 48}),
]


@pytest.mark.parametrize("family, pre_logits, key, units, expected", ENCODER_CASES)
def test_bert_and_vit_classifiers_keep_their_class_and_their_head(
    family, pre_logits, key, units, expected
):
    task, inputs = encoder(family, pre_logits)
    before = keras.ops.convert_to_numpy(task(inputs))
    grown = kn.widen(task, key, units, seed=1)
    assert type(grown) is type(task)
    assert type(grown.backbone) is type(task.backbone)
    config = grown.backbone.get_config()
    assert {name: config[name] for name in expected} == expected
    after = keras.ops.convert_to_numpy(grown(inputs))
    assert relative(before, after) <= TOL


def test_vit_without_a_class_token_and_with_average_pooling():
    backbone = keras_hub.models.ViTBackbone(
        image_shape=(8, 8, 3),
        patch_size=4,
        num_layers=1,
        num_heads=2,
        hidden_dim=16,
        mlp_dim=32,
        use_class_token=False,
    )
    task = keras_hub.models.ViTImageClassifier(
        backbone=backbone, num_classes=3, preprocessor=None, pooling="gap"
    )
    randomize(task)
    images = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype("float32")
    grown = kn.deepen(kn.widen(task, "num_heads", 4), after="transformer_block_1")
    assert type(grown) is type(task) and grown.backbone.hidden_dim == 32
    before = keras.ops.convert_to_numpy(task(images))
    assert relative(before, keras.ops.convert_to_numpy(grown(images))) <= TOL
    with pytest.raises(ValueError, match="transformer_layers"):
        kn.families.train_only(grown, ["transformer_block_2"])


def test_vit_inserts_identity_blocks_and_bert_refuses_them(tmp_path):
    task, inputs = encoder("ViT")
    after = ["transformer_block_1", "transformer_block_2"]
    grown = kn.deepen(kn.widen(task, "hidden_dim", 32), after=after)
    assert type(grown) is type(task) and grown.backbone.num_layers == 4
    assert kn.families.inserted_blocks(task, after) == [
        "transformer_block_2",
        "transformer_block_4",
    ]
    before = keras.ops.convert_to_numpy(task(inputs))
    out = keras.ops.convert_to_numpy(grown(inputs))
    assert relative(before, out) <= TOL
    grown.save(tmp_path / "vit.keras")
    loaded = keras.models.load_model(tmp_path / "vit.keras")
    assert type(loaded) is type(task)
    assert relative(out, keras.ops.convert_to_numpy(loaded(inputs))) <= TOL
    grown.backbone.save_to_preset(str(tmp_path / "preset"))
    backbone = keras_hub.models.ViTBackbone.from_preset(str(tmp_path / "preset"))
    assert backbone.get_config()["hidden_dim"] == 32 and backbone.num_layers == 4

    bert, _ = encoder("Bert")
    with pytest.raises(ValueError, match="post-LN"):
        kn.deepen(bert, after="transformer_layer_0")


@pytest.mark.parametrize("family", ["Bert", "ViT"])
def test_classifiers_grow_in_place_with_their_head(tmp_path, family):
    task, inputs = encoder(family)
    task.compile(
        optimizer=keras.optimizers.AdamW(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    inputs = (
        {k: np.concatenate([v] * 4) for k, v in inputs.items()}
        if isinstance(inputs, dict)
        else np.concatenate([inputs] * 4)
    )
    labels = np.arange(8) % 3
    task.fit(inputs, labels, batch_size=4, epochs=1, verbose=0)
    before, cls = keras.ops.convert_to_numpy(task(inputs)), type(task)
    if family == "Bert":  # through a block's layers: a plain model, refused
        saved = weights(task)
        inner = kn.Widen("transformer_layer_0/feedforward_intermediate_dense", 48)
        with pytest.raises(TypeError, match=r"would make it a Functional"):
            kn.grow_in_place(task, inner)
        for old, new in zip(saved, weights(task)):
            np.testing.assert_array_equal(old, new)
    key = "hidden_dim"
    kn.grow_in_place(task, kn.Widen(key, 32))
    assert type(task) is cls and task.backbone.get_config()[key] == 32
    # The head attribute is the grown layer the model runs, not the old one.
    assert task.output_dense is task.get_layer(task.output_dense.name)
    assert tuple(task.output_dense.kernel.shape) == (32, 3)
    assert relative(before, keras.ops.convert_to_numpy(task(inputs))) <= TOL
    slots = {v.path: v for v in task.optimizer.variables}
    moment = [k for k in slots if "output_dense" in k or "logits" in k]
    moment += [k for k in slots if "predictions" in k]
    assert moment and all(slots[k].shape[0] == 32 for k in moment if "kernel" in k)
    history = task.fit(inputs, labels, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][-1])
    task.save(tmp_path / "grown.keras")
    loaded = keras.models.load_model(tmp_path / "grown.keras")
    assert type(loaded) is cls
    out = keras.ops.convert_to_numpy(task(inputs))
    assert relative(out, keras.ops.convert_to_numpy(loaded(inputs))) <= TOL
