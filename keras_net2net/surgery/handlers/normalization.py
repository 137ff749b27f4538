"""Normalisation layers: BatchNormalization, LayerNormalization, RMSNormalization.

BatchNormalization over the channel axis is a pass-through whose per-channel
parameters and statistics are copied with the channels (any mapping is exact).

LayerNormalization and RMSNormalization over the channel axis normalise with
the mean and variance *across* channels. Those statistics are unchanged if
every old channel is copied the same number of times (a multiple of the
width: `keras_net2net.transforms.tiled_mapping`); ``gamma``/``beta``/
``scale`` are copied. At any other width the new channels past the copies
hold the mean of the old ones (zero for RMSNormalization) where the stream's
writers allow it (`keras_net2net.surgery.plan.stream`): the variance shrinks
by ``ratio`` = copies / new width, so ``gamma`` (``scale``) is multiplied by
``sqrt(ratio)`` and ``epsilon`` by ``ratio``; the new channels get the mean
``gamma`` and zero ``beta``. Other widths are refused, naming the layer.
"""

import math

import keras
import numpy as np

from keras_net2net.surgery.handlers.base import PassThroughHandler
from keras_net2net.surgery.handlers.change import LayerChange
from keras_net2net.surgery.handlers.change import copy_transform
from keras_net2net.surgery.handlers.common import input_rank
from keras_net2net.surgery.handlers.common import last_axis_only
from keras_net2net.surgery.handlers.common import negative_axis
from keras_net2net.surgery.handlers.common import unsupported
from keras_net2net.transforms import MEAN
from keras_net2net.transforms import MappingRule


def _axes(axis, rank):
    axes = axis if isinstance(axis, (list, tuple)) else [axis]
    return sorted(int(a) % rank for a in axes)


def copy_per_channel(layer, mapping, fresh):
    """Copy every per-channel variable by ``mapping``; a fresh channel gets
    ``fresh[name]``. Any variable not in ``fresh`` is refused by name."""
    change = LayerChange()
    for variable in layer.weights:
        name = variable.name
        if name not in fresh:
            raise unsupported(layer, f"has an unexpected variable '{name}'.")
        change.add(name, copy_transform(mapping, fill=fresh[name]))
    return change


class BatchNormalizationHandler(PassThroughHandler):
    """BatchNormalization over one axis: its parameters follow the mapping."""

    has_state = True
    # variable -> value of a fresh channel for the random-pad baseline
    _FRESH = {"gamma": 1.0, "beta": 0.0, "moving_mean": 0.0, "moving_variance": 1.0}

    def channel_axis(self, layer, node, graph):
        axis = layer.axis
        if isinstance(axis, (list, tuple)) and len(axis) == 1:
            axis = axis[0]
        if not isinstance(axis, int):
            raise unsupported(
                layer,
                f"normalizes axis={layer.axis}; widened channels can only pass "
                "through BatchNormalization over one axis (the channels).",
            )
        return negative_axis(axis, input_rank(node, graph))

    def channel_inputs(self, layer, node, graph):
        return [0]

    def follow(self, layer, mapping, options, seeds):
        return copy_per_channel(layer, mapping, self._FRESH)

    def zero_preserving(self, layer):
        return False

    def zero_change(self, layer):
        if not (layer.center and layer.scale):
            return None
        return {
            "gamma": np.zeros(layer.gamma.shape, "float32"),
            "beta": np.zeros(layer.beta.shape, "float32"),
        }


