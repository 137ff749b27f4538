"""Coupling groups: every layer that shares one channel axis.

Widening a layer widens a channel axis, and every operation that shares that
axis must change with it, under one mapping ``g`` (new channel -> old
channel). The group is found from the graph, starting at the widened layer's
output tensor:

* its *core* tensors share the axis exactly. Crossing a pass-through
  (activation, BatchNormalization, pooling, ...) keeps a tensor in the core,
  in both directions; a merge (Add, Multiply, ``x + y``, ...) puts all its
  inputs and its output in the core, so a residual stream is one group.
* *writers* (Dense, Conv, ...) produce core tensors: their output units are
  copied by ``g``. Every core tensor ends, upstream, at writers.
* *readers* (Dense, Conv, ...) consume group tensors: the incoming weights of
  copied channels are divided by their replication count.
* *layouts* (Flatten, channel Concatenate, depthwise convolutions with a depth
  multiplier) derive new index layouts from core tensors, crossed forwards
  only; their outputs are *derived* tensors that reach readers the same way.

Anything else on the way (an unsupported operation, a model input or output, a
shared layer with weights) makes the widening impossible, and the error names
it before anything changes.
"""

import dataclasses
from typing import Any

from keras_net2net.surgery import handlers as H
from keras_net2net.surgery.graph import LayerGraph
from keras_net2net.surgery.graph import Node
from keras_net2net.surgery.sharing import same_argument
from keras_net2net.surgery.sharing import shared_calls
from keras_net2net.transforms import MappingRule


@dataclasses.dataclass
class ChannelGroup:
    """The operations that share one channel axis (see the module docstring).

    Example:

    ```python
    group = keras_net2net.coupled_layers(model, "conv2_block1_out")
    print(group.summary())
    writers = [node.op.name for node in group.writers]
    ```

    Attributes:
        width: the current width of the shared axis.
        core: keys of the tensors on the shared axis.
        derived: keys of tensors whose axis is a layout of the shared one.
        axes: ``{tensor key: channel axis}`` of every group tensor, counted
            from the end (-1: last; ``channels_first`` 4-D tensors: -3).
        writers: nodes whose output units are widened.
        readers: ``(node, position)`` pairs that absorb widened inputs.
        passes: pass-through nodes (merges included) on group tensors.
        across: nodes that act on another axis of a group tensor and leave
            the channels untouched (`Handler.acts_across`); not changed.
        layouts: layout nodes (Flatten, Concatenate, ...).
        rules: ``(node, MappingRule, key)``: what a layer needs of the mapping
            of the group tensor ``key`` it reads (`Handler.mapping_rule`).
    """

    graph: object
    width: int
    core: set = dataclasses.field(default_factory=set)
    derived: set = dataclasses.field(default_factory=set)
    axes: dict = dataclasses.field(default_factory=dict)
    writers: list = dataclasses.field(default_factory=list)
    readers: list = dataclasses.field(default_factory=list)
    passes: list = dataclasses.field(default_factory=list)
    across: list = dataclasses.field(default_factory=list)
    layouts: list = dataclasses.field(default_factory=list)
    rules: list = dataclasses.field(default_factory=list)

    @property
    def merges(self) -> list[Node]:
        """Pass-through nodes that merge several group inputs (Add, ...)."""
        return [n for n in self.passes if self._channel_count(n) > 1]

    @property
    def uniform(self) -> list[tuple[Node, str]]:
        """``(node, reason)`` of the layers that need equal copies of every channel."""
        return [(node, rule.reason) for node, rule, _ in self.rules if rule.uniform]

    def core_rules(self) -> list[MappingRule]:
        """The rules on the shared axis itself (the mapping is chosen by them)."""
        return [rule for _, rule, key in self.rules if key in self.core]

    def _channel_count(self, node):
        return sum(1 for k in node.inputs if k in self.core or k in self.derived)

    def layers(self) -> list[Any]:
        """Every operation of the group, in graph order."""
        nodes = self.writers + [n for n, _ in self.readers] + self.passes
        nodes += self.across + self.layouts
        seen, order = set(), []
        for node in sorted(nodes, key=lambda n: n.index):
            if id(node.op) not in seen:
                seen.add(id(node.op))
                order.append(node.op)
        return order

    def summary(self) -> str:
        """A multi-line description of the group, one role per line."""

        def names(nodes):
            seen = []
            for node in sorted(nodes, key=lambda n: n.index):
                if node.op.name not in seen:
                    seen.append(node.op.name)
            return ", ".join(seen) or "-"

        merges = self.merges
        others = [n for n in self.passes if n not in merges]
        lines = [
            f"channel group of width {self.width}:",
            f"  writers (output units copied): {names(self.writers)}",
            "  readers (incoming weights divided by the copy count): "
            f"{names([n for n, _ in self.readers])}",
            f"  merges (inputs share the channels): {names(merges)}",
            f"  pass-throughs (parameters copied or none): {names(others)}",
            f"  layouts (channel index layout derived): {names(self.layouts)}",
            "  across (act on another axis, unchanged): " + names(self.across),
        ]
        if self.uniform:
            lines.append(
                "  needs equal copies of every channel (new width a multiple of "
                f"{self.width}): {names([n for n, _ in self.uniform])}"
            )
        blocks = [(n, r) for n, r, _ in self.rules if r.block > 1]
        for node, rule in blocks:
            lines.append(
                f"  copies whole blocks of {rule.block} channels: {node.op.name}"
            )
        return "\n".join(lines)

    def __str__(self):
        return self.summary()


