"""Planning: how a widen or deepen request becomes a list of changes.

Planning reads the model's graph and decides every change (new widths, weight
transforms, inserted layers) without touching the model; all validation
happens here. `keras_net2net.surgery.apply` then builds the grown model.

* `plan_widen` finds the coupling group of the widened layer
  (`keras_net2net.surgery.groups`), chooses one mapping for it and asks each
  member's handler for its change.
* `plan_deepen` inserts an identity copy of a layer (Net2DeeperNet), a
  residual branch that starts at zero (``residual=True``), or a copy of a
  whole residual block whose branch output is zero (``after=`` an Add).
"""

import dataclasses
from typing import Any

import keras
import numpy as np

from keras_net2net import _keras_internals as internals
from keras_net2net.requests import COPY
from keras_net2net.surgery import handlers as H
from keras_net2net.surgery.graph import LayerGraph
from keras_net2net.surgery.groups import find_group
from keras_net2net.surgery.groups import group_mappings
from keras_net2net.surgery.groups import identity_if_missing
from keras_net2net.surgery.handlers.merging import is_residual_add
from keras_net2net.transforms import padding_mapping
from keras_net2net.transforms import random_mapping
from keras_net2net.transforms import tiled_mapping


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


def _single_call(graph, op, what):
    nodes = graph.calls(op)
    if len(nodes) != 1:
        raise H.unsupported(
            op, f"is shared (called {len(nodes)} times); shared layers cannot {what}."
        )
    return nodes[0]


# --------------------------------------------------------------------------
# Widen.


def plan_widen(
    model,
    layer,
    units,
    *,
    method=H.NET2WIDER,
    noise=0.0,
    seed=None,
    noise_on=H.COPIES,
    pad_std=None,
    pad_bias=0.0,
):
    """Plan `widen` (see there); raises before anything is built."""
    graph = LayerGraph(model)
    target, part = _target_and_part(graph, layer)
    handler = H.get_handler(target)
    if handler is None or isinstance(target, keras.layers.InputLayer):
        raise H.unsupported(
            target,
            "cannot be widened: it is not a layer type keras-net2net supports.",
        )
    handler.check(target)
    node = _single_call(graph, target, "be widened")
    options = H.WidenOptions(
        method=method,
        noise=float(noise),
        noise_on=noise_on,
        pad_std=pad_std,
        pad_bias=float(pad_bias),
    )
    if part is not None:
        stream = handler.part_stream_width(target, part, units)
        if stream is None:
            return _plan_part(target, handler, part, units, seed, options)
        # More heads of a fixed size: the whole stream grows with them.
        options = dataclasses.replace(options, heads=((target.name, units),))
        return _plan_group(graph, target, node, stream, seed, options)
    role = handler.role_of(target, node, graph)
    if role == H.DERIVED:
        raise H.unsupported(
            target,
            "cannot be widened: its output channels are a layout of its "
            "inputs' channels. Widen the layer that produces them.",
        )
    if role == H.UNITS and H.handler_for(target).internal_width(target) is not None:
        return _plan_internal(target, handler, units, seed, options)
    return _plan_group(graph, target, node, units, seed, options)


