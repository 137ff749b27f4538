"""KerasHub's Transformer layers (registered only when keras_hub is installed).

KerasHub builds its backbones (GPT-2, BERT, ...) from composite layers:

* ``TransformerEncoder`` and ``TransformerDecoder`` (without cross-attention)
  hold a whole Transformer block: self-attention and a feed-forward network,
  each with its LayerNormalization and residual Add. On the residual stream a
  block is a pass-through with parameters: its query/key/value projections
  and the feed-forward network's first Dense read the stream (their rows are
  divided by the copy count), the attention output projection and the second
  Dense write it (columns copied), and both norms' ``gamma``/``beta`` are
  copied. The norms need every channel copied equally often (a multiple of
  the old width), as any LayerNormalization does.

  KerasHub derives each head's size from the stream: ``key_dim = hidden_dim
  // num_heads``. A wider stream therefore also widens every head, exactly:
  the key and value projections copy the new head dimensions, the query
  projection divides them by their copy count (so every dot product q.k is
  unchanged) and is scaled by ``sqrt(new key_dim / old key_dim)`` (so the
  layer's own ``1/sqrt(key_dim)`` still gives the same attention scores),
  and the output projection divides the rows of copied value dimensions.

  A block's feed-forward width is widened by naming it:
  ``widen(model, "transformer_layer_0/feedforward_intermediate_dense", 96)``.
  Its heads too: ``widen(model, "transformer_layer_0/self_attention", 4)``
  copies heads (each copy attends identically; the output projection divides
  them). Heads keep their size, so the stream grows by the same factor (2 ->
  4 heads of 16: stream 32 -> 64, every other block's heads grow to 32
  dimensions as above); the number of heads must be a multiple of the old.

  ``deepen(model, after=<block>)`` inserts a copy of a pre-LN block
  (``normalize_first=True``, as GPT-2) whose two output projections are
  zero, so it starts as the identity. Post-LN blocks (BERT) are refused: a
  copied block would still normalise its input.
* ``PositionEmbedding`` reads only the shape of its input and writes one
  learned vector per position: a pass-through whose columns are copied.
* ``ReversibleEmbedding`` and ``TokenAndPositionEmbedding`` write the stream
  from token ids (columns copied, no division), like ``Embedding``. A reverse
  call (``reverse=True``, logits from the stream) is refused.
"""

import importlib
import math
import numbers

import keras
import numpy as np

from keras_net2net import _keras_internals as internals
from keras_net2net.surgery.handlers.attention import EmbeddingHandler
from keras_net2net.surgery.handlers.base import PassThroughHandler
from keras_net2net.surgery.handlers.change import LayerChange
from keras_net2net.surgery.handlers.change import copy_transform
from keras_net2net.surgery.handlers.change import divide_transform
from keras_net2net.surgery.handlers.common import unsupported
from keras_net2net.surgery.handlers.core import check_plain_float
from keras_net2net.surgery.handlers.elementwise import activation_name
from keras_net2net.surgery.handlers.elementwise import check_elementwise_activation
from keras_net2net.transforms import MappingRule
from keras_net2net.transforms import random_mapping
from keras_net2net.transforms import tiled_mapping

FFN = "feedforward_intermediate_dense"
# KerasHub's own elementwise activations (GPT-2's tanh-approximated GELU).
_HUB_ELEMENTWISE = frozenset({"keras_hub>gelu_approximate"})


def _key_mapping(old, new):
    if new % old == 0:
        return tiled_mapping(old, new)
    return random_mapping(old, new, seed=0)


