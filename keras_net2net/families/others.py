"""Phi-3, GPT-NeoX and Falcon decoders (KerasHub).

* Phi-3 is a Llama-style decoder (grouped-query attention, rotary
  embeddings, RMS norms, a gated feed-forward network) under other names:
  `LlamaFamily`'s growth applies as it is. Heads keep their size, so a
  ``"su"`` rotary scaling's factor lists (one per pair of head dimensions)
  stay valid.
* GPT-NeoX has multi-head attention with one fused query/key/value kernel
  (``(hidden, heads, 3 * head_dim)``: each head's queries, keys and values
  side by side, copied with the head), partial rotary embeddings within each
  head, a parallel residual ``x + attention(ln1(x)) + ffn(ln2(x))``,
  LayerNormalization and a tied output embedding. Its output projection
  reads a flattened ``heads * head_dim`` axis (whole heads are divided).
  Grows as `GPTFamily` does.
* Falcon's attention adds ALiBi biases whose slopes depend on the number of
  heads and on each head's position (``2^(-8(h+1)/H)`` for a power of two
  ``H``). Heads grow (``num_attention_heads``, or ``hidden_dim`` with
  ``head_dim = hidden_dim // num_attention_heads`` kept) to a multiple of
  their count whose slopes include every old slope: each old head moves to
  the position of its own slope (``H`` -> ``2H`` for a power of two ``H``:
  head ``h`` to ``2h + 1``),
  every other position gets a new head, a copy of the old head beside it
  (its queries, keys and values) with a zero output projection, so it adds
  nothing at first and trains from there. The stream's channels are tiled
  (LayerNormalization sees each copied equally often).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from keras_net2net.families.base import DIVIDE
from keras_net2net.families.base import H_COPY
from keras_net2net.families.base import H_DIVIDE
from keras_net2net.families.base import I_COPY
from keras_net2net.families.base import I_DIVIDE
from keras_net2net.families.base import KV_COPY
from keras_net2net.families.base import Q_COPY
from keras_net2net.families.base import Q_DIVIDE
from keras_net2net.families.gpt import GPTFamily
from keras_net2net.families.llama import LlamaFamily
from keras_net2net.families.llama import _check
from keras_net2net.transforms import FRESH
from keras_net2net.transforms import MappingRule
from keras_net2net.transforms import WidthMapping
from keras_net2net.transforms import choose_mapping


def _head_dim(key):
    return lambda config: config["hidden_dim"] // config[key]


class Phi3Family(LlamaFamily):
    """Phi-3 backbones (see the module docstring).

    Example:

    ```python
    grown = keras_net2net.widen(phi3_causal_lm, "num_key_value_heads", 4)
    ```
    """

    name = "Phi-3"
    norm_gains = [
        r"(pre|post)_attention_layernorm/scale",
        r"sequence_output_layernorm/scale",
    ]
    layouts = [
        (r"token_embedding/embeddings", (None, H_COPY)),
        (r"token_embedding/reverse_embeddings", (H_DIVIDE, None)),
        (r"attention/query/kernel", (H_DIVIDE, Q_COPY, None)),
        (r"attention/(key|value)/kernel", (H_DIVIDE, KV_COPY, None)),
        (r"attention/attention_output/kernel", (Q_DIVIDE, None, H_COPY)),
        (r"(pre|post)_attention_layernorm/scale", (H_COPY,)),
        (r"feedforward_(intermediate|gate)_dense/kernel", (H_DIVIDE, I_COPY)),
        (r"feedforward_output_dense/kernel", (I_DIVIDE, H_COPY)),
        (r"sequence_output_layernorm/scale", (H_COPY,)),
    ]
    zeroed = [r"attention/attention_output/kernel", r"feedforward_output_dense/kernel"]


class GPTNeoXFamily(GPTFamily):
    """GPT-NeoX backbones (see the module docstring).

    Example:

    ```python
    grown = keras_net2net.widen(gpt_neox_causal_lm, "hidden_dim", 32)
    ```
    """

    name = "GPT-NeoX"
    layouts = [
        (r"token_embedding/embeddings", (None, H_COPY)),
        (r"self_attention/query_key_value/kernel", (H_DIVIDE, Q_COPY, None)),
        (r"self_attention/query_key_value/bias", (Q_COPY, None)),
        (
            r"self_attention/attention_output/kernel",
            (("heads", DIVIDE, _head_dim("num_heads")), H_COPY),
        ),
        (r"self_attention/attention_output/bias", (H_COPY,)),
        (r"(self_attention|feedforward)_layer_norm/(gamma|beta)", (H_COPY,)),
        (r"feedforward_intermediate_dense/kernel", (H_DIVIDE, I_COPY)),
        (r"feedforward_intermediate_dense/bias", (I_COPY,)),
        (r"feedforward_output_dense/kernel", (I_DIVIDE, H_COPY)),
        (r"feedforward_output_dense/bias", (H_COPY,)),
        (r"layer_norm/(gamma|beta)", (H_DIVIDE,)),  # the tied output embedding
    ]


def alibi_slopes(heads: int) -> list[float]:
    """The ALiBi slope of each head position among ``heads`` (Press et al.;
    KerasHub's Falcon): a geometric sequence for a power of two, completed
    from the next power of two's otherwise."""

    def power_of_two(n: int) -> list[float]:
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start * start**i for i in range(n)]

    if math.log2(heads).is_integer():
        return power_of_two(heads)
    closest = 2 ** math.floor(math.log2(heads))
    return power_of_two(closest) + alibi_slopes(2 * closest)[0::2][: heads - closest]


