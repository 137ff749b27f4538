"""Planning a deepening: an identity layer, a zero residual branch, or a block.

`plan_deepen` inserts an identity copy of a layer (Net2DeeperNet), a residual
branch that starts at zero (``residual=True``), or a copy of a whole residual
block whose branch output is zero (``after=`` an Add: `blocks`). After an Add
that closes no identity-shortcut block (a projection shortcut, a U-Net skip),
it inserts a new block on the stream instead: a residual branch of two fresh
Dense/Conv layers, the second at zero.
"""

import keras

from keras_net2net.requests import COPY
from keras_net2net.surgery import handlers as H
from keras_net2net.surgery.coupling import output_axis
from keras_net2net.surgery.graph import LayerGraph
from keras_net2net.surgery.handlers.merging import is_residual_add
from keras_net2net.surgery.plan.blocks import block_values
from keras_net2net.surgery.plan.blocks import branch_outside
from keras_net2net.surgery.plan.blocks import no_identity_shortcut
from keras_net2net.surgery.plan.blocks import plan_block
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


def plan_deepen(model, request, *, layer=None):
    """Plan a `Deepen` request (see `keras_net2net.deepen`) against ``model``;
    the planner interface of `keras_net2net.surgery.dispatch.register_planner`
    (``layer``: the object ``request.after`` names, where the caller has it).
    Returns the resolved `Plan`; raises before anything is changed."""
    if isinstance(request.after, tuple):
        raise ValueError(
            "`after`: a list of layers names the blocks of a KerasHub model "
            f"of a registered family; {type(model).__name__} '{model.name}' is "
            f"not one. Deepen after one layer at a time. Received: {request!r}"
        )
    return _plan_deepen(model, request, layer).resolve()


def _plan_deepen(model, request, after):
    graph = LayerGraph(model)
    check_rebuildable(graph)
    target = graph.get(request.after if after is None else after, argument="after")
    handler = H.get_handler(target)
    if handler is not None:
        handler.check(target)
    calls = graph.calls(target)
    residual = request.residual
    if len(calls) > 1 and _shared_insertion(graph, target, handler, calls, residual):
        # A shared layer (one network applied to two inputs): one identity
        # layer (or residual branch), shared too, follows every call.
        node = calls[0]
    else:
        what = "be followed by a new layer"
        if residual or is_residual_add(target):
            what = "be followed by a residual branch or a block"
        node = single_call(graph, target, what)
    site = Site(graph, target, node, handler, graph.names())
    if request.name is not None and request.name in site.taken:
        raise ValueError(
            f"`name`: model '{model.name}' already has a layer named '{request.name}'."
        )
    if residual or is_residual_add(target):
        _check_room_for_an_add(model, site)
    if is_residual_add(target):
        return _plan_after_add(site, request)
    return _plan_after_layer(model, site, request)


def _check_room_for_an_add(model, site):
    if isinstance(model, keras.Sequential):
        raise H.unsupported(
            site.target,
            "is in a Sequential model, which cannot hold the Add of a "
            "residual branch; build the model with the Functional API to "
            "deepen it with residual branches or blocks.",
        )
    path = site.node.path
    if path and isinstance(path[-1], keras.Sequential):
        raise H.unsupported(
            site.target,
            f"is inside the nested Sequential model '{path[-1].name}', "
            "which cannot hold the Add of a residual branch; build it with "
            "the Functional API to deepen it with residual branches or "
            "blocks.",
        )


def _plan_after_add(site, request):
    """After a residual Add: a copy of the blocks it closes, or a new block."""
    target, node = site.target, site.node
    blocks = 1 if request.blocks is None else request.blocks
    outside = None
    if blocks == 1 and not request.residual:
        outside = branch_outside(site.graph, node)
    new_block = (
        request.residual
        or (blocks == 1 and no_identity_shortcut(site.graph, node))
        or outside is not None
    )
    if not new_block:
        return plan_block(site, request)
    if blocks != 1:
        raise H.unsupported(
            target,
            f"is followed by one new residual branch with residual=True; "
            f"`blocks`={blocks} applies to block copies only.",
        )
    if request.method != H.IDENTITY:
        raise ValueError(
            f"`method`: after '{target.name}' deepen() inserts a residual "
            "branch that starts at zero; method='random' does not apply to "
            f"it. Received: method={request.method!r}. Valid: method='identity'."
        )
    why = None
    if outside is not None:
        why = (
            f"the block it closes cannot be copied ('{outside.name}' of its "
            "branch is in another model than the Add)"
        )
    return _plan_stream_block(site, request, why)


