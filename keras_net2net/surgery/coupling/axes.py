"""Where a node's channels are: the axis it declares, the axis of its outputs,
and a units layer whose units a Reshape splits into channels."""

from __future__ import annotations

from typing import Any

from keras_net2net.surgery import handlers as H
from keras_net2net.surgery.graph import LayerGraph
from keras_net2net.surgery.graph import Node
from keras_net2net.surgery.sharing import shared_calls


def declared_axis(handler, node: Node, graph: LayerGraph) -> int | None:
    """The handler's channel axis at ``node``, counted from the end (or None)."""
    axis = handler.channel_axis(node.op, node, graph)
    return None if axis is None else H.negative_axis(axis, H.input_rank(node, graph))


def output_axis(graph: LayerGraph, node: Node) -> int:
    """The channel axis of ``node``'s outputs, counted from the end.

    An elementwise node (no declared axis) has its input's axis: the chain of
    producers is followed back to a layer that declares one (-1 at a model
    input or an unsupported operation).
    """
    chain = []
    current: Node | None = node
    while current is not None:
        handler = H.get_handler(current.op)
        if handler is None:
            break
        chain.append((handler, current))
        if declared_axis(handler, current, graph) is not None or not current.inputs:
            break
        current = graph.producer(current.inputs[0])
    axis = -1
    for handler, member in reversed(chain):
        declared = declared_axis(handler, member, graph)
        axis = handler.output_axis(
            member.op, member, graph, axis if declared is None else declared
        )
    return axis


def split_below(graph: LayerGraph, node: Node) -> tuple[Node, int] | None:
    """``(split node, channel axis)`` when ``node``'s units are split into channels.

    A units layer whose only reader is a Reshape splitting its units into
    ``(positions, channels)`` (through per-channel layers such as
    BatchNormalization or an activation: a DCGAN generator's stem) writes
    the channels after the split; widening it widens those. The channel axis
    is the first one a consumer of the split's output declares (-1 when
    none does, as for channels-last convolutions).
    """
    handler = H.handler_at(node, graph)
    if handler is None or handler.role != H.UNITS or len(node.outputs) != 1:
        return None
    key = node.outputs[0]
    while True:
        consumers = graph.consumers(key)
        if len(consumers) != 1 or graph.is_output(key):
            return None
        consumer, position = consumers[0]
        registered = H.get_handler(consumer.op)
        if registered is None or shared_calls(registered, consumer, graph):
            return None
        try:
            step: Any = registered.at(consumer.op, consumer, graph, -1)
        except ValueError:
            return None
        if (
            step.role == H.PASS_THROUGH
            and step.channel_inputs(consumer.op, consumer, graph) == [position]
            and len(consumer.outputs) == 1
        ):
            key = consumer.outputs[0]
            continue
        if step.role != H.LAYOUT:
            return None
        axis = _first_declared_axis(graph, consumer.outputs[0])
        if step.split_positions(consumer.op, consumer, graph, axis) is None:
            return None
        return consumer, axis


def _first_declared_axis(graph, key):
    """The channel axis the first layer reading ``key`` declares (else -1)."""
    for node, _ in graph.consumers(key):
        handler = H.get_handler(node.op)
        if handler is None:
            continue
        declared = declared_axis(handler, node, graph)
        if declared is not None:
            return declared
        try:
            role = handler.at(node.op, node, graph).role
        except ValueError:
            continue
        if role == H.PASS_THROUGH and node.outputs:
            return _first_declared_axis(graph, node.outputs[0])
    return -1