def _handler(node, source_name, graph, axis=None):
    op = node.op
    handler = H.get_handler(op)
    if handler is None:
        raise H.NoHandler(
            f"{H.describe(op)} is on the path of the channels of '{source_name}', "
            f"but {type(op).__name__} is not supported by keras-net2net; register "
            "a handler with keras_net2net.register_handler.",
            op,
        )
    handler.check(op)
    return handler, handler.role_of(op, node, graph, axis=axis)


def _producer_name(graph, key):
    node = graph.producer(key)
    return node.op.name if node is not None else "the model input"


def _declared_axis(handler, node, graph):
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
        if _declared_axis(handler, current, graph) is not None or not current.inputs:
            break
        current = graph.producer(current.inputs[0])
    axis = -1
    for handler, member in reversed(chain):
        declared = _declared_axis(handler, member, graph)
        axis = handler.output_axis(
            member.op, member, graph, axis if declared is None else declared
        )
    return axis


def _axis_text(graph, key, axis):
    rank = len(graph.shape(key))
    return f"axis {rank + axis} of shape {graph.shape(key)}"


def find_group(graph: LayerGraph, seed: Node, source_name: str) -> ChannelGroup:
    """The `ChannelGroup` of the channels that node ``seed`` writes.

    Args:
        graph: a `LayerGraph`.
        seed: the node whose output channels are widened (every output its
            handler lists in `Handler.channel_outputs` joins the group).
        source_name: name of the layer being widened (for messages).

    Raises:
        ValueError: naming the first operation that cannot take part.
    """
    seed_handler = H.handler_for(seed.op)
    axis = output_axis(graph, seed)
    keys = [seed.outputs[i] for i in seed_handler.channel_outputs(seed.op, seed, graph)]
    group = ChannelGroup(graph, graph.width(keys[0], axis))
    core: list[tuple[int, int]] = []
    derived: list[tuple[int, int]] = []
    seen_nodes = set()

    def visit(node, role_name):
        key = (node.index, role_name)
        if key in seen_nodes:
            return False
        seen_nodes.add(key)
        return True

    def add_core(key, axis, writer=None):
        width = graph.width(key, axis)
        if width == group.width:
            core.append((key, axis))
        elif writer is not None:
            raise H.unsupported(
                writer.op,
                f"writes the channels of '{source_name}' and an output of "
                f"{_axis_text(graph, key, axis)} with {width} channels, not "
                f"{group.width}; its handler's channel_outputs must list only "
                "the outputs on the channel axis.",
            )
        elif width != 1:  # 1: broadcast over the channels
            producer = _producer_name(graph, key)
            raise ValueError(
                f"Tensor of shape {graph.shape(key)} from '{producer}' is merged "
                f"with the {group.width} channels of '{source_name}' but has a "
                "different channel width."
            )

    for key in keys:
        add_core(key, axis, writer=seed)

    def check_ends(key):
        if graph.is_output(key):
            producer = graph.producer(key)
            op = producer.op if producer is not None else graph.model
            coupled = (
                ""
                if op.name == source_name
                else f", and its channels are coupled with those of '{source_name}'"
            )
            raise H.unsupported(
                op,
                f"produces a model output{coupled}: widening would change the "
                "model's output shape. Widen a layer whose channels are consumed "
                "by a Dense or Conv layer before the output.",
            )
        if graph.is_input(key):
            raise ValueError(
                f"The channels of '{source_name}' are coupled (through a merge) "
                "with a model input, whose width cannot change."
            )

    def check_axis(node, key, axis, expected, verb):
        if expected != axis:
            raise H.unsupported(
                node.op,
                f"{verb} its channels on axis {H.input_rank(node, graph) + expected}"
                f", but the channels of '{source_name}' are on "
                f"{_axis_text(graph, key, axis)} there (a layer with another "
                "data_format or axis).",
            )

    def add_rule(handler, node, key, axis):
        rule = handler.mapping_rule(node.op, node, graph, axis)
        if rule is not None:
            group.rules.append((node, rule, key))

    def add_sibling_input(key, axis, is_derived):
        # Another call of a shared layer reads the same kind of channels: a
        # derived layout (after a Flatten) or the group's own.
        if is_derived:
            derived.append((key, axis))
        else:
            add_core(key, axis)

    def add_writer(handler, node, key, axis):
        if not visit(node, "writer"):
            return
        group.writers.append(node)
        for other in shared_calls(handler, node, graph):
            for i in handler.channel_outputs(other.op, other, graph):
                add_core(other.outputs[i], axis, writer=other)
        rule = handler.output_rule(node.op, node, graph, axis)
        if rule is not None:
            group.rules.append((node, rule, key))
        for i in handler.channel_outputs(node.op, node, graph):
            add_core(node.outputs[i], axis, writer=node)
        # Inputs that carry the layer's own units (a recurrent layer's
        # initial state) share its mapping.
        for i in handler.coupled_inputs(node.op, node, graph):
            add_core(node.inputs[i], axis)

    def add_across(node, axis):
        # Channels on a batch-like axis of the layer: through it, unchanged
        # (so its other calls, if it is shared, are not concerned).
        if visit(node, "across"):
            group.across.append(node)
            for other in node.inputs[:1]:
                add_core(other, axis)
            for other in node.outputs[:1]:
                add_core(other, axis)

    def backward(key, axis):
        node = graph.producer(key)
        assert node is not None  # model inputs were refused by check_ends
        handler, role = _handler(node, source_name, graph, axis)
        if handler.acts_across(node.op, node, graph, axis):
            add_across(node, axis)
            return
        declared = _declared_axis(handler, node, graph)
        if role == H.UNITS:
            out_axis = handler.output_axis(node.op, node, graph, declared)
            check_axis(node, key, axis, out_axis, "writes")
            add_writer(handler, node, key, axis)
        elif role == H.SAME:
            in_axis = declared
            if in_axis is None:  # the input axis that lands on ``axis``
                rank = H.input_rank(node, graph)
                in_axis = next(
                    (
                        a
                        for a in [axis, *range(1 - rank, 0)]
                        if handler.output_axis(node.op, node, graph, a) == axis
                    ),
                    axis,
                )
            out_axis = handler.output_axis(node.op, node, graph, in_axis)
            check_axis(node, key, axis, out_axis, "writes")
            if visit(node, "pass"):
                group.passes.append(node)
                positions = handler.channel_inputs(node.op, node, graph)
                if positions:
                    add_rule(handler, node, node.inputs[positions[0]], in_axis)
                for position in positions:
                    add_core(node.inputs[position], in_axis)
                for other in node.outputs:
                    add_core(other, out_axis)
                for call in shared_calls(handler, node, graph):
                    for position in positions:
                        add_core(
                            call.inputs[same_argument(node, position, call)], in_axis
                        )
                    for other in call.outputs:
                        add_core(other, out_axis)
        else:
            raise H.unsupported(
                node.op,
                "derives a new channel layout (e.g. flattening or "
                f"concatenating), and its output is merged with the channels of "
                f"'{source_name}'; such merges are not supported.",
            )

    def forward(key, axis, is_derived):
        for node, position in graph.consumers(key):
            handler, role = _handler(node, source_name, graph, axis)
            if not is_derived and handler.acts_across(node.op, node, graph, axis):
                add_across(node, axis)
                continue
            declared = _declared_axis(handler, node, graph)
            in_axis = axis if declared is None else declared
            if role == H.UNITS and position in handler.coupled_inputs(
                node.op, node, graph
            ):
                # The layer's own units start from these channels: it is
                # widened with them (a decoder LSTM whose initial state is
                # the encoder's).
                if is_derived:
                    raise H.unsupported(
                        node.op,
                        f"starts from a state whose channels are a layout "
                        f"(Concatenate, ...) derived from those of "
                        f"'{source_name}'; its units cannot follow it.",
                    )
                check_axis(node, key, axis, in_axis, "reads")
                add_writer(handler, node, key, axis)
                continue
            if role == H.UNITS:
                if position not in handler.reads(node.op, node):
                    raise H.unsupported(
                        node.op,
                        f"receives the channels of '{source_name}' as argument "
                        f"{position}, which it cannot adjust.",
                    )
                check_axis(node, key, axis, in_axis, "reads")
                if visit(node, f"reader{position}"):
                    group.readers.append((node, position))
                    add_rule(handler, node, key, axis)
                    for other in shared_calls(handler, node, graph):
                        other_position = same_argument(node, position, other)
                        add_sibling_input(
                            other.inputs[other_position], axis, is_derived
                        )
                continue
            positions = handler.channel_inputs(node.op, node, graph)
            if position not in positions:
                raise H.unsupported(
                    node.op,
                    f"receives the channels of '{source_name}' as argument "
                    f"{position}, which it cannot adjust.",
                )
            check_axis(node, key, axis, in_axis, "reads")
            out_axis = handler.output_axis(node.op, node, graph, in_axis)
            if role == H.DERIVED:
                if shared_calls(handler, node, graph):
                    raise H.unsupported(
                        node.op,
                        "is shared and derives a channel layout (e.g. a "
                        "depthwise multiplier); such a shared layer is not "
                        "widened.",
                    )
                if visit(node, "layout"):
                    group.layouts.append(node)
                    derived.extend((k, out_axis) for k in node.outputs)
                continue
            if not visit(node, "pass"):
                continue
            group.passes.append(node)
            add_rule(handler, node, key, axis)
            for other in shared_calls(handler, node, graph):
                other_position = same_argument(node, position, other)
                add_sibling_input(other.inputs[other_position], axis, is_derived)
            if is_derived:
                if len([p for p in positions if p != position]) > 0:
                    raise H.unsupported(
                        node.op,
                        "merges a tensor whose channel layout was derived (by "
                        "Flatten, Concatenate, ...) from the channels of "
                        f"'{source_name}'; such merges are not supported.",
                    )
                derived.extend((k, out_axis) for k in node.outputs)
                continue
            for other in positions:
                if other != position:
                    add_core(node.inputs[other], in_axis)
            core.extend((k, out_axis) for k in node.outputs)

    while core or derived:
        is_derived = not core
        key, axis = core.pop() if core else derived.pop()
        if key in group.core or key in group.derived:
            if group.axes[key] != axis and not (is_derived and key in group.core):
                raise ValueError(
                    f"The channels of '{source_name}' reach the tensor of shape "
                    f"{graph.shape(key)} from '{_producer_name(graph, key)}' on "
                    f"two axes ({group.axes[key]} and {axis}, counted from the "
                    "end); such a widening is not supported."
                )
            continue
        (group.derived if is_derived else group.core).add(key)
        group.axes[key] = axis
        check_ends(key)
        if not is_derived:
            backward(key, axis)
        forward(key, axis, is_derived)
    return group
