"""Coupling groups: every layer that shares one channel axis.

Widening a layer widens a channel axis, and every operation that shares that
axis must change with it, under one mapping ``g`` (new channel -> old
channel). The group is found from the graph, starting at the widened layer's
output tensor:

* its *core* tensors share the axis exactly. Crossing a pass-through
  (activation, BatchNormalization, pooling, ...) keeps a tensor in the core,
  in both directions; a merge (Add, Multiply, ``x + y``, ...) puts all its
  inputs and its output in the core, so a residual stream is one group.
* *writers* (Dense, Conv, ...) produce core tensors: their output units are
  copied by ``g``. Every core tensor ends, upstream, at writers.
* *readers* (Dense, Conv, ...) consume group tensors: the incoming weights of
  copied channels are divided by their replication count.
* *layouts* (Flatten, channel Concatenate, depthwise convolutions with a depth
  multiplier) derive new index layouts from core tensors, crossed forwards
  only; their outputs are *derived* tensors that reach readers the same way.
* *splits* (a Reshape of a Dense's units into ``(positions, channels)``) are
  the one layout crossed backwards: their input is a derived tensor, written
  by a writer (through per-channel layers) in that layout.

Anything else on the way (an unsupported operation, a model input or output, a
shared layer with weights) makes the widening impossible, and the error names
it before anything changes.
"""

from keras_net2net.surgery import handlers as H
from keras_net2net.surgery.channel_group import ChannelGroup
from keras_net2net.surgery.graph import LayerGraph
from keras_net2net.surgery.graph import Node
from keras_net2net.surgery.sharing import same_argument
from keras_net2net.surgery.sharing import shared_calls


def _handler(node, source_name, graph, axis=None):
    op = node.op
    handler = H.get_handler(op)
    if handler is None:
        raise H.NoHandler(
            f"{H.describe(op)} is on the path of the channels of '{source_name}', "
            f"but {type(op).__name__} is not supported by keras-net2net; register "
            "a handler with keras_net2net.register_handler.",
            op,
        )
    handler.check(op)
    return handler, handler.role_of(op, node, graph, axis=axis)


def _producer_name(graph, key):
    node = graph.producer(key)
    return node.op.name if node is not None else "the model input"


def _declared_axis(handler, node, graph):
    """The handler's channel axis at ``node``, counted from the end (or None)."""
    axis = handler.channel_axis(node.op, node, graph)
    return None if axis is None else H.negative_axis(axis, H.input_rank(node, graph))


def output_axis(graph: LayerGraph, node: Node) -> int:
    """The channel axis of ``node``'s outputs, counted from the end.

    An elementwise node (no declared axis) has its input's axis: the chain of
    producers is followed back to a layer that declares one (-1 at a model
    input or an unsupported operation).
    """
    chain = []
    current: Node | None = node
    while current is not None:
        handler = H.get_handler(current.op)
        if handler is None:
            break
        chain.append((handler, current))
        if _declared_axis(handler, current, graph) is not None or not current.inputs:
            break
        current = graph.producer(current.inputs[0])
    axis = -1
    for handler, member in reversed(chain):
        declared = _declared_axis(handler, member, graph)
        axis = handler.output_axis(
            member.op, member, graph, axis if declared is None else declared
        )
    return axis


def _axis_text(graph, key, axis):
    rank = len(graph.shape(key))
    return f"axis {rank + axis} of shape {graph.shape(key)}"


