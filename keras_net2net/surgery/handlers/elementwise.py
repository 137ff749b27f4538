"""Which activations growth can pass channels through, and the check that says so.

A widened channel may only pass an activation that acts on every channel
independently; an identity layer inserted after an activation keeps the
function only if the activation is idempotent; a zero residual branch stays
zero only through activations with a(0) = 0.
"""

import keras

from keras_net2net.surgery.handlers.common import unsupported

# Activations that act on every channel independently (elementwise). Only
# these may receive widened channels: any other (softmax, sparsemax, glu, a
# custom callable, ...) is refused by name.
ELEMENTWISE_ACTIVATIONS = frozenset(
    {
        "linear",
        "relu",
        "relu6",
        "leaky_relu",
        "elu",
        "selu",
        "celu",
        "gelu",
        "silu",
        "swish",
        "sigmoid",
        "hard_sigmoid",
        "hard_silu",
        "hard_swish",
        "tanh",
        "hard_tanh",
        "softplus",
        "softsign",
        "exponential",
        "mish",
        "log_sigmoid",
        "squareplus",
        "sparse_plus",
        "sparse_sigmoid",
        "hard_shrink",
        "soft_shrink",
        "tanh_shrink",
        "threshold",
    }
)
# Activations a for which a(a(x)) == a(x): an identity layer with the same
# activation inserted after such a layer keeps the function.
IDEMPOTENT_ACTIVATIONS = frozenset({"linear", "relu"})
# Elementwise activations with a(0) == 0 (a zero residual branch stays zero).
ZERO_PRESERVING_ACTIVATIONS = frozenset(
    {
        "linear",
        "relu",
        "relu6",
        "leaky_relu",
        "elu",
        "selu",
        "celu",
        "gelu",
        "silu",
        "swish",
        "tanh",
        "hard_tanh",
        "softsign",
        "mish",
        "hard_silu",
        "hard_swish",
        "hard_shrink",
        "soft_shrink",
        "tanh_shrink",
    }
)


def activation_name(activation):
    """Serialised name of an activation function ('?' for custom callables)."""
    if activation is None:
        return "linear"
    # Keras's own functions by name: serialize() may import optional modules
    # (TensorFlow, seconds) the first time it runs.
    name = getattr(activation, "__name__", None)
    if isinstance(name, str):
        try:
            if keras.activations.get(name) is activation:
                return name
        except (ValueError, TypeError):
            pass
    try:
        name = keras.activations.serialize(activation)
    except (ValueError, TypeError):
        name = None
    if isinstance(name, str):
        return name
    if isinstance(name, dict):
        name = name.get("config", name.get("class_name"))
        if isinstance(name, str):
            return name
    return getattr(activation, "__name__", "?")


_CHANNEL_MIXING = ("softmax", "log_softmax", "sparsemax", "glu")


def check_elementwise_activation(layer, activation, consequence):
    """Refuse ``activation`` unless it is known to be elementwise.

    Args:
        layer: the layer applying it (named in the error).
        activation: the activation function.
        consequence: what cannot be done, e.g. ``"its output cannot be
            widened"``.
    """
    name = activation_name(activation)
    if name not in ELEMENTWISE_ACTIVATIONS:
        why = (
            "which mixes channels"
            if name in _CHANNEL_MIXING
            else "which is not known to act on each channel independently"
        )
        raise unsupported(
            layer,
            f"applies the activation '{name}', {why}, so {consequence}. "
            "Elementwise activations: "
            f"{', '.join(sorted(ELEMENTWISE_ACTIVATIONS))}.",
        )
    return name
