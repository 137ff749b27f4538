"""GPT-2 and OPT decoders (KerasHub).

A block is pre-LN: ``x + attention(ln(x))``, then ``x + ffn(ln(x))``, with
multi-head attention (every head its own key and value), learned position
embeddings, a two-layer GELU/ReLU feed-forward network, biases everywhere
and the output embedding tied to the token embedding.

What grows, exactly (as for `keras_net2net.families.LlamaFamily`):

* ``intermediate_dim``: the first feed-forward layer copies columns (and
  bias), the second divides its rows.
* ``hidden_dim`` (a multiple) or ``num_heads`` (a multiple): more heads of
  the same size (``head_dim = hidden_dim // num_heads``), each copied head in
  place; LayerNormalization sees every channel copied equally often, so its
  mean and variance are unchanged. The tied output embedding's copies add
  up, so the final LayerNormalization's gamma and beta are divided.
* ``deepen(after="transformer_layer_<i>")``: a copy of block ``i`` whose
  attention output and second feed-forward layer (kernels and biases) are
  zero.
"""

from __future__ import annotations

from typing import Any

from keras_net2net.families.base import H_COPY
from keras_net2net.families.base import H_DIVIDE
from keras_net2net.families.base import I_COPY
from keras_net2net.families.base import I_DIVIDE
from keras_net2net.families.base import Q_COPY
from keras_net2net.families.base import Q_DIVIDE
from keras_net2net.families.llama import LlamaFamily


class GPTFamily(LlamaFamily):
    """GPT-2 and OPT backbones (see the module docstring).

    Example:

    ```python
    grown = keras_net2net.widen(gpt2_causal_lm, "num_heads", 4)
    ```
    """

    stream_fill = None  # hidden_dim: multiples only (see the module docstring)

    name = "GPT"
    heads_key = "num_heads"
    kv_key = None
    widen_keys = {
        "hidden_dim": "the residual stream (heads added with it)",
        "intermediate_dim": "the feed-forward width",
        "num_heads": "heads (the stream grows with them)",
    }
    layouts = [
        (r"(embeddings/)?token_embedding/embeddings", (None, H_COPY)),
        (r"(embeddings/)?position_embedding/embeddings", (None, H_COPY)),
        (r"self_attention/(query|key|value)/kernel", (H_DIVIDE, Q_COPY, None)),
        (r"self_attention/(query|key|value)/bias", (Q_COPY, None)),
        (r"self_attention/attention_output/kernel", (Q_DIVIDE, None, H_COPY)),
        (r"self_attention/attention_output/bias", (H_COPY,)),
        (r"(self_attention|feedforward)_layer_norm/(gamma|beta)", (H_COPY,)),
        (r"feedforward_intermediate_dense/kernel", (H_DIVIDE, I_COPY)),
        (r"feedforward_intermediate_dense/bias", (I_COPY,)),
        (r"feedforward_output_dense/kernel", (I_DIVIDE, H_COPY)),
        (r"feedforward_output_dense/bias", (H_COPY,)),
        # The tied output embedding adds up its copies: the final norm divides.
        (r"layer_norm/(gamma|beta)", (H_DIVIDE,)),
    ]
    zeroed = [
        r"self_attention/attention_output/(kernel|bias)",
        r"feedforward_output_dense/(kernel|bias)",
    ]

    def layout(self, path: str, config: dict[str, Any]) -> tuple:
        return super(LlamaFamily, self).layout(path, config)
