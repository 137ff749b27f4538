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
from keras_net2net.transforms import stream_mapping


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
    # hidden_dim to any width: new stream channels at zero (RMS norms).
    stream_fill: float | None = 0.0
    norm_gains = [
        r"(self_attention|feedforward)_layernorm/scale",
        r"sequence_output_layernorm/scale",
    ]

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
        if self.separate_head_dim(config):
            # Heads and the stream are independent: grow one of them.
            if key == "hidden_dim":
                _check(key, value, hidden, *self._stream_rule(hidden))
                mappings["hidden"] = self._stream(config, value, notes)
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
        size = config.get("head_dim") or hidden // heads
        if key == self.heads_key:
            _check(key, value, heads, *self._heads_rule(heads, kv))
            new_heads = value
        else:  # hidden_dim: heads of the same size added
            _check(key, value, hidden, *self._stream_rule(hidden, size, kv))
            new_heads = value // size
        mappings["hidden"] = self._stream(config, new_heads * size, notes)
        # Without grouped heads every head is its own key/value group.
        new_kv = kv if self.kv_key else new_heads
        mappings["heads"], _ = grouped_query_mappings(
            heads, kv, new_heads, new_kv, seed=seed
        )
        config[self.heads_key] = new_heads
        kept = f", {self.kv_key} stays {kv}" if self.kv_key else ""
        notes.append(
            f"  heads keep their size ({size}): {self.heads_key} "
            f"{heads} -> {new_heads}{kept}"
        )
        return config, mappings, notes

    def _heads_rule(self, heads: int, kv: int):
        """``(valid, in words)`` for a number of query heads: a multiple
        (every stream channel copied equally often), or, where the stream may
        hold fresh channels (`stream_fill`), any multiple of the key/value
        heads."""
        if self.stream_fill is None or not self.kv_key:
            return (lambda v: v % heads == 0), ", a multiple of it"
        return (lambda v: v % kv == 0), f", a multiple of {self.kv_key}={kv}"

    def _stream_rule(self, hidden: int, size: int | None = None, kv: int = 1):
        """``(valid, in words)`` for ``hidden_dim``; ``size``: the head size
        where heads grow with the stream (see `_heads_rule`)."""
        if self.stream_fill is None or (size is not None and not self.kv_key):
            kept = "" if size is None else f" (heads keep their size {size})"
            return (lambda v: v % hidden == 0), f", a multiple of it{kept}"
        if size is None:
            return (lambda v: True), ""
        return (lambda v: v % size == 0 and (v // size) % kv == 0), (
            f", a multiple of the head size {size} giving a number of heads "
            f"that {self.kv_key}={kv} divides"
        )

    def _stream(self, config: dict[str, Any], width: int, notes: list[str]):
        """The stream's mapping to ``width`` channels, ``config`` updated.

        A multiple copies every channel equally often; any other width keeps
        the copies and adds fresh channels holding `stream_fill`, the norms'
        epsilon scaled with their gains (see `stream_mapping`).
        """
        hidden = config["hidden_dim"]
        config["hidden_dim"] = width
        if width % hidden == 0:
            rule = MappingRule(
                uniform=True,
                reason=f"the {self.name} blocks normalise the stream (RMS) over "
                "its channels, so every channel is copied equally often",
            )
            return choose_mapping(hidden, width, [rule])
        mapping = stream_mapping(hidden, width)
        copies = width - int(mapping.fresh.sum())
        config[self.epsilon_key] = float(config[self.epsilon_key]) * copies / width
        notes.append(
            f"  stream channels {copies}..{width - 1} start at zero (not a "
            f"multiple of {hidden}): the norms' scales x sqrt({copies}/{width}), "
            f"{self.epsilon_key} x {copies}/{width}"
        )
        return mapping


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
