"""Encoders: BERT and ViT (KerasHub), and their classifiers.

Both use multi-head attention with ``head_dim = hidden_dim // num_heads``,
LayerNormalization, learned position embeddings, a two-layer feed-forward
network and biases everywhere, so they grow as `GPTFamily` does: the stream
by more heads of the same size (LayerNormalization sees every channel copied
equally often), the feed-forward width with one mapping. The task's head
(`BertTextClassifier`'s ``logits``, `ViTImageClassifier`'s ``pre_logits``
and ``predictions``) reads the stream, so its rows are divided and it is
carried into the grown task.

* BERT's blocks are post-LN (``ln(x + attention(x))``): an inserted block
  would normalise its input again instead of passing it on, so ``deepen``
  is refused. Its pooled output (``tanh(dense(x[:, 0]))``) copies with the
  stream.
* ViT's blocks are pre-LN and named ``transformer_block_1`` to
  ``transformer_block_<num_layers>`` inside its ``vit_encoder`` layer;
  ``deepen(after="transformer_block_1")`` inserts an identity copy (its
  attention output and second MLP layer at zero). Its feed-forward width is
  ``mlp_dim``. The class token and the patch embedding write the stream.
"""

from __future__ import annotations

from typing import Any

from keras_net2net.families.base import H_COPY
from keras_net2net.families.base import H_DIVIDE
from keras_net2net.families.base import I_COPY
from keras_net2net.families.base import I_DIVIDE
from keras_net2net.families.base import Q_COPY
from keras_net2net.families.base import Q_DIVIDE
from keras_net2net.families.gpt import GPTFamily

_HEAD = [
    (r"(logits|predictions|pre_logits)/kernel", (H_DIVIDE, None)),
    (r"(logits|predictions|pre_logits)/bias", (None,)),
]


def _attention(prefix: str) -> list:
    return [
        (rf"{prefix}/(query|key|value)/kernel", (H_DIVIDE, Q_COPY, None)),
        (rf"{prefix}/(query|key|value)/bias", (Q_COPY, None)),
        (rf"{prefix}/attention_output/kernel", (Q_DIVIDE, None, H_COPY)),
        (rf"{prefix}/attention_output/bias", (H_COPY,)),
    ]


class BertFamily(GPTFamily):
    """BERT backbones and text classifiers (see the module docstring).

    Example:

    ```python
    grown = keras_net2net.widen(bert_text_classifier, "hidden_dim", 64)
    ```
    """

    name = "BERT"
    layouts = [
        (r"(token|position|segment)_embedding/embeddings", (None, H_COPY)),
        (r"embeddings_layer_norm/(gamma|beta)", (H_COPY,)),
        *_attention("self_attention_layer"),
        (r"(self_attention|feedforward)_layer_norm/(gamma|beta)", (H_COPY,)),
        (r"feedforward_intermediate_dense/kernel", (H_DIVIDE, I_COPY)),
        (r"feedforward_intermediate_dense/bias", (I_COPY,)),
        (r"feedforward_output_dense/kernel", (I_DIVIDE, H_COPY)),
        (r"feedforward_output_dense/bias", (H_COPY,)),
        (r"pooled_dense/kernel", (H_DIVIDE, H_COPY)),
        (r"pooled_dense/bias", (H_COPY,)),
    ]
    task_layouts = _HEAD

    def check_deepen(self, config: dict[str, Any]) -> None:
        raise ValueError(
            "`after`: BERT's blocks are post-LN (ln(x + attention(x))): an "
            "inserted block would normalise its input again instead of passing "
            "it on, so no block can start as the identity. BERT grows "
            "'hidden_dim', 'num_heads' and 'intermediate_dim'."
        )


class ViTFamily(GPTFamily):
    """ViT backbones and image classifiers (see the module docstring).

    Example:

    ```python
    grown = keras_net2net.deepen(vit_classifier, after="transformer_block_1")
    ```
    """

    name = "ViT"
    block_prefix = "transformer_block_"
    block_path = "vit_encoder/"
    first_block = 1
    widen_keys = {
        "hidden_dim": "the residual stream (heads added with it)",
        "mlp_dim": "the feed-forward width",
        "num_heads": "heads (the stream grows with them)",
    }
    feedforward_keys = {"mlp_dim": "intermediate"}
    layouts = [
        (r"vit_patching_and_embedding/class_token", (None, None, H_COPY)),
        (r"vit_patching_and_embedding/patch_embedding/kernel", (None,) * 3 + (H_COPY,)),
        (r"vit_patching_and_embedding/patch_embedding/bias", (H_COPY,)),
        (r"vit_patching_and_embedding/position_embedding/embeddings", (None, H_COPY)),
        (r"ln_[12]/(gamma|beta)", (H_COPY,)),
        *_attention("mha"),
        (r"mlp/dense_1/kernel", (H_DIVIDE, I_COPY)),
        (r"mlp/dense_1/bias", (I_COPY,)),
        (r"mlp/dense_2/kernel", (I_DIVIDE, H_COPY)),
        (r"mlp/dense_2/bias", (H_COPY,)),
        (r"vit_encoder/ln/(gamma|beta)", (H_COPY,)),
    ]
    zeroed = [r"mha/attention_output/(kernel|bias)", r"mlp/dense_2/(kernel|bias)"]
    task_layouts = _HEAD

    def task_layout(self, path: str, task: Any) -> tuple | None:
        # With an intermediate layer (pre_logits), the predictions read it,
        # not the stream.
        if path.startswith("predictions/") and task.get_config().get(
            "intermediate_dim"
        ):
            return (None,) * (2 if path.endswith("kernel") else 1)
        return super().task_layout(path, task)
