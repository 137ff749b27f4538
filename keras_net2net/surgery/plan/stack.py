"""Planning a `Stack`: a Functional model's residual stack repeated (G_stack).

The stack is the last run of consecutive residual blocks
(`keras_net2net.surgery.plan.blocks.residual_stack`); a Transformer's
attention and feed-forward sub-blocks move together. ``order="stack"``
inserts ``factor - 1`` copies of the whole run after its last Add;
``order="interleave"`` inserts ``factor - 1`` copies of each block after it.
"""

from keras_net2net.requests import COPY
from keras_net2net.requests import STACK
from keras_net2net.surgery import handlers as H
from keras_net2net.surgery.graph import LayerGraph
from keras_net2net.surgery.plan.blocks import block_units
from keras_net2net.surgery.plan.blocks import closing_add
from keras_net2net.surgery.plan.blocks import insert_copies
from keras_net2net.surgery.plan.blocks import residual_blocks
from keras_net2net.surgery.plan.blocks import residual_stack
from keras_net2net.surgery.plan.data import Site
from keras_net2net.surgery.plan.data import check_rebuildable
from keras_net2net.surgery.plan.data import single_call
from keras_net2net.surgery.plan.graph_plan import Plan


def plan_stack(model, request, *, layer=None):
    """Plan a `keras_net2net.Stack` request against a Functional ``model``.

    The planner interface of `keras_net2net.surgery.dispatch.register_planner`
    (``layer`` is not used: a stack names no layer). Returns the resolved
    `Plan`; raises before anything is changed.

    Raises:
        ValueError: the model has no residual stack (naming what was looked
            for), or its blocks cannot be copied (naming the layer).
    """
    graph = LayerGraph(model)
    chain, units = _find_stack(graph, model, request)
    taken = graph.names()
    zero = request.exact
    copies = request.factor - 1
    last = closing_add(graph, chain[-1])
    kind = "Transformer block(s)" if len(units) < len(chain) else "residual block(s)"
    exact = (
        "output projections zeroed: function-preserving"
        if zero
        else "copies kept as trained: NOT function-preserving"
    )
    order = (
        "the whole stack repeated"
        if request.order == STACK
        else "each block followed by its copies"
    )
    plan = Plan(
        f"stack {len(units)} {kind} ending at '{last.op.name}' x{request.factor} "
        f"-> {len(units) * request.factor} ({order}; {exact})"
    )
    if request.order == STACK:
        site = Site(graph, last.op, last, H.get_handler(last.op), taken)
        names = _names(graph, chain, copies, "stack")
        insert_copies(plan, site, chain * copies, zero=zero, init=COPY, names=names)
    else:
        for unit in units:
            node = closing_add(graph, unit[-1])
            site = Site(graph, node.op, node, H.get_handler(node.op), taken)
            names = _names(graph, unit, copies, "copy")
            insert_copies(plan, site, unit * copies, zero=zero, init=COPY, names=names)
    sizes = " or ".join(map(str, sorted({len(u) for u in units})))
    first = closing_add(graph, chain[0]).op.name
    plan.details[:0] = [
        plan.description,
        f"  {len(chain)} residual blocks found ('{first}' to '{last.op.name}'), "
        f"{len(units)} unit(s) of {sizes} block(s)",
    ]
    return plan.resolve()


def _find_stack(graph, model, request):
    """``(chain, units)`` of the residual stack `Stack` repeats, checked.

    Raises:
        ValueError: no residual block, a block outside the run, a shared Add.
    """
    check_rebuildable(graph)
    blocks = residual_blocks(graph)
    chain = residual_stack(graph, blocks)
    if not chain:
        raise ValueError(
            f"Stack: model '{model.name}' has no residual block to stack. Stack "
            "repeats the run of consecutive residual blocks x + f(x) (each "
            "closed by an `Add` whose input is the previous block's `Add`, as "
            "in a pre-LN Transformer); grow other models with Deepen. "
            f"Received: {request!r}"
        )
    ends = {block[1] for block in chain}
    outside = [node for node, block in blocks if block[1] not in ends]
    if outside:
        first = closing_add(graph, chain[0])
        raise H.unsupported(
            first.op,
            f"starts the last run of consecutive residual blocks, but the "
            f"block closed by '{outside[-1].op.name}' before it is not part of the "
            "run (a layer between the blocks, such as a post-LN Transformer's "
            "normalisation or a downsampling stage); Stack repeats one run "
            "that holds every residual block. Deepen such a model block by "
            "block (Deepen(after=<an Add>)).",
        )
    for block in chain:  # a shared Add would take the copies after every call
        single_call(graph, closing_add(graph, block).op, "be stacked")
    return chain, block_units(chain)


def stack_ends(model):
    """The name of the Add that ends each unit `Stack` would repeat, in order.

    Empty where `Stack` would not apply (no residual stack, blocks outside
    it, a block it cannot copy). `keras_net2net.transformer_requests` writes
    a `Stack` only where these are the Transformer blocks it recognises.
    """
    graph = LayerGraph(model)
    try:
        _, units = _find_stack(graph, model, None)
    except ValueError:
        return []
    return [closing_add(graph, unit[-1]).op.name for unit in units]


def _names(graph, blocks, copies, word):
    """``(prefix, Add name)`` of every copied block: ``stack2_mha_0``, ..."""
    return [
        (f"{word}{copy + 1}", f"{word}{copy + 1}_{closing_add(graph, block).op.name}")
        for copy in range(copies)
        for block in blocks
    ]