def find_group(
    graph: LayerGraph, seed: Node, source_name: str, axis: int | None = None
) -> ChannelGroup:
    """The `ChannelGroup` of the channels that node ``seed`` writes.

    Args:
        graph: a `LayerGraph`.
        seed: the node whose output channels are widened (every output its
            handler lists in `Handler.channel_outputs` joins the group).
        source_name: name of the layer being widened (for messages).
        axis: the channel axis of the seed's outputs, counted from the end
            (None: `output_axis`).

    Raises:
        ValueError: naming the first operation that cannot take part.
    """
    seed_handler = H.handler_for(seed.op)
    if axis is None:
        axis = output_axis(graph, seed)
    keys = [seed.outputs[i] for i in seed_handler.channel_outputs(seed.op, seed, graph)]
    group = ChannelGroup(graph, graph.width(keys[0], axis))
    core: list[tuple[int, int]] = []
    derived: list[tuple[int, int]] = []
    unsplit: list[tuple[int, int]] = []  # derived tensors reached backwards
    seen_nodes = set()

    def visit(node, role_name):
        key = (node.index, role_name)
        if key in seen_nodes:
            return False
        seen_nodes.add(key)
        return True

    def add_core(key, axis, writer=None):
        width = graph.width(key, axis)
        if width == group.width:
            core.append((key, axis))
        elif writer is not None:
            raise H.unsupported(
                writer.op,
                f"writes the channels of '{source_name}' and an output of "
                f"{_axis_text(graph, key, axis)} with {width} channels, not "
                f"{group.width}; its handler's channel_outputs must list only "
                "the outputs on the channel axis.",
            )
        elif width != 1:  # 1: broadcast over the channels
            producer = _producer_name(graph, key)
            raise ValueError(
                f"Tensor of shape {graph.shape(key)} from '{producer}' is merged "
                f"with the {group.width} channels of '{source_name}' but has a "
                "different channel width."
            )

    for key in keys:
        add_core(key, axis, writer=seed)

    def check_ends(key):
        if graph.is_output(key):
            producer = graph.producer(key)
            op = producer.op if producer is not None else graph.model
            coupled = (
                ""
                if op.name == source_name
                else f", and its channels are coupled with those of '{source_name}'"
            )
            raise H.unsupported(
                op,
                f"produces a model output{coupled}: widening would change the "
                "model's output shape. Widen a layer whose channels are consumed "
                "by a Dense or Conv layer before the output.",
            )
        if graph.is_input(key):
            raise ValueError(
                f"The channels of '{source_name}' are coupled (through a merge) "
                "with a model input, whose width cannot change."
            )

    def check_axis(node, key, axis, expected, verb):
        if expected != axis:
            raise H.unsupported(
                node.op,
                f"{verb} its channels on axis {H.input_rank(node, graph) + expected}"
                f", but the channels of '{source_name}' are on "
                f"{_axis_text(graph, key, axis)} there (a layer with another "
                "data_format or axis).",
            )

    def add_rule(handler, node, key, axis):
        rule = handler.mapping_rule(node.op, node, graph, axis)
        if rule is not None:
            group.rules.append((node, rule, key))

    def add_sibling_input(key, axis, is_derived):
        # Another call of a shared layer reads the same kind of channels: a
        # derived layout (after a Flatten) or the group's own.
        if is_derived:
            derived.append((key, axis))
        else:
            add_core(key, axis)

    def add_writer(handler, node, key, axis):
        if not visit(node, "writer"):
            return
        group.writers.append(node)
        for other in shared_calls(handler, node, graph):
            for i in handler.channel_outputs(other.op, other, graph):
                add_core(other.outputs[i], axis, writer=other)
        rule = handler.output_rule(node.op, node, graph, axis)
        if rule is not None:
            group.rules.append((node, rule, key))
        for i in handler.channel_outputs(node.op, node, graph):
            add_core(node.outputs[i], axis, writer=node)
        # Inputs that carry the layer's own units (a recurrent layer's
        # initial state) share its mapping.
        for i in handler.coupled_inputs(node.op, node, graph):
            add_core(node.inputs[i], axis)

    def add_across(node, axis):
        # Channels on a batch-like axis of the layer: through it, unchanged
        # (so its other calls, if it is shared, are not concerned).
        if visit(node, "across"):
            group.across.append(node)
            for other in node.inputs[:1]:
                add_core(other, axis)
            for other in node.outputs[:1]:
                add_core(other, axis)

    def backward(key, axis):
        node = graph.producer(key)
        assert node is not None  # model inputs were refused by check_ends
        handler, role = _handler(node, source_name, graph, axis)
        if handler.acts_across(node.op, node, graph, axis):
            add_across(node, axis)
            return
        declared = _declared_axis(handler, node, graph)
        if role == H.UNITS:
            out_axis = handler.output_axis(node.op, node, graph, declared)
            check_axis(node, key, axis, out_axis, "writes")
            add_writer(handler, node, key, axis)
        elif role == H.PASS_THROUGH:
            in_axis = declared
            if in_axis is None:  # the input axis that lands on ``axis``
                rank = H.input_rank(node, graph)
                in_axis = next(
                    (
                        a
                        for a in [axis, *range(1 - rank, 0)]
                        if handler.output_axis(node.op, node, graph, a) == axis
                    ),
                    axis,
                )
            out_axis = handler.output_axis(node.op, node, graph, in_axis)
            check_axis(node, key, axis, out_axis, "writes")
            if visit(node, "pass"):
                group.passes.append(node)
                positions = handler.channel_inputs(node.op, node, graph)
                if positions:
                    add_rule(handler, node, node.inputs[positions[0]], in_axis)
                for position in positions:
                    add_core(node.inputs[position], in_axis)
                for other in node.outputs:
                    add_core(other, out_axis)
                for call in shared_calls(handler, node, graph):
                    for position in positions:
                        add_core(
                            call.inputs[same_argument(node, position, call)], in_axis
                        )
                    for other in call.outputs:
                        add_core(other, out_axis)
        elif handler.split_positions(node.op, node, graph, axis) is not None:
            if shared_calls(handler, node, graph):
                raise H.unsupported(
                    node.op,
                    f"is shared and splits the channels of '{source_name}' out "
                    "of its input's units; such a shared layer is not widened.",
                )
            if visit(node, "split"):
                group.splits.append(node)
                unsplit.append((node.inputs[0], -1))
        else:
            raise H.unsupported(
                node.op,
                "derives a new channel layout (e.g. flattening or "
                f"concatenating), and its output is merged with the channels of "
                f"'{source_name}'; such merges are not supported.",
            )

    def split_writer(key, axis):
        # The input of a split (or of a per-channel layer before it): written
        # in the split's layout by a units layer.
        node = graph.producer(key)
        assert node is not None  # model inputs were refused by check_ends
        handler, role = _handler(node, source_name, graph, axis)
        declared = _declared_axis(handler, node, graph)
        if declared not in (None, axis) or shared_calls(handler, node, graph):
            role = None
        if role == H.UNITS and handler.channel_outputs(node.op, node, graph) == [0]:
            if visit(node, "writer"):
                group.writers.append(node)
            return
        if role == H.PASS_THROUGH:
            positions = handler.channel_inputs(node.op, node, graph)
            if len(positions) == 1 and len(node.outputs) == 1:
                if visit(node, "pass"):
                    group.passes.append(node)
                    add_rule(handler, node, key, axis)
                    unsplit.append((node.inputs[positions[0]], axis))
                return
        raise H.unsupported(
            node.op,
            f"produces the input of a Reshape that splits it into the channels "
            f"of '{source_name}' at each position; only a Dense or Conv (with "
            "per-channel layers after it) can be widened through such a split.",
        )

    def forward(key, axis, is_derived):
        for node, position in graph.consumers(key):
            handler, role = _handler(node, source_name, graph, axis)
            if not is_derived and handler.acts_across(node.op, node, graph, axis):
                add_across(node, axis)
                continue
            declared = _declared_axis(handler, node, graph)
            in_axis = axis if declared is None else declared
            if role == H.UNITS and position in handler.coupled_inputs(
                node.op, node, graph
            ):
                # The layer's own units start from these channels: it is
                # widened with them (a decoder LSTM whose initial state is
                # the encoder's).
                if is_derived:
                    raise H.unsupported(
                        node.op,
                        f"starts from a state whose channels are a layout "
                        f"(Concatenate, ...) derived from those of "
                        f"'{source_name}'; its units cannot follow it.",
                    )
                check_axis(node, key, axis, in_axis, "reads")
                add_writer(handler, node, key, axis)
                continue
            if role == H.UNITS:
                if position not in handler.reads(node.op, node):
                    raise H.unsupported(
                        node.op,
                        f"receives the channels of '{source_name}' as argument "
                        f"{position}, which it cannot adjust.",
                    )
                check_axis(node, key, axis, in_axis, "reads")
                if visit(node, f"reader{position}"):
                    group.readers.append((node, position))
                    add_rule(handler, node, key, axis)
                    for other in shared_calls(handler, node, graph):
                        other_position = same_argument(node, position, other)
                        add_sibling_input(
                            other.inputs[other_position], axis, is_derived
                        )
                continue
            positions = handler.channel_inputs(node.op, node, graph)
            if position not in positions:
                raise H.unsupported(
                    node.op,
                    f"receives the channels of '{source_name}' as argument "
                    f"{position}, which it cannot adjust.",
                )
            check_axis(node, key, axis, in_axis, "reads")
            out_axis = handler.output_axis(node.op, node, graph, in_axis)
            if role == H.LAYOUT:
                if (node.index, "split") in seen_nodes:
                    continue  # crossed backwards from its output
                if handler.split_positions(node.op, node, graph, out_axis):
                    raise H.unsupported(
                        node.op,
                        f"splits the channels of '{source_name}' (its input's "
                        "last axis) into several axes; a split is only crossed "
                        "from its output: widen the layer that writes its input "
                        "by a multiple of the positions, or the channels after it.",
                    )
                if shared_calls(handler, node, graph):
                    raise H.unsupported(
                        node.op,
                        "is shared and derives a channel layout (e.g. a "
                        "depthwise multiplier); such a shared layer is not "
                        "widened.",
                    )
                if visit(node, "layout"):
                    group.layouts.append(node)
                    derived.extend((k, out_axis) for k in node.outputs)
                continue
            if not visit(node, "pass"):
                continue
            group.passes.append(node)
            add_rule(handler, node, key, axis)
            for other in shared_calls(handler, node, graph):
                other_position = same_argument(node, position, other)
                add_sibling_input(other.inputs[other_position], axis, is_derived)
            if is_derived:
                if len([p for p in positions if p != position]) > 0:
                    raise H.unsupported(
                        node.op,
                        "merges a tensor whose channel layout was derived (by "
                        "Flatten, Concatenate, ...) from the channels of "
                        f"'{source_name}'; such merges are not supported.",
                    )
                derived.extend((k, out_axis) for k in node.outputs)
                continue
            for other in positions:
                if other != position:
                    add_core(node.inputs[other], in_axis)
            core.extend((k, out_axis) for k in node.outputs)

    while core or derived or unsplit:
        if unsplit and not core:
            key, axis = unsplit.pop()
            if key not in group.derived:
                group.derived.add(key)
                group.axes[key] = axis
                check_ends(key)
                split_writer(key, axis)
                forward(key, axis, True)
            continue
        is_derived = not core
        key, axis = core.pop() if core else derived.pop()
        if key in group.core or key in group.derived:
            if group.axes[key] != axis and not (is_derived and key in group.core):
                raise ValueError(
                    f"The channels of '{source_name}' reach the tensor of shape "
                    f"{graph.shape(key)} from '{_producer_name(graph, key)}' on "
                    f"two axes ({group.axes[key]} and {axis}, counted from the "
                    "end); such a widening is not supported."
                )
            continue
        (group.derived if is_derived else group.core).add(key)
        group.axes[key] = axis
        check_ends(key)
        if not is_derived:
            backward(key, axis)
        forward(key, axis, is_derived)
    return group