def _plan_group(graph, target, node, units, seed, options):
    """Widen the coupling group of ``node``'s output to ``units`` channels."""
    method = options.method
    group = find_group(graph, node.outputs[0], target.name)
    _check_nested_inputs(graph, group, target)
    old_width = group.width
    units = _check_units(target, units, old_width)
    seeds = seed_stream(seed)
    if method == H.RANDOM_PAD:
        mapping = padding_mapping(old_width, units)
    elif group.uniform:
        if units % old_width:
            node_names = ", ".join(f"'{n.op.name}'" for n, _ in group.uniform)
            raise ValueError(
                f"`units`={units} for layer '{target.name}': its channels pass "
                f"through {node_names}, which normalise over the channels. "
                f"{group.uniform[0][1]}, so the new width must be a multiple "
                f"of {old_width} (e.g. {2 * old_width})."
            )
        mapping = tiled_mapping(old_width, units)
        next(seeds)
    else:
        mapping = random_mapping(old_width, units, seed=next(seeds))
    mappings = group_mappings(group, mapping)
    plan = Plan(
        f"widen '{target.name}' {old_width} -> {units} ({method}), "
        f"{len(group.layers())} coupled operations"
    )
    plan.details = [plan.description, group.summary()]
    for writer in sorted(group.writers, key=lambda n: n.index):
        plan.change(
            writer.op,
            H.handler_for(writer.op).widen_out(writer.op, mapping, options, seeds),
        )
    for reader, position in sorted(group.readers, key=lambda r: (r[0].index, r[1])):
        key = reader.inputs[position]
        plan.change(
            reader.op,
            H.handler_for(reader.op).widen_in(
                reader.op, mappings[key], options, seeds, position, node=reader
            ),
        )
    for node in sorted(group.passes + group.layouts, key=lambda n: n.index):
        handler = H.handler_for(node.op)
        if node in group.layouts:
            inputs = [mappings.get(k) for k in node.inputs]
            change = handler.follow(node.op, node, graph, inputs, options, seeds)
        else:
            key = next(k for k in node.inputs if k in mappings)
            change = handler.follow(node.op, mappings[key], options, seeds)
        plan.change(node.op, change)
    for node, reason in group.uniform:
        key = node.inputs[0]
        counts = identity_if_missing(graph, key, mappings).counts
        if method != H.RANDOM_PAD and counts.min() != counts.max():
            raise H.unsupported(
                node.op,
                f"receives channels that are not all copied equally often; {reason}.",
            )
    return plan


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
    if options.random_pad:
        mapping = padding_mapping(old_width, units)
    else:
        mapping = random_mapping(old_width, units, seed=next(seeds))
    plan = Plan(
        f"widen '{target.name}/{part}' {old_width} -> {units} ({options.method})"
    )
    plan.change(target, handler.widen_part(target, part, mapping, options, seeds))
    plan.details = [plan.description, "changes:"] + plan.describe_changes()
    return plan


def _check_nested_inputs(graph, group, target):
    """Refuse widening the inputs of a Functional model nested in a Sequential.

    A Sequential model rebuilds its layers without telling a nested
    Functional model the new width of its input.
    """
    widened = group.core | group.derived
    for nested, owner, keys in graph.nested_inputs.values():
        nested_functional = not isinstance(nested, keras.Sequential)
        if nested_functional and isinstance(owner, keras.Sequential):
            if any(key in widened for key in keys):
                raise H.unsupported(
                    nested,
                    f"is a Functional model inside the Sequential model "
                    f"'{owner.name}' and receives the channels of '{target.name}'; "
                    "widening the input of such a nested model is not supported "
                    "(build the outer model with the Functional API).",
                )


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
    if options.random_pad:
        mapping = padding_mapping(old_width, units)
    else:
        mapping = random_mapping(old_width, units, seed=next(seeds))
    plan = Plan(
        f"widen '{target.name}' heads {old_width} -> {units} ({options.method})"
    )
    plan.change(target, handler.widen_internal(target, mapping, options, seeds))
    plan.details = [plan.description, "changes:"] + plan.describe_changes()
    return plan


# --------------------------------------------------------------------------
# Deepen.


def unique_name(base, taken):
    name, counter = base, 1
    while name in taken:
        name = f"{base}_{counter}"
        counter += 1
    taken.add(name)
    return name