class TransformerBlockHandler(PassThroughHandler):
    """KerasHub ``TransformerEncoder`` / ``TransformerDecoder`` (self-attention)."""

    copies_itself = True

    has_state = True

    def __init__(self, attention):
        self.attention = attention  # name of the self-attention sublayer

    def check(self, layer):
        check_plain_float(layer)
        if internals.hub_cross_attention(layer) is not None:
            raise unsupported(
                layer,
                "has cross-attention (it reads an encoder sequence); only "
                "blocks with self-attention alone are supported.",
            )
        attention = internals.hub_self_attention(layer)
        if attention is None:
            raise unsupported(layer, "is not built.")
        value_dim = attention.get_config().get("value_dim")
        if value_dim not in (None, attention.get_config()["key_dim"]):
            raise unsupported(layer, f"has value_dim={value_dim} != key_dim.")

    def channel_inputs(self, layer, node, graph):
        return [0]

    def mapping_rule(self, layer, node, graph, axis):
        return MappingRule(
            uniform=True,
            reason=f"'{layer.name}' ({type(layer).__name__}) normalises the "
            "stream with LayerNormalization; it keeps its function only when "
            "every channel is copied the same number of times",
        )

    def init_key(self, layer, variable):
        return None  # sublayers' initializers: values are assigned

    def _key(self, sublayer, variable):
        return f"{sublayer}/{variable}"

    def follow(self, layer, mapping, options, seeds):
        """Widen the stream the block reads and writes (and so every head)."""
        self.check(layer)
        attention = internals.hub_self_attention(layer)
        heads = int(layer.num_heads)
        new_heads = dict(options.heads).get(layer.name, heads)
        old_key = int(attention.get_config()["key_dim"])
        new_key = mapping.new_width // new_heads
        change = LayerChange()
        # TransformerDecoder records the shape it was built for in its config.
        shape = layer.get_config().get("decoder_sequence_shape")
        if shape is not None:
            change.config["decoder_sequence_shape"] = [*shape[:-1], mapping.new_width]
        att = self.attention

        for norm in ("self_attention_layer_norm", "feedforward_layer_norm"):
            change.add(f"{norm}/gamma", copy_transform(mapping, fill=1.0))
            change.add(f"{norm}/beta", copy_transform(mapping, fill=0.0))
        for name in ("query", "key", "value"):
            change.add(
                f"{att}/{name}/kernel",
                options.reader(mapping, seeds, -3),
            )
        change.add(f"{FFN}/kernel", options.reader(mapping, seeds, -2))
        change.add(
            f"{att}/attention_output/kernel",
            options.writer(mapping, seeds),
        )
        change.add(
            "feedforward_output_dense/kernel",
            options.writer(mapping, seeds),
        )
        bias = copy_transform(mapping, fill=options.bias_fill())
        if attention.use_bias:
            change.add(f"{att}/attention_output/bias", bias)
        change.add("feedforward_output_dense/bias", bias)
        if new_heads != heads:
            self._copy_heads(change, attention, heads, new_heads)
        if new_key != old_key:
            self._widen_heads_size(change, attention, old_key, new_key)
        return change

    def _copy_heads(self, change, attention, old_heads, new_heads):
        """More heads of the same size: copies attend identically (divided)."""
        change.config["num_heads"] = new_heads
        head_mapping = tiled_mapping(old_heads, new_heads)
        att = self.attention
        for name in ("query", "key", "value"):
            change.add(f"{att}/{name}/kernel", copy_transform(head_mapping, -2))
            if attention.use_bias:
                change.add(f"{att}/{name}/bias", copy_transform(head_mapping, -2))
        change.add(f"{att}/attention_output/kernel", divide_transform(head_mapping, -3))

    def _widen_heads_size(self, change, attention, old_key, new_key):
        """Every head's size ``old_key -> new_key``, exactly (see module doc)."""
        key_mapping = _key_mapping(old_key, new_key)
        scale = math.sqrt(new_key / old_key)
        att = self.attention
        names = ["kernel", "bias"] if attention.use_bias else ["kernel"]
        for variable in names:
            change.add(
                f"{att}/query/{variable}",
                divide_transform(key_mapping, -1, scale=scale),
            )
            for name in ("key", "value"):
                change.add(f"{att}/{name}/{variable}", copy_transform(key_mapping, -1))
        change.add(f"{att}/attention_output/kernel", divide_transform(key_mapping, -2))

    # Parts that can be widened by name: "<block>/<part>".

    def parts(self, layer):
        """``{part name: current width}`` of the block's own axes."""
        return {
            FFN: int(layer.intermediate_dim),
            self.attention: int(layer.num_heads),
        }

    def part_stream_width(self, layer, part, units):
        """More heads keep their size, so the stream grows with them."""
        if part != self.attention:
            return None
        self.check(layer)
        heads = int(layer.num_heads)
        integer = isinstance(units, numbers.Integral) and not isinstance(
            units, (bool, np.bool_)
        )
        if not integer or units <= heads:
            raise ValueError(
                f"`units` for '{layer.name}/{part}' (its number of heads) must "
                f"be an integer larger than its current {heads} heads. "
                f"Received: units={units!r}"
            )
        if units % heads:
            raise ValueError(
                f"`units` for '{layer.name}/{part}' (the number of heads) must "
                f"be a multiple of its current {heads} heads: KerasHub derives "
                "each head's size from the stream (key_dim = hidden_dim // "
                "num_heads), so the stream grows by the same factor and its "
                "LayerNormalizations need a multiple of the old width. "
                f"Received: units={units!r}"
            )
        attention = internals.hub_self_attention(layer)
        return int(units) * int(attention.get_config()["key_dim"])

    def widen_part(self, layer, part, mapping, options, seeds):
        self.check(layer)
        if activation_name(layer.activation) not in _HUB_ELEMENTWISE:
            check_elementwise_activation(
                layer, layer.activation, "its feed-forward width cannot be widened"
            )
        change = LayerChange(config={"intermediate_dim": mapping.new_width})
        change.add(f"{FFN}/kernel", options.writer(mapping, seeds))
        change.add(f"{FFN}/bias", copy_transform(mapping, fill=options.bias_fill()))
        change.add(
            "feedforward_output_dense/kernel",
            options.reader(mapping, seeds, -2),
        )
        return change

    # deepen(after=<block>): an identity copy of a pre-LN block.

    def zero_change(self, layer):
        if not layer.normalize_first:
            return None
        values = {}
        for key in (
            f"{self.attention}/attention_output/kernel",
            f"{self.attention}/attention_output/bias",
            "feedforward_output_dense/kernel",
            "feedforward_output_dense/bias",
        ):
            variable = next(
                (v for v in layer.weights if v.path.endswith("/" + key)), None
            )
            if variable is not None:
                values[key] = np.zeros(variable.shape, "float32")
        return values

    def check_copy(self, layer):
        """Refuse a block that a zeroed copy would not pass through unchanged."""
        self.check(layer)
        if not layer.normalize_first:
            raise unsupported(
                layer,
                "is a post-LN block (normalize_first=False, as BERT): a copy "
                "with zeroed output projections would still apply its "
                "LayerNormalizations, so it would not start as the identity. "
                "Only pre-LN blocks (normalize_first=True) can be copied.",
            )

    def zero_preserving(self, layer):
        return False


