"""Per-layer-type handlers: how each supported layer type takes part in growth.

A registry maps an exact layer class to a stateless handler (the Torch-Pruning
pattern). Three roles exist:

* `UnitsHandler` (Dense, Conv1D/2D/3D): can be widened (``widen_out``), can
  absorb widened inputs (``widen_in``) and can have an identity copy inserted
  after it (``deeper_layer``).
* `PassThroughHandler`: sits between a widened layer and its consumers and
  passes the channels through, possibly with per-channel parameters
  (BatchNormalization) or a new index layout (Flatten).

A layer whose exact class has no handler is unsupported and growth fails,
naming it. Subclasses of supported layers are not assumed to behave like their
parent: register them explicitly with `register_handler`.
"""

import dataclasses
import math

import keras

from keras_net2net.initializers import IdentityConvInit
from keras_net2net.initializers import Net2WiderInit
from keras_net2net.transforms import RANDOM
from keras_net2net.transforms import check_identity_kernel_size

NET2WIDER = "net2wider"
RANDOM_PAD = "random-pad"
WIDEN_METHODS = (NET2WIDER, RANDOM_PAD)
IDENTITY = "identity"
DEEPEN_METHODS = (IDENTITY, RANDOM)
# Activations a for which a(a(x)) == a(x): an identity layer with the same
# activation inserted after such a layer keeps the function.
IDEMPOTENT_ACTIVATIONS = ("linear", "relu")
# Activations that mix channels, so they do not commute with copying channels.
_CHANNEL_MIXING_ACTIVATIONS = ("softmax", "log_softmax")


@dataclasses.dataclass
class LayerChange:
    """What widening changes in one layer.

    Attributes:
        config: entries of the layer config to replace (e.g. ``units``).
        initializers: variable name -> `Net2WiderInit` that builds it.
    """

    config: dict = dataclasses.field(default_factory=dict)
    initializers: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class WidenOptions:
    """Options of one widening, shared by every handler it reaches."""

    method: str = NET2WIDER
    noise: float = 0.0


def unsupported(layer, reason):
    return ValueError(f"Layer '{layer.name}' ({type(layer).__name__}) {reason}")


def activation_name(layer):
    activation = getattr(layer, "activation", None)
    if activation is None:
        return "linear"
    name = keras.activations.serialize(activation)
    return name if isinstance(name, str) else getattr(activation, "__name__", "?")


def _check_channels_last(layer):
    data_format = getattr(layer, "data_format", "channels_last")
    if data_format not in (None, "channels_last"):
        raise unsupported(
            layer,
            f"uses data_format='{data_format}'; keras-net2net supports "
            "channels_last only.",
        )


class Handler:
    """Base class of all handlers. Handlers are stateless."""

    def check(self, layer):
        """Raise a ValueError naming ``layer`` if its configuration is unsupported."""


class UnitsHandler(Handler):
    """Dense and ConvND: a kernel ``(*kernel, in, out)`` and a bias ``(out,)``.

    Args:
        width_key: config key of the width (``"units"`` or ``"filters"``).
    """

    def __init__(self, width_key):
        self.width_key = width_key

    def check(self, layer):
        _check_channels_last(layer)
        if getattr(layer, "groups", 1) != 1:
            raise unsupported(
                layer,
                f"uses groups={layer.groups}; only groups=1 "
                "can be widened or consume widened inputs.",
            )
        if getattr(layer, "lora_enabled", False):
            raise unsupported(layer, "has LoRA enabled; disable it before growing.")
        if getattr(layer, "quantization_mode", None):
            raise unsupported(layer, "is quantized; grow the float model instead.")

    def width(self, layer):
        return int(layer.get_config()[self.width_key])

    def widen_out(self, layer, mapping, options, seeds):
        random_pad = options.method == RANDOM_PAD
        change = LayerChange(config={self.width_key: mapping.new_width})
        change.initializers["kernel"] = Net2WiderInit(
            layer.kernel,
            mapping,
            side="out",
            noise=options.noise,
            fill=RANDOM if random_pad else 0.0,
            seed=next(seeds),
            fallback=layer.kernel_initializer,
        )
        if layer.use_bias:
            change.initializers["bias"] = Net2WiderInit(
                layer.bias, mapping, side="out", fallback="zeros"
            )
        return change

    def widen_in(self, layer, mapping, options, seeds):
        # Noise goes on the widened layer's new copies only (`widen_out`): that
        # is enough to make them differ, and the consumer keeps an exact split.
        random_pad = options.method == RANDOM_PAD
        kernel = Net2WiderInit(
            layer.kernel,
            mapping,
            side="in",
            fill=RANDOM if random_pad else 0.0,
            seed=next(seeds),
            fallback=layer.kernel_initializer,
        )
        return LayerChange(initializers={"kernel": kernel})

    def deeper_layer(self, layer, name, *, method, kernel_size=None, seed=None):
        """A new layer that, with ``method="identity"``, computes the identity."""
        if method == IDENTITY and activation_name(layer) not in IDEMPOTENT_ACTIVATIONS:
            raise unsupported(
                layer,
                f"has activation '{activation_name(layer)}'. An identity layer "
                "inserted after it applies that activation a second time, which "
                "changes the function; identity deepening needs a ReLU or linear "
                "activation (use method='random' to insert anyway).",
            )
        if method == IDENTITY:
            kernel_init = self._identity_initializer()
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
        return self._deeper_class(layer)(
            **config, **self._deeper_extra(layer, kernel_size)
        )

    def _identity_initializer(self):
        return keras.initializers.Identity()

    def _deeper_class(self, layer):
        return type(layer)

    def _deeper_extra(self, layer, kernel_size):
        return {}