class LayerNormalizationHandler(PassThroughHandler):
    """LayerNormalization / RMSNormalization: exact for equal copies of channels."""

    has_state = True
    _FRESH = {"gamma": 1.0, "beta": 0.0, "scale": 1.0}

    def channel_axis(self, layer, node, graph):
        return -1  # its scale and offset are read on the last axis

    def acts_across(self, layer, node, graph, axis):
        # Normalising the last axis only: each channel's slice on its own.
        rank = input_rank(node, graph)
        return last_axis_only(node, graph, axis) and _axes(layer.axis, rank) == [
            rank - 1
        ]

    def channel_inputs(self, layer, node, graph):
        return [0]

    def mapping_rule(self, layer, node, graph, axis):
        rank = input_rank(node, graph)
        if rank + axis not in _axes(layer.axis, rank):
            return None
        return MappingRule(
            uniform=True,
            reason=f"'{layer.name}' ({type(layer).__name__}) normalises over the "
            "widened channels; it keeps its function only when every channel is "
            "copied the same number of times",
        )

    def follow(self, layer, mapping, options, seeds):
        change = LayerChange()
        fresh = int(mapping.fresh.sum())
        ratio = 1.0
        if options.fresh is not None and fresh:  # new channels at the mean
            ratio = (mapping.new_width - fresh) / mapping.new_width
            change.config["epsilon"] = float(layer.epsilon) * ratio
        for variable in layer.weights:
            name = variable.name
            if name not in self._FRESH:
                raise unsupported(layer, f"has an unexpected variable '{name}'.")
            if variable.shape and variable.shape[-1] == mapping.old_width:
                gain = name in ("gamma", "scale")
                fill = MEAN if gain and ratio != 1.0 else self._FRESH[name]
                scale = math.sqrt(ratio) if gain else 1.0
                change.add(name, copy_transform(mapping, fill=fill, scale=scale))
        return change

    def init_key(self, layer, variable):
        return None if variable == "scale" else f"{variable}_initializer"

    def zero_preserving(self, layer):
        return False

    def zero_change(self, layer):
        values = {v.name: np.zeros(v.shape, "float32") for v in layer.weights}
        return values or None


class GroupNormalizationHandler(PassThroughHandler):
    """GroupNormalization: statistics over groups of consecutive channels.

    Whole groups are copied and the number of groups grows with them: the
    channels come in blocks of one group's size (``MappingRule(block=...)``),
    a new group copies an old one, so its statistics, and every output, are
    those of the old group. The new width is then a multiple of the group
    size, also where the group is part of a Concatenate (a U-Net's skip
    connection). ``groups=-1`` (one group per channel) stays one group per
    channel. ``gamma``/``beta`` are copied.
    """

    has_state = True
    _FRESH = {"gamma": 1.0, "beta": 0.0}

    def channel_axis(self, layer, node, graph):
        return negative_axis(layer.axis, input_rank(node, graph))

    def channel_inputs(self, layer, node, graph):
        return [0]

    def _size(self, layer, width):
        groups = int(layer.groups)
        return 1 if groups == -1 else width // groups

    def mapping_rule(self, layer, node, graph, axis):
        width = int(graph.shape(node.inputs[0])[axis])
        size = self._size(layer, width)
        return MappingRule(
            block=size,
            reason=f"'{layer.name}' (GroupNormalization) normalises {width // size} "
            f"groups of {size} channels; new channels must form whole copies of "
            "its groups",
        )

    def follow(self, layer, mapping, options, seeds):
        change = copy_per_channel(layer, mapping, self._FRESH)
        if int(layer.groups) != -1:
            size = self._size(layer, mapping.old_width)
            change.config["groups"] = mapping.new_width // size
        return change

    def zero_preserving(self, layer):
        return False

    def zero_change(self, layer):
        values = {v.name: np.zeros(v.shape, "float32") for v in layer.weights}
        return values if {"gamma", "beta"} <= set(values) else None


def register(register_handler):
    L = keras.layers
    register_handler(L.GroupNormalization, GroupNormalizationHandler())
    register_handler(L.BatchNormalization, BatchNormalizationHandler())
    register_handler(L.LayerNormalization, LayerNormalizationHandler())
    if hasattr(L, "RMSNormalization"):
        register_handler(L.RMSNormalization, LayerNormalizationHandler())
