"""A normalised stream widened to any width: new channels at the old ones' mean.

LayerNormalization over the widened channels keeps its function under equal
copies of every channel (a multiple of the width). For any other width the
new channels can instead *hold the mean of the old ones* (LEMON, arXiv
2310.07999): where a LayerNormalization reads ``d`` old channels, ``q``
copies of each and ``r`` channels at their mean, its mean is unchanged and
its variance is the old one times ``ratio = q * d / (q * d + r)``, so the
old channels' outputs are kept by multiplying its ``gamma`` by
``sqrt(ratio)`` and its ``epsilon`` by ``ratio``; its new channels output
``beta`` = 0. RMSNormalization (no mean) needs its new channels at zero,
and the same factors.

That holds only if every writer of the stream puts the mean (or zero) in
the new channels, and everything between the writers and each normalisation
keeps it there: a linear writer (Dense, a convolution, Embedding, the
attention output projection, without activation) writes the mean of its old
columns; a sum of means is the mean of the sum; dropout and the like keep
it. A non-linear writer (a Dense with ``gelu``) cannot write the mean: there
the widening is refused with the reason and the valid widths (zero, for
RMSNormalization, it can write where its activation maps 0 to 0).

`keep_mean` decides this for a coupling group (what each group tensor's new
channels hold, in graph order) and returns the mapping and the writers'
fill; the handlers read the fill from `keras_net2net.surgery.handlers.Widening`
(``fresh``).
"""

import keras
import numpy as np

from keras_net2net.surgery.handlers import ops as traced_ops
from keras_net2net.surgery.handlers.elementwise import ZERO_PRESERVING_ACTIVATIONS
from keras_net2net.surgery.handlers.elementwise import activation_name
from keras_net2net.surgery.handlers.normalization import LayerNormalizationHandler
from keras_net2net.transforms import MEAN
from keras_net2net.transforms import satisfies
from keras_net2net.transforms import stream_mapping

L = keras.layers
ZERO = 0.0  # the new channels hold zero (RMSNormalization's need)
OTHER = "other"  # anything else: no normalisation may read them
# Writers whose new output channels are a linear function of their input:
# their columns (and bias) averaged write the mean of the old channels.
_LINEAR_WRITERS = (
    L.Dense,
    L.Conv1D,
    L.Conv2D,
    L.Conv3D,
    L.Conv1DTranspose,
    L.Conv2DTranspose,
    L.Conv3DTranspose,
    L.SeparableConv1D,
    L.SeparableConv2D,
    L.Embedding,
    L.MultiHeadAttention,
)
# The identity at inference: whatever the new channels hold, they keep.
_IDENTITIES = (
    L.Dropout,
    L.SpatialDropout1D,
    L.SpatialDropout2D,
    L.SpatialDropout3D,
    L.GaussianNoise,
    L.GaussianDropout,
    L.AlphaDropout,
    L.Identity,
    L.ActivityRegularization,
)
# Merges that are linear in their inputs: means (or zeros) stay.
_LINEAR_MERGES = (L.Add, L.Subtract, L.Average)
# Raw keras.ops calls: a sum of means, or a mean times a number, is a mean.
_SUMS = {traced_ops.ADD, traced_ops.operation_class("subtract", 2)}
_DIVISIONS = {traced_ops.operation_class(n, 2) for n in ("divide", "true_divide")}
_PRODUCTS = {traced_ops.operation_class("multiply", 2)} | _DIVISIONS
_NORMS: tuple = (L.LayerNormalization,) + (
    (L.RMSNormalization,) if hasattr(L, "RMSNormalization") else ()
)
_AVERAGING = (
    L.GlobalAveragePooling1D,
    L.GlobalAveragePooling2D,
    L.GlobalAveragePooling3D,
    L.AveragePooling1D,
    L.AveragePooling2D,
    L.AveragePooling3D,
)


def _needs(op):
    """What a normalisation needs its input's new channels to hold, or None
    where it cannot be kept by scaling (no ``gamma``, several axes)."""
    if not isinstance(op, _NORMS):
        return None
    axes = op.axis if isinstance(op.axis, (list, tuple)) else [op.axis]
    if len(axes) != 1:
        return None
    if isinstance(op, L.LayerNormalization) and not op.scale:
        return None
    rms = not isinstance(op, L.LayerNormalization)
    return ZERO if rms else MEAN


def _linear(op):
    return activation_name(getattr(op, "activation", None)) == "linear"


def _through(node, group, states):
    """``(what the output's new channels hold, the node that broke it)``."""
    op = node.op
    inputs = [states.get(k, (OTHER, None)) for k in node.inputs if _member(group, k)]
    held = {state for state, _ in inputs}
    broken = next((why for state, why in inputs if state == OTHER), None)
    if OTHER in held or not held:
        return OTHER, broken
    if len(held) > 1:  # a mean added to zeros: not the mean of the sum
        return _broke(
            node,
            "adds them at the mean to the zeros a normalisation before it "
            "writes in its new channels (a normalisation after the residual "
            "Add: post-norm)",
        )
    (state,) = held
    if node in group.across:
        return _across(node, op, state)
    if isinstance(op, L.LayerNormalization):
        if op.rms_scaling:
            return _broke(node, "scales them without subtracting the mean")
        return ZERO, None
    if isinstance(op, _NORMS):  # RMSNormalization
        return ZERO, None
    kind = type(op)
    if isinstance(op, _IDENTITIES):
        return state, None
    if isinstance(op, _LINEAR_MERGES) or kind in _SUMS:
        constants = node.constants()
        outside = len(inputs) < len(node.inputs)  # broadcast over the channels
        if state == ZERO and (
            outside or any(np.any(np.asarray(c) != 0) for c in constants)
        ):
            return _broke(node, "adds a value to them")
        return state, None
    if kind in _PRODUCTS and node.constants():  # by a number (x / 2, not 2 / x)
        if kind in _DIVISIONS and node.labels[0] != 0:
            return _broke(node, "divides a number by them")
        return state, None
    if isinstance(op, L.Activation) and activation_name(op.activation) == "linear":
        return state, None
    handler = group.handler(node)
    if isinstance(handler, (traced_ops.TransposeHandler, traced_ops.GetItemHandler)):
        return state, None
    if state == ZERO and handler.zero_preserving(op):
        return ZERO, None
    return _broke(node, "changes them on the way (not linear)")


