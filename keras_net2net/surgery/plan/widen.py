"""Planning a widening: the coupling group, one mapping, each member's change.

`plan_widen` finds the coupling group of the widened layer
(`keras_net2net.surgery.coupling`), chooses one mapping for it and asks each
member's handler for its change; ``"<layer>/<part>"`` targets widen one part
of a composite layer.
"""

import dataclasses

import keras
import numpy as np

from keras_net2net import _keras_internals as internals
from keras_net2net.surgery import handlers as H
from keras_net2net.surgery.coupling import find_group
from keras_net2net.surgery.coupling import split_below
from keras_net2net.surgery.graph import LayerGraph
from keras_net2net.surgery.handlers import is_opaque
from keras_net2net.surgery.plan.data import check_rebuildable
from keras_net2net.surgery.plan.data import seed_stream
from keras_net2net.surgery.plan.graph_plan import Plan
from keras_net2net.surgery.plan.stream import keep_mean
from keras_net2net.surgery.sharing import check_shared_calls
from keras_net2net.transforms import MEAN
from keras_net2net.transforms import MappingRule
from keras_net2net.transforms import choose_mapping
from keras_net2net.transforms import satisfies


def plan_widen(model, request, *, layer=None):
    """Plan a `Widen` request (see `keras_net2net.widen`) against ``model``.

    Args:
        model: a built Sequential or Functional model.
        request: the `keras_net2net.Widen`.
        layer: the layer object the request names, where the caller has it
            (``request.layer`` is its name). Defaults to None.

    Returns:
        The resolved `Plan`; raises before anything is built.
    """
    return _plan_widen(model, request, layer).resolve()


def _plan_widen(model, request, layer):
    units, seed = request.units, request.seed
    graph = LayerGraph(model)
    check_rebuildable(graph)
    name = request.layer if layer is None else layer
    nested = graph.nested(name)
    if nested is not None and not any(op.name == nested.name for op in graph.layers):
        # A nested model (or a subclassed layer, traced): its output channels.
        options = H.Widening(request)
        return _plan_output_group(graph, nested, units, seed, options)
    target, part = _target_and_part(graph, name)
    handler = H.get_handler(target)
    if handler is None and part is None and is_opaque(target):
        raise H.NoHandler(
            f"{H.describe(target)} has no handler: it is widened through the "
            "graph of its call (its output channels).",
            target,
        )
    if handler is None or isinstance(target, keras.layers.InputLayer):
        raise H.unsupported(
            target,
            "cannot be widened: it is not a layer type keras-net2net supports.",
        )
    handler.check(target)
    # A shared layer: its first call; the group takes in every call.
    node = graph.calls(target)[0]
    options = H.Widening(request)
    if part is not None:
        stream = handler.part_stream_width(target, part, units)
        if stream is None:
            return _plan_part(target, handler, part, units, seed, options)
        # More heads of a fixed size: the whole stream grows with them.
        options = dataclasses.replace(options, heads=((target.name, units),))
        return _plan_group(graph, target, node, stream, seed, options)
    role = handler.at(target, node, graph).role
    if role == H.LAYOUT:
        raise H.unsupported(
            target,
            "cannot be widened: its output channels are a layout of its "
            "inputs' channels. Widen the layer that produces them.",
        )
    if role == H.UNITS and H.handler_for(target).internal_width(target) is not None:
        return _plan_internal(target, handler, units, seed, options)
    split = split_below(graph, node) if role == H.UNITS else None
    if split is not None:
        return _plan_split(graph, target, node, split, units, seed, options)
    return _plan_group(graph, target, node, units, seed, options)


def _plan_output_group(graph, target, units, seed, options):
    """Widen the channels a nested model (a traced subclassed layer) outputs.

    Its output tensor is one of the flattened graph's; the group of that
    tensor's channels is widened, the writers inside the model among them.
    """
    outputs = internals.graph_outputs(target)
    if len(outputs) != 1:
        raise H.unsupported(
            target,
            f"returns {len(outputs)} tensors; widen() widens the output "
            "channels of a layer or nested model with one output. Widen one "
            "of the layers inside it instead.",
        )
    node = graph.producer(graph.key_of(outputs[0]))
    if node is None:
        raise H.unsupported(target, "outputs its input: it writes no channels.")
    group = find_group(graph, node, target.name, axis=-1)
    label = (
        f"widen '{target.name}' {group.width} -> {units} ({options.request.method}): "
        f"its output channels"
    )
    return _plan_group(graph, target, node, units, seed, options, group, label)