def _plan_after_layer(model, site, request):
    """After any other layer: a copy of a block layer, a residual branch
    that starts at zero, or an identity layer (Net2DeeperNet)."""
    target, handler, residual = site.target, site.handler, request.residual
    blocks = 1 if request.blocks is None else request.blocks
    if handler is not None and handler.copies_itself and not residual:
        if blocks != 1:
            raise H.unsupported(
                target,
                f"is a Transformer block layer; `blocks`={blocks} is not "
                "supported for it (deepen after it once per new block).",
            )
        return _plan_layer_copy(site, request)
    if blocks != 1:
        raise H.unsupported(
            target,
            f"is not a residual Add; `blocks`={blocks} only applies when "
            "deepening after an Add that closes residual blocks.",
        )
    method = request.method
    if residual and method != H.IDENTITY:
        raise ValueError(
            f"`method`: a residual branch after '{target.name}' always starts "
            "at zero (residual=True is function-preserving by construction); "
            f"method='random' does not apply to it. Received: method={method!r}, "
            "residual=True. Valid: method='identity'."
        )
    blocker = None
    if not residual and method == H.IDENTITY and handler is not None:
        blocker = handler.identity_blocker(target)
    path = site.node.path
    in_sequential = isinstance(model, keras.Sequential) or (
        path and isinstance(path[-1], keras.Sequential)
    )
    automatic = blocker is not None and getattr(handler, "residual_deepening", False)
    if residual or (automatic and not in_sequential):
        plan = _plan_residual(site, request)
        if blocker is not None:  # chosen on its own: say why
            plan.description += f" (an identity layer is not exact after {blocker})"
        return plan
    return _plan_identity_layer(model, site, request)


def _plan_identity_layer(model, site, request):
    """An identity copy of the layer after it (Net2DeeperNet)."""
    graph, target, node, handler = site.graph, site.target, site.node, site.handler
    if handler is None or not handler.identity_deepening:
        raise H.unsupported(
            target,
            "cannot be followed by an identity layer: deepen() inserts after "
            "Dense, Conv, DepthwiseConv and SeparableConv layers, and copies "
            "residual blocks after an Add.",
        )
    several = len(node.outputs) > 1
    unread = not graph.consumers(node.outputs[0])
    if several and unread and not graph.is_output(node.outputs[0]):
        raise H.unsupported(
            target,
            f"returns {len(node.outputs)} outputs and nothing reads the first "
            "(e.g. an encoder whose states alone are used): a layer inserted "
            "there would change nothing. Deepen after a layer that reads its "
            "states instead.",
        )
    if several and (
        isinstance(model, keras.Sequential) or graph.is_output(node.outputs[0])
    ):
        raise H.unsupported(
            target,
            f"returns {len(node.outputs)} outputs (e.g. return_state=True) and "
            "its first output is a model output (or it is in a Sequential "
            "model); deepen() inserts after the first output of such a layer "
            "only inside a Functional graph.",
        )
    new_name = unique_name(request.name or f"{target.name}_deeper", site.taken)
    final_name, rename = output_swap(graph, node, new_name)
    if several:
        final_name, rename = new_name, None  # the first output is not an output
    method = request.method
    new_layer, values = handler.deeper_layer(
        target,
        final_name,
        method=method,
        kernel_size=request.kernel_size,
        seed=request.seed,
    )
    plan = Plan(
        f"deepen after '{target.name}': insert '{final_name}' "
        f"({type(new_layer).__name__}, {method})"
    )
    insertion = Insertion.chain([(new_layer, values)])
    if several:
        insertion.index = 0
        plan.details.append(
            f"'{target.name}' returns {len(node.outputs)} outputs: "
            f"'{final_name}' follows the first (its sequence or last output); "
            "the others (its states) pass on unchanged"
        )
    insert_after(plan, node, insertion, rename)
    return plan


def _plan_layer_copy(site, request):
    """Insert a copy of a whole-block layer that starts as the identity.

    ``method="random"``: nothing is zeroed (the not function-preserving
    baseline).
    """
    target, node, handler, init = site.target, site.node, site.handler, request.init
    handler.check_copy(target)
    new_name = unique_name(request.name or f"{target.name}_copy", site.taken)
    final_name, rename = output_swap(site.graph, node, new_name)
    config = target.get_config()
    config["name"] = final_name
    clone = type(target).from_config(config)
    zero = request.method == H.IDENTITY
    values = block_values(target, zero, handler, init)
    # The same call on the stream; masks and other inputs stay as they were.
    insertion = Insertion([Call(clone, like=node, fill={0: OUT})], clone.name, [])
    insertion.layers.append((clone, values))

    zeroed = ", ".join(sorted(handler.zero_change(target))) if zero else "nothing"
    plan = Plan(
        f"deepen after '{target.name}': insert '{final_name}' (a copy of the "
        f"{type(target).__name__}, {init}; {zeroed} zeroed)"
    )
    if init == COPY:
        plan.copies[id(clone)] = target
    insert_after(plan, node, insertion, rename)
    return plan


