"""Layers that move values around without mixing channels.

Pooling, padding, cropping, upsampling and global pooling keep the channel
axis of their ``data_format`` (global pooling without ``keepdims`` moves it
last). Flatten turns channel ``c`` at spatial position ``p`` into feature
``p * C + c`` (`WidthMapping.expand`); Keras's ``channels_first`` Flatten
moves the channels last first, so the layout is the same. Reshape keeps the
channel axis when it keeps the last dimension (its ``target_shape`` follows
the new width), acts like Flatten when it flattens everything, and is crossed
backwards when it splits the last axis into several (a DCGAN generator's
``Dense(4 * 4 * 32) -> Reshape((4, 4, 32))``: the Dense writes the channels in
that layout); any other Reshape is refused. Permute carries the channels to
the axis its ``dims`` send them to.
"""

import math

import keras

from keras_net2net.surgery.handlers.base import LayoutHandler
from keras_net2net.surgery.handlers.base import PassThroughHandler
from keras_net2net.surgery.handlers.change import LayerChange
from keras_net2net.surgery.handlers.common import unsupported


class SpatialPassThrough(PassThroughHandler):
    """Pooling/padding/cropping/upsampling: spatial changes only.

    The channels stay on the axis of the layer's ``data_format`` (the
    `PassThroughHandler` default).
    """


class GlobalPoolingHandler(SpatialPassThrough):
    """Global pooling: without ``keepdims`` the channels become the last axis."""

    def output_axis(self, layer, node, graph, axis):
        return axis if getattr(layer, "keepdims", False) else -1


def _channels_first(layer):
    return getattr(layer, "data_format", None) == "channels_first"


def _flatten_positions(layer, input_shape):
    spatial = input_shape[2:] if _channels_first(layer) else input_shape[1:-1]
    if any(d is None for d in spatial):
        raise unsupported(
            layer,
            f"receives an input of unknown spatial shape {input_shape}; "
            "the flattened index layout cannot be computed.",
        )
    return math.prod(spatial)


class PermuteHandler(PassThroughHandler):
    """Permute: the channels go to wherever ``dims`` sends their axis."""

    def output_axis(self, layer, node, graph, axis):
        rank = len(graph.shape(node.inputs[0]))
        source = rank + axis  # the axis's 1-based index among non-batch axes
        return layer.dims.index(source) + 1 - rank


class FlattenHandler(LayoutHandler):
    """Flatten: channel ``c`` at position ``p`` -> ``p*C + c`` (either data_format)."""

    def channel_inputs(self, layer, node, graph):
        return [0]

    def output_axis(self, layer, node, graph, axis):
        return -1

    def derive(self, layer, node, graph, mappings):
        positions = _flatten_positions(layer, graph.shape(node.inputs[0]))
        return mappings[0].expand(positions)


class ReshapeHandler(PassThroughHandler):
    """Reshape keeping the last dimension: the channels stay on it.

    A Reshape that flattens or splits the last axis derives a layout: `at`
    answers a `ReshapeLayoutHandler`; any other is refused by name.
    """

    has_state = True  # its target_shape follows the width

    def at(self, layer, node, graph, axis=None):
        in_shape = graph.shape(node.inputs[0])
        out_shape = graph.shape(node.outputs[0])
        if in_shape[-1] is not None and out_shape[-1] == in_shape[-1]:
            return self
        if len(out_shape) == 2 and len(in_shape) > 2:
            return _RESHAPE_LAYOUT
        if _split_dims(in_shape, out_shape) is not None:
            return _RESHAPE_LAYOUT
        raise unsupported(
            layer,
            f"reshapes {in_shape} to {out_shape}, which mixes the channel axis "
            "with others; only reshapes that keep the last dimension, flatten "
            "everything or split the last axis can pass widened channels.",
        )

    def channel_axis(self, layer, node, graph):
        return -1  # it keeps, flattens or splits the last axis

    def channel_inputs(self, layer, node, graph):
        return [0]

    def follow(self, layer, mapping, options, seeds):
        return _follow_target_shape(layer, mapping)

    def zero_preserving(self, layer):
        return True