def plan_deepen(
    model,
    after,
    *,
    method=H.IDENTITY,
    kernel_size=None,
    seed=None,
    name=None,
    residual=False,
    init=COPY,
    blocks=1,
):
    """Plan `deepen` (see there); raises before anything is changed."""
    graph = LayerGraph(model)
    target = graph.get(after, argument="after")
    handler = H.get_handler(target)
    if handler is not None:
        handler.check(target)
    node = _single_call(graph, target, "be followed by a new layer")
    taken = graph.names()
    if name is not None and name in taken:
        raise ValueError(
            f"`name`: model '{model.name}' already has a layer named '{name}'."
        )
    if residual or is_residual_add(target):
        if isinstance(model, keras.Sequential):
            raise H.unsupported(
                target,
                "is in a Sequential model, which cannot hold the Add of a "
                "residual branch; build the model with the Functional API to "
                "deepen it with residual branches or blocks.",
            )
        if node.path:
            raise H.unsupported(
                target,
                f"is inside the nested model '{node.path[-1].name}'; residual "
                "branches and blocks are inserted in the top-level graph only.",
            )
    if is_residual_add(target) and not residual:
        return _plan_block(graph, target, node, taken, name, init, seed, blocks)
    if hasattr(handler, "check_copy") and not residual:
        if blocks != 1:
            raise H.unsupported(
                target,
                f"is a Transformer block layer; `blocks`={blocks} is not "
                "supported for it (deepen after it once per new block).",
            )
        return _plan_layer_copy(graph, target, node, handler, taken, name, init)
    if blocks != 1:
        raise H.unsupported(
            target,
            f"is not a residual Add; `blocks`={blocks} only applies when "
            "deepening after an Add that closes residual blocks.",
        )
    if residual:
        return _plan_residual(
            graph, target, node, handler, taken, name, kernel_size, seed
        )
    deeper = getattr(handler, "deeper_layer", None)
    if deeper is None:
        raise H.unsupported(
            target,
            "cannot be followed by an identity layer: deepen() inserts after "
            "Dense, Conv, DepthwiseConv and SeparableConv layers, and copies "
            "residual blocks after an Add.",
        )
    new_name = unique_name(name or f"{target.name}_deeper", taken)
    final_name, rename = _output_swap(graph, node, new_name)
    new_layer, values = deeper(
        target, final_name, method=method, kernel_size=kernel_size, seed=seed
    )
    plan = Plan(
        f"deepen after '{target.name}': insert '{final_name}' "
        f"({type(new_layer).__name__}, {method})"
    )
    insertion = Insertion(
        lambda out, _: new_layer(out), [(new_layer, values)], [new_layer]
    )
    _insert(plan, node, insertion, rename)
    return plan


def _plan_layer_copy(graph, target, node, handler, taken, name, init):
    """Insert a copy of a whole-block layer that starts as the identity."""
    handler.check_copy(target)
    new_name = unique_name(name or f"{target.name}_copy", taken)
    final_name, rename = _output_swap(graph, node, new_name)
    config = target.get_config()
    config["name"] = final_name
    clone = type(target).from_config(config)
    values = _block_values(target, True, handler, init)
    raw_inputs = internals.node_inputs(node.raw)

    def build(out, tensors):
        fill = {id(t): tensors[id(t)] for t in raw_inputs}
        fill[id(raw_inputs[0])] = out  # the stream; masks stay as they were
        args, kwargs = internals.fill_arguments(node.raw, fill)
        return clone(*args, **kwargs)

    zeroed = ", ".join(sorted(handler.zero_change(target)))
    plan = Plan(
        f"deepen after '{target.name}': insert '{final_name}' (a copy of the "
        f"{type(target).__name__}, {init}; {zeroed} zeroed)"
    )
    if init == COPY:
        plan.copies[id(clone)] = target
    _insert(plan, node, Insertion(build, [(clone, values)]), rename)
    return plan


def _output_swap(graph, node, new_name):
    """``(name of the last new operation, new name of the original or None)``.

    Output names come from the operations that produce the outputs, and
    losses and metrics may be keyed by them. When ``node`` produces a model
    output, the last inserted operation takes over its name and the original
    is renamed to the name the new operation would have had.
    """
    if any(graph.is_output(k) for k in node.outputs):
        return node.op.name, new_name
    return new_name, None


def _insert(plan, node, insertion, rename):
    plan.insertions.setdefault(id(node.op), []).append(insertion)
    if rename is not None:
        plan.change(node.op, H.LayerChange(config={"name": rename}))
        plan.details.append(
            f"'{node.op.name}' produces a model output, so the inserted layer "
            f"takes its name and the original is renamed '{rename}'."
        )


