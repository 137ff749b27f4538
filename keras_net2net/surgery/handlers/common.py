"""Helpers every handler module uses: naming a layer in an error, and axes.

Axes are counted from the end of a tensor's shape (-1: the last axis), so
that they do not depend on the batch axis.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from typing import Any

import keras

if TYPE_CHECKING:
    from keras_net2net.surgery.graph import LayerGraph
    from keras_net2net.surgery.graph import Node


def describe(layer):
    """``Layer 'name' (Class)``, or ``Operation 'name' (Class, a keras.ops call)``."""
    if isinstance(layer, keras.layers.Layer):
        return f"Layer '{layer.name}' ({type(layer).__name__})"
    return f"Operation '{layer.name}' ({type(layer).__name__}, a keras.ops call)"


def unsupported(layer, reason):
    """The ValueError for ``layer`` that cannot take part in a growth."""
    return ValueError(f"{describe(layer)} {reason}")


class NoHandler(ValueError):
    """A layer with no handler is on a growth's path (``layer`` says which)."""

    def __init__(self, message: str, layer: Any):
        super().__init__(message)
        self.layer = layer


def last_axis_only(node: Node, graph: LayerGraph, axis: int) -> bool:
    """True if ``axis`` is not the last axis of ``node``'s input (rank >= 3)."""
    rank = input_rank(node, graph)
    return rank >= 3 and axis != -1 and -rank < axis < 0


def format_axis(layer: Any, rank: int) -> int:
    """The channel axis of a ``rank``-dimensional tensor under ``layer.data_format``.

    Axes are counted from the end: -1 for ``channels_last`` (and layers
    without a ``data_format``), ``1 - rank`` (axis 1) for ``channels_first``.

    Example:

    ```python
    format_axis(keras.layers.Conv2D(8, 3, data_format="channels_first"), 4)  # -3
    ```
    """
    data_format = getattr(layer, "data_format", None) or "channels_last"
    if data_format == "channels_last":
        return -1
    if data_format == "channels_first":
        return 1 - rank
    raise unsupported(layer, f"has an unknown data_format={data_format!r}.")


def negative_axis(axis: int, rank: int) -> int:
    """``axis`` of a ``rank``-dimensional tensor, counted from the end (-1: last).

    Example:

    ```python
    negative_axis(1, 4)  # -3
    ```
    """
    axis = int(axis)
    return axis - rank if axis >= 0 else axis


def input_rank(node: Node | None, graph: LayerGraph | None) -> int:
    """The rank of a node's first input (2 when there is none to read).

    Example:

    ```python
    input_rank(graph.calls(conv)[0], graph)  # 4 for a Conv2D
    ```
    """
    if node is None or graph is None or not node.inputs:
        return 2
    return len(graph.shape(node.inputs[0]))
