"""Layers that keras.applications models define for themselves.

ConvNeXt scales each channel of a residual branch by a learned ``LayerScale``
(a pass-through whose scales are copied with the channels) and drops branches
with ``StochasticDepth`` (elementwise). Their classes live in a private Keras
module, found through `keras_net2net._keras_internals`.
"""

import numpy as np

from keras_net2net import _keras_internals as internals
from keras_net2net.surgery.handlers.base import PassThroughHandler
from keras_net2net.surgery.handlers.change import LayerChange
from keras_net2net.surgery.handlers.change import copy_transform


class LayerScaleHandler(PassThroughHandler):
    """ConvNeXt ``LayerScale``: one scale per channel (``projection_dim`` of them)."""

    has_state = True

    def follow(self, layer, mapping, options, seeds):
        (variable,) = layer.weights
        change = LayerChange(config={"projection_dim": mapping.new_width})
        fill = float(layer.init_values) if options.random_pad else 0.0
        return change.add(variable.name, copy_transform(mapping, fill=fill))

    def init_key(self, layer, variable):
        return None

    def zero_preserving(self, layer):
        return True

    def zero_change(self, layer):
        return {v.name: np.zeros(v.shape, "float32") for v in layer.weights}


def register(register_handler):
    classes = internals.application_layer_classes()
    if "LayerScale" in classes:
        register_handler(classes["LayerScale"], LayerScaleHandler())
    if "StochasticDepth" in classes:
        register_handler(classes["StochasticDepth"], PassThroughHandler())