def _plan_residual(graph, target, node, handler, taken, name, kernel_size, seed):
    layers = getattr(handler, "residual_layers", None)
    if layers is None or handler.role_of(target, node, graph) != H.UNITS:
        raise H.unsupported(
            target,
            "cannot be followed by a residual branch: residual=True inserts "
            "after Dense and Conv1D/2D/3D layers.",
        )
    base = name or f"{target.name}_residual"
    names = [unique_name(f"{base}_{part}", taken) for part in ("expand", "project")]
    add_name, rename = _output_swap(
        graph, node, unique_name(base if name else f"{base}_add", taken)
    )
    expand, project = layers(target, names, kernel_size=kernel_size, seed=seed)
    add = keras.layers.Add(name=add_name, dtype=getattr(target, "dtype_policy", None))

    def build(out, _):
        return add([out, project(expand(out))])

    plan = Plan(
        f"deepen after '{target.name}': insert residual branch '{names[0]}' -> "
        f"'{names[1]}' (zero-initialised) and '{add_name}'"
    )
    layers = [(expand, None), (project, None), (add, None)]
    _insert(plan, node, Insertion(build, layers), rename)
    return plan


# --------------------------------------------------------------------------
# Copying a residual block.


def _ancestors(graph, key):
    """Keys of every tensor ``key`` depends on (itself included)."""
    seen, stack = set(), [key]
    while stack:
        k = stack.pop()
        if k in seen:
            continue
        seen.add(k)
        node = graph.producer(k)
        if node is not None:
            stack.extend(node.inputs)
    return seen


def _descendants(graph, key):
    """Keys of every tensor that depends on ``key`` (itself included)."""
    seen, stack = set(), [key]
    while stack:
        k = stack.pop()
        if k in seen:
            continue
        seen.add(k)
        for consumer, _ in graph.consumers(k):
            stack.extend(consumer.outputs)
    return seen


def _residual_block(graph, add_node):
    """``(shortcut, end, branch, zeroed)`` of the block ``x + f(x)`` an Add closes."""
    target = add_node.op
    tensors = add_node.inputs
    if len(tensors) != 2 or graph.width(tensors[0]) != graph.width(tensors[1]):
        raise H.unsupported(
            target,
            "does not add exactly two tensors of the same shape; only such "
            "residual Adds close a block that deepen() can copy.",
        )
    a, b = tensors
    if a in _ancestors(graph, b):
        shortcut, end = a, b
    elif b in _ancestors(graph, a):
        shortcut, end = b, a
    else:
        raise H.unsupported(
            target,
            "does not close an identity-shortcut residual block (neither input "
            "is the block's input); deepen() can copy blocks of the form "
            "x + f(x). Projection shortcuts are not copied.",
        )
    # The branch: every call on a path from the shortcut to the other input.
    below = _ancestors(graph, end)
    above = _descendants(graph, shortcut) - {shortcut}
    branch = [
        n
        for n in graph.nodes
        if n.index < add_node.index
        and any(k in below for k in n.outputs)
        and any(k in above for k in n.outputs)
    ]
    inside = {k for n in branch for k in n.outputs}
    for member in branch:
        for key in member.inputs:
            if key != shortcut and key not in inside:
                raise H.unsupported(
                    member.op,
                    f"is in the residual branch closed by '{target.name}' but "
                    "also reads a tensor from outside the block; such a branch "
                    "cannot be copied.",
                )
        if member.path or internals.has_graph(member.op):
            raise H.unsupported(
                member.op,
                f"is a nested model in the residual branch closed by "
                f"'{target.name}'; such a branch cannot be copied.",
            )
    if not branch:
        raise H.unsupported(target, "closes an empty residual branch.")
    return shortcut, end, branch, _zero_point(graph, branch, end, target)


