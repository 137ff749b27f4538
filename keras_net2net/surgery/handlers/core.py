"""Dense and Conv1D/2D/3D: the layers that are widened, read widened inputs and
are followed by identity copies (Net2WiderNet and Net2DeeperNet proper)."""

import keras
import numpy as np

from keras_net2net.initializers import IdentityConvInit
from keras_net2net.requests import IDENTITY
from keras_net2net.surgery.handlers.base import PassThroughHandler
from keras_net2net.surgery.handlers.base import UnitsHandler
from keras_net2net.surgery.handlers.change import LayerChange
from keras_net2net.surgery.handlers.change import copy_transform
from keras_net2net.surgery.handlers.common import last_axis_only
from keras_net2net.surgery.handlers.common import unsupported
from keras_net2net.surgery.handlers.elementwise import IDEMPOTENT_ACTIVATIONS
from keras_net2net.surgery.handlers.elementwise import ZERO_PRESERVING_ACTIVATIONS
from keras_net2net.surgery.handlers.elementwise import activation_name
from keras_net2net.surgery.handlers.elementwise import check_elementwise_activation
from keras_net2net.transforms import check_identity_kernel_size


def check_plain_float(layer):
    if getattr(layer, "lora_enabled", False):
        raise unsupported(layer, "has LoRA enabled; disable it before growing.")
    if getattr(layer, "quantization_mode", None):
        raise unsupported(layer, "is quantized; grow the float model instead.")


def zero_kernel_and_bias(layer):
    """Zero kernel and bias, if the activation keeps a zero output zero."""
    if activation_name(layer.activation) not in ZERO_PRESERVING_ACTIVATIONS:
        return None  # act(0) != 0: zero weights would not give a zero output
    values = {"kernel": np.zeros(layer.kernel.shape, "float32")}
    if layer.use_bias:
        values["bias"] = np.zeros(layer.bias.shape, "float32")
    return values


class DenseHandler(UnitsHandler):
    """Dense (and the base of Conv): kernel ``(*kernel, in, out)``, bias ``(out,)``.

    Args:
        width_key: config key of the width (``"units"`` or ``"filters"``).
    """

    identity_deepening = True
    residual_deepening = True

    def __init__(self, width_key="units"):
        self.width_key = width_key

    def check(self, layer):
        check_plain_float(layer)

    def acts_across(self, layer, node, graph, axis):
        # Dense mixes the last axis only; a Conv's kernel spans other axes.
        return isinstance(layer, keras.layers.Dense) and last_axis_only(
            node, graph, axis
        )

    def width(self, layer):
        return int(layer.get_config()[self.width_key])

    def widen_out(self, layer, mapping, options, seeds):
        check_elementwise_activation(
            layer, layer.activation, "its output cannot be widened"
        )
        change = LayerChange(config={self.width_key: mapping.new_width})
        change.add(
            "kernel",
            options.writer(mapping, seeds),
        )
        if layer.use_bias:
            change.add("bias", copy_transform(mapping, fill=options.bias_fill()))
        return change

    def widen_in(self, layer, mapping, options, seeds, position=0, node=None):
        # By default noise goes on the widened layer's new copies only
        # (`widen_out`), and the consumer keeps an exact split; with
        # noise_on="consumers" it goes on the copies' rows here instead.
        return LayerChange().add(
            "kernel",
            options.reader(mapping, seeds),
        )

    def zero_change(self, layer):
        return zero_kernel_and_bias(layer)

    def identity_blocker(self, layer):
        activation = activation_name(layer.activation)
        if activation in IDEMPOTENT_ACTIVATIONS:
            return None
        return f"activation '{activation}'"

    def deeper_layer(self, layer, name, *, method, kernel_size=None, seed=None):
        """A new layer that, with ``method="identity"``, computes the identity.

        Returns:
            ``(layer, values)``: the unbuilt layer, and None or a function of
            the built layer returning ``{variable name: array}`` to assign.
        """
        blocker = self.identity_blocker(layer)
        if method == IDENTITY and blocker is not None:
            raise unsupported(
                layer,
                f"has {blocker}. An identity layer inserted after it applies "
                "that activation a second time, which changes the function; "
                "identity deepening needs a ReLU or linear activation (use "
                "residual=True, which is exact after any activation, or "
                "method='random' to insert anyway).",
            )
        values = None
        if method == IDENTITY:
            kernel_init, values = self._identity_initializer(layer)
        else:
            kernel_init = keras.initializers.GlorotUniform(seed=seed)
        config = dict(
            name=name,
            activation=layer.get_config()["activation"],
            use_bias=True,
            kernel_initializer=kernel_init,
            bias_initializer="zeros",
            dtype=layer.dtype_policy,
        )
        config[self.width_key] = self.width(layer)
        config.update(self._deeper_extra(layer, kernel_size))
        return self.deeper_class(layer)(**config), values

    def deeper_class(self, layer):
        """The class of the layer `deeper_layer` inserts after ``layer``."""
        return type(layer)

    def residual_layers(self, layer, names, *, kernel_size=None, seed=None):
        """Two new layers ``expand``, ``project`` for ``h + project(expand(h))``.

        ``project`` starts at zero, so the residual branch adds nothing and the
        function is unchanged whatever the activations.
        """
        activation = activation_name(layer.activation)
        hidden_activation = "relu" if activation == "linear" else activation
        common = dict(use_bias=True, bias_initializer="zeros", dtype=layer.dtype_policy)
        common[self.width_key] = self.width(layer)
        expand = dict(
            common,
            name=names[0],
            activation=layer.get_config()["activation"]
            if activation != "linear"
            else hidden_activation,
            kernel_initializer=keras.initializers.GlorotUniform(seed=seed),
        )
        project = dict(
            common,
            name=names[1],
            activation="linear",
            kernel_initializer="zeros",
        )
        expand.update(self._deeper_extra(layer, kernel_size))
        project.update(self._deeper_extra(layer, 1))
        return type(layer)(**expand), type(layer)(**project)

    def _identity_initializer(self, layer):
        """``(kernel initializer, values)`` of an identity copy of ``layer``."""
        return keras.initializers.Identity(), None

    def _deeper_extra(self, layer, kernel_size):
        return {}