def alibi_head_mappings(old: int, new: int) -> tuple[WidthMapping, WidthMapping] | None:
    """``(heads, heads read)`` mappings of ``old`` -> ``new`` ALiBi heads, or None.

    Each old head moves to a position of the new count with its own slope;
    every other position copies the old head just after it (``heads``: its
    queries, keys and values) and is read as a fresh head (``heads read``:
    the output projection's rows zero). None where some old slope is not
    among the new ones.
    """
    old_slopes, new_slopes = alibi_slopes(old), alibi_slopes(new)
    position = []
    for slope in old_slopes:
        match = [
            j
            for j, s in enumerate(new_slopes)
            if j not in position and math.isclose(s, slope, rel_tol=1e-12)
        ]
        if not match:
            return None
        position.append(match[0])
    indices = np.full(new, FRESH)
    indices[position] = np.arange(old)
    read = WidthMapping(indices.copy(), old)
    # A new head copies the nearest old head after it (before it at the end).
    placed = sorted(zip(position, range(old)))
    for j in range(new):
        if indices[j] == FRESH:
            after = [h for p, h in placed if p > j]
            indices[j] = after[0] if after else placed[-1][1]
    return WidthMapping(indices, old), read


class FalconFamily(GPTFamily):
    """Falcon backbones (see the module docstring).

    Example:

    ```python
    grown = keras_net2net.widen(falcon_causal_lm, "num_attention_heads", 4)
    ```
    """

    name = "Falcon"
    heads_key = "num_attention_heads"
    widen_keys = {
        "intermediate_dim": "the feed-forward width",
        "hidden_dim": "the residual stream (heads added with it, placed by their "
        "ALiBi slopes)",
        "num_attention_heads": "heads placed by their ALiBi slopes (the stream "
        "grows with them)",
    }
    refused: dict[str, str] = {}
    layouts = [
        (r"token_embedding/embeddings", (None, H_COPY)),
        (r"attention/(query|key|value)_dense/kernel", (H_DIVIDE, Q_COPY, None)),
        (r"attention/(query|key|value)_dense/bias", (Q_COPY, None)),
        (
            r"attention/output_dense/kernel",
            (("heads_read", DIVIDE, _head_dim("num_attention_heads")), H_COPY),
        ),
        (r"attention/output_dense/bias", (H_COPY,)),
        (r"(input|post_attention)_layernorm/(gamma|beta)", (H_COPY,)),
        (r"dense_h_to_4h/kernel", (H_DIVIDE, I_COPY)),
        (r"dense_h_to_4h/bias", (I_COPY,)),
        (r"dense_4h_to_h/kernel", (I_DIVIDE, H_COPY)),
        (r"dense_4h_to_h/bias", (H_COPY,)),
        (r"final_layernorm/(gamma|beta)", (H_DIVIDE,)),  # the tied output embedding
    ]
    zeroed = [r"attention/output_dense/(kernel|bias)", r"dense_4h_to_h/(kernel|bias)"]

    def plan_widen(
        self, config: dict[str, Any], key: str, value: int, seed: int | None
    ) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
        if key not in ("hidden_dim", self.heads_key):
            return super().plan_widen(config, key, value, seed)
        heads, hidden = config[self.heads_key], config["hidden_dim"]
        size = hidden // heads
        step = heads if key == self.heads_key else heads * size
        _check(
            key,
            value,
            config[key],
            lambda v: (
                v % step == 0
                and alibi_head_mappings(heads, v // (step // heads)) is not None
            ),
            f", a multiple of it (heads keep their size {size}; a multiple of "
            f"the {heads} heads keeps every ALiBi slope)",
        )
        new_heads = value if key == self.heads_key else value // size
        factor = new_heads // heads
        mappings = alibi_head_mappings(heads, new_heads)
        assert mappings is not None  # checked: new_heads is valid
        rule = MappingRule(
            uniform=True,
            reason="Falcon's LayerNormalization needs every channel copied "
            "equally often",
        )
        config = dict(config)
        config.update(hidden_dim=hidden * factor, num_attention_heads=new_heads)
        read = mappings[1].indices
        placed = [int(np.flatnonzero(read == h)[0]) for h in range(heads)]
        notes = [
            f"  heads keep their size ({size}): num_attention_heads {heads} -> "
            f"{new_heads}; old head h moves to position {placed}[h] (its ALiBi "
            "slope there), the new heads start with a zero output projection"
        ]
        return (
            config,
            {
                "hidden": choose_mapping(hidden, hidden * factor, [rule]),
                "heads": mappings[0],
                "heads_read": mappings[1],
            },
            notes,
        )
