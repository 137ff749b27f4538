"""Transformer layers: Embedding and MultiHeadAttention.

``Embedding`` writes the channels of a residual stream (its embedding columns
are copied, no division); it reads token ids, not channels.

``MultiHeadAttention`` reads channels through its query, key and value
projections (their kernels ``(d, heads, key_dim)`` are divided along ``d``,
which keeps every projection, and so every attention pattern, exact) and
writes channels through its output projection (kernel ``(heads, value_dim,
d_out)``: columns copied). Widening the layer itself widens its *heads*: a
copied head's query, key and value projections are copies of its original's,
so it attends identically, and the output projection's rows of every copy are
divided by the head's number of copies.

Its parts ``"<layer>/key_dim"`` and ``"<layer>/value_dim"`` widen every head's
size, exactly: new key dimensions copy old ones in the key projection and
divide them by their copy count in the query projection (each q.k is
unchanged), and the query projection is scaled by ``sqrt(new / old key_dim)``
so that the layer's own ``1/sqrt(key_dim)`` gives the same scores; new value
dimensions copy old ones and the output projection divides their rows.
"""

import math

import keras
import numpy as np

from keras_net2net.surgery.handlers.base import PassThroughHandler
from keras_net2net.surgery.handlers.base import UnitsHandler
from keras_net2net.surgery.handlers.change import LayerChange
from keras_net2net.surgery.handlers.change import copy_transform
from keras_net2net.surgery.handlers.common import unsupported
from keras_net2net.surgery.handlers.core import check_plain_float
from keras_net2net.surgery.handlers.core import identity_dense


class EmbeddingHandler(UnitsHandler):
    """`Embedding`: writes ``output_dim`` channels from token ids.

    ``deepen`` after it inserts an identity Dense (its output is linear).
    """

    identity_deepening = True

    def deeper_layer(self, layer, name, *, method, kernel_size=None, seed=None):
        return identity_dense(layer, int(self.width(layer)), name, method, seed)

    def check(self, layer):
        check_plain_float(layer)

    def init_key(self, layer, variable):
        return "embeddings_initializer"

    def reads(self, layer, node):
        return []  # token ids, not channels

    def width(self, layer):
        return int(layer.output_dim)

    def widen_out(self, layer, mapping, options, seeds):
        change = LayerChange(config={"output_dim": mapping.new_width})
        return change.add(
            "embeddings",
            options.writer(mapping, seeds),
        )


# MultiHeadAttention call arguments that carry channels: query, value, key.
_QUERY, _VALUE, _KEY = (0, "query"), (1, "value"), (2, "key")


def _argument(node, position):
    return node.labels[position]


