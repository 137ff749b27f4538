"""KerasHub models grown in their own config vocabulary keep their class.

Tiny random configs, built offline (`family_models`); every weight (norm
scales included) random, so each request is checked for exact function
preservation."""

import numpy as np
import pytest
from conftest import TOL
from family_models import CASES
from family_models import MOE
from family_models import TOKENS
from family_models import block
from family_models import build
from family_models import gpt
from family_models import llama
from family_models import logits
from family_models import moe
from family_models import other
from family_models import randomize
from family_models import relative
from family_models import weights

import keras_net2net as kn

keras_hub = pytest.importorskip("keras_hub")
keras = pytest.importorskip("keras")


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


def test_gpt_and_gemma_hidden_dim_stays_a_multiple():
    # GPT-2/OPT take no layer_norm_epsilon to compensate; Gemma's norms
    # scale by 1 + scale: only multiples keep their function.
    for model in (gpt("GPT2"), other("Gemma")):
        with pytest.raises(ValueError, match=r"'hidden_dim'.*a multiple of it"):
            kn.widen(model, "hidden_dim", 24)


def test_a_stream_at_any_width_compensates_its_norms_and_reloads(tmp_path):
    model = llama(tie=True)
    grown = kn.widen(model, "hidden_dim", 24)
    norm = grown.backbone.get_layer("transformer_layer_0")._self_attention_layernorm
    old = model.backbone.get_layer("transformer_layer_0")._self_attention_layernorm
    scale = keras.ops.convert_to_numpy(norm.scale)
    np.testing.assert_allclose(
        scale[:16], keras.ops.convert_to_numpy(old.scale) * np.sqrt(16 / 24), rtol=1e-6
    )
    embeddings = keras.ops.convert_to_numpy(grown.backbone.token_embedding.embeddings)
    assert not embeddings[:, 16:].any()  # the new channels start at zero
    assert np.isclose(
        grown.backbone.get_config()["layer_norm_epsilon"],
        model.backbone.get_config()["layer_norm_epsilon"] * 16 / 24,
    )
    assert relative(logits(model), logits(grown)) <= TOL  # tied: exact too
    # (KerasHub 0.32 does not save tie_word_embeddings: reload an untied one.)
    grown = kn.widen(llama(), "hidden_dim", 24)
    grown.save(str(tmp_path / "grown.keras"))
    loaded = keras.saving.load_model(str(tmp_path / "grown.keras"))
    assert relative(logits(grown), logits(loaded)) <= TOL


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
    key, units = "hidden_dim", 32
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
        (
            lambda m: kn.widen(m, "hidden_dim", 20),  # 5 heads: 2 kv heads
            r"'hidden_dim'.*head size 4.*num_key_value_heads=2 divides.*20",
        ),
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


@pytest.mark.parametrize(
    "heads, key, units, expected",
    [
        (4, "num_attention_heads", 16, 16),  # x4
        (6, "hidden_dim", 96, 12),  # not a power of two
    ],
)
def test_falcon_heads_grow_by_their_alibi_slopes(tmp_path, heads, key, units, expected):
    model = falcon(heads)
    grown = kn.widen(model, key, units)
    config = grown.backbone.get_config()
    assert type(grown) is type(model)
    assert config["num_attention_heads"] == expected
    assert config["hidden_dim"] == expected * 8  # heads keep their size
    assert relative(logits(model), logits(grown)) <= TOL
    grown.backbone.save_to_preset(str(tmp_path / "preset"))
    backbone = keras_hub.models.FalconBackbone.from_preset(str(tmp_path / "preset"))
    reloaded = keras_hub.models.FalconCausalLM(backbone=backbone, preprocessor=None)
    assert relative(logits(grown), logits(reloaded)) <= TOL


def test_falcon_new_heads_train():
    model = falcon(2)
    text = kn.describe_growth(model, kn.Widen("num_attention_heads", 4))
    assert "position [1, 3][h]" in text and "zero output projection" in text
    grown = kn.widen(model, "num_attention_heads", 4)
    out = grown.backbone.transformer_layers[0].attention_layer.output_dense.kernel
    rows = keras.ops.convert_to_numpy(out).reshape(4, -1, out.shape[-1])
    assert not rows[0].any() and not rows[2].any()  # new heads: silent at first
    assert rows[1].any() and rows[3].any()  # the old heads, moved
    tokens = TOKENS["token_ids"]
    x = {"token_ids": tokens, "padding_mask": TOKENS["padding_mask"]}
    grown.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    grown.fit(x, tokens, epochs=2, verbose=0)
    rows = keras.ops.convert_to_numpy(out).reshape(4, -1, out.shape[-1])
    assert np.abs(rows[0]).max() > 1e-4  # the new heads learn


def test_falcon_heads_refused_unless_a_multiple():
    model = falcon(2)
    with pytest.raises(ValueError, match=r"a multiple of it.*ALiBi slope"):
        kn.widen(model, "num_attention_heads", 3)
    with pytest.raises(ValueError, match=r"a multiple of it.*ALiBi slope"):
        kn.widen(model, "hidden_dim", 24)
    with pytest.raises(ValueError, match=r"`noise`.*moves its old units"):
        kn.widen(model, "num_attention_heads", 4, noise=0.1)


def falcon(heads):  # heads of size 8
    backbone = keras_hub.models.FalconBackbone(
        vocabulary_size=50,
        num_layers=2,
        num_attention_heads=heads,
        hidden_dim=8 * heads if heads > 2 else 16,
        intermediate_dim=32,
    )
    randomize(backbone)
    return keras_hub.models.FalconCausalLM(backbone=backbone, preprocessor=None)


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
    inserted = {id(v) for v in result.model.backbone.transformer_layers[2].weights}
    for variable in result.model.weights:
        source, steps = result.origins[id(variable)]
        if source is None:  # the inserted block's: new weights
            assert id(variable) in inserted
            continue
        expected = Chain(steps).apply(keras.ops.convert_to_numpy(source))
        np.testing.assert_allclose(keras.ops.convert_to_numpy(variable), expected)
        traced += 1
    assert traced == len(result.model.weights) - len(inserted)
    # Its optimizer state starts from the copied block's, but for the two
    # zeroed projections.
    fresh = [v for v in result.model.weights if result.state_origins[id(v)][0] is None]
    assert len(fresh) == 2
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
    for decoder in gemma.backbone.transformer_layers:
        decoder.attention.query_head_dim_normalize = False  # as if KerasHub honoured it
    with pytest.raises(ValueError, match=r"1/sqrt\(hidden_dim // num_query_heads\)"):
        kn.widen(gemma, "hidden_dim", 32)
    grown = kn.widen(gemma, "num_key_value_heads", 4)  # unaffected
    assert grown.backbone.num_key_value_heads == 4
