"""Copying residual blocks: find a block from the Add that closes it, copy it
with its branch output zeroed (so the copy starts as the identity).
"""

from typing import Any

import keras

from keras_net2net import _keras_internals as internals
from keras_net2net.requests import COPY
from keras_net2net.surgery import handlers as H
from keras_net2net.surgery.handlers.merging import is_residual_add
from keras_net2net.surgery.plan.data import OUT
from keras_net2net.surgery.plan.data import Call
from keras_net2net.surgery.plan.data import Insertion
from keras_net2net.surgery.plan.data import insert_after
from keras_net2net.surgery.plan.data import output_swap
from keras_net2net.surgery.plan.data import unique_name
from keras_net2net.surgery.plan.graph_plan import Plan


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


def residual_branch(graph, add_node):
    """The calls of ``f`` in the block ``x + f(x)`` that ``add_node`` closes.

    None if ``add_node`` does not close a block that deepen() can copy (two
    same-shaped inputs, one the other's ancestor, a self-contained branch).
    """
    try:
        return _branch(graph, add_node)[2]
    except ValueError:
        return None


def no_identity_shortcut(graph, add_node):
    """True if an Add of two same-shaped tensors has no identity shortcut.

    Neither input is an ancestor of the other (a projection shortcut, a
    U-Net skip connection): there is no block ``x + f(x)`` to copy, and
    deepen() inserts a new one instead. Any other reason a block cannot be
    copied is left to `plan_block` to report.
    """
    tensors = add_node.inputs
    if len(tensors) != 2 or graph.width(tensors[0]) != graph.width(tensors[1]):
        return False
    a, b = tensors
    return a not in _ancestors(graph, b) and b not in _ancestors(graph, a)


def _residual_block(graph, add_node):
    """``(shortcut, end, branch, zeroed)`` of the block ``x + f(x)`` an Add closes."""
    shortcut, end, branch = _branch(graph, add_node)
    return shortcut, end, branch, _zero_point(graph, branch, end, add_node.op)


def branch_outside(graph, add_node):
    """A layer of the block an Add closes that is in another model than the Add.

    keras.applications' InceptionResNetV2 closes each block with a
    subclassed `CustomScaleLayer` (``x + scale * f(x)``), which growth traces
    into a nested model: its Add is inside it, its branch outside. Such a
    block cannot be copied, and deepen() inserts a new one instead. None if
    there is none (or if the Add closes no block: `plan_block` reports it).
    """
    try:
        _, _, branch = _branch(graph, add_node, across_models=True)
    except ValueError:
        return None
    return next((m.op for m in branch if _in_another_model(m, add_node)), None)


def _in_another_model(member, add_node):
    """Whether a branch node is (inside) another model than the Add closing it."""
    return member.path != add_node.path or internals.has_graph(member.op)


def _branch(graph, add_node, across_models=False):
    """``(shortcut, end, branch)`` of the block ``x + f(x)`` an Add closes."""
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
        if across_models:
            continue
        if _in_another_model(member, add_node):
            raise H.unsupported(
                member.op,
                f"is (inside) a nested model in the residual branch closed by "
                f"'{target.name}'; such a branch cannot be copied.",
            )
    if not branch:
        raise H.unsupported(target, "closes an empty residual branch.")
    return shortcut, end, branch


def _has_attention(branch):
    return any(
        isinstance(member.op, keras.layers.MultiHeadAttention) for member in branch
    )


def _after_attention(graph, block):
    """Whether ``block`` (no attention) directly follows one with attention."""
    shortcut, _, branch, _ = block
    if _has_attention(branch):
        return False
    previous = graph.producer(shortcut)
    if previous is None or not is_residual_add(previous.op):
        return False
    try:
        _, _, before, _ = _residual_block(graph, previous)
    except ValueError:
        return False
    return _has_attention(before)


def plan_block(site, request):
    """Copy the ``request.blocks`` residual blocks that end at the Add ``site.node``.

    ``method="random"``: nothing is zeroed, so the copy changes the function
    (the baseline: blocks stacked without a zeroed projection).

    With ``blocks > 1`` the blocks must follow each other directly (each one's
    shortcut is the previous one's Add), as the attention and feed-forward
    sub-blocks of a pre-LN Transformer block do. ``blocks=None``: the whole
    Transformer block (2) where a block without attention directly follows
    one with attention, else 1.
    """
    graph, target, node = site.graph, site.target, site.node
    blocks = request.blocks
    chain = [_residual_block(graph, node)]
    whole = blocks is None
    if blocks is None:
        blocks = 2 if _after_attention(graph, chain[0]) else 1
    while len(chain) < blocks:
        previous = _previous_block(graph, chain[0])
        if previous is None:
            raise H.unsupported(
                chain[0][2][0].op,
                f"starts a residual block whose input does not come straight "
                f"from another residual Add, so {blocks} consecutive blocks "
                f"ending at '{target.name}' cannot be copied as one (a "
                "normalisation between blocks, as in post-LN Transformers, "
                "would not be the identity); copy fewer blocks.",
            )
        chain.insert(0, previous)
    zero = request.method == H.IDENTITY
    zeroed = ", ".join(f"'{z.op.name}'" for *_, z in chain) if zero else "nothing"
    operations = sum(len(b) for _, _, b, _ in chain)
    whole_text = " (a whole Transformer block)" if whole and len(chain) > 1 else ""
    plan = Plan(
        f"deepen after '{target.name}': insert a copy of {len(chain)} residual "
        f"block(s){whole_text} ({operations} operations, {zeroed} zeroed)"
    )
    base = request.name or f"{target.name}_block"
    prefixes = (
        [base] if len(chain) == 1 else [f"{base}{i + 1}" for i in range(len(chain))]
    )
    names = [(prefix, f"{prefix}_add") for prefix in prefixes]
    insert_copies(plan, site, chain, zero=zero, init=request.init, names=names)
    return plan


