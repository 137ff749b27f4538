"""Per-operation-type handlers: how each supported layer type takes part in growth.

This package is the one place to add a layer type. A registry maps an exact
operation class (a `keras.layers.Layer` or a raw `keras.ops` operation) to a
stateless handler; the roles a handler can play are described in
`keras_net2net.surgery.handlers.base`. One module per family:

* `core`: Dense, Conv1D/2D/3D
* `attention`: Embedding, MultiHeadAttention
* `depthwise`: DepthwiseConv1D/2D, SeparableConv1D/2D
* `normalization`: BatchNormalization, LayerNormalization, RMSNormalization
* `merging`: Add, Subtract, Average, Maximum, Minimum, Multiply, Concatenate
* `reshaping`: Flatten, Reshape, pooling, global pooling, padding, cropping,
  upsampling, RepeatVector
* `activations`: Activation, ReLU, LeakyReLU, ELU, PReLU, Softmax, dropout and
  noise layers, Identity
* `ops`: raw elementwise `keras.ops` calls (``x + y``, ``ops.relu(x)``)
* `applications`: keras.applications' own layers (ConvNeXt LayerScale,
  StochasticDepth)
* `kerashub`: ReversibleEmbedding and KerasHub's TransformerEncoder,
  TransformerDecoder, PositionEmbedding and TokenAndPositionEmbedding
  (registered the first time a KerasHub layer is looked up, so keras_hub is
  never imported by keras-net2net itself)

An operation whose exact class has no handler is unsupported and growth fails,
naming it. Subclasses of supported layers are not assumed to behave like their
parent: register them explicitly with `register_handler`.
"""

import inspect
from typing import Any

import keras

from keras_net2net import _keras_internals as internals
from keras_net2net.requests import CONSUMERS
from keras_net2net.requests import COPIES
from keras_net2net.requests import DEEPEN_METHODS
from keras_net2net.requests import IDENTITY
from keras_net2net.requests import NET2WIDER
from keras_net2net.requests import NOISE_TARGETS
from keras_net2net.requests import PAIRED
from keras_net2net.requests import RANDOM
from keras_net2net.requests import RANDOM_PAD
from keras_net2net.requests import WIDEN_METHODS
from keras_net2net.surgery.handlers import activations
from keras_net2net.surgery.handlers import applications
from keras_net2net.surgery.handlers import attention
from keras_net2net.surgery.handlers import core
from keras_net2net.surgery.handlers import depthwise
from keras_net2net.surgery.handlers import kerashub
from keras_net2net.surgery.handlers import merging
from keras_net2net.surgery.handlers import normalization
from keras_net2net.surgery.handlers import ops
from keras_net2net.surgery.handlers import recurrent
from keras_net2net.surgery.handlers import reshaping
from keras_net2net.surgery.handlers.base import DERIVED
from keras_net2net.surgery.handlers.base import LAYOUT
from keras_net2net.surgery.handlers.base import PASS_THROUGH
from keras_net2net.surgery.handlers.base import SAME
from keras_net2net.surgery.handlers.base import UNITS
from keras_net2net.surgery.handlers.base import Handler
from keras_net2net.surgery.handlers.base import LayoutHandler
from keras_net2net.surgery.handlers.base import PassThroughHandler
from keras_net2net.surgery.handlers.base import UnitsHandler
from keras_net2net.surgery.handlers.change import LayerChange
from keras_net2net.surgery.handlers.change import Widening
from keras_net2net.surgery.handlers.change import copy_transform
from keras_net2net.surgery.handlers.change import divide_transform
from keras_net2net.surgery.handlers.change import variable_positions
from keras_net2net.surgery.handlers.common import NoHandler
from keras_net2net.surgery.handlers.common import describe
from keras_net2net.surgery.handlers.common import format_axis
from keras_net2net.surgery.handlers.common import input_rank
from keras_net2net.surgery.handlers.common import negative_axis
from keras_net2net.surgery.handlers.common import unsupported

__all__ = [
    "format_axis",
    "input_rank",
    "negative_axis",
    "CONSUMERS",
    "PAIRED",
    "COPIES",
    "DEEPEN_METHODS",
    "NOISE_TARGETS",
    "DERIVED",
    "LAYOUT",
    "Handler",
    "IDENTITY",
    "LayerChange",
    "LayoutHandler",
    "NET2WIDER",
    "NoHandler",
    "PassThroughHandler",
    "RANDOM",
    "RANDOM_PAD",
    "PASS_THROUGH",
    "SAME",
    "UNITS",
    "UnitsHandler",
    "WIDEN_METHODS",
    "Widening",
    "copy_transform",
    "describe",
    "divide_transform",
    "get_handler",
    "handler_at",
    "handler_for",
    "register_handler",
    "unsupported",
    "variable_positions",
]

_REGISTRY: dict[type, Handler] = {}
_KERAS_HUB_REGISTERED = False


