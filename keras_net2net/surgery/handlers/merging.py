"""Merges: Add, Subtract, Average, Maximum, Minimum, Multiply, Concatenate.

Elementwise merges combine channel ``c`` of every input into channel ``c`` of
the output, so all their inputs and their output are one channel axis: one
coupling group (a residual stream). An input whose channel dimension is 1 is
broadcast over the channels and stays out of the group (e.g. a spatial gate).

Concatenate along the channel axis places each input's channels at its offset
(`keras_net2net.transforms.concat_mappings`); each input keeps its own group.
Along another axis it is a merge like Add.
"""

import keras

from keras_net2net.surgery.handlers import ops
from keras_net2net.surgery.handlers.base import LayoutHandler
from keras_net2net.surgery.handlers.base import PassThroughHandler
from keras_net2net.surgery.handlers.common import input_rank
from keras_net2net.surgery.handlers.common import negative_axis
from keras_net2net.transforms import WidthMapping
from keras_net2net.transforms import concat_mappings


def is_residual_add(op):
    """True for an ``Add`` layer or a raw ``keras.ops.add`` call."""
    return isinstance(op, keras.layers.Add) or (
        ops.ADD is not None and type(op) is ops.ADD
    )


class MergeHandler(PassThroughHandler):
    """An elementwise merge of same-shaped (or broadcast) inputs."""

    def zero_preserving(self, layer):
        return False  # not a single-input layer on a branch


class ConcatenateHandler(LayoutHandler):
    """Concatenate along the channel axis: each input's channels at its offset.

    Along another axis it merges, as Add does (`at` answers a `MergeHandler`).
    """

    def at(self, layer, node, graph, axis=None):
        rank = input_rank(node, graph)
        along = negative_axis(layer.axis, rank) == (-1 if axis is None else axis)
        return self if along else _MERGE

    def channel_axis(self, layer, node, graph):
        return None  # its inputs' channel axis, whichever it is

    def derive(self, layer, node, graph, mappings):
        parts = []
        for key, mapping in zip(node.inputs, mappings):
            width = graph.shape(key)[layer.axis]
            parts.append(
                mapping if mapping is not None else WidthMapping.identity(width)
            )
        return concat_mappings(parts)

    def zero_preserving(self, layer):
        return False  # not a single-input layer on a branch


_MERGE = MergeHandler()


def register(register_handler):
    L = keras.layers
    for cls in (L.Add, L.Subtract, L.Average, L.Maximum, L.Minimum, L.Multiply):
        register_handler(cls, MergeHandler())
    register_handler(L.Concatenate, ConcatenateHandler())
