"""Qwen 3 and the sparse mixture-of-experts decoders: Mixtral, Qwen-MoE, Qwen3-MoE.

All are Llama-style (pre-norm blocks, grouped-query attention, rotary
embeddings, RMS norms, SiLU-gated feed-forward networks), so `LlamaFamily`'s
growth of the stream, the heads and the blocks applies. What differs:

* Qwen 3 normalises each head's queries and keys (RMS over ``head_dim``,
  one scale per head dimension: heads keep their size, so the scales stay)
  and takes ``head_dim`` as its own entry: ``hidden_dim`` grows with the
  heads unchanged, ``num_query_heads`` with the stream unchanged. Qwen3-MoE
  does the same when its ``head_dim`` is set, and grows like Llama (heads
  with the stream) when it is derived.
* A sparse block routes each token to its ``top_k`` experts by a router
  that reads the stream (its rows divided, so the routing is unchanged);
  every expert is a gated feed-forward network, widened with one mapping
  for all experts (``intermediate_dim`` for Mixtral, ``moe_intermediate_dim``
  for the Qwen MoE families; the Qwen experts fuse ``[gate | up]`` in one
  kernel, each half copied by that mapping). Qwen-MoE adds a shared expert
  (``shared_expert_intermediate_dim``) and its sigmoid gate (reads the
  stream); ``intermediate_dim`` of the Qwen MoE families is the width of
  their dense blocks (``mlp_only_layers``; keras-hub 0.32 builds every
  Qwen-MoE block with the index 0, so its blocks are all dense when
  ``mlp_only_layers`` holds 0, all sparse otherwise).
* An inserted block copies its source with the attention output, every
  expert's down projection and the shared expert's at zero: the identity.
  Qwen3-MoE chooses dense or sparse blocks by index (``mlp_only_layers``,
  ``decoder_sparse_step``); the grown config moves ``mlp_only_layers`` with
  the blocks, and a schedule that would change a block's kind is refused.
"""

from __future__ import annotations

from typing import Any

from keras_net2net.families.base import COPY
from keras_net2net.families.base import DIVIDE
from keras_net2net.families.base import H_COPY
from keras_net2net.families.base import H_DIVIDE
from keras_net2net.families.base import I_COPY
from keras_net2net.families.base import I_DIVIDE
from keras_net2net.families.base import PARTS
from keras_net2net.families.llama import LlamaFamily

E_DIVIDE, E_COPY = ("expert", DIVIDE), ("expert", COPY)
S_DIVIDE, S_COPY = ("shared", DIVIDE), ("shared", COPY)
ROTARY = "rotary embeddings pair a head's dimensions by position"

# Llama's attention, embeddings and norms (Qwen-MoE's biases included), and
# Qwen 3's per-head query/key norms (heads keep their size: unchanged).
_ATTENTION = [
    entry for entry in LlamaFamily.layouts if not entry[0].startswith("feedforward_")
] + [(r"self_attention/(query|key)_dense_layernorm/scale", (None,))]


def _dense(prefix: str) -> list:
    """A dense gated feed-forward network under ``prefix``."""
    return [
        (rf"{prefix}feedforward_(intermediate|gate)_dense/kernel", (H_DIVIDE, I_COPY)),
        (rf"{prefix}feedforward_output_dense/kernel", (I_DIVIDE, H_COPY)),
    ]


def _qwen_experts(block: str) -> list:
    """The router and the experts of a Qwen sparse block (fused ``[gate | up]``)."""
    return [
        (rf"{block}/sparse_feedforward_gate_dense/kernel", (H_DIVIDE, None)),
        (
            rf"{block}/experts/expert_feedforward_gate_dense",
            (None, H_DIVIDE, ("expert", COPY, PARTS, 2)),
        ),
        (rf"{block}/experts/expert_feedforward_output_dense", (None, E_DIVIDE, H_COPY)),
    ]


class Qwen3Family(LlamaFamily):
    """Qwen 3 backbones (see the module docstring).

    Example:

    ```python
    grown = keras_net2net.widen(qwen3_causal_lm, "num_query_heads", 8)
    ```
    """

    name = "Qwen 3"
    widen_keys = {
        "hidden_dim": "the residual stream (heads unchanged)",
        "intermediate_dim": "the feed-forward width",
        "num_query_heads": "query heads (the stream unchanged)",
        "num_key_value_heads": "key/value heads",
    }
    refused = {"head_dim": ROTARY}
    layouts = _ATTENTION + _dense("")


class MixtralFamily(LlamaFamily):
    """Mixtral backbones (see the module docstring).

    Example:

    ```python
    grown = keras_net2net.widen(mixtral_causal_lm, "intermediate_dim", 64)
    ```
    """

    name = "Mixtral"
    widen_keys = {
        "hidden_dim": "the residual stream (heads added with it)",
        "intermediate_dim": "every expert's width (one mapping for all)",
        "num_query_heads": "query heads (the stream grows with them)",
        "num_key_value_heads": "key/value heads",
    }
    feedforward_keys = {"intermediate_dim": "expert"}
    auto_named = ["mixtral_sparse_moe_block"]
    _block = "mixtral_sparse_moe_block"
    layouts = _ATTENTION + [
        (rf"{_block}/sparse_feedforward_gate_dense/kernel", (H_DIVIDE, None)),
        (
            rf"{_block}/experts/expert_feedforward_(gate|intermediate)_dense",
            (None, H_DIVIDE, E_COPY),
        ),
        (
            rf"{_block}/experts/expert_feedforward_output_dense",
            (None, E_DIVIDE, H_COPY),
        ),
    ]
    zeroed = [
        r"self_attention/attention_output/kernel",
        rf"{_block}/experts/expert_feedforward_output_dense",
    ]