def split_below(graph: LayerGraph, node: Node) -> tuple[Node, int] | None:
    """``(split node, channel axis)`` when ``node``'s units are split into channels.

    A units layer whose only reader is a Reshape splitting its units into
    ``(positions, channels)`` (through per-channel layers such as
    BatchNormalization or an activation: a DCGAN generator's stem) writes
    the channels after the split; widening it widens those. The channel axis
    is the first one a consumer of the split's output declares (-1 when
    none does, as for channels-last convolutions).
    """
    handler = H.get_handler(node.op)
    if handler is None or handler.role_of(node.op, node, graph) != H.UNITS:
        return None
    if len(node.outputs) != 1:
        return None
    key = node.outputs[0]
    while True:
        consumers = graph.consumers(key)
        if len(consumers) != 1 or graph.is_output(key):
            return None
        consumer, position = consumers[0]
        handler = H.get_handler(consumer.op)
        if handler is None or shared_calls(handler, consumer, graph):
            return None
        try:
            role = handler.role_of(consumer.op, consumer, graph, axis=-1)
        except ValueError:
            return None
        if (
            role == H.PASS_THROUGH
            and isinstance(handler, H.PassThroughHandler)
            and handler.channel_inputs(consumer.op, consumer, graph) == [position]
            and len(consumer.outputs) == 1
        ):
            key = consumer.outputs[0]
            continue
        if role != H.LAYOUT or not isinstance(handler, H.LayoutHandler):
            return None
        axis = _first_declared_axis(graph, consumer.outputs[0])
        if handler.split_positions(consumer.op, consumer, graph, axis) is None:
            return None
        return consumer, axis


def _first_declared_axis(graph, key):
    """The channel axis the first layer reading ``key`` declares (else -1)."""
    for node, _ in graph.consumers(key):
        handler = H.get_handler(node.op)
        if handler is None:
            continue
        declared = _declared_axis(handler, node, graph)
        if declared is not None:
            return declared
        try:
            same = handler.role_of(node.op, node, graph) == H.PASS_THROUGH
        except ValueError:
            continue
        if same and node.outputs:
            return _first_declared_axis(graph, node.outputs[0])
    return -1
