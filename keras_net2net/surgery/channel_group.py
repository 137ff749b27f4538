"""The data of a coupling group: every operation that shares one channel axis.

`keras_net2net.surgery.groups.find_group` finds a group from the graph;
this module only holds what it finds (see the roles there).
"""

import dataclasses
from typing import Any

from keras_net2net.surgery.graph import Node
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
        splits: layout nodes crossed backwards (a Reshape that splits a
            Dense's units into positions and channels).
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
    splits: list = dataclasses.field(default_factory=list)
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