class ConvHandler(DenseHandler):
    """Conv1D/Conv2D/Conv3D (channels_last or channels_first).

    ``groups == 1``: a units layer. ``groups == filters == input channels`` (a
    depthwise convolution written as a grouped Conv, as keras.applications
    ConvNeXt does): `at` answers a `GroupedDepthwiseHandler`. Other grouped
    convolutions are refused by name.
    """

    has_state = True

    def __init__(self):
        super().__init__("filters")

    @staticmethod
    def depthwise_form(layer):
        groups = getattr(layer, "groups", 1)
        if groups == 1 or not layer.built:
            return False
        return groups == layer.filters == int(layer.kernel.shape[-2]) * groups

    def at(self, layer, node, graph, axis=None):
        return _GROUPED_DEPTHWISE if self.depthwise_form(layer) else self

    def _refuse_groups(self, layer):
        if getattr(layer, "groups", 1) != 1:
            raise unsupported(
                layer,
                f"uses groups={layer.groups}; grouped convolutions can only take "
                "part in a widening in their depthwise form "
                "(groups == filters == input channels).",
            )

    def widen_out(self, layer, mapping, options, seeds):
        self._refuse_groups(layer)
        return super().widen_out(layer, mapping, options, seeds)

    def widen_in(self, layer, mapping, options, seeds, position=0, node=None):
        self._refuse_groups(layer)
        return super().widen_in(layer, mapping, options, seeds, position, node)

    def zero_preserving(self, layer):
        return False

    def _identity_initializer(self, layer):
        # The identity kernel is assigned once built (an initializer is called
        # with the built shape); the layer's config keeps the ordinary
        # initializer of the layer it follows.
        return layer.kernel_initializer, {"kernel": IdentityConvInit()}

    def _deeper_extra(self, layer, kernel_size):
        kernel_size = identity_kernel_size(layer, kernel_size)
        extra = dict(
            kernel_size=kernel_size,
            strides=1,
            padding="same",
            data_format=layer.data_format,
            dilation_rate=1,
        )
        if self.depthwise_form(layer):
            extra["groups"] = layer.filters
        return extra


def identity_dense(layer, width, name, method, seed):
    """``(Dense, values)``: a linear Dense of ``width`` units after ``layer``.

    With ``method="identity"`` its kernel is the identity and its bias zero,
    so it computes the identity exactly (deepening after a layer whose output
    is linear: an Embedding, a recurrent layer's output).
    """
    kernel = (
        keras.initializers.Identity()
        if method == IDENTITY
        else keras.initializers.GlorotUniform(seed=seed)
    )
    dense = keras.layers.Dense(
        width,
        name=name,
        kernel_initializer=kernel,
        bias_initializer="zeros",
        dtype=layer.dtype_policy,
    )
    return dense, None


