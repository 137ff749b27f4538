"""Tiny KerasHub models built offline (random configs, every weight random),
shared by the family tests (see test_families.py)."""

import numpy as np
import pytest

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
    # 1.5x: the stream's new channels at zero, the RMS norms compensated.
    ("hidden_dim", 24, {"hidden_dim": 24, "num_query_heads": 6}),
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
CASES += [
    ("Falcon", *GPT_REQUESTS[0]),
    ("Falcon", "hidden_dim", 32, {"hidden_dim": 32, "num_attention_heads": 4}),
    ("Falcon", "num_attention_heads", 4, {"hidden_dim": 32, "num_attention_heads": 4}),
]
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
    ("MistralHeadDim", "hidden_dim", 20, {"hidden_dim": 20, "num_query_heads": 4}),
    ("MistralHeadDim", "num_query_heads", 8, {"hidden_dim": 16, "num_query_heads": 8}),
]
CASES += [
    ("Qwen3", "hidden_dim", 32, {"hidden_dim": 32, "num_query_heads": 4}),
    ("Qwen3", "hidden_dim", 20, {"hidden_dim": 20, "num_query_heads": 4}),
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
    ("QwenMoe", "hidden_dim", 24, {"hidden_dim": 24, "num_query_heads": 6}),
    ("QwenMoe", "num_key_value_heads", 4, {"num_key_value_heads": 4}),
    ("Qwen3Moe", "moe_intermediate_dim", 12, {"moe_intermediate_dim": 12}),
    ("Qwen3Moe", "intermediate_dim", 48, {"intermediate_dim": 48}),
    ("Qwen3Moe", "hidden_dim", 32, {"hidden_dim": 32, "num_query_heads": 8}),
    ("Qwen3Moe", "hidden_dim", 24, {"hidden_dim": 24, "num_query_heads": 6}),
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
