"""Deepening after a subclassed block: a new instance of the user's class.

``deepen(model, after="mixer_block")`` where ``mixer_block`` is a layer of
the user's own class (keras.io's ``MLPMixerLayer``, a pre-norm
``TransformerBlock``) inserts a copy of it, built the way growth copies any
untouched layer (`keras_net2net.surgery.apply.copy_unchanged`: from its
config, or from the constructor arguments Keras recorded), so the grown
model holds two blocks of that class. Its weights are those of the block,
and the layer that ends each residual branch is zeroed, so the copy starts
as the identity: that needs the block to be a chain of residual sub-blocks
``x + f(x)`` from its input to its output (pre-norm), found by tracing its
``call`` (`keras_net2net.surgery.inline.trace_layer`). `plan_deepen_or_copy` is the
`Deepen` planner of `keras_net2net.surgery.dispatch`: this for a subclassed
target, `keras_net2net.surgery.plan.plan_deepen` for any other.

A block that normalises after its last Add (post-norm, keras.io's text
``TransformerBlock``) has no zeroed form that is the identity: the exact
request is refused with the reason, and ``method="random"`` inserts the copy
with nothing zeroed (the stacking operator: declared not function-preserving).
"""

import keras

from keras_net2net.requests import COPY
from keras_net2net.surgery import handlers as H
from keras_net2net.surgery.apply import copy_unchanged
from keras_net2net.surgery.graph import LayerGraph
from keras_net2net.surgery.handlers import is_opaque
from keras_net2net.surgery.handlers.merging import is_residual_add
from keras_net2net.surgery.inline import trace_layer
from keras_net2net.surgery.plan import plan_deepen
from keras_net2net.surgery.plan.blocks import _branch
from keras_net2net.surgery.plan.blocks import _zero_point
from keras_net2net.surgery.plan.data import OUT
from keras_net2net.surgery.plan.data import Call
from keras_net2net.surgery.plan.data import Insertion
from keras_net2net.surgery.plan.data import Site
from keras_net2net.surgery.plan.data import check_rebuildable
from keras_net2net.surgery.plan.data import insert_after
from keras_net2net.surgery.plan.data import output_swap
from keras_net2net.surgery.plan.data import single_call
from keras_net2net.surgery.plan.data import unique_name
from keras_net2net.surgery.plan.graph_plan import Plan


def residual_chain(graph):
    """The layers that end each residual branch of a traced block, from its
    output back to its input, or ``(None, why not)``.

    The block must be ``x -> x + f1(x) -> ... -> x + fn(...)``: its output
    the last Add, each Add's shortcut the previous Add or the block's input.
    """
    (start,), (key,) = graph.inputs, graph.outputs
    zeroed: list = []
    while key != start:
        node = graph.producer(key)
        if node is None or not is_residual_add(node.op):
            op = None if node is None else node.op
            what = "nothing" if op is None else f"'{op.name}' ({type(op).__name__})"
            if zeroed:
                where = "its residual sub-blocks are not chained input to output"
                where += f" ({what} comes between two of them)"
            elif op is not None and "Normalization" in type(op).__name__:
                where = (
                    f"its output is normalised after its last residual Add by "
                    f"{what} (post-norm), so no copy of it with zeroed branches "
                    "is the identity"
                )
            else:
                where = f"its output comes from {what}, not from a residual Add"
            return None, where
        try:
            shortcut, end, branch = _branch(graph, node, across_models=True)
            zeroed.append(_zero_point(graph, branch, end, node.op))
        except ValueError as error:
            return None, str(error).rstrip(".")
        key = shortcut
    if not zeroed:
        return None, "its output is its input"
    return zeroed, None


def plan_deepen_or_copy(model, request, *, layer=None):
    """Plan a `Deepen` request: a copy of a subclassed target after itself
    (`plan_subclassed_copy`), else `keras_net2net.surgery.plan.plan_deepen`.

    Args:
        model: a built Sequential or Functional model.
        request: the `keras_net2net.Deepen`.
        layer: the layer object ``request.after`` names, where the caller
            has it. Defaults to None.

    Returns:
        The resolved `Plan`; raises before anything is changed.
    """
    after = request.after
    if not request.residual and not isinstance(after, tuple):
        graph = LayerGraph(model)
        target = graph.get(after if layer is None else layer, argument="after")
        if is_opaque(target) and not isinstance(target, keras.layers.Lambda):
            check_rebuildable(graph)
            node = single_call(graph, target, "be followed by a copy of itself")
            site = Site(graph, target, node, None, graph.names())
            if request.name is not None and request.name in site.taken:
                raise ValueError(
                    f"`name`: model '{model.name}' already has a layer named "
                    f"'{request.name}'."
                )
            return plan_subclassed_copy(site, request).resolve()
    return plan_deepen(model, request, layer=layer)