def identity_kernel_size(layer, kernel_size):
    """The kernel size of an identity convolution after ``layer``: ``kernel_size``
    (an int or a tuple), or ``layer``'s rounded up to odd; refused by name
    where no identity kernel of that size exists."""
    if kernel_size is None:  # after's kernel size, rounded up to odd
        kernel_size = tuple(k + 1 - k % 2 for k in layer.kernel_size)
    elif isinstance(kernel_size, int):
        kernel_size = (kernel_size,) * len(layer.kernel_size)
    if len(kernel_size) != len(layer.kernel_size):
        raise ValueError(
            f"`kernel_size` for a layer after '{layer.name}' must have "
            f"{len(layer.kernel_size)} entries. Received: kernel_size={kernel_size}"
        )
    try:
        return check_identity_kernel_size(kernel_size)
    except ValueError as error:
        raise unsupported(
            layer,
            f"cannot be followed by an identity convolution: {error}. "
            "Pass an odd `kernel_size` to deepen().",
        ) from None


def per_channel_change(layer, mapping, options, seeds, axis=-1, multiplier=1):
    """A depthwise kernel and its bias copied with the channels (no division).

    ``axis``: the kernel's channel axis; ``multiplier``: output channels per
    input channel (the bias is ``(C * multiplier,)``).
    """
    check_elementwise_activation(
        layer, layer.activation, "its output cannot be widened"
    )
    change = LayerChange()
    change.add("kernel", options.writer(mapping, seeds, axis, noise=False))
    if layer.use_bias:
        out = mapping if multiplier == 1 else mapping.repeat(multiplier)
        change.add("bias", copy_transform(out, fill=options.bias_fill()))
    return change


class GroupedDepthwiseHandler(PassThroughHandler):
    """A Conv with ``groups == filters == input channels``: a pass-through
    whose kernel and bias are copied with the channels (no division), its
    ``filters`` and ``groups`` following the new width."""

    has_state = True  # (`check` is the registered handler's, asked first)

    def channel_inputs(self, layer, node, graph):
        return [0]

    def follow(self, layer, mapping, options, seeds):
        change = per_channel_change(layer, mapping, options, seeds)
        change.config.update(filters=mapping.new_width, groups=mapping.new_width)
        return change

    def zero_preserving(self, layer):
        return False


_GROUPED_DEPTHWISE = GroupedDepthwiseHandler()


class ConvTransposeHandler(UnitsHandler):
    """Conv1DTranspose/Conv2DTranspose/Conv3DTranspose (either data_format).

    Their kernel is ``(*kernel, filters, input channels)``: the output units
    are axis -2 (copied when the layer is widened) and the input channels
    axis -1 (divided when its input is). ``deepen`` after one inserts a plain
    convolution of the same rank (stride 1, ``same`` padding, an odd kernel:
    the transposed one's rounded up), the identity with the layer's
    activation (ReLU or linear): a strided transposed convolution's copy would
    change the shape.
    """

    identity_deepening = True

    def deeper_layer(self, layer, name, *, method, kernel_size=None, seed=None):
        return _ConvAfterTranspose().deeper_layer(
            layer, name, method=method, kernel_size=kernel_size, seed=seed
        )

    def check(self, layer):
        check_plain_float(layer)

    def width(self, layer):
        return int(layer.filters)

    def widen_out(self, layer, mapping, options, seeds):
        check_elementwise_activation(
            layer, layer.activation, "its output cannot be widened"
        )
        change = LayerChange(config={"filters": mapping.new_width})
        change.add("kernel", options.writer(mapping, seeds, axis=-2))
        if layer.use_bias:
            change.add("bias", copy_transform(mapping, fill=options.bias_fill()))
        return change

    def widen_in(self, layer, mapping, options, seeds, position=0, node=None):
        return LayerChange().add("kernel", options.reader(mapping, seeds, axis=-1))

    def zero_change(self, layer):
        return zero_kernel_and_bias(layer)


class _ConvAfterTranspose(ConvHandler):
    """Builds the plain convolution inserted after a transposed one."""

    def deeper_class(self, layer):
        rank = len(layer.kernel_size)
        return {1: keras.layers.Conv1D, 2: keras.layers.Conv2D}.get(
            rank, keras.layers.Conv3D
        )


def register(register_handler):
    L = keras.layers
    register_handler(L.Dense, DenseHandler("units"))
    for cls in (L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose):
        register_handler(cls, ConvTransposeHandler())
    for cls in (L.Conv1D, L.Conv2D, L.Conv3D):
        register_handler(cls, ConvHandler())
