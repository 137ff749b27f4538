"""What a coupling walk finds: the `ChannelGroup` and the `Edge`s of its layouts.

`keras_net2net.surgery.coupling.find_group` walks the graph; this module only
holds what it finds (see the roles in the package docstring) and the one
computation on it: the mapping of every group tensor (`ChannelGroup.mappings`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from keras_net2net.surgery.graph import Node
from keras_net2net.transforms import MappingRule
from keras_net2net.transforms import WidthMapping

# How an edge carries the mapping to the tensor it reaches.
SAME = "same"  # a pass-through: the mapping of its source
DERIVE = "derive"  # a layout crossed forwards: `LayoutHandler.derive`
SPLIT = "split"  # a split crossed backwards, from its output


@dataclasses.dataclass(frozen=True)
class Edge:
    """How the group's channels reach a derived tensor: the node crossed and
    the mapping it carries.

    Attributes:
        node: the node crossed.
        carry: `SAME` (a pass-through on a derived tensor, crossed either
            way: the mapping of ``source``), `DERIVE` (a layout crossed
            forwards: `LayoutHandler.derive` of its inputs' mappings) or
            `SPLIT` (a split crossed backwards from its output ``source``:
            that mapping repeated and expanded over the split's positions,
            `LayoutHandler.split_positions`).
        source: the tensor whose mapping is carried (None for `DERIVE`:
            every input's).
    """

    node: Node
    carry: str
    source: int | None = None

    def mapping(self, group: ChannelGroup, found: dict) -> WidthMapping | None:
        """The mapping this edge carries (its sources': `ChannelGroup.mapping_of`)."""
        node, op, handler = self.node, self.node.op, group.handler(self.node)
        if self.carry == DERIVE:
            inputs = [group.mapping_of(key, found) for key in node.inputs]
            return handler.derive(op, node, group.graph, inputs)
        assert self.source is not None  # SAME and SPLIT carry from one tensor
        source = group.mapping_of(self.source, found)
        if self.carry == SPLIT and source is not None:
            axis = group.axes[self.source]
            positions = handler.split_positions(op, node, group.graph, axis)
            assert positions is not None  # checked by the walk
            outer, inner = positions
            return source.repeat(inner).expand(outer)
        return source


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
        splits: layout nodes crossed backwards (a Reshape that splits a
            Dense's units into positions and channels).
        rules: ``(node, MappingRule, key)``: what a layer needs of the mapping
            of the group tensor ``key`` it reads (`Handler.mapping_rule`).
        edges: ``{derived tensor key: Edge}``: how the channels reach it.
        handlers: ``{node index: handler}``: the handler that plays each
            member node (`Handler.at`, asked once by the walk).
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
    splits: list = dataclasses.field(default_factory=list)
    rules: list = dataclasses.field(default_factory=list)
    edges: dict = dataclasses.field(default_factory=dict)
    handlers: dict = dataclasses.field(default_factory=dict)

    def handler(self, node: Node) -> Any:
        """The handler that plays member ``node`` in this group."""
        return self.handlers[node.index]

    def mappings(self, mapping: WidthMapping) -> dict[int, WidthMapping]:
        """The mapping of every group tensor, given the core ``mapping``.

        Core tensors have ``mapping``; a derived tensor the one its `Edge`
        carries from its sources. A layout's input outside the group keeps
        its width (None to `LayoutHandler.derive`: identity); a derived
        tensor reached from another call of a shared layer, with no edge,
        has none.

        Returns:
            ``{tensor key: WidthMapping}``.
        """
        found = {key: mapping for key in self.core}
        for key in self.derived:
            self.mapping_of(key, found)
        return found

    def mapping_of(self, key: int, found: dict) -> WidthMapping | None:
        """The mapping of tensor ``key``, carried through its `Edge` from the
        mappings ``found`` so far (added to them); None outside the group.

        (A method, not a recursive closure: a closure that calls itself is a
        reference cycle, which would keep the graph's nodes alive until the
        next garbage collection, after in-place growth prunes them.)
        """
        if key not in found and key in self.edges:
            carried = self.edges[key].mapping(self, found)
            if carried is not None:
                found[key] = carried
        return found.get(key)

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
        nodes += self.across + self.layouts + self.splits
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
            "  splits (their input's units are the channels at each position): "
            + names(self.splits),
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
