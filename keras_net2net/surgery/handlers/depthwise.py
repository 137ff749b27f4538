"""DepthwiseConv1D/2D and SeparableConv1D/2D.

A depthwise convolution with depth multiplier m writes output channel
``c * m + j`` from input channel ``c`` only, so widened input channels pass
through it: its kernel ``(*k, C, m)`` and bias ``(C * m,)`` are copied with
the channels (no division) and its output keeps the input's coupling group
(m == 1) or a derived layout (m > 1, `WidthMapping.repeat`).

A separable convolution is a depthwise part followed by a pointwise part: it
reads widened inputs (depthwise kernel copied, pointwise kernel divided) and
can itself be widened (pointwise kernel and bias copied).
"""

import keras
import numpy as np

from keras_net2net.requests import IDENTITY
from keras_net2net.surgery.handlers.base import LayoutHandler
from keras_net2net.surgery.handlers.base import PassThroughHandler
from keras_net2net.surgery.handlers.base import UnitsHandler
from keras_net2net.surgery.handlers.change import LayerChange
from keras_net2net.surgery.handlers.change import copy_transform
from keras_net2net.surgery.handlers.common import unsupported
from keras_net2net.surgery.handlers.core import check_plain_float
from keras_net2net.surgery.handlers.core import identity_kernel_size
from keras_net2net.surgery.handlers.core import per_channel_change
from keras_net2net.surgery.handlers.core import zero_kernel_and_bias
from keras_net2net.surgery.handlers.elementwise import IDEMPOTENT_ACTIVATIONS
from keras_net2net.surgery.handlers.elementwise import ZERO_PRESERVING_ACTIVATIONS
from keras_net2net.surgery.handlers.elementwise import activation_name
from keras_net2net.surgery.handlers.elementwise import check_elementwise_activation


