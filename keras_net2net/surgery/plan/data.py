"""What a graph plan inserts (`Insertion`, `Call`), and helpers to plan one.

The `Plan` itself is in `keras_net2net.surgery.plan.graph_plan`.
"""

import dataclasses
from typing import Any

import numpy as np

from keras_net2net.surgery import handlers as H

OUT = "out"  # the ref of the output an insertion follows


@dataclasses.dataclass
class Call:
    """One call of a new layer in an `Insertion`.

    Tensors are named by *refs*: `OUT` (the output of the operation the
    insertion follows), the name of an earlier call's layer (its output) or
    ``"<name>/<i>"`` (its ``i``-th flat output).

    Attributes:
        layer: the new layer.
        args: the positional arguments, a structure of refs (``(OUT,)``;
            ``([OUT, "branch"],)`` for an Add).
        like: None, or an original graph `Node` whose call is repeated (its
            keyword arguments and masks included) with the inputs in ``fill``
            replaced.
        fill: ``{position in like's flat inputs: ref}``.
    """

    layer: Any
    args: tuple = ()
    like: Any = None
    fill: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Insertion:
    """New operations called on the output of an existing one.

    Attributes:
        calls: the `Call`s, in order.
        output: the ref of the insertion's output.
        layers: ``[(new layer, values)]`` for every new layer; ``values`` is
            None or ``{variable name: array or initializer}`` assigned once
            the layer is built (an initializer is called with the variable's
            shape).
        sequential: the layers in order, if they form a plain chain (the only
            insertion a Sequential model can hold), else None.
        index: for an operation with several outputs (a recurrent layer with
            ``return_state=True``), the output the insertion follows; the
            others pass on unchanged. None: the operation's only output.
    """

    calls: list
    output: str
    layers: list
    sequential: list | None = None
    index: int | None = None

    @classmethod
    def chain(cls, layers: list) -> "Insertion":
        """Layers called one after the other on the output (``[(layer, values)]``)."""
        calls, ref = [], OUT
        for layer, _ in layers:
            calls.append(Call(layer, (ref,)))
            ref = layer.name
        return cls(calls, ref, layers, [layer for layer, _ in layers])


@dataclasses.dataclass
class Site:
    """Where a deepening inserts: after ``target``'s call ``node``.

    Attributes:
        graph: the model's `LayerGraph`.
        target: the layer the new layers follow.
        node: its call they follow (a shared layer's first).
        handler: its handler (None for an unsupported type).
        taken: the layer names already in the model (new names avoid them).
    """

    graph: Any
    target: Any
    node: Any
    handler: Any
    taken: set


def check_rebuildable(graph):
    """Refuse a model with a layer called inside a nested model and outside it.

    A KerasHub task model calls its backbone's tied embedding again for the
    logits. Its grown copy would be a plain Functional model in which that
    layer belongs to two nesting levels, and Keras cannot load such a model
    once saved: the user's work would be lost.
    """
    for op in graph.layers:
        paths = {tuple(id(m) for m in node.path) for node in graph.calls(op)}
        if len(paths) > 1 and getattr(op, "weights", None):
            raise H.unsupported(
                op,
                f"is called both inside a nested model and in '{graph.model.name}' "
                "itself (a tied embedding); a grown copy would be a plain "
                "Functional model that Keras cannot load again once saved. Grow "
                "a KerasHub task model in its config vocabulary "
                "(widen(model, 'hidden_dim', ...), deepen(model, "
                "after='transformer_layer_<i>')) or grow its backbone.",
            )


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