def _previous_block(graph, block):
    """The residual block whose Add is ``block``'s input; None if there is none."""
    previous = graph.producer(block[0])
    if previous is None or not is_residual_add(previous.op):
        return None
    try:
        return _residual_block(graph, previous)
    except ValueError:
        return None


def residual_blocks(graph):
    """Every identity-shortcut residual block ``x + f(x)`` that can be copied,
    in graph order, as ``(add call, block)``."""
    found = []
    for node in graph.nodes:
        if not is_residual_add(node.op) or getattr(node.op, "name", None) is None:
            continue
        try:
            found.append((node, _residual_block(graph, node)))
        except ValueError:
            continue
    return found


def residual_stack(graph, blocks=None):
    """The blocks of the last run of consecutive residual blocks, in order.

    The run ends at the last residual Add (in graph order) that closes an
    identity-shortcut block and goes back while each block's input is the
    previous block's Add (a pre-LN Transformer's attention and feed-forward
    sub-blocks, a stack of ``x + f(x)`` blocks). Each block is
    ``(shortcut, end, branch, zeroed)``, as `insert_copies` takes them.
    Empty if the model has no residual block.
    """
    blocks = residual_blocks(graph) if blocks is None else blocks
    if not blocks:
        return []
    chain = [blocks[-1][1]]
    while (previous := _previous_block(graph, chain[0])) is not None:
        chain.insert(0, previous)
    return chain


def block_units(chain):
    """``chain`` cut into units: a Transformer block's attention and
    feed-forward sub-blocks form one unit, any other block is one."""
    units: list[list] = []
    for block in chain:
        last = units[-1] if units else None
        if (
            last is not None
            and len(last) == 1
            and _has_attention(last[0][2])
            and not _has_attention(block[2])
        ):
            last.append(block)
        else:
            units.append([block])
    return units


def closing_add(graph, block):
    """The call of the Add that closes ``block``."""
    shortcut, end = block[0], block[1]
    return next(
        n
        for n in graph.nodes
        if is_residual_add(n.op) and set(n.inputs) == {shortcut, end}
    )


def insert_copies(plan, site, chain, *, zero, init, names):
    """Add to ``plan`` copies of ``chain``'s blocks, in order, after ``site.node``.

    Args:
        plan: the `Plan` the insertion goes into.
        site: a `Site` whose node is the Add the copies follow.
        chain: blocks ``(shortcut, end, branch, zeroed)`` that follow each
            other (a block may appear more than once: stacked copies).
        zero: zero each copy's ``zeroed`` layer (the copy starts as the
            identity) or keep what it copies.
        init: ``"copy"`` (the copied weights) or ``"random"`` (fresh ones).
        names: per block of ``chain``, ``(prefix of its layers' names, name
            of its Add)`` (made unique in the model).
    """
    graph, target, node, taken = site.graph, site.target, site.node, site.taken
    layers, calls, sources = [], [], {}
    stream = OUT  # the ref of each copied block's input
    for index, (shortcut, end, branch, zeroed) in enumerate(chain):
        prefix = names[index][0]
        refs = {shortcut: stream}  # graph key -> ref in the copy
        for member in branch:
            op = member.op
            config = op.get_config()
            config["name"] = unique_name(f"{prefix}_{op.name}", taken)
            clone = type(op).from_config(config)
            values = block_values(
                op, zero and member is zeroed, H.get_handler(op), init
            )
            layers.append((clone, values))
            if init == COPY and isinstance(op, keras.layers.Layer):
                sources[id(clone)] = op
            fill = {i: refs[key] for i, key in enumerate(member.inputs)}
            calls.append(Call(clone, like=member, fill=fill))
            for i, key in enumerate(member.outputs):
                refs[key] = f"{clone.name}/{i}"
        add_name = unique_name(names[index][1], taken)
        rename = None
        if index == len(chain) - 1:
            add_name, rename = output_swap(graph, node, add_name)
        add = keras.layers.Add(
            name=add_name, dtype=getattr(target, "dtype_policy", None)
        )
        layers.append((add, None))
        calls.append(Call(add, ([stream, refs[end]],)))
        stream = add.name
    plan.copies.update(sources)
    insert_after(plan, node, Insertion(calls, stream, layers), rename)


def block_values(op, zero, handler, init):
    """What a copied branch layer's variables are set to once built."""
    if not isinstance(op, keras.layers.Layer) or not op.weights:
        return None
    positions = H.variable_positions(op)
    zeros = handler.zero_change(op) if zero else {}
    zeroed = {positions[key]: value for key, value in (zeros or {}).items()}
    # The copy creates its variables in the same order as the original.
    values = {}
    for position, variable in enumerate(op.weights):
        if position in zeroed:
            values[position] = zeroed[position]
        elif init == COPY:
            values[position] = keras.ops.convert_to_numpy(variable)
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
        zero = handler.zero_change(node.op)
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