def plan_subclassed_copy(site, request):
    """Insert a copy of the subclassed layer ``site.target`` after it."""
    graph, target, node = site.graph, site.target, site.node
    if request.blocks not in (None, 1):
        raise H.unsupported(
            target,
            f"is a block of its own class; `blocks`={request.blocks} is not "
            "supported for it (deepen after it once per new block).",
        )
    shapes = [graph.shape(k) for k in node.inputs + node.outputs]
    if len(node.inputs) != 1 or len(node.outputs) != 1 or shapes[0] != shapes[1]:
        raise H.unsupported(
            target,
            "has no handler; deepen() copies a layer of your own class after "
            "itself when it takes one tensor and returns one of the same "
            f"shape. Received: inputs {shapes[: len(node.inputs)]}, outputs "
            f"{shapes[len(node.inputs) :]}.",
        )
    zero = request.method == H.IDENTITY
    zeroed: list = []
    if zero:  # which layers end the residual branches (method="random": none)
        found, why = residual_chain(LayerGraph(trace_layer(target, node.raw)))
        if found is None:
            raise H.unsupported(
                target,
                f"cannot be followed by an exact copy of itself: {why}. Pass "
                "method='random' to insert a copy with nothing zeroed (the "
                "stacking operator; it changes the function).",
            )
        zeroed = found
    new_name = unique_name(request.name or f"{target.name}_copy", site.taken)
    final_name, rename = output_swap(graph, node, new_name)
    try:
        clone = copy_unchanged(target, final_name)
    except ValueError as error:  # a plain refusal: tracing it changes nothing
        raise H.unsupported(
            target,
            "cannot be copied after itself: a new instance can be built "
            "neither from its config nor from the arguments Keras recorded. "
            "Make its get_config return every constructor argument (and "
            "accept **kwargs in __init__).",
        ) from error
    _check_same_weights(target, clone, graph.tensor(node.inputs[0]))
    values = _values(target, zeroed, request.init)
    # The same call on the stream (keyword arguments kept); in a Sequential
    # model, the next layer.
    insertion = Insertion(
        [Call(clone, like=node, fill={0: OUT})], clone.name, [], sequential=[clone]
    )
    insertion.layers.append((clone, values))
    names = ", ".join(f"'{z.op.name}'" for z in reversed(zeroed))
    plan = Plan(
        f"deepen after '{target.name}': insert '{final_name}' (a new "
        f"{type(target).__name__}, {request.init}; "
        + (f"{names} zeroed" if zero else "nothing zeroed, not function-preserving")
        + ")"
    )
    if zero:
        plan.details.append(
            f"  {type(target).__name__} is {len(zeroed)} residual sub-block(s) "
            "x + f(x) from input to output: each f's last layer starts at zero"
        )
    if request.init == COPY:
        plan.copies[id(clone)] = target
    insert_after(plan, node, insertion, rename)
    return plan


def _check_same_weights(target, clone, tensor):
    """Build ``clone`` on ``tensor``'s spec and compare its weights with
    ``target``'s (the copy creates them in the same order)."""
    old = [(v.name, tuple(v.shape)) for v in target.weights]
    try:
        clone(keras.KerasTensor(tensor.shape, dtype=tensor.dtype))
    except Exception as error:  # noqa: BLE001 - any failure of user code
        raise H.unsupported(
            target,
            "cannot be copied exactly: a copy built from its config (or its "
            f"constructor arguments) fails on its input ({type(error).__name__}: "
            f"{error}). Make its get_config return every constructor argument.",
        ) from error
    new = [(v.name, tuple(v.shape)) for v in clone.weights]
    if old != new:
        raise H.unsupported(
            target,
            "cannot be copied exactly: a copy built from its config (or its "
            f"constructor arguments) has the weights {new}, not its own {old}. "
            "Make its get_config return every constructor argument.",
        )


def _values(target, zeroed, init):
    """``{position in weights: array}`` of the copy: the block's weights (or
    its fresh ones with ``init="random"``), the zeroed layers' at zero."""
    position = {id(v): i for i, v in enumerate(target.weights)}
    values = {}
    if init == COPY:
        values = {
            i: keras.ops.convert_to_numpy(v) for i, v in enumerate(target.weights)
        }
    for node in zeroed:
        op = node.op
        names = H.variable_positions(op)
        handler = H.handler_for(op)
        for key, value in (handler.zero_change(op) or {}).items():
            values[position[id(op.weights[names[key]])]] = value
    return values or None
