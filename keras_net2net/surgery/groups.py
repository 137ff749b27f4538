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
from keras_net2net.transforms import WidthMapping


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
        writers: nodes whose output units are widened.
        readers: ``(node, position)`` pairs that absorb widened inputs.
        passes: pass-through nodes (merges included) on group tensors.
        layouts: layout nodes (Flatten, Concatenate, ...).
        uniform: ``(node, reason)`` of layers that need every channel copied
            equally often (LayerNormalization over the axis).
    """

    graph: object
    width: int
    core: set = dataclasses.field(default_factory=set)
    derived: set = dataclasses.field(default_factory=set)
    writers: list = dataclasses.field(default_factory=list)
    readers: list = dataclasses.field(default_factory=list)
    passes: list = dataclasses.field(default_factory=list)
    layouts: list = dataclasses.field(default_factory=list)
    uniform: list = dataclasses.field(default_factory=list)

    @property
    def merges(self) -> list[Node]:
        """Pass-through nodes that merge several group inputs (Add, ...)."""
        return [n for n in self.passes if self._channel_count(n) > 1]

    def _channel_count(self, node):
        return sum(1 for k in node.inputs if k in self.core or k in self.derived)

    def layers(self) -> list[Any]:
        """Every operation of the group, in graph order."""
        nodes = self.writers + [n for n, _ in self.readers] + self.passes + self.layouts
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
        ]
        if self.uniform:
            lines.append(
                "  needs equal copies of every channel (new width a multiple of "
                f"{self.width}): {names([n for n, _ in self.uniform])}"
            )
        return "\n".join(lines)

    def __str__(self):
        return self.summary()


def _handler(node, source_name, graph):
    op = node.op
    handler = H.get_handler(op)
    if handler is None:
        raise H.unsupported(
            op,
            f"is on the path of the channels of '{source_name}', but "
            f"{type(op).__name__} is not supported by keras-net2net; register a "
            "handler with keras_net2net.register_handler.",
        )
    handler.check(op)
    if handler.has_state and len(graph.calls(op)) > 1:
        raise H.unsupported(
            op,
            f"is shared (called {len(graph.calls(op))} times) and is on the path "
            f"of the channels of '{source_name}'; shared layers with weights "
            "cannot be widened.",
        )
    return handler, handler.role_of(op, node, graph)


def _producer_name(graph, key):
    node = graph.producer(key)
    return node.op.name if node is not None else "the model input"


def find_group(
    graph: LayerGraph, seed: int, source_name: str, *, check_uniform: bool = True
) -> ChannelGroup:
    """The `ChannelGroup` of the tensor ``seed`` (a key of ``graph``).

    Args:
        graph: a `LayerGraph`.
        seed: key of a tensor on the axis to widen.
        source_name: name of the layer being widened (for messages).
        check_uniform: collect layers that need equal copies. Defaults to True.

    Raises:
        ValueError: naming the first operation that cannot take part.
    """
    group = ChannelGroup(graph, graph.width(seed))
    core, derived = [seed], []
    seen_nodes = set()

    def visit(node, role_name):
        key = (node.index, role_name)
        if key in seen_nodes:
            return False
        seen_nodes.add(key)
        return True

    def add_core(key):
        width = graph.width(key)
        if width == group.width:
            core.append(key)
        elif width != 1:  # 1: broadcast over the channels
            producer = _producer_name(graph, key)
            raise ValueError(
                f"Tensor of shape {graph.shape(key)} from '{producer}' is merged "
                f"with the {group.width} channels of '{source_name}' but has a "
                "different channel width."
            )

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

    def backward(key):
        node = graph.producer(key)
        assert node is not None  # model inputs were refused by check_ends
        handler, role = _handler(node, source_name, graph)
        if role == H.UNITS:
            if visit(node, "writer"):
                group.writers.append(node)
        elif role == H.SAME:
            if visit(node, "pass"):
                group.passes.append(node)
                _uniform(handler, node)
                for position in handler.channel_inputs(node.op, node, graph):
                    add_core(node.inputs[position])
        else:
            raise H.unsupported(
                node.op,
                "derives a new channel layout (e.g. flattening or "
                f"concatenating), and its output is merged with the channels of "
                f"'{source_name}'; such merges are not supported.",
            )

    def forward(key, is_derived):
        for node, position in graph.consumers(key):
            handler, role = _handler(node, source_name, graph)
            if role == H.UNITS:
                if position not in handler.reads(node.op, node):
                    raise H.unsupported(
                        node.op,
                        f"receives the channels of '{source_name}' as argument "
                        f"{position}, which it cannot adjust.",
                    )
                if visit(node, f"reader{position}"):
                    group.readers.append((node, position))
                continue
            positions = handler.channel_inputs(node.op, node, graph)
            if position not in positions:
                raise H.unsupported(
                    node.op,
                    f"receives the channels of '{source_name}' as argument "
                    f"{position}, which it cannot adjust.",
                )
            if role == H.DERIVED:
                if visit(node, "layout"):
                    group.layouts.append(node)
                    derived.extend(node.outputs)
                continue
            if not visit(node, "pass"):
                continue
            group.passes.append(node)
            _uniform(handler, node)
            if is_derived:
                if len([p for p in positions if p != position]) > 0:
                    raise H.unsupported(
                        node.op,
                        "merges a tensor whose channel layout was derived (by "
                        "Flatten, Concatenate, ...) from the channels of "
                        f"'{source_name}'; such merges are not supported.",
                    )
                derived.extend(node.outputs)
                continue
            for other in positions:
                if other != position:
                    add_core(node.inputs[other])
            core.extend(node.outputs)

    def _uniform(handler, node):
        reason = handler.uniform_copies(node.op, node, graph)
        if reason and check_uniform:
            group.uniform.append((node, reason))

    while core or derived:
        if core:
            key = core.pop()
            if key in group.core:
                continue
            group.core.add(key)
            check_ends(key)
            backward(key)
            forward(key, False)
        else:
            key = derived.pop()
            if key in group.derived or key in group.core:
                continue
            group.derived.add(key)
            check_ends(key)
            forward(key, True)
    return group


def group_mappings(
    group: ChannelGroup, mapping: WidthMapping
) -> dict[int, WidthMapping]:
    """The mapping of every group tensor, given the core ``mapping``.

    Derived tensors are computed in graph order through their layout nodes
    (and the pass-throughs on derived tensors). Inputs of a layout node that
    are not in the group keep their width (identity).

    Returns:
        ``{tensor key: WidthMapping}``.
    """
    graph = group.graph
    mappings = {key: mapping for key in group.core}
    nodes = sorted(
        [n for n in group.layouts]
        + [n for n in group.passes if any(k in group.derived for k in n.outputs)],
        key=lambda n: n.index,
    )
    for node in nodes:
        inputs = [mappings.get(k) for k in node.inputs]
        if node in group.layouts:
            handler = H.handler_for(node.op)
            out = handler.derive(node.op, node, graph, inputs)
        else:
            out = next(m for m in inputs if m is not None)
        for key in node.outputs:
            mappings[key] = out
    return mappings


def identity_if_missing(graph, key, mappings):
    mapping = mappings.get(key)
    return mapping if mapping is not None else WidthMapping.identity(graph.width(key))