def _plan_split(graph, target, node, split, units, seed, options):
    """Widen a units layer whose units a Reshape splits into channels.

    ``units`` counts the layer's own units (positions x channels); the
    channels after the split are widened, and the layer writes them at every
    position.
    """
    split_node, axis = split
    group = find_group(graph, split_node, target.name, axis=axis)
    old_units = H.handler_for(target).width(target)
    units = _check_units(target, units, old_units)
    per = old_units // group.width
    if units % per:
        raise ValueError(
            f"`units` for layer '{target.name}': its {old_units} units are "
            f"split by '{split_node.op.name}' into {per} positions x "
            f"{group.width} channels, so the new width must be a multiple of "
            f"{per} (the channels grow), e.g. {per * (group.width + 1)}. "
            f"Received: units={units}"
        )
    label = (
        f"widen '{target.name}' {old_units} -> {units} ({options.request.method}): "
        f"{group.width} -> {units // per} channels of '{split_node.op.name}' "
        f"at {per} positions"
    )
    return _plan_group(
        graph, target, split_node, units // per, seed, options, group, label
    )


def _plan_group(graph, target, node, units, seed, options, group=None, label=None):
    """Widen the coupling group of ``node``'s output to ``units`` channels."""
    method = options.request.method
    if group is None:
        group = find_group(graph, node, target.name)
    old_width = group.width
    units = _check_units(target, units, old_width)
    seeds = seed_stream(seed)
    kept = None
    if method != H.RANDOM_PAD and units % old_width:
        kept = keep_mean(group, target, units)
    if kept is None:
        mapping = _choose(
            target, units, old_width, _core_rules(group), method == H.RANDOM_PAD, seeds
        )
    else:
        mapping, fresh = kept
        options = dataclasses.replace(options, fresh=fresh)
        next(seeds)  # the seeds of the changes as with a chosen mapping
    mappings = group.mappings(mapping)
    check_shared_calls(group, mappings)
    label = label or f"widen '{target.name}' {old_width} -> {units} ({method})"
    plan = Plan(f"{label}, {len(group.layers())} coupled operations")
    plan.details = [plan.description, group.summary()]
    if kept is not None:
        held = "the mean of the old ones" if kept[1] == MEAN else "zero"
        copies = units - int(mapping.fresh.sum())
        plan.details.append(
            f"  channels {copies}..{units - 1} hold {held} (the width is not a "
            f"multiple of {old_width}): the normalisations' gains x "
            f"sqrt({copies}/{units}), their epsilon x {copies}/{units}"
        )
    # A shared layer takes part once per call; its weights change once.
    done: set = set()

    def first(*key):
        if key in done:
            return False
        done.add(key)
        return True

    for writer in sorted(group.writers, key=lambda n: n.index):
        if not first(id(writer.op), "out"):
            continue
        # A writer before a split writes the split's layout.
        written = mappings.get(writer.outputs[0], mapping)
        handler = group.handler(writer)
        plan.change(writer.op, handler.widen_out(writer.op, written, options, seeds))
    for reader, position in sorted(group.readers, key=lambda r: (r[0].index, r[1])):
        if not first(id(reader.op), "in", position):
            continue
        key = reader.inputs[position]
        plan.change(
            reader.op,
            group.handler(reader).widen_in(
                reader.op, mappings[key], options, seeds, position, node=reader
            ),
        )
    for node in sorted(group.passes + group.layouts, key=lambda n: n.index):
        if not first(id(node.op), "pass"):
            continue
        key = next(k for k in node.inputs if k in mappings)
        change = group.handler(node).follow(node.op, mappings[key], options, seeds)
        plan.change(node.op, change)
    for node in group.splits:
        out = node.outputs[0]
        change = group.handler(node).follow_split(
            node.op, mappings[out], group.axes[out]
        )
        plan.change(node.op, change)
    for node, rule, key in group.rules:
        if key in mappings and not satisfies(mappings[key], rule):
            raise H.unsupported(
                node.op,
                "receives channels whose layout (derived by Flatten, "
                f"Concatenate, ...) does not copy them as it needs: {rule.reason}.",
            )
    return plan


