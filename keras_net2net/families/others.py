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
  heads, so neither heads nor the stream (``head_dim = hidden_dim //
  num_attention_heads``) can grow exactly: only ``intermediate_dim`` and
  blocks grow.
"""

from __future__ import annotations

from typing import Any

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


class FalconFamily(GPTFamily):
    """Falcon backbones: feed-forward width and blocks (see the module docstring).

    Example:

    ```python
    grown = keras_net2net.widen(falcon_causal_lm, "intermediate_dim", 64)
    ```
    """

    name = "Falcon"
    heads_key = "num_attention_heads"
    widen_keys = {"intermediate_dim": "the feed-forward width"}
    refused = {
        "hidden_dim": "its heads would have to grow with it",
        "num_attention_heads": "more heads",
    }
    layouts = [
        (r"token_embedding/embeddings", (None, H_COPY)),
        (r"attention/(query|key|value)_dense/kernel", (H_DIVIDE, Q_COPY, None)),
        (r"attention/(query|key|value)_dense/bias", (Q_COPY, None)),
        (
            r"attention/output_dense/kernel",
            (("heads", DIVIDE, _head_dim("num_attention_heads")), H_COPY),
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
        if key in self.refused:
            raise ValueError(
                f"`layer`: Falcon's attention adds ALiBi biases whose slopes depend "
                f"on the number of heads, so '{key}' ({self.refused[key]}) cannot "
                "grow exactly. Falcon grows 'intermediate_dim' and blocks."
            )
        return super().plan_widen(config, key, value, seed)
