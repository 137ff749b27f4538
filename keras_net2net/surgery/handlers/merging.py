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
from keras_net2net.surgery.handlers.base import LAYOUT
from keras_net2net.surgery.handlers.base import PASS_THROUGH
from keras_net2net.surgery.handlers.base import LayoutHandler
from keras_net2net.surgery.handlers.base import PassThroughHandler
from keras_net2net.surgery.handlers.base import input_rank
from keras_net2net.surgery.handlers.base import negative_axis
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


class ConcatenateHandler(MergeHandler, LayoutHandler):
    """Concatenate: a layout along the channel axis, a merge along any other."""

    def _along(self, layer, node, graph, axis):
        """True if it concatenates along the channel axis ``axis`` (from the end)."""
        rank = input_rank(node, graph)
        return negative_axis(layer.axis, rank) == (-1 if axis is None else axis)

    def role_of(self, layer, node=None, graph=None, axis=None):
        if node is None:
            return LAYOUT
        return LAYOUT if self._along(layer, node, graph, axis) else PASS_THROUGH

    def derive(self, layer, node, graph, mappings):
        parts = []
        for key, mapping in zip(node.inputs, mappings):
            width = graph.shape(key)[layer.axis]
            parts.append(
                mapping if mapping is not None else WidthMapping.identity(width)
            )
        return concat_mappings(parts)

    def follow(self, layer, *args):
        return None


def register(register_handler):
    L = keras.layers
    for cls in (L.Add, L.Subtract, L.Average, L.Maximum, L.Minimum, L.Multiply):
        register_handler(cls, MergeHandler())
    register_handler(L.Concatenate, ConcatenateHandler())