def _choose(target, units, old_width, rules, pad, seeds):
    """One mapping for ``rules`` (`choose_mapping`), the error naming ``target``."""
    try:
        return choose_mapping(
            old_width, units, rules, pad=pad, seed=None if pad else next(seeds)
        )
    except ValueError as error:
        raise ValueError(
            f"`units`={units} for layer '{target.name}': {error}"
        ) from None


def _target_and_part(graph, layer):
    """``(layer, part or None)`` for ``"layer"`` or ``"layer/part"``.

    A part is an axis of a composite layer that can be widened on its own
    (a KerasHub Transformer block's ``feedforward_intermediate_dense``).
    """
    if not isinstance(layer, str) or "/" not in layer:
        return graph.get(layer), None
    if any(op.name == layer for op in graph.layers):
        return graph.get(layer), None
    outer, part = layer.split("/", 1)
    target = graph.get(outer)
    handler = H.get_handler(target)
    parts = handler.parts(target) if handler is not None else {}
    if part not in parts:
        valid = ", ".join(f"'{outer}/{p}'" for p in parts) or "none"
        raise ValueError(
            f"`layer`: {H.describe(target)} has no part '{part}' that can be "
            f"widened. Received: layer={layer!r}. Parts of this layer: {valid}."
        )
    return target, part


def _plan_part(target, handler, part, units, seed, options):
    """Widen one named part of a composite layer (its own axis)."""
    old_width = handler.parts(target)[part]
    units = _check_units(target, units, old_width, f"the width of '{part}'")
    seeds = seed_stream(seed)
    rule = handler.internal_rule(target, part)
    rules = [rule] if rule is not None else []
    mapping = _choose(target, units, old_width, rules, options.random_pad, seeds)
    method = options.request.method
    plan = Plan(f"widen '{target.name}/{part}' {old_width} -> {units} ({method})")
    plan.change(target, handler.widen_part(target, part, mapping, options, seeds))
    plan.details = [plan.description]
    return plan


def _core_rules(group):
    """The rules that choose the group's mapping.

    Whole blocks needed on a derived tensor (a GroupNormalization after a
    Concatenate) are asked of the shared channels too: copied in blocks of
    that size, they stay whole blocks in a layout that places the group's
    channels at a multiple of it (checked once the mapping is chosen).
    """
    lifted = [
        MappingRule(block=rule.block, reason=rule.reason)
        for _, rule, key in group.rules
        if key in group.derived and rule.block > 1 and rule.groups == 1
    ]
    return group.core_rules() + lifted


def _check_units(target, units, old_width, what="its current width"):
    if (
        isinstance(units, (bool, np.bool_))
        or not isinstance(units, (int, np.integer))
        or units <= old_width
    ):
        raise ValueError(
            f"`units` for layer '{target.name}' must be an integer larger than "
            f"{what} {old_width}. Received: units={units!r}"
        )
    return int(units)


def _plan_internal(target, handler, units, seed, options):
    """Widen a layer's own axis (attention heads), not a channel group."""
    old_width = handler.internal_width(target)
    units = _check_units(target, units, old_width, "its current number of heads")
    seeds = seed_stream(seed)
    rule = handler.internal_rule(target)
    rules = [rule] if rule is not None else []
    mapping = _choose(target, units, old_width, rules, options.random_pad, seeds)
    plan = Plan(
        f"widen '{target.name}' heads {old_width} -> {units} ({options.request.method})"
    )
    plan.change(target, handler.widen_internal(target, mapping, options, seeds))
    plan.details = [plan.description]
    return plan
