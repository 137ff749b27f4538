"""The coupling walk: from a widened layer's output to every layer on its axis.

`find_group` visits tensors from three work lists, core first (see the
package docstring for the roles):

* a **core** tensor is crossed backwards to its producer (`_Walk.backward`:
  a writer, a pass-through, or a split) and forwards to its consumers;
* a **split input** (a derived tensor reached backwards through a split) is
  crossed backwards to the writer that writes it in the split's layout
  (`_Walk.split_writer`) and forwards;
* a **derived** tensor (after a layout) only forwards.

Crossing a consumer (`_Walk.forward`) asks its handler (`Handler.at`) what
part it plays there: a units layer reads the channels (or starts from them:
a recurrent layer's initial state), a pass-through keeps them on its output
(a merge adds its other inputs to the core), a layout derives its output's.
Every derived tensor keeps the `Edge` that reached it.
"""

from __future__ import annotations

from keras_net2net.surgery import handlers as H
from keras_net2net.surgery.coupling.axes import declared_axis
from keras_net2net.surgery.coupling.axes import output_axis
from keras_net2net.surgery.coupling.group import DERIVE
from keras_net2net.surgery.coupling.group import SAME
from keras_net2net.surgery.coupling.group import SPLIT
from keras_net2net.surgery.coupling.group import ChannelGroup
from keras_net2net.surgery.coupling.group import Edge
from keras_net2net.surgery.graph import LayerGraph
from keras_net2net.surgery.graph import Node
from keras_net2net.surgery.sharing import same_argument
from keras_net2net.surgery.sharing import shared_calls

CORE, DERIVED, SPLIT_INPUT = "core", "derived", "split input"


def find_group(
    graph: LayerGraph, seed: Node, source_name: str, axis: int | None = None
) -> ChannelGroup:
    """The `ChannelGroup` of the channels that node ``seed`` writes.

    Args:
        graph: a `LayerGraph`.
        seed: the node whose output channels are widened (every output its
            handler lists in `Handler.channel_outputs` joins the group).
        source_name: name of the layer being widened (for messages).
        axis: the channel axis of the seed's outputs, counted from the end
            (None: `output_axis`).

    Raises:
        ValueError: naming the first operation that cannot take part.
    """
    handler = H.handler_for(seed.op)
    if axis is None:
        axis = output_axis(graph, seed)
    keys = [seed.outputs[i] for i in handler.channel_outputs(seed.op, seed, graph)]
    walk = _Walk(graph, source_name, ChannelGroup(graph, graph.width(keys[0], axis)))
    for key in keys:
        walk.add_core(key, axis, writer=seed)
    return walk.run()