def _across(node, op, state):
    """A layer acting along another axis, each channel's slice on its own."""
    if isinstance(op, _AVERAGING):
        return state, None
    if isinstance(op, L.Dense) and _linear(op):
        if state == ZERO and op.use_bias:
            return _broke(node, "adds its bias to them")
        return state, None
    return _broke(node, "changes them along another axis (not linearly)")


def _broke(node, what):
    """The new channels hold something else from ``node`` on, and why."""
    return OTHER, f"{_name(node.op)} {what}"


def _member(group, key):
    return key in group.core or key in group.derived


def _holds(group, fill):
    """``{tensor key: (state, why not the mean or zero)}`` in graph order."""
    states: dict = {}
    nodes = group.writers + group.passes + group.across + group.layouts + group.splits
    for node in sorted(set(nodes), key=lambda n: n.index):
        if node in group.writers:
            linear = isinstance(node.op, _LINEAR_WRITERS) and _linear(node.op)
            activation = activation_name(getattr(node.op, "activation", None))
            zeros = fill == ZERO and activation in ZERO_PRESERVING_ACTIVATIONS
            if linear or (isinstance(node.op, _LINEAR_WRITERS) and zeros):
                held = (fill, None)  # (zero columns and bias: a(0) = 0)
            elif isinstance(node.op, _LINEAR_WRITERS):
                held = _broke(node, f"writes them through activation '{activation}'")
            else:
                held = _broke(node, "writes them and is not a linear layer")
        elif node in group.layouts or node in group.splits:
            held = _broke(node, "moves them (a layout)")
        else:
            held = _through(node, group, states)
        for key in node.outputs:
            if _member(group, key):
                states[key] = held
    return states


def _name(op):
    return f"'{op.name}' ({type(op).__name__})"


def _valid(width):
    return f"a multiple of {width} (e.g. {2 * width})"


def keep_mean(group, target, units):
    """The mapping and writers' fill that widen ``group`` to ``units`` exactly
    through its normalisations, at a width that is not a multiple of its own.

    Args:
        group: the `keras_net2net.surgery.coupling.ChannelGroup`.
        target: the layer the request names (for messages).
        units: the new width.

    Returns:
        ``(WidthMapping, fill)`` with ``fill`` ``"mean"`` or ``0.0`` (what the
        new channels hold); None where the group's equal-copies rules are
        not all normalisations this handles (the caller's message stands).

    Raises:
        ValueError: naming the layer that keeps the new channels from the
            mean, and the valid widths.
    """
    uniform = [(node, rule, key) for node, rule, key in group.rules if rule.uniform]
    if not uniform or any(rule.groups > 1 for _, rule, _ in group.rules):
        return None
    needs = {}
    for node, _, key in uniform:
        if key not in group.core or not isinstance(
            group.handler(node), LayerNormalizationHandler
        ):
            return None
        need = _needs(node.op)
        if need is None:
            return None
        needs[node.index] = (node, need, key)
    width = group.width
    prefix = f"`units`={units} for layer '{target.name}'"
    fills = {need for _, need, _ in needs.values()}
    if len(fills) > 1:
        raise ValueError(
            f"{prefix}: LayerNormalization (new channels at the mean of the old "
            "ones) and RMSNormalization (new channels at zero) read the same "
            f"channels, so the new width must be {_valid(width)}. Received: "
            f"new width {units}."
        )
    (fill,) = fills
    states = _holds(group, fill)
    for node, need, key in sorted(needs.values(), key=lambda n: n[0].index):
        state, why = states.get(key, (OTHER, None))
        if state == need:
            continue
        what = "the mean of the old ones" if need == MEAN else "zero"
        why = why or "they do not reach it from the layers that write them"
        raise ValueError(
            f"{prefix}: {_name(node.op)} normalises over the widened "
            f"channels; at a width that is not a multiple of {width} its new "
            f"channels would have to hold {what} wherever it reads them, but "
            f"{why}, so no exact widening exists and the new width must be "
            f"{_valid(width)}. Received: new width {units}."
        )
    mapping = stream_mapping(width, units)
    copies = units // width
    for _, rule, key in group.rules:
        if not rule.uniform and key in group.core and not satisfies(mapping, rule):
            raise ValueError(
                f"{prefix}: {rule.reason}, and the channels beyond "
                f"{copies * width} hold the mean of the others, so the new width "
                f"must be {_valid(width)}. Received: new width {units}."
            )
    return mapping, fill