class _CentreTap(keras.initializers.Initializer):
    """A depthwise ``(*k, C, 1)`` or pointwise ``(1, ..., C, C)`` kernel whose
    centre tap passes every channel through unchanged."""

    def __call__(self, shape, dtype=None):
        kernel = np.zeros(shape, "float32")
        centre = tuple(k // 2 for k in shape[:-2])
        kernel[centre] = 1.0 if shape[-1] == 1 else np.eye(shape[-2], shape[-1])
        return kernel


def _check_identity_activation(layer, method):
    activation = activation_name(layer.activation)
    if method == IDENTITY and activation not in IDEMPOTENT_ACTIVATIONS:
        raise unsupported(
            layer,
            f"has activation '{activation}'. An identity layer inserted after "
            "it applies that activation a second time, which changes the "
            "function; identity deepening needs a ReLU or linear activation "
            "(use residual=True, or method='random' to insert anyway).",
        )


_DEPTHWISE_INIT_KEYS = {"kernel": "depthwise_initializer", "bias": "bias_initializer"}


class DepthwiseHandler(PassThroughHandler):
    """DepthwiseConv1D/2D: a pass-through with weights (depth multiplier 1).

    With a multiplier m > 1, `at` answers a `DepthwiseMultiplierHandler`.
    """

    identity_deepening = True

    has_state = True

    def at(self, layer, node, graph, axis=None):
        return self if layer.depth_multiplier == 1 else _MULTIPLIER

    def check(self, layer):
        check_plain_float(layer)

    def init_key(self, layer, variable):
        return _DEPTHWISE_INIT_KEYS[variable]

    def channel_inputs(self, layer, node, graph):
        return [0]

    def follow(self, layer, mapping, options, seeds):
        return _depthwise_change(layer, mapping, options, seeds)

    def zero_preserving(self, layer):
        return False

    def zero_change(self, layer):
        return zero_kernel_and_bias(layer)

    def deeper_layer(self, layer, name, *, method, kernel_size=None, seed=None):
        _check_identity_activation(layer, method)
        kernel_size = identity_kernel_size(layer, kernel_size)
        new = type(layer)(
            kernel_size=kernel_size,
            depth_multiplier=1,
            padding="same",
            data_format=layer.data_format,
            activation=layer.get_config()["activation"],
            use_bias=True,
            depthwise_initializer=keras.initializers.GlorotUniform(seed=seed),
            name=name,
            dtype=layer.dtype_policy,
        )
        if method == IDENTITY:
            return new, {"kernel": _CentreTap()}
        return new, None


def _depthwise_change(layer, mapping, options, seeds):
    """The kernel ``(*k, C, m)`` and bias ``(C * m,)`` copied with the channels."""
    return per_channel_change(
        layer, mapping, options, seeds, -2, layer.depth_multiplier
    )


class DepthwiseMultiplierHandler(LayoutHandler):
    """DepthwiseConv1D/2D with a depth multiplier m > 1: a layout with weights.

    Output channel ``c * m + j`` comes from input channel ``c``
    (`WidthMapping.repeat`).
    """

    has_state = True  # (`check` is the registered handler's, asked first)

    def init_key(self, layer, variable):
        return _DEPTHWISE_INIT_KEYS[variable]

    def channel_inputs(self, layer, node, graph):
        return [0]

    def derive(self, layer, node, graph, mappings):
        return mappings[0].repeat(layer.depth_multiplier)

    def follow(self, layer, mapping, options, seeds):
        return _depthwise_change(layer, mapping, options, seeds)

    def zero_preserving(self, layer):
        return False


_MULTIPLIER = DepthwiseMultiplierHandler()


class SeparableHandler(UnitsHandler):
    """SeparableConv1D/2D: the depthwise part copies, the pointwise part divides."""

    identity_deepening = True

    def check(self, layer):
        check_plain_float(layer)

    def init_key(self, layer, variable):
        return {
            "depthwise_kernel": "depthwise_initializer",
            "pointwise_kernel": "pointwise_initializer",
            "bias": "bias_initializer",
        }[variable]

    def width(self, layer):
        return int(layer.filters)

    def widen_out(self, layer, mapping, options, seeds):
        check_elementwise_activation(
            layer, layer.activation, "its output cannot be widened"
        )
        change = LayerChange(config={"filters": mapping.new_width})
        change.add(
            "pointwise_kernel",
            options.writer(mapping, seeds),
        )
        if layer.use_bias:
            change.add("bias", copy_transform(mapping, fill=options.bias_fill()))
        return change

    def widen_in(self, layer, mapping, options, seeds, position=0, node=None):
        expanded = mapping.repeat(layer.depth_multiplier)
        change = LayerChange()
        change.add(
            "depthwise_kernel",
            options.writer(mapping, seeds, -2, noise=False),
        )
        change.add(
            "pointwise_kernel",
            options.reader(expanded, seeds),
        )
        return change

    def zero_change(self, layer):
        if activation_name(layer.activation) not in ZERO_PRESERVING_ACTIVATIONS:
            return None  # act(0) != 0: zero weights would not give a zero output
        values = {"pointwise_kernel": np.zeros(layer.pointwise_kernel.shape, "float32")}
        if layer.use_bias:
            values["bias"] = np.zeros(layer.bias.shape, "float32")
        return values

    def deeper_layer(self, layer, name, *, method, kernel_size=None, seed=None):
        _check_identity_activation(layer, method)
        kernel_size = identity_kernel_size(layer, kernel_size)
        new = type(layer)(
            filters=layer.filters,
            kernel_size=kernel_size,
            depth_multiplier=1,
            padding="same",
            data_format=layer.data_format,
            activation=layer.get_config()["activation"],
            use_bias=True,
            depthwise_initializer=keras.initializers.GlorotUniform(seed=seed),
            pointwise_initializer=keras.initializers.GlorotUniform(seed=seed),
            name=name,
            dtype=layer.dtype_policy,
        )
        if method != IDENTITY:
            return new, None
        return new, {"depthwise_kernel": _CentreTap(), "pointwise_kernel": _CentreTap()}


def register(register_handler):
    L = keras.layers
    for cls in (L.DepthwiseConv1D, L.DepthwiseConv2D):
        register_handler(cls, DepthwiseHandler())
    for cls in (L.SeparableConv1D, L.SeparableConv2D):
        register_handler(cls, SeparableHandler())