def _plan_residual(site, request):
    graph, target, node, handler = site.graph, site.target, site.node, site.handler
    if (
        handler is None
        or not handler.residual_deepening
        or handler.at(target, node, graph).role != H.UNITS
    ):
        raise H.unsupported(
            target,
            "cannot be followed by a residual branch: residual=True inserts "
            "after Dense and Conv1D/2D/3D layers.",
        )
    name, taken = request.name, site.taken
    base = name or f"{target.name}_residual"
    names = [unique_name(f"{base}_{part}", taken) for part in ("expand", "project")]
    add_name, rename = output_swap(
        graph, node, unique_name(base if name else f"{base}_add", taken)
    )
    expand, project = handler.residual_layers(
        target, names, kernel_size=request.kernel_size, seed=request.seed
    )
    add = keras.layers.Add(name=add_name, dtype=getattr(target, "dtype_policy", None))
    calls = [
        Call(expand, (OUT,)),
        Call(project, (expand.name,)),
        Call(add, ([OUT, project.name],)),
    ]

    plan = Plan(
        f"deepen after '{target.name}': insert residual branch '{names[0]}' -> "
        f"'{names[1]}' (zero-initialised) and '{add_name}'"
    )
    layers = [(expand, None), (project, None), (add, None)]
    insert_after(plan, node, Insertion(calls, add.name, layers), rename)
    return plan


_STREAM_LAYERS = {2: keras.layers.Dense, 3: keras.layers.Conv1D}
_STREAM_LAYERS.update({4: keras.layers.Conv2D, 5: keras.layers.Conv3D})


def _plan_stream_block(site, request, why=None):
    """After an Add: ``x + project(relu(expand(x)))`` with ``project`` at zero.

    A new block on the stream, for an Add that closes no identity-shortcut
    block to copy (or one that cannot be copied: ``why``): fresh Dense (a
    vector stream) or Conv layers (``"same"`` padding, channels last; kernel
    3 over images and volumes, 1 over sequences), as wide as the stream.
    """
    graph, target, node = site.graph, site.target, site.node
    name, taken, kernel_size, seed = (
        request.name,
        site.taken,
        request.kernel_size,
        request.seed,
    )
    why = why or (
        "it closes no identity-shortcut block to copy (a projection shortcut or "
        "a skip connection)"
    )
    output = node.outputs[0]
    rank = len(graph.shape(output))
    layer_class = _STREAM_LAYERS.get(rank)
    axis = output_axis(graph, node)
    dtype_name = keras.backend.standardize_dtype(graph.tensor(output).dtype)
    if layer_class is None or axis != -1 or "float" not in dtype_name:
        raise H.unsupported(
            target,
            f"cannot be deepened: {why}, and a new block after "
            "it needs a floating-point stream of rank 2 to 5 with the channels "
            f"last (this one: rank {rank}, channels on axis {axis}, "
            f"{dtype_name}).",
        )
    width = graph.width(output)
    base = name or f"{target.name}_residual"
    names = [unique_name(f"{base}_{part}", taken) for part in ("expand", "project")]
    add_name, rename = output_swap(
        graph, node, unique_name(base if name else f"{base}_add", taken)
    )
    dtype = getattr(target, "dtype_policy", None)
    common = dict(use_bias=True, bias_initializer="zeros", dtype=dtype)
    if layer_class is not keras.layers.Dense:
        common["padding"] = "same"
    # Kernel 3 over images and volumes; 1 over sequences, which may be
    # causal (a wider kernel would read later steps once trained).
    default_kernel = 1 if rank == 3 else 3
    expand = layer_class(
        width,
        **(
            {}
            if layer_class is keras.layers.Dense
            else {"kernel_size": kernel_size or default_kernel}
        ),
        activation="relu",
        kernel_initializer=keras.initializers.GlorotUniform(seed=seed),
        name=names[0],
        **common,
    )
    project = layer_class(
        width,
        **({} if layer_class is keras.layers.Dense else {"kernel_size": 1}),
        kernel_initializer="zeros",
        name=names[1],
        **common,
    )
    add = keras.layers.Add(name=add_name, dtype=dtype)
    calls = [
        Call(expand, (OUT,)),
        Call(project, (expand.name,)),
        Call(add, ([OUT, project.name],)),
    ]
    plan = Plan(
        f"deepen after '{target.name}': {why}, so a new block: residual branch "
        f"'{names[0]}' -> '{names[1]}' (zero-initialised) and '{add_name}'"
    )
    plan.details.append(
        f"'{target.name}': {why}: a new block on the stream, whose "
        "zero-initialised branch end keeps the function"
    )
    layers = [(expand, None), (project, None), (add, None)]
    insert_after(plan, node, Insertion(calls, add.name, layers), rename)
    return plan


def _shared_insertion(graph, target, handler, calls, residual):
    """Whether a shared ``target`` can be followed by one shared new layer.

    Every call must have one output that is not a model output, and the
    layer must take an identity copy or a residual branch (not an Add or a
    block); the same new layers then follow every call.
    """
    able = residual_able = False
    if handler is not None:
        able, residual_able = handler.identity_deepening, handler.residual_deepening
    return (
        not is_residual_add(target)
        and (residual_able if residual else able)
        and not handler.copies_itself
        and all(
            len(node.outputs) == 1 and not graph.is_output(node.outputs[0])
            for node in calls
        )
    )