def _register_default(layer_class: type, handler: Handler) -> None:
    """Register unless the user already registered a handler for the class."""
    if layer_class not in _REGISTRY:
        register_handler(layer_class, handler)


def _lookup(layer: Any) -> Handler | None:
    global _KERAS_HUB_REGISTERED
    handler = _REGISTRY.get(type(layer))
    if handler is None and not _KERAS_HUB_REGISTERED:
        if type(layer).__module__.startswith("keras_hub."):
            _KERAS_HUB_REGISTERED = True
            kerashub.register_keras_hub(_register_default)
            handler = _REGISTRY.get(type(layer))
    return handler


def register_handler(layer_class: type, handler: Handler) -> None:
    """Register ``handler`` for operations whose exact class is ``layer_class``.

    Example:

    ```python
    class Scale(keras.layers.Layer):  # multiplies by a constant
        def call(self, x):
            return 3.0 * x

    keras_net2net.register_handler(Scale, keras_net2net.surgery.PassThroughHandler())
    ```

    Args:
        layer_class: a subclass of `keras.layers.Layer` (or of `keras.Operation`
            for a raw `keras.ops` operation).
        handler: an instance of a `keras_net2net.surgery.Handler` subclass
            (`UnitsHandler`, `PassThroughHandler` or `LayoutHandler`).
    """
    if not (isinstance(layer_class, type) and issubclass(layer_class, keras.Operation)):
        raise TypeError(
            "`layer_class` must be a subclass of keras.layers.Layer (or of "
            f"keras.Operation). Received: layer_class={layer_class!r}"
        )
    if not isinstance(handler, Handler) or type(handler) is Handler:
        raise TypeError(
            "`handler` must be an instance of a keras_net2net.surgery handler "
            "class (UnitsHandler, PassThroughHandler or LayoutHandler). "
            f"Received: handler={handler!r} of type {type(handler).__name__}"
        )
    for ability, method in _ABILITIES:
        implemented = getattr(type(handler), method) is not getattr(Handler, method)
        if getattr(handler, ability) and not implemented:
            raise TypeError(
                f"`handler` {type(handler).__name__} declares {ability}=True but "
                f"does not implement `{method}`. Received: handler={handler!r}"
            )
    follow = getattr(type(handler), "follow", None)
    if follow is not None and "mappings" in inspect.signature(follow).parameters:
        raise TypeError(
            f"`handler` {type(handler).__name__}.follow takes (layer, node, graph, "
            "mappings, options, seeds); since 0.2.0 a layout's `follow` takes "
            "(layer, mapping, options, seeds), as a pass-through's does: "
            "`mapping` is the mapping of the channel input (`derive` gives the "
            f"output's). Received: handler={handler!r}"
        )
    _REGISTRY[layer_class] = handler


# Each declared ability of a handler and the method that provides it.
_ABILITIES = (
    ("identity_deepening", "deeper_layer"),
    ("residual_deepening", "residual_layers"),
    ("copies_itself", "check_copy"),
)


def get_handler(layer: Any) -> Handler | None:
    """The handler registered for ``type(layer)``, or None.

    Example:

    ```python
    get_handler(keras.layers.Dense(4))  # a DenseHandler
    ```
    """
    return _lookup(layer)


def is_opaque(layer) -> bool:
    """A subclassed layer without a handler (a candidate for tracing).

    A user's layer, one of the layers keras.applications define for
    themselves (InceptionResNetV2's ``CustomScaleLayer``), or a ``Lambda``
    (its function, when built from `keras.ops`, traces as a call does);
    Keras's own layers without a handler are reported by name instead.
    """
    if not isinstance(layer, keras.layers.Layer) or internals.has_graph(layer):
        return False
    if get_handler(layer) is not None:
        return False
    if type(layer) is keras.layers.Lambda:
        return True
    module = type(layer).__module__
    return not module.startswith("keras.") or module.startswith(
        "keras.src.applications."
    )


def handler_at(node: Any, graph: Any, axis: int | None = None) -> Handler | None:
    """The handler that plays ``node``'s layer at that call (`Handler.at`), or None.

    Args:
        node: a call in a `keras_net2net.surgery.LayerGraph`.
        graph: that graph.
        axis: the channel axis (counted from the end) of the group tensor the
            node is reached on, when known.

    Raises:
        ValueError: naming the layer, where its handler refuses that call.
    """
    handler = _lookup(node.op)
    return None if handler is None else handler.at(node.op, node, graph, axis)


def handler_for(layer: Any) -> Any:
    """The handler of ``layer``, which must have one (its role's methods).

    Raises:
        ValueError: naming the layer, if its type has no handler.
    """
    handler = _lookup(layer)
    if handler is None:
        raise unsupported(layer, "is not a layer type keras-net2net supports.")
    return handler


for _family in (
    core,
    attention,
    depthwise,
    normalization,
    merging,
    reshaping,
    activations,
    ops,
    applications,
    kerashub,
    recurrent,
):
    _family.register(register_handler)