class PositionEmbeddingHandler(PassThroughHandler):
    """KerasHub ``PositionEmbedding``: one vector per position, columns copied."""

    has_state = True

    def check(self, layer):
        check_plain_float(layer)

    def channel_inputs(self, layer, node, graph):
        return [0]

    def follow(self, layer, mapping, options, seeds):
        fill = options.fill()
        return LayerChange().add(
            "embeddings",
            copy_transform(
                mapping, fill=fill, seed=next(seeds), fill_std=options.request.pad_std
            ),
        )

    def init_key(self, layer, variable):
        return None

    def zero_preserving(self, layer):
        return False


def _reverse_call(node):
    if node is None:
        return False
    kwargs = node.raw.arguments.kwargs
    args = node.raw.arguments.args
    return bool(kwargs.get("reverse", args[1] if len(args) > 1 else False))


class ReversibleEmbeddingHandler(EmbeddingHandler):
    """``ReversibleEmbedding`` (Keras or KerasHub) called forwards."""

    def at(self, layer, node, graph, axis=None):
        if _reverse_call(node):
            raise unsupported(
                layer,
                "is called with reverse=True (logits from the stream); growing "
                "a stream that a reverse embedding reads is not supported.",
            )
        return self

    def widen_out(self, layer, mapping, options, seeds):
        change = super().widen_out(layer, mapping, options, seeds)
        if not layer.tie_weights:
            change.add(
                "reverse_embeddings",
                divide_transform(mapping, -2, fill=options.fill(), seed=next(seeds)),
            )
        return change


class TokenAndPositionEmbeddingHandler(EmbeddingHandler):
    """KerasHub ``TokenAndPositionEmbedding``: token + position columns copied."""

    def width(self, layer):
        return int(layer.embedding_dim)

    def widen_out(self, layer, mapping, options, seeds):
        change = LayerChange(config={"embedding_dim": mapping.new_width})
        for part in ("token_embedding", "position_embedding"):
            change.add(
                f"{part}/embeddings",
                options.writer(mapping, seeds),
            )
        if not layer.token_embedding.tie_weights:
            change.add(
                "token_embedding/reverse_embeddings",
                divide_transform(mapping, -2, fill=options.fill(), seed=next(seeds)),
            )
        return change

    def init_key(self, layer, variable):
        return None


def register(register_handler):
    """Keras's own ReversibleEmbedding (Keras >= 3.14)."""
    if hasattr(keras.layers, "ReversibleEmbedding"):
        register_handler(keras.layers.ReversibleEmbedding, ReversibleEmbeddingHandler())


def register_keras_hub(register_handler):
    """KerasHub's layers; called once the first KerasHub layer is looked up."""
    layers = importlib.import_module("keras_hub").layers
    register_handler(
        layers.TransformerEncoder, TransformerBlockHandler("self_attention_layer")
    )
    register_handler(
        layers.TransformerDecoder, TransformerBlockHandler("self_attention")
    )
    register_handler(layers.PositionEmbedding, PositionEmbeddingHandler())
    register_handler(layers.ReversibleEmbedding, ReversibleEmbeddingHandler())
    register_handler(
        layers.TokenAndPositionEmbedding, TokenAndPositionEmbeddingHandler()
    )