class MultiHeadAttentionHandler(UnitsHandler):
    """`MultiHeadAttention` (self- or cross-attention, masks, causal masks).

    ``deepen`` after one inserts an identity Dense (its output projection is
    linear).
    """

    identity_deepening = True

    def deeper_layer(self, layer, name, *, method, kernel_size=None, seed=None):
        width = int(layer.output_dense.kernel.shape[-1])
        return identity_dense(layer, width, name, method, seed)

    def check(self, layer):
        if getattr(layer, "use_gate", False):
            raise unsupported(layer, "uses use_gate=True, which is not supported.")
        output_shape = layer.get_config().get("output_shape")
        if output_shape is not None and not isinstance(output_shape, int):
            if len(tuple(output_shape)) != 1:
                raise unsupported(
                    layer,
                    f"has output_shape={output_shape}; only a single output "
                    "dimension is supported.",
                )
        rank = len(layer.get_config().get("attention_axes") or (1,))
        if rank != 1:
            raise unsupported(
                layer,
                "attends over several axes; only attention over one axis "
                "(sequences) is supported.",
            )

    def channel_outputs(self, layer, node, graph):
        return [0]  # not the attention scores (return_attention_scores=True)

    def reads(self, layer, node):
        channels = {a for pair in (_QUERY, _VALUE, _KEY) for a in pair}
        return [i for i, label in enumerate(node.labels) if label in channels]

    def width(self, layer):
        return int(layer.num_heads)

    def _has_key(self, node):
        return any(label in _KEY for label in node.labels)

    # The output projection writes the stream.

    def widen_out(self, layer, mapping, options, seeds):
        change = LayerChange(config={"output_shape": mapping.new_width})
        change.add(
            "attention_output/kernel",
            options.writer(mapping, seeds),
        )
        if layer.use_bias:
            change.add(
                "attention_output/bias",
                copy_transform(mapping, fill=options.bias_fill()),
            )
        return change

    # The query, key and value projections read the stream.

    def widen_in(self, layer, mapping, options, seeds, position=0, node=None):
        label = _argument(node, position) if node is not None else 0
        if label in _QUERY:
            projections = ["query"]
        elif label in _VALUE:
            projections = ["value"] if self._has_key(node) else ["value", "key"]
        else:
            projections = ["key"]
        change = LayerChange()
        if label in _QUERY:
            # The output width follows the query's unless set: keep it.
            output = layer.get_config().get("output_shape")
            old = output if output is not None else mapping.old_width
            change.defaults["output_shape"] = int(np.ravel(old)[0])
        for name in projections:
            change.add(
                f"{name}/kernel",
                options.reader(mapping, seeds, -3),
            )
        return change

    # Heads: the layer's own width.

    def internal_width(self, layer):
        return int(layer.num_heads)

    def widen_internal(self, layer, mapping, options, seeds):
        """Copy heads: Q/K/V projections copied, output projection divided."""
        change = LayerChange(config={"num_heads": mapping.new_width})
        for name in ("query", "key", "value"):
            change.add(
                f"{name}/kernel",
                options.writer(mapping, seeds, -2),
            )
            if layer.use_bias:
                change.add(
                    f"{name}/bias",
                    copy_transform(mapping, -2, fill=options.bias_fill()),
                )
        change.add(
            "attention_output/kernel",
            options.reader(mapping, seeds, -3),
        )
        return change

    # Parts: every head's key and value size.

    def parts(self, layer):
        config = layer.get_config()
        value_dim = config.get("value_dim") or config["key_dim"]
        return {"key_dim": int(config["key_dim"]), "value_dim": int(value_dim)}

    def widen_part(self, layer, part, mapping, options, seeds):
        """Every head's ``key_dim`` or ``value_dim`` (see the module docstring)."""
        names = ["kernel", "bias"] if layer.use_bias else ["kernel"]
        config = layer.get_config()
        change = LayerChange(config={part: mapping.new_width})

        def copies(name):
            kernel = name == "kernel"
            return copy_transform(
                mapping,
                fill=options.fill() if kernel else options.request.pad_bias,
                noise=options.copy_noise() if kernel else 0.0,
                seed=next(seeds),
                fill_std=options.request.pad_std,
            )

        value_dim = int(config.get("value_dim") or config["key_dim"])
        key_dim = int(config["key_dim"])
        if part == "key_dim" and value_dim == key_dim:
            # Equal key and value sizes (the default) stay equal: values too.
            change.config["value_dim"] = mapping.new_width
            self._widen_values(change, names, mapping, options, seeds, copies)
        sizes = {"key_dim": key_dim, "value_dim": value_dim, **change.config}
        if sizes["key_dim"] != sizes["value_dim"] and keras.backend.backend() == "jax":
            raise unsupported(
                layer,
                f"would get key_dim={sizes['key_dim']} and value_dim="
                f"{sizes['value_dim']}; on the JAX backend Keras' "
                "MultiHeadAttention fails when they differ (its fused attention "
                "needs equal sizes), so only growth that keeps them equal is "
                "allowed there.",
            )
        if part == "key_dim":
            scale = math.sqrt(mapping.new_width / mapping.old_width)
            for name in names:
                change.add(f"key/{name}", copies(name))
                change.add(
                    f"query/{name}",
                    options.reader(
                        mapping, seeds, -1, noise=name == "kernel", scale=scale
                    ),
                )
            return change
        self._widen_values(change, names, mapping, options, seeds, copies)
        return change

    def _widen_values(self, change, names, mapping, options, seeds, copies):
        for name in names:
            change.add(f"value/{name}", copies(name))
        change.add(
            "attention_output/kernel",
            options.reader(mapping, seeds, -2),
        )

    def init_key(self, layer, variable):
        return None  # one initializer for every projection: values are assigned

    def zero_change(self, layer):
        values = {}
        for variable in layer.weights:
            key = "/".join(variable.path.split("/")[-2:])
            if key.startswith("attention_output/"):
                values[key] = np.zeros(variable.shape, "float32")
        return values or None


class ScoreAttentionHandler(PassThroughHandler):
    """``Attention``/``AdditiveAttention``: refused, with the reason.

    Their scores compare the query's and the key's channels (a dot product,
    or a sum over channels of ``tanh(q + k)``) with no weights on those
    channels: a copied channel would count twice in every score, and no
    reader could divide it back. Nothing a handler could do keeps the
    function, so they are refused by name with why.
    """

    def check(self, layer):
        kind = (
            "sums tanh(query + key) over their channels"
            if isinstance(layer, keras.layers.AdditiveAttention)
            else "takes the dot product of query and key channels"
        )
        raise unsupported(
            layer,
            f"{kind} with no weights on them, so a copied channel would count "
            "twice in every attention score; widening its inputs cannot keep "
            "the function. Widen layers after it, or use MultiHeadAttention "
            "(its projections absorb widened inputs).",
        )


def register(register_handler):
    L = keras.layers
    register_handler(L.Embedding, EmbeddingHandler())
    register_handler(L.MultiHeadAttention, MultiHeadAttentionHandler())
    register_handler(L.Attention, ScoreAttentionHandler())
    register_handler(L.AdditiveAttention, ScoreAttentionHandler())
