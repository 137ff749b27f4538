"""Llama-style decoders: Llama, Llama 3, Mistral, Qwen 2 (KerasHub).

A block is pre-norm: ``x + attention(rms(x))``, then ``x + ffn(rms(x))``,
with grouped-query attention (query head ``h`` attends with key/value head
``h // (num_query_heads // num_key_value_heads)``), rotary position
embeddings over each head's dimensions, and a gated feed-forward network
(``down(silu(gate(x)) * up(x))``). Qwen 2 adds query/key/value biases
(copied with their heads) and ties its output embedding by default.

What grows, exactly:

* ``intermediate_dim``: gate and up projections copy columns with one
  mapping, the down projection divides its rows.
* ``hidden_dim`` (a multiple of the current one): the stream's channels are
  tiled (RMS normalisation needs every channel copied equally often), and
  since KerasHub derives ``head_dim = hidden_dim // num_query_heads``,
  heads are added, not enlarged: ``num_query_heads`` grows by the same
  factor (rotary embeddings act within a head, so copied heads stay exact;
  a larger head would not). Readers of the stream divide their rows; a tied
  output embedding is compensated in the final norm's scale.
  ``num_query_heads`` is the same request in heads.
* ``num_key_value_heads`` (a multiple that divides ``num_query_heads``):
  key/value heads are copied in place, each query head keeps attending with
  a copy of its own (`transforms.grouped_query_mappings`).
* ``deepen(after="transformer_layer_<i>")``: a copy of block ``i`` whose
  attention output and down projections are zero (the identity).
"""

from __future__ import annotations

from typing import Any

from keras_net2net.families.base import H_COPY
from keras_net2net.families.base import H_DIVIDE
from keras_net2net.families.base import I_COPY
from keras_net2net.families.base import I_DIVIDE
from keras_net2net.families.base import KV_COPY
from keras_net2net.families.base import Q_COPY
from keras_net2net.families.base import Q_DIVIDE
from keras_net2net.families.base import Family
from keras_net2net.transforms import MappingRule
from keras_net2net.transforms import WidthMapping
from keras_net2net.transforms import choose_mapping
from keras_net2net.transforms import grouped_query_mappings


