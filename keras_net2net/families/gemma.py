"""Gemma decoders (KerasHub ``GemmaBackbone``).

Gemma is Llama-like (grouped-query attention, rotary embeddings, RMS norms,
a gated feed-forward network, no biases) with these differences, each
handled exactly:

* ``head_dim`` is its own config entry, so the stream and the heads grow
  independently: ``hidden_dim`` (a multiple: RMS norms need equal copies)
  keeps the heads as they are; ``num_query_heads``/``num_key_value_heads``
  add heads without touching the stream. ``head_dim`` itself is refused:
  rotary embeddings pair a head's dimensions by position.
* Its kernels put the heads first: query ``(heads, hidden, head_dim)``.
* The token embedding is multiplied by ``sqrt(hidden_dim)`` and tied to the
  output. A stream ``k`` times wider would scale the embedding by
  ``sqrt(k)`` more, so the copied embedding is divided by ``sqrt(k)``; the
  tied output then adds ``k`` copies of ``1/sqrt(k)`` of each logit term, so
  the final norm's ``(1 + scale)`` is divided by ``sqrt(k)``.
* Each of the two gating projections is ``intermediate_dim // 2`` wide, so
  ``intermediate_dim`` grows by even numbers.
* With sliding-window attention only even blocks use the window: inserting
  a block would move later blocks between patterns, so ``deepen`` is
  refused for such a model.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from keras_net2net.families.base import H_COPY
from keras_net2net.families.base import H_DIVIDE
from keras_net2net.families.base import I_COPY
from keras_net2net.families.base import I_DIVIDE
from keras_net2net.families.base import KV_COPY
from keras_net2net.families.base import Q_COPY
from keras_net2net.families.base import Q_DIVIDE
from keras_net2net.families.llama import LlamaFamily
from keras_net2net.families.llama import _check
from keras_net2net.transforms import WidthMapping
from keras_net2net.transforms import choose_mapping


class GemmaFamily(LlamaFamily):
    """Gemma backbones (see the module docstring).

    Example:

    ```python
    grown = keras_net2net.widen(gemma_causal_lm, "hidden_dim", 64)
    ```
    """

    stream_fill = None  # hidden_dim: multiples only (see the module docstring)

    name = "Gemma"
    block_prefix = "decoder_block_"
    widen_keys = {
        "hidden_dim": "the residual stream (heads unchanged)",
        "intermediate_dim": "twice the width of each gating projection",
        "num_query_heads": "query heads (the stream unchanged)",
        "num_key_value_heads": "key/value heads",
    }
    refused = {"head_dim": "rotary embeddings pair a head's dimensions"}
    layouts = [
        (r"token_embedding/embeddings", (None, H_COPY)),
        (r"attention/query/kernel", (Q_COPY, H_DIVIDE, None)),
        (r"attention/(key|value)/kernel", (KV_COPY, H_DIVIDE, None)),
        (r"attention/attention_output/kernel", (Q_DIVIDE, None, H_COPY)),
        (r"(pre|post)_(attention|ffw)_norm/scale", (H_COPY,)),
        (r"ffw_gating(_2)?/kernel", (H_DIVIDE, I_COPY)),
        (r"ffw_linear/kernel", (I_DIVIDE, H_COPY)),
        (r"final_normalization/scale", (H_COPY,)),
    ]
    zeroed = [r"attention/attention_output/kernel", r"ffw_linear/kernel"]

    def layout(self, path: str, config: dict[str, Any]) -> tuple:
        return super(LlamaFamily, self).layout(path, config)

    def separate_head_dim(self, config: dict[str, Any]) -> bool:
        return True

    def check_widen(self, backbone: Any, key: str) -> None:
        # KerasHub 0.32's blocks always scale queries by 1/sqrt(head_dim); a
        # block scaling by 1/sqrt(hidden_dim // num_query_heads) instead
        # would change its scores when either grows.
        attention = getattr(backbone.transformer_layers[0], "attention", None)
        normalized = getattr(attention, "query_head_dim_normalize", True)
        if not normalized and key in ("hidden_dim", "num_query_heads"):
            raise ValueError(
                f"`layer`: this Gemma model scales its queries by "
                f"1/sqrt(hidden_dim // num_query_heads), so '{key}' cannot grow "
                "without changing the attention scores."
            )

    def check_deepen(self, config: dict[str, Any]) -> None:
        if config.get("use_sliding_window_attention"):
            raise ValueError(
                "`after`: this Gemma model uses sliding-window attention in its "
                "even blocks only; an inserted block would move every later block "
                "to the other pattern, so it cannot start as the identity."
            )

    def rescales(self, path: str, old: dict[str, Any], new: dict[str, Any]) -> bool:
        scaled = ("token_embedding/embeddings", "final_normalization/scale")
        return path in scaled and new["hidden_dim"] != old["hidden_dim"]

    def finish(
        self, path: str, value: np.ndarray, old: dict[str, Any], new: dict[str, Any]
    ) -> np.ndarray:
        factor = new["hidden_dim"] / old["hidden_dim"]
        if factor == 1:
            return value
        if path == "token_embedding/embeddings":
            return (value / np.sqrt(factor)).astype(value.dtype)
        if path == "final_normalization/scale":
            return ((1.0 + value) / np.sqrt(factor) - 1.0).astype(value.dtype)
        return value

    def plan_widen(
        self, config: dict[str, Any], key: str, value: int, seed: int | None
    ) -> tuple[dict[str, Any], dict[str, WidthMapping], list[str]]:
        if key in self.refused:
            raise ValueError(
                f"`layer`: Gemma's '{key}' cannot grow exactly: "
                f"{self.refused[key]}; add heads ('num_query_heads') instead."
            )
        if key != "intermediate_dim":
            return super().plan_widen(config, key, value, seed)
        config = dict(config)
        inter = config["intermediate_dim"]
        what = " (an even integer: each gating projection is half of it)"
        _check(key, value, inter, lambda v: v % 2 == 0, what)
        mappings = {"intermediate": choose_mapping(inter // 2, value // 2, seed=seed)}
        notes = [f"  each gating projection {inter // 2} -> {value // 2}"]
        config[key] = value
        return config, mappings, notes


class Gemma3Family(GemmaFamily):
    """Gemma 3 text backbones (see the module docstring).

    Gemma 3 adds per-head query and key RMS norms (one scale per head
    dimension: heads keep their size, so they stay) and gates with the full
    ``intermediate_dim`` (any larger width). With sliding-window attention
    five of every six blocks are local (their own rotary wavelength), so
    ``deepen`` is refused for such a model, as for Gemma. A backbone with a
    vision encoder is refused by its variables' paths.

    Example:

    ```python
    grown = keras_net2net.widen(gemma3_causal_lm, "num_key_value_heads", 4)
    ```
    """

    name = "Gemma 3"
    widen_keys = {
        **GemmaFamily.widen_keys,
        "intermediate_dim": "the feed-forward width",
    }
    layouts = GemmaFamily.layouts + [
        (r"attention/(query|key)_norm/scale", (None,)),
    ]

    def check_deepen(self, config: dict[str, Any]) -> None:
        if config.get("use_sliding_window_attention"):
            raise ValueError(
                "`after`: this Gemma 3 model uses sliding-window attention (and "
                "its own rotary wavelength) in five of every six blocks, by "
                "index; an inserted block would move later blocks to the other "
                "pattern, so it cannot start as the identity."
            )

    def plan_widen(
        self, config: dict[str, Any], key: str, value: int, seed: int | None
    ) -> tuple[dict[str, Any], dict[str, WidthMapping], list[str]]:
        if key == "intermediate_dim":  # gates are the full width
            return LlamaFamily.plan_widen(self, config, key, value, seed)
        return super().plan_widen(config, key, value, seed)
