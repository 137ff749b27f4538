"""Elementwise layers: activations, dropout and noise.

They act on each channel independently, so widened channels pass through
unchanged. ``Activation`` passes them only for activations known to be
elementwise (`ELEMENTWISE_ACTIVATIONS`); softmax, sparsemax, glu or a custom
callable are refused by name. ``Softmax`` passes them when it normalises over
another axis. ``PReLU``'s per-channel slopes are copied with the channels.
"""

import keras

from keras_net2net.surgery.handlers.base import PassThroughHandler
from keras_net2net.surgery.handlers.change import LayerChange
from keras_net2net.surgery.handlers.change import copy_transform
from keras_net2net.surgery.handlers.common import unsupported
from keras_net2net.surgery.handlers.elementwise import ZERO_PRESERVING_ACTIVATIONS
from keras_net2net.surgery.handlers.elementwise import activation_name
from keras_net2net.surgery.handlers.elementwise import check_elementwise_activation


class ActivationHandler(PassThroughHandler):
    """`Activation` with an elementwise activation function."""

    def check(self, layer):
        check_elementwise_activation(
            layer, layer.activation, "widened channels cannot pass through it"
        )

    def zero_preserving(self, layer):
        return activation_name(layer.activation) in ZERO_PRESERVING_ACTIVATIONS


class ReLUHandler(PassThroughHandler):
    def zero_preserving(self, layer):
        return float(getattr(layer, "threshold", 0.0)) == 0.0


class SoftmaxHandler(PassThroughHandler):
    """`Softmax` over a non-channel axis (e.g. attention scores over time)."""

    def channel_axis(self, layer, node, graph):
        return -1  # the channels it passes are on the last axis

    def channel_inputs(self, layer, node, graph):
        rank = len(graph.shape(node.inputs[0]))
        axes = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
        if any(int(a) % rank == rank - 1 for a in axes):
            raise unsupported(
                layer,
                f"normalises over axis={layer.axis}, the channel axis, which "
                "mixes channels; widened channels cannot pass through it.",
            )
        return [0]

    def zero_preserving(self, layer):
        return False


class PReLUHandler(PassThroughHandler):
    """`PReLU`: per-channel slopes (unless shared over channels) follow the mapping."""

    has_state = True

    def channel_axis(self, layer, node, graph):
        return -1  # the slopes' last axis

    def follow(self, layer, mapping, options, seeds):
        if layer.alpha.shape[-1] != mapping.old_width:
            return None  # slopes shared across channels
        return LayerChange().add("alpha", copy_transform(mapping))

    def zero_preserving(self, layer):
        return True


def register(register_handler):
    L = keras.layers
    register_handler(L.Activation, ActivationHandler())
    register_handler(L.ReLU, ReLUHandler())
    register_handler(L.Softmax, SoftmaxHandler())
    register_handler(L.PReLU, PReLUHandler())
    elementwise = (
        L.LeakyReLU,
        L.ELU,
        L.Identity,
        L.Dropout,
        L.GaussianNoise,
        L.GaussianDropout,
        L.AlphaDropout,
        L.SpatialDropout1D,
        L.SpatialDropout2D,
        L.SpatialDropout3D,
        L.ActivityRegularization,
    )
    for cls in elementwise:
        register_handler(cls, PassThroughHandler())