class LlamaFamily(Family):
    """Llama, Llama 3, Mistral and Qwen 2 backbones (see the module docstring).

    Example:

    ```python
    grown = keras_net2net.widen(llama_causal_lm, "num_key_value_heads", 4)
    ```
    """

    name = "Llama"
    heads_key = "num_query_heads"
    kv_key: str | None = "num_key_value_heads"
    widen_keys = {
        "hidden_dim": "the residual stream (heads added with it; unchanged where "
        "head_dim is set)",
        "intermediate_dim": "the feed-forward width",
        "num_query_heads": "query heads (the stream grows with them; unchanged "
        "where head_dim is set)",
        "num_key_value_heads": "key/value heads",
    }
    layouts = [
        (r"token_embedding/embeddings", (None, H_COPY)),
        (r"token_embedding/reverse_embeddings", (H_DIVIDE, None)),
        (r"self_attention/query/kernel", (H_DIVIDE, Q_COPY, None)),
        (r"self_attention/(key|value)/kernel", (H_DIVIDE, KV_COPY, None)),
        (r"self_attention/query/bias", (Q_COPY, None)),
        (r"self_attention/(key|value)/bias", (KV_COPY, None)),
        (r"self_attention/attention_output/kernel", (Q_DIVIDE, None, H_COPY)),
        (r"(self_attention|feedforward)_layernorm/scale", (H_COPY,)),
        (r"feedforward_(intermediate|gate)_dense/kernel", (H_DIVIDE, I_COPY)),
        (r"feedforward_output_dense/kernel", (I_DIVIDE, H_COPY)),
        (r"sequence_output_layernorm/scale", (H_COPY,)),
    ]
    zeroed = [
        r"self_attention/attention_output/kernel",
        r"feedforward_output_dense/kernel",
    ]
    # Config keys of feed-forward widths, with the dimension each one grows.
    feedforward_keys = {"intermediate_dim": "intermediate"}

    def separate_head_dim(self, config: dict[str, Any]) -> bool:
        """Whether ``head_dim`` is its own config entry (set, not derived).

        Then ``hidden_dim`` grows with the heads unchanged and the heads grow
        with the stream unchanged; otherwise ``head_dim = hidden_dim //
        num_query_heads`` and the two grow together.
        """
        return bool(config.get("head_dim"))

    def layout(self, path: str, config: dict[str, Any]) -> tuple:
        if path == "sequence_output_layernorm/scale" and config.get(
            "tie_word_embeddings"
        ):
            # The tied output embedding copies columns without dividing:
            # the copies' logits add up, so the final norm divides instead.
            return (H_DIVIDE,)
        return super().layout(path, config)

    def plan_widen(
        self, config: dict[str, Any], key: str, value: int, seed: int | None
    ) -> tuple[dict[str, Any], dict[str, WidthMapping], list[str]]:
        if key in self.refused:
            raise ValueError(
                f"`layer`: {self.name}'s '{key}' cannot grow exactly: "
                f"{self.refused[key]}; add heads ('{self.heads_key}') instead."
            )
        config = dict(config)
        hidden = config["hidden_dim"]
        heads = config[self.heads_key]
        kv = config[self.kv_key] if self.kv_key else heads
        notes: list[str] = []
        mappings: dict[str, WidthMapping] = {}
        if key in self.feedforward_keys:
            _check(key, value, config[key], lambda v: True, "")
            mappings[self.feedforward_keys[key]] = choose_mapping(
                config[key], value, seed=seed
            )
            config[key] = value
            return config, mappings, notes
        if self.kv_key and key == self.kv_key:
            _check(
                key,
                value,
                kv,
                lambda v: v % kv == 0 and heads % v == 0,
                f" that is a multiple of {kv} and divides {self.heads_key}={heads}",
            )
            mappings["heads"], mappings["kv_heads"] = grouped_query_mappings(
                heads, kv, heads, value, seed=seed
            )
            config[self.kv_key] = value
            return config, mappings, notes
        rule = MappingRule(
            uniform=True,
            reason=f"the {self.name} blocks normalise the stream (RMS) over its "
            "channels, so every channel is copied equally often",
        )
        if self.separate_head_dim(config):
            # Heads and the stream are independent: grow one of them.
            if key == "hidden_dim":
                what = ", a multiple of it"
                _check(key, value, hidden, lambda v: v % hidden == 0, what)
                mappings["hidden"] = choose_mapping(hidden, value, [rule])
                notes.append(f"  heads unchanged: {self.heads_key}={heads}")
            else:
                _check(key, value, heads, lambda v: True, "")
                try:
                    mappings["heads"], _ = grouped_query_mappings(
                        heads, kv, value, kv, seed=seed
                    )
                except ValueError as error:
                    raise ValueError(f"`units` for '{key}': {error}") from None
                notes.append(f"  the stream unchanged: hidden_dim={hidden}")
            config[key] = value
            return config, mappings, notes
        if key == self.heads_key:
            _check(key, value, heads, lambda v: v % heads == 0, ", a multiple of it")
            factor = value // heads
        else:  # hidden_dim
            _check(key, value, hidden, lambda v: v % hidden == 0, ", a multiple of it")
            factor = value // hidden
        mappings["hidden"] = choose_mapping(hidden, hidden * factor, [rule])
        # Without grouped heads every head is its own key/value group.
        new_kv = kv if self.kv_key else kv * factor
        mappings["heads"], _ = grouped_query_mappings(
            heads, kv, heads * factor, new_kv, seed=seed
        )
        config["hidden_dim"] = hidden * factor
        config[self.heads_key] = heads * factor
        kept = f", {self.kv_key} stays {kv}" if self.kv_key else ""
        size = config.get("head_dim") or hidden // heads
        notes.append(
            f"  heads keep their size ({size}): {self.heads_key} "
            f"{heads} -> {heads * factor}{kept}"
        )
        return config, mappings, notes


def _check(key: str, value: Any, current: int, valid, what: str) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value <= current
        or not valid(value)
    ):
        raise ValueError(
            f"`units` for '{key}' must be an integer larger than its current "
            f"value {current}{what}. Received: units={value!r}"
        )