class _Walk:
    """One walk: the group so far, the tensors still to visit, the messages."""

    def __init__(self, graph, source_name, group):
        self.graph = graph
        self.source = source_name
        self.group = group
        # Tensors to visit, ``(key, axis, edge)``, each list before the next.
        self.todo: dict[str, list] = {CORE: [], SPLIT_INPUT: [], DERIVED: []}
        self.seen = set()  # (node index, the part it plays)

    def run(self) -> ChannelGroup:
        while any(self.todo.values()):
            kind = next(k for k, entries in self.todo.items() if entries)
            key, axis, edge = self.todo[kind].pop()
            if kind == SPLIT_INPUT:
                self.visit_split_input(key, axis, edge)
            else:
                self.visit(key, axis, edge, kind == DERIVED)
        return self.group

    # Tensors.

    def visit(self, key, axis, edge, is_derived):
        group = self.group
        if key in group.core or key in group.derived:
            self.keep_edge(key, edge)
            if group.axes[key] != axis and not (is_derived and key in group.core):
                raise ValueError(
                    f"The channels of '{self.source}' reach the tensor of shape "
                    f"{self.graph.shape(key)} from '{self.producer_name(key)}' "
                    f"on two axes ({group.axes[key]} and {axis}, counted from "
                    "the end); such a widening is not supported."
                )
            return
        self.record(key, axis, edge, is_derived)
        if not is_derived:
            self.backward(key, axis)
        self.forward(key, axis, is_derived)

    def visit_split_input(self, key, axis, edge):
        if key in self.group.derived:
            self.keep_edge(key, edge)
        else:
            self.record(key, axis, edge, True)
            self.split_writer(key, axis)
            self.forward(key, axis, True)

    def record(self, key, axis, edge, is_derived):
        group = self.group
        (group.derived if is_derived else group.core).add(key)
        group.axes[key] = axis
        self.keep_edge(key, edge)
        self.check_ends(key)

    def keep_edge(self, key, edge):
        # The first edge that reaches a tensor carries its mapping, whenever
        # it is visited: another call of a shared layer may have queued the
        # tensor, with no edge, and reached it first.
        if edge is not None:
            self.group.edges.setdefault(key, edge)

    def add_core(self, key, axis, writer=None):
        width, group = self.graph.width(key, axis), self.group
        if width == group.width:
            self.todo[CORE].append((key, axis, None))
        elif writer is not None:
            raise H.unsupported(
                writer.op,
                f"writes the channels of '{self.source}' and an output of "
                f"{self.axis_text(key, axis)} with {width} channels, not "
                f"{group.width}; its handler's channel_outputs must list only "
                "the outputs on the channel axis.",
            )
        elif width != 1:  # 1: broadcast over the channels
            raise ValueError(
                f"Tensor of shape {self.graph.shape(key)} from "
                f"'{self.producer_name(key)}' is merged with the {group.width} "
                f"channels of '{self.source}' but has a different channel width."
            )

    def add_derived(self, key, axis, edge=None):
        self.todo[DERIVED].append((key, axis, edge))

    def add_input_of_call(self, key, axis, is_derived):
        # Another call of a shared layer reads the same kind of channels: a
        # derived layout (after a Flatten) or the group's own.
        if is_derived:
            self.add_derived(key, axis)
        else:
            self.add_core(key, axis)

    # Nodes.

    def handler_at(self, node, axis):
        handler = H.get_handler(node.op)
        if handler is None:
            raise H.NoHandler(
                f"{H.describe(node.op)} is on the path of the channels of "
                f"'{self.source}', but {type(node.op).__name__} is not supported "
                "by keras-net2net; register a handler with "
                "keras_net2net.register_handler.",
                node.op,
            )
        handler.check(node.op)
        return handler.at(node.op, node, self.graph, axis)

    def first_visit(self, node, part, handler):
        if (node.index, part) in self.seen:
            return False
        self.seen.add((node.index, part))
        self.group.handlers[node.index] = handler
        return True

    def add_rule(self, handler, node, key, axis):
        rule = handler.mapping_rule(node.op, node, self.graph, axis)
        if rule is not None:
            self.group.rules.append((node, rule, key))

    def add_writer(self, handler, node, key, axis):
        if not self.first_visit(node, "writer", handler):
            return
        graph = self.graph
        self.group.writers.append(node)
        for other in shared_calls(handler, node, graph):
            for i in handler.channel_outputs(other.op, other, graph):
                self.add_core(other.outputs[i], axis, writer=other)
        rule = handler.output_rule(node.op, node, graph, axis)
        if rule is not None:
            self.group.rules.append((node, rule, key))
        for i in handler.channel_outputs(node.op, node, graph):
            self.add_core(node.outputs[i], axis, writer=node)
        # Inputs that carry the layer's own units (a recurrent layer's
        # initial state) share its mapping.
        for i in handler.coupled_inputs(node.op, node, graph):
            self.add_core(node.inputs[i], axis)

    def add_across(self, handler, node, axis):
        # Channels on a batch-like axis of the layer: through it, unchanged
        # (so its other calls, if it is shared, are not concerned).
        if self.first_visit(node, "across", handler):
            self.group.across.append(node)
            for other in node.inputs[:1] + node.outputs[:1]:
                self.add_core(other, axis)

    def add_pass(self, handler, node, axis, positions, out_axis):
        """A pass-through crossed backwards: its channel inputs (on ``axis``)
        and outputs (on ``out_axis``), in every call, join the core."""
        if not self.first_visit(node, "pass", handler):
            return
        self.group.passes.append(node)
        if positions:
            self.add_rule(handler, node, node.inputs[positions[0]], axis)
        for position in positions:
            self.add_core(node.inputs[position], axis)
        for other in node.outputs:
            self.add_core(other, out_axis)
        for call in shared_calls(handler, node, self.graph):
            for position in positions:
                self.add_core(call.inputs[same_argument(node, position, call)], axis)
            for other in call.outputs:
                self.add_core(other, out_axis)

    def backward(self, key, axis):
        """Cross the producer of core tensor ``key``."""
        graph = self.graph
        node = graph.producer(key)
        assert node is not None  # model inputs were refused by check_ends
        handler = self.handler_at(node, axis)
        if handler.acts_across(node.op, node, graph, axis):
            self.add_across(handler, node, axis)
            return
        declared = declared_axis(handler, node, graph)
        if handler.role == H.UNITS:
            out_axis = handler.output_axis(node.op, node, graph, declared)
            self.check_axis(node, key, axis, out_axis, "writes")
            self.add_writer(handler, node, key, axis)
        elif handler.role == H.PASS_THROUGH:
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
            self.check_axis(node, key, axis, out_axis, "writes")
            positions = handler.channel_inputs(node.op, node, graph)
            self.add_pass(handler, node, in_axis, positions, out_axis)
        elif handler.split_positions(node.op, node, graph, axis) is not None:
            if shared_calls(handler, node, graph):
                raise H.unsupported(
                    node.op,
                    f"is shared and splits the channels of '{self.source}' out "
                    "of its input's units; such a shared layer is not widened.",
                )
            if self.first_visit(node, "split", handler):
                self.group.splits.append(node)
                edge = Edge(node, SPLIT, source=key)
                self.todo[SPLIT_INPUT].append((node.inputs[0], -1, edge))
        else:
            raise H.unsupported(
                node.op,
                "derives a new channel layout (e.g. flattening or "
                f"concatenating), and its output is merged with the channels of "
                f"'{self.source}'; such merges are not supported.",
            )

    def split_writer(self, key, axis):
        """Cross the producer of a split's input: a units layer writes it in
        the split's layout (through per-channel layers)."""
        graph = self.graph
        node = graph.producer(key)
        assert node is not None  # model inputs were refused by check_ends
        handler = self.handler_at(node, axis)
        declared = declared_axis(handler, node, graph)
        plain = declared in (None, axis) and not shared_calls(handler, node, graph)
        if (
            plain
            and handler.role == H.UNITS
            and handler.channel_outputs(node.op, node, graph) == [0]
        ):
            if self.first_visit(node, "writer", handler):
                self.group.writers.append(node)
            return
        if plain and handler.role == H.PASS_THROUGH:
            positions = handler.channel_inputs(node.op, node, graph)
            if len(positions) == 1 and len(node.outputs) == 1:
                if self.first_visit(node, "pass", handler):
                    self.group.passes.append(node)
                    self.add_rule(handler, node, key, axis)
                    edge = Edge(node, SAME, source=key)
                    self.todo[SPLIT_INPUT].append(
                        (node.inputs[positions[0]], axis, edge)
                    )
                return
        raise H.unsupported(
            node.op,
            f"produces the input of a Reshape that splits it into the channels "
            f"of '{self.source}' at each position; only a Dense or Conv (with "
            "per-channel layers after it) can be widened through such a split.",
        )

    def forward(self, key, axis, is_derived):
        """Cross every consumer of group tensor ``key``."""
        for node, position in self.graph.consumers(key):
            handler = self.handler_at(node, axis)
            if not is_derived and handler.acts_across(node.op, node, self.graph, axis):
                self.add_across(handler, node, axis)
            elif handler.role == H.UNITS:
                self.forward_units(handler, node, position, key, axis, is_derived)
            else:
                self.forward_channels(handler, node, position, key, axis, is_derived)

    def forward_units(self, handler, node, position, key, axis, is_derived):
        graph = self.graph
        declared = declared_axis(handler, node, graph)
        in_axis = axis if declared is None else declared
        if position in handler.coupled_inputs(node.op, node, graph):
            # The layer's own units start from these channels: it is widened
            # with them (a decoder LSTM whose initial state is the encoder's).
            if is_derived:
                raise H.unsupported(
                    node.op,
                    f"starts from a state whose channels are a layout "
                    f"(Concatenate, ...) derived from those of "
                    f"'{self.source}'; its units cannot follow it.",
                )
            self.check_axis(node, key, axis, in_axis, "reads")
            self.add_writer(handler, node, key, axis)
            return
        if position not in handler.reads(node.op, node):
            raise self.cannot_adjust(node, position)
        self.check_axis(node, key, axis, in_axis, "reads")
        if self.first_visit(node, f"reader{position}", handler):
            self.group.readers.append((node, position))
            self.add_rule(handler, node, key, axis)
            for other in shared_calls(handler, node, graph):
                other_key = other.inputs[same_argument(node, position, other)]
                self.add_input_of_call(other_key, axis, is_derived)

    def forward_channels(self, handler, node, position, key, axis, is_derived):
        """A pass-through or a layout reached on its input ``position``."""
        graph = self.graph
        positions = handler.channel_inputs(node.op, node, graph)
        if position not in positions:
            raise self.cannot_adjust(node, position)
        declared = declared_axis(handler, node, graph)
        in_axis = axis if declared is None else declared
        self.check_axis(node, key, axis, in_axis, "reads")
        out_axis = handler.output_axis(node.op, node, graph, in_axis)
        if handler.role == H.LAYOUT:
            self.forward_layout(handler, node, out_axis)
            return
        if not self.first_visit(node, "pass", handler):
            return
        self.group.passes.append(node)
        self.add_rule(handler, node, key, axis)
        for other in shared_calls(handler, node, graph):
            other_key = other.inputs[same_argument(node, position, other)]
            self.add_input_of_call(other_key, axis, is_derived)
        if is_derived:
            if any(p != position for p in positions):
                raise H.unsupported(
                    node.op,
                    "merges a tensor whose channel layout was derived (by "
                    "Flatten, Concatenate, ...) from the channels of "
                    f"'{self.source}'; such merges are not supported.",
                )
            edge = Edge(node, SAME, source=key)
            for out in node.outputs:
                self.add_derived(out, out_axis, edge)
            return
        for other in positions:
            if other != position:
                self.add_core(node.inputs[other], in_axis)
        for out in node.outputs:
            self.todo[CORE].append((out, out_axis, None))

    def forward_layout(self, handler, node, out_axis):
        if (node.index, "split") in self.seen:
            return  # crossed backwards from its output
        if handler.split_positions(node.op, node, self.graph, out_axis):
            raise H.unsupported(
                node.op,
                f"splits the channels of '{self.source}' (its input's last "
                "axis) into several axes; a split is only crossed from its "
                "output: widen the layer that writes its input by a multiple "
                "of the positions, or the channels after it.",
            )
        if shared_calls(handler, node, self.graph):
            raise H.unsupported(
                node.op,
                "is shared and derives a channel layout (e.g. a depthwise "
                "multiplier); such a shared layer is not widened.",
            )
        if self.first_visit(node, "layout", handler):
            self.group.layouts.append(node)
            edge = Edge(node, DERIVE)
            for out in node.outputs:
                self.add_derived(out, out_axis, edge)

    # Checks and messages.

    def check_ends(self, key):
        graph = self.graph
        if graph.is_output(key):
            producer = graph.producer(key)
            op = producer.op if producer is not None else graph.model
            coupled = (
                ""
                if op.name == self.source
                else f", and its channels are coupled with those of '{self.source}'"
            )
            raise H.unsupported(
                op,
                f"produces a model output{coupled}: widening would change the "
                "model's output shape. Widen a layer whose channels are consumed "
                "by a Dense or Conv layer before the output.",
            )
        if graph.is_input(key):
            raise ValueError(
                f"The channels of '{self.source}' are coupled (through a merge) "
                "with a model input, whose width cannot change."
            )

    def check_axis(self, node, key, axis, expected, verb):
        if expected != axis:
            raise H.unsupported(
                node.op,
                f"{verb} its channels on axis "
                f"{H.input_rank(node, self.graph) + expected}, but the channels "
                f"of '{self.source}' are on {self.axis_text(key, axis)} there "
                "(a layer with another data_format or axis).",
            )

    def cannot_adjust(self, node, position):
        return H.unsupported(
            node.op,
            f"receives the channels of '{self.source}' as argument {position}, "
            "which it cannot adjust.",
        )

    def axis_text(self, key, axis):
        rank = len(self.graph.shape(key))
        return f"axis {rank + axis} of shape {self.graph.shape(key)}"

    def producer_name(self, key):
        node = self.graph.producer(key)
        return node.op.name if node is not None else "the model input"