class ReshapeLayoutHandler(LayoutHandler):
    """Reshape that flattens (like Flatten) or splits its input's last axis.

    Splitting (a Dense's units into ``(positions, channels)``) is crossed
    backwards (`split_positions`): its output channels are the group's and
    the Dense before it writes them.
    """

    has_state = True  # its target_shape follows the width

    def channel_axis(self, layer, node, graph):
        return -1

    def channel_inputs(self, layer, node, graph):
        return [0]

    def derive(self, layer, node, graph, mappings):
        in_shape = graph.shape(node.inputs[0])
        out_shape = graph.shape(node.outputs[0])
        if _split_dims(in_shape, out_shape) is not None:
            raise unsupported(
                layer,
                f"splits the last axis of {in_shape} into {out_shape[1:]}, "
                "and the channels it receives are widened on that axis; a "
                "split is only crossed from its output: widen the layer that "
                "writes its input (a multiple of the positions), or the "
                "channels after it.",
            )
        positions = _flatten_positions(layer, in_shape)
        return mappings[0].expand(positions)

    def split_positions(self, layer, node, graph, axis):
        in_shape = graph.shape(node.inputs[0])
        out_shape = graph.shape(node.outputs[0])
        dims = _split_dims(in_shape, out_shape)
        if dims is None:
            return None
        index = len(dims) + axis  # the channel axis among the split dims
        if not 0 <= index < len(dims):
            return None
        return math.prod(dims[:index]), math.prod(dims[index + 1 :])

    def follow_split(self, layer, mapping, axis):
        target = list(layer.target_shape)
        index = len(target) + axis
        if target[index] == -1:
            return None  # inferred from the new input width
        target[index] = mapping.new_width
        return LayerChange(config={"target_shape": tuple(target)})

    def follow(self, layer, mapping, options, seeds):
        return _follow_target_shape(layer, mapping)

    def zero_preserving(self, layer):
        return True


_RESHAPE_LAYOUT = ReshapeLayoutHandler()


def _follow_target_shape(layer, mapping):
    """The last entry of ``target_shape`` (its channels at every flattened
    position) grown by ``mapping`` (None where it is inferred: -1)."""
    target = list(layer.target_shape)
    if target[-1] == -1:
        return None
    target[-1] = target[-1] // mapping.old_width * mapping.new_width
    return LayerChange(config={"target_shape": tuple(target)})


def _split_dims(in_shape, out_shape):
    """The dims the input's last axis is split into (row-major), or None."""
    lead = len(in_shape) - 1
    if len(out_shape) <= len(in_shape) or tuple(out_shape[:lead]) != tuple(
        in_shape[:lead]
    ):
        return None
    dims = tuple(out_shape[lead:])
    if in_shape[-1] is None or any(d is None for d in dims):
        return None
    return dims if math.prod(dims) == in_shape[-1] else None


def register(register_handler):
    L = keras.layers
    register_handler(L.Flatten, FlattenHandler())
    register_handler(L.Reshape, ReshapeHandler())
    register_handler(L.RepeatVector, PassThroughHandler())
    register_handler(L.Permute, PermuteHandler())
    spatial = (
        L.MaxPooling1D,
        L.MaxPooling2D,
        L.MaxPooling3D,
        L.AveragePooling1D,
        L.AveragePooling2D,
        L.AveragePooling3D,
        L.GlobalAveragePooling1D,
        L.GlobalAveragePooling2D,
        L.GlobalAveragePooling3D,
        L.GlobalMaxPooling1D,
        L.GlobalMaxPooling2D,
        L.GlobalMaxPooling3D,
        L.ZeroPadding1D,
        L.ZeroPadding2D,
        L.ZeroPadding3D,
        L.Cropping1D,
        L.Cropping2D,
        L.Cropping3D,
        L.UpSampling1D,
        L.UpSampling2D,
        L.UpSampling3D,
    )
    for cls in spatial:
        handler = GlobalPoolingHandler() if "Global" in cls.__name__ else None
        register_handler(cls, handler or SpatialPassThrough())
