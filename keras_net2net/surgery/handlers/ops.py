"""Raw `keras.ops` calls in Functional graphs (``x + y``, ``ops.multiply(h, 2.0)``).

Indexing (``x[:, 0, :]``, as BERT's pooled output does) that leaves the last
axis whole passes the channels through; indexing into the channels is refused.

Elementwise operations act on each channel independently: with one tensor
operand (and scalar constants) they pass widened channels through; with
several tensor operands they merge them like `keras.layers.Add` (one coupling
group; an operand whose channel dimension is 1 is broadcast). A constant
operand with more than one element (e.g. a per-channel vector) would have to
be widened itself, so it is refused by name, as is every other operation.

``ops.transpose`` moves the channels to wherever its ``axes`` send them.

Reductions (``ops.mean(x, axis=1)``, sum, max, min, ...) over other axes than
the channels pass them through (a Lambda's global pooling); over the
channels they are refused with the reason (a copied channel counts twice).

Operation classes are found by calling the public `keras.ops` functions on a
symbolic tensor, so no private module is imported.
"""

import keras
import numpy as np

from keras_net2net import _keras_internals as internals
from keras_net2net.surgery.handlers.base import PassThroughHandler
from keras_net2net.surgery.handlers.common import unsupported

# (name of the keras.ops function, arity, maps 0 to 0 with scalar operands)
_UNARY = (
    ("relu", True),
    ("relu6", True),
    ("gelu", True),
    ("silu", True),
    ("sigmoid", False),
    ("tanh", True),
    ("softplus", False),
    ("softsign", True),
    ("elu", True),
    ("selu", True),
    ("leaky_relu", True),
    ("hard_sigmoid", False),
    ("hard_silu", True),
    ("mish", True),
    ("abs", True),
    ("absolute", True),
    ("negative", True),
    ("square", True),
    ("sqrt", True),
    ("exp", False),
    ("log", False),
    ("log1p", True),
    ("expm1", True),
    ("sign", True),
    ("floor", True),
    ("ceil", True),
    ("round", True),
    ("sin", True),
    ("cos", False),
    ("erf", True),
)
_BINARY = (
    ("add", False),
    ("subtract", False),
    ("multiply", True),
    # x / 2 maps 0 to 0 but 2 / x does not: not assumed.
    ("divide", False),
    ("true_divide", False),
    ("maximum", False),
    ("minimum", False),
    ("power", False),
)


def operation_class(name, arity):
    """The class of the operation ``keras.ops.<name>`` records in a graph
    (None where this Keras has no symbolic ``name``)."""
    fn = getattr(keras.ops, name, None)
    if fn is None:
        return None
    x = keras.KerasTensor((2, 3))
    try:
        out = fn(*([x] * arity))
    except Exception:  # noqa: BLE001 - an op this Keras lacks symbolically
        return None
    return type(internals.tensor_producer(out)[0])


ADD = operation_class("add", 2)


class ElementwiseOpHandler(PassThroughHandler):
    """A raw elementwise `keras.ops` call.

    Args:
        zero_preserving: whether the operation maps 0 to 0 (with a scalar
            operand, for binary operations).
    """

    def __init__(self, zero_preserving=False):
        self._zero = zero_preserving

    def channel_inputs(self, layer, node, graph):
        for constant in node.constants():
            if np.size(constant) > 1:
                raise unsupported(
                    layer,
                    f"combines the widened channels with a constant of shape "
                    f"{np.shape(constant)}; only scalar constants can be kept "
                    "exact (the constant would have to be widened too).",
                )
        return list(range(node.positional))

    def zero_preserving(self, layer):
        return self._zero


def _keeps_last_axis(key, rank):
    """True if indexing a rank-``rank`` tensor with ``key`` keeps its last axis."""
    key = key if isinstance(key, tuple) else (key,)
    if any(k is Ellipsis for k in key):
        after = key[[k is Ellipsis for k in key].index(True) + 1 :]
    elif sum(k is not None for k in key) < rank:
        return True  # trailing axes, the channels among them, are untouched
    else:
        after = key
    if not after:
        return True
    full = slice(None, None, None)
    last = after[-1]
    return isinstance(last, slice) and last == full


class GetItemHandler(PassThroughHandler):
    """``x[...]`` that keeps the channel axis whole (rows, positions, tokens)."""

    def channel_axis(self, layer, node, graph):
        return -1  # the key is checked against the last axis

    def channel_inputs(self, layer, node, graph):
        args = node.raw.arguments.args
        key = args[1] if len(args) > 1 else None
        rank = len(graph.shape(node.inputs[0]))
        if not _keeps_last_axis(key, rank):
            raise unsupported(
                layer,
                f"indexes the widened channels (key {key!r}); only indexing "
                "that keeps the last axis whole is supported.",
            )
        return [0]

    def zero_preserving(self, layer):
        return True


class TransposeHandler(PassThroughHandler):
    """``ops.transpose``: the channels go to wherever ``axes`` sends their axis."""

    def channel_axis(self, layer, node, graph):
        return None  # any axis: it only moves them

    def channel_inputs(self, layer, node, graph):
        return [0]

    def output_axis(self, layer, node, graph, axis):
        rank = len(graph.shape(node.inputs[0]))
        axes = getattr(layer, "axes", None)
        order = list(reversed(range(rank))) if axes is None else list(axes)
        order = [int(a) % rank for a in order]
        return order.index(rank + axis) - rank

    def zero_preserving(self, layer):
        return True


# Reductions: name -> whether a reduction of zeros is zero.
_REDUCTIONS = (
    ("sum", True),
    ("mean", True),
    ("max", True),
    ("min", True),
    ("prod", True),
    ("std", True),
    ("var", True),
    ("logsumexp", False),
)


class ReductionHandler(PassThroughHandler):
    """``ops.sum``/``mean``/``max``/... over axes that leave the channels whole."""

    def __init__(self, zero_preserving=True):
        self._zero = zero_preserving

    def channel_axis(self, layer, node, graph):
        return None  # any axis: the reduced ones are checked in output_axis

    def channel_inputs(self, layer, node, graph):
        return [0]

    def output_axis(self, layer, node, graph, axis):
        rank = len(graph.shape(node.inputs[0]))
        reduced = getattr(layer, "axis", None)
        reduced = range(rank) if reduced is None else np.ravel(reduced)
        reduced = {int(a) % rank for a in reduced}
        channel = rank + axis
        if channel in reduced:
            raise unsupported(
                layer,
                f"reduces over the widened channels (axis {channel} of a "
                f"rank-{rank} tensor), with no weights on them: a copied "
                "channel would count twice (a new one at zero would never "
                "learn), so the widening cannot keep the function. Widen a "
                "layer whose channels are not reduced.",
            )
        if getattr(layer, "keepdims", False):
            return axis
        return axis + sum(1 for a in reduced if a > channel)

    def zero_preserving(self, layer):
        return self._zero


def register(register_handler):
    x = keras.KerasTensor((2, 3))
    register_handler(type(internals.tensor_producer(x[0])[0]), GetItemHandler())
    transpose = operation_class("transpose", 1)
    if transpose is not None:
        register_handler(transpose, TransposeHandler())
    for name, zero in _REDUCTIONS:
        cls = operation_class(name, 1)
        if cls is not None:
            register_handler(cls, ReductionHandler(zero_preserving=zero))
    for names, arity in ((_UNARY, 1), (_BINARY, 2)):
        for name, zero in names:
            cls = operation_class(name, arity)
            if cls is not None:
                register_handler(cls, ElementwiseOpHandler(zero_preserving=zero))
