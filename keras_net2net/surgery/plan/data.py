"""What a plan is: the changes of one growth request, and helpers to build one."""

import dataclasses
from typing import Any

import numpy as np

from keras_net2net.surgery import handlers as H


@dataclasses.dataclass
class Insertion:
    """New operations called on the output of an existing one.

    Attributes:
        build: function ``(output, tensors) -> new output``; ``tensors`` maps
            the keys of the original graph to the new graph's tensors.
        layers: ``[(new layer, values)]`` for every new layer; ``values`` is
            None, a dict or a function of the built layer giving
            ``{variable name: array}`` to assign once built.
        sequential: the layers in order, if they form a plain chain (the only
            insertion a Sequential model can hold), else None.
    """

    build: Any
    layers: list
    sequential: list | None = None


@dataclasses.dataclass
class Plan:
    """Every change of one growth operation.

    Attributes:
        description: one line saying what the operation does.
        changes: ``id(op) -> (op, LayerChange)`` for operations rebuilt.
        insertions: ``id(op) -> [Insertion]`` of operations called after ``op``.
        copies: ``id(new layer) -> old layer`` for inserted layers that copy
            an existing one's weights (their optimizer state is copied too).
        details: lines describing every change (a dry run).
    """

    description: str
    changes: dict = dataclasses.field(default_factory=dict)
    insertions: dict = dataclasses.field(default_factory=dict)
    copies: dict = dataclasses.field(default_factory=dict)
    details: list = dataclasses.field(default_factory=list)

    def change(self, op, change):
        if change is None:
            return
        if id(op) in self.changes:
            self.changes[id(op)][1].merge(change)
        else:
            self.changes[id(op)] = (op, change)

    def describe(self) -> list[str]:
        """The dry-run lines: what planning found, then one line per change."""
        return [*self.details, "changes:", *self.describe_changes()]

    def describe_changes(self):
        """One line per changed operation: config entries and weight transforms."""
        lines = []
        for op, change in self.changes.values():
            parts = []
            config = op.get_config()
            for key, value in change.full_config().items():
                parts.append(f"{key} {config.get(key)!r} -> {value!r}")
            for variable, chain in change.transforms.items():
                steps = ", ".join(
                    ("copied" if t.side == "out" else "copied and divided")
                    + f" along axis {t.axis}"
                    for t in chain
                )
                parts.append(f"{variable} {steps}")
            for variable in change.values:
                parts.append(f"{variable} set")
            lines.append(f"  {H.describe(op)}: " + "; ".join(parts))
        for insertions in self.insertions.values():
            for insertion in insertions:
                for layer, _ in insertion.layers:
                    lines.append(f"  new {H.describe(layer)}")
        return lines


def seed_stream(seed):
    rng = np.random.default_rng(seed)
    while True:
        yield int(rng.integers(0, 2**31 - 1))


def single_call(graph, op, what):
    nodes = graph.calls(op)
    if len(nodes) != 1:
        raise H.unsupported(
            op, f"is shared (called {len(nodes)} times); shared layers cannot {what}."
        )
    return nodes[0]


def unique_name(base, taken):
    name, counter = base, 1
    while name in taken:
        name = f"{base}_{counter}"
        counter += 1
    taken.add(name)
    return name


def output_swap(graph, node, new_name):
    """``(name of the last new operation, new name of the original or None)``.

    Output names come from the operations that produce the outputs, and
    losses and metrics may be keyed by them. When ``node`` produces a model
    output, the last inserted operation takes over its name and the original
    is renamed to the name the new operation would have had.
    """
    if any(graph.is_output(k) for k in node.outputs):
        return node.op.name, new_name
    return new_name, None


def insert_after(plan, node, insertion, rename):
    plan.insertions.setdefault(id(node.op), []).append(insertion)
    if rename is not None:
        plan.change(node.op, H.LayerChange(config={"name": rename}))
        plan.details.append(
            f"'{node.op.name}' produces a model output, so the inserted layer "
            f"takes its name and the original is renamed '{rename}'."
        )