class ConvHandler(UnitsHandler):
    """Conv1D/Conv2D/Conv3D (channels_last, groups=1)."""

    def __init__(self):
        super().__init__("filters")

    def _identity_initializer(self):
        return IdentityConvInit()

    def _deeper_extra(self, layer, kernel_size):
        if kernel_size is None:
            kernel_size = layer.kernel_size
        elif isinstance(kernel_size, int):
            kernel_size = (kernel_size,) * len(layer.kernel_size)
        if len(kernel_size) != len(layer.kernel_size):
            raise ValueError(
                f"`kernel_size` for a layer after '{layer.name}' must have "
                f"{len(layer.kernel_size)} entries. Received: kernel_size={kernel_size}"
            )
        try:
            kernel_size = check_identity_kernel_size(kernel_size)
        except ValueError as error:
            raise unsupported(
                layer,
                f"cannot be followed by an identity convolution: {error}. "
                "Pass an odd `kernel_size` to deepen().",
            ) from None
        return dict(
            kernel_size=kernel_size,
            strides=1,
            padding="same",
            data_format="channels_last",
            dilation_rate=1,
        )


class PassThroughHandler(Handler):
    """A layer that passes channels through unchanged (per channel, elementwise)."""

    def propagate(self, layer, mapping, input_shape, options, seeds):
        """Return ``(mapping after this layer, LayerChange or None)``."""
        return mapping, None


class ChannelsLastPassThrough(PassThroughHandler):
    """Pooling/padding/upsampling layers: spatial changes only, channels_last."""

    def check(self, layer):
        _check_channels_last(layer)


class ActivationHandler(PassThroughHandler):
    """`Activation` with an elementwise activation function."""

    def check(self, layer):
        if activation_name(layer) in _CHANNEL_MIXING_ACTIVATIONS:
            raise unsupported(
                layer,
                f"applies '{activation_name(layer)}', which mixes channels; "
                "widened channels cannot pass through it.",
            )


class BatchNormalizationHandler(PassThroughHandler):
    """BatchNormalization over the last axis: its parameters follow the mapping."""

    # variable -> value of a fresh channel for the random-pad baseline
    _FRESH = {"gamma": 1.0, "beta": 0.0, "moving_mean": 0.0, "moving_variance": 1.0}

    def propagate(self, layer, mapping, input_shape, options, seeds):
        rank = len(input_shape)
        axis = layer.axis if isinstance(layer.axis, int) else None
        if axis is None or axis not in (-1, rank - 1):
            raise unsupported(
                layer,
                f"normalizes axis={layer.axis}; widened channels can only "
                "pass through BatchNormalization over the last axis.",
            )
        change = LayerChange()
        for variable in layer.weights:
            name = variable.name
            if name not in self._FRESH:
                raise unsupported(layer, f"has an unexpected variable '{name}'.")
            change.initializers[name] = Net2WiderInit(
                variable,
                mapping,
                side="out",
                fill=self._FRESH[name],
                fallback="ones" if self._FRESH[name] == 1.0 else "zeros",
            )
        return mapping, change


class FlattenHandler(PassThroughHandler):
    """Flatten (channels_last): channel ``c`` at position ``p`` -> ``p*C + c``."""

    def check(self, layer):
        _check_channels_last(layer)

    def propagate(self, layer, mapping, input_shape, options, seeds):
        spatial = input_shape[1:-1]
        if any(d is None for d in spatial):
            raise unsupported(
                layer,
                f"receives an input of unknown spatial shape {input_shape}; "
                "the flattened index layout cannot be computed.",
            )
        return mapping.expand(math.prod(spatial)), None


_REGISTRY = {}


def register_handler(layer_class, handler):
    """Register ``handler`` for layers whose exact class is ``layer_class``.

    Args:
        layer_class: a subclass of `keras.layers.Layer`.
        handler: a `Handler` instance (stateless).
    """
    if not (
        isinstance(layer_class, type) and issubclass(layer_class, keras.layers.Layer)
    ):
        raise TypeError(
            "`layer_class` must be a subclass of keras.layers.Layer. "
            f"Received: {layer_class!r}"
        )
    if not isinstance(handler, Handler):
        raise TypeError(
            "`handler` must be an instance of keras_net2net.surgery.Handler. "
            f"Received: {handler!r} of type {type(handler).__name__}"
        )
    _REGISTRY[layer_class] = handler


def get_handler(layer):
    """The handler registered for ``type(layer)``, or None."""
    return _REGISTRY.get(type(layer))


def _register_builtins():
    L = keras.layers
    register_handler(L.Dense, UnitsHandler("units"))
    for cls in (L.Conv1D, L.Conv2D, L.Conv3D):
        register_handler(cls, ConvHandler())
    register_handler(L.BatchNormalization, BatchNormalizationHandler())
    register_handler(L.Flatten, FlattenHandler())
    register_handler(L.Activation, ActivationHandler())
    elementwise = (
        L.Dropout,
        L.GaussianNoise,
        L.GaussianDropout,
        L.AlphaDropout,
        L.ReLU,
        L.LeakyReLU,
        L.ELU,
        L.Identity,
    )
    for cls in elementwise:
        register_handler(cls, PassThroughHandler())
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
        L.SpatialDropout1D,
        L.SpatialDropout2D,
        L.SpatialDropout3D,
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
        register_handler(cls, ChannelsLastPassThrough())


_register_builtins()