class QwenMoeFamily(LlamaFamily):
    """Qwen-MoE (Qwen 1.5/2 MoE) backbones (see the module docstring).

    Example:

    ```python
    grown = keras_net2net.widen(qwen_moe_causal_lm, "moe_intermediate_dim", 16)
    ```
    """

    name = "Qwen-MoE"
    widen_keys = {
        "hidden_dim": "the residual stream (heads added with it)",
        "moe_intermediate_dim": "every expert's width (one mapping for all)",
        "shared_expert_intermediate_dim": "the shared expert's width",
        "intermediate_dim": "the width of the dense blocks (mlp_only_layers)",
        "num_query_heads": "query heads (the stream grows with them)",
        "num_key_value_heads": "key/value heads",
    }
    feedforward_keys = {
        "intermediate_dim": "intermediate",
        "moe_intermediate_dim": "expert",
        "shared_expert_intermediate_dim": "shared",
    }
    auto_named = ["qwen_sparse_moe_block", "qwen_moe_mlp"]
    _block = "qwen_sparse_moe_block"
    layouts = (
        _ATTENTION
        + _qwen_experts(_block)
        + [
            (
                rf"{_block}/shared_expert_dense/feedforward_(intermediate|gate)_dense"
                "/kernel",
                (H_DIVIDE, S_COPY),
            ),
            (
                rf"{_block}/shared_expert_dense/feedforward_output_dense/kernel",
                (S_DIVIDE, H_COPY),
            ),
            (rf"{_block}/shared_expert_gate_dense/kernel", (H_DIVIDE, None)),
        ]
        + _dense("qwen_moe_mlp/")
    )
    zeroed = [
        r"self_attention/attention_output/kernel",
        rf"{_block}/experts/expert_feedforward_output_dense",
        rf"{_block}/shared_expert_dense/feedforward_output_dense/kernel",
        r"qwen_moe_mlp/feedforward_output_dense/kernel",
    ]


class Qwen3MoeFamily(LlamaFamily):
    """Qwen3-MoE backbones (see the module docstring).

    Example:

    ```python
    grown = keras_net2net.deepen(qwen3_moe_causal_lm, after="transformer_layer_0")
    ```
    """

    name = "Qwen3-MoE"
    widen_keys = {
        "hidden_dim": "the residual stream",
        "moe_intermediate_dim": "every expert's width (one mapping for all)",
        "intermediate_dim": "the width of the dense blocks (mlp_only_layers)",
        "num_query_heads": "query heads",
        "num_key_value_heads": "key/value heads",
    }
    refused = {"head_dim": ROTARY}
    feedforward_keys = {
        "intermediate_dim": "intermediate",
        "moe_intermediate_dim": "expert",
    }
    auto_named = ["qwen3_sparse_moe_block", "qwen3_moe_mlp"]
    _block = "qwen3_sparse_moe_block"
    layouts = _ATTENTION + _qwen_experts(_block) + _dense("qwen3_moe_mlp/")
    zeroed = [
        r"self_attention/attention_output/kernel",
        rf"{_block}/experts/expert_feedforward_output_dense",
        r"qwen3_moe_mlp/feedforward_output_dense/kernel",
    ]

    def deepen_config(
        self, config: dict[str, Any], sources: list[tuple[int, bool]]
    ) -> dict[str, Any]:
        dense = set(config.get("mlp_only_layers") or [])
        step = config.get("decoder_sparse_step", 1) or 1
        experts = config.get("num_experts", 0)

        def sparse(index: int, only: set) -> bool:
            return index not in only and experts > 0 and (index + 1) % step == 0

        # Every block whose source is dense is listed, wherever it lands.
        moved = {
            i for i, (source, _) in enumerate(sources) if not sparse(source, dense)
        }
        for index, (source, _) in enumerate(sources):
            if sparse(index, moved) != sparse(source, dense):
                kind = "sparse" if sparse(source, dense) else "dense"
                copied = sorted({s for s, c in sources if c})
                raise ValueError(
                    f"`after`: in this Qwen3-MoE model (decoder_sparse_step="
                    f"{step}) only the blocks i with (i + 1) % {step} == 0 are "
                    f"sparse; inserting blocks after {copied} "
                    f"would make the {kind} block {source} block {index} of the "
                    "other kind, so the model would not keep its function. "
                    "Blocks can be inserted when decoder_sparse_step=1."
                )
        return {
            **config,
            "num_layers": len(sources),
            "mlp_only_layers": sorted(moved),
        }