def _plan_block(graph, target, node, taken, name, init, seed, blocks=1):
    """Copy the ``blocks`` residual blocks that end at the Add ``node``.

    With ``blocks > 1`` the blocks must follow each other directly (each one's
    shortcut is the previous one's Add), as the attention and feed-forward
    sub-blocks of a pre-LN Transformer block do.
    """
    chain = [_residual_block(graph, node)]
    while len(chain) < blocks:
        shortcut = chain[0][0]
        previous = graph.producer(shortcut)
        if previous is None or not is_residual_add(previous.op):
            raise H.unsupported(
                chain[0][2][0].op,
                f"starts a residual block whose input does not come straight "
                f"from another residual Add, so {blocks} consecutive blocks "
                f"ending at '{target.name}' cannot be copied as one (a "
                "normalisation between blocks, as in post-LN Transformers, "
                "would not be the identity); copy fewer blocks.",
            )
        chain.insert(0, _residual_block(graph, previous))
    base = name or f"{target.name}_block"
    layers, steps, sources = [], [], {}
    for index, (shortcut, end, branch, zeroed) in enumerate(chain):
        prefix = base if blocks == 1 else f"{base}{index + 1}"
        copies = {}
        for member in branch:
            op = member.op
            config = op.get_config()
            config["name"] = unique_name(f"{prefix}_{op.name}", taken)
            clone = type(op).from_config(config)
            copies[member.index] = clone
            values = _block_values(op, member is zeroed, H.get_handler(op), init)
            layers.append((clone, values))
            if init == COPY and isinstance(op, keras.layers.Layer):
                sources[id(clone)] = op
        last = index == len(chain) - 1
        add_name = unique_name(f"{prefix}_add", taken)
        rename = None
        if last:
            add_name, rename = _output_swap(graph, node, add_name)
        add = keras.layers.Add(
            name=add_name, dtype=getattr(target, "dtype_policy", None)
        )
        layers.append((add, None))
        steps.append((shortcut, end, branch, copies, add))

    def build(out, _):
        for shortcut, end, branch, copies, add in steps:
            mapped = {shortcut: out}
            for member in branch:
                raw_inputs = internals.node_inputs(member.raw)
                fill = {id(t): mapped[graph.key_of(t)] for t in raw_inputs}
                args, kwargs = internals.fill_arguments(member.raw, fill)
                result = copies[member.index](*args, **kwargs)
                for key, tensor in zip(member.outputs, keras.tree.flatten(result)):
                    mapped[key] = tensor
            out = add([out, mapped[end]])
        return out

    zeroed = ", ".join(f"'{z.op.name}'" for *_, z in chain)
    operations = sum(len(b) for _, _, b, _ in chain)
    plan = Plan(
        f"deepen after '{target.name}': insert a copy of {len(chain)} residual "
        f"block(s) ({operations} operations, {zeroed} zeroed)"
    )
    plan.copies.update(sources)
    _insert(plan, node, Insertion(build, layers), rename)
    return plan


def _block_values(op, zero, handler, init):
    """What a copied branch layer's variables are set to once built."""
    if not isinstance(op, keras.layers.Layer) or not op.weights:
        return None
    source = [keras.ops.convert_to_numpy(v) for v in op.weights]
    positions = H.variable_positions(op)
    zeros = handler.zero_change(op) if zero else {}
    zeroed = {positions[key]: value for key, value in (zeros or {}).items()}

    def values(built):
        # The copy creates its variables in the same order as the original.
        out = {}
        for position, value in enumerate(source):
            if position in zeroed:
                out[position] = zeroed[position]
            elif init == COPY:
                out[position] = value
        return out

    return values


def _zero_point(graph, branch, end, target):
    """The branch layer whose zeroed weights make the branch output zero."""
    members = {k: n for n in branch for k in n.outputs}
    key = end
    while key in members:
        node = members[key]
        handler: Any = H.get_handler(node.op)
        if handler is None:
            break
        zero = getattr(handler, "zero_change", lambda op: None)(node.op)
        if zero:
            return node
        if not handler.zero_preserving(node.op) or node.positional != 1:
            raise H.unsupported(
                node.op,
                f"ends the residual branch closed by '{target.name}' but does "
                "not map zeros to zeros, and no layer before it can be zeroed; "
                "the copied block could not start as the identity.",
            )
        key = node.inputs[0]
    raise H.unsupported(
        target,
        "closes a residual branch with no layer that can be zeroed (a "
        "Dense/Conv, normalisation or LayerScale followed only by layers that "
        "map zeros to zeros).",
    )
