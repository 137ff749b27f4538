"""Shared layers in a coupling group: one set of weights, several calls.

A layer with weights that is called several times (one embedding network
applied to two inputs) takes part in a group with every call: what one call
writes, reads or passes, all do, and its weights change once. These helpers
find a call's siblings, match their arguments, and check, once the group's
mappings are known, that every call reads its channels with one mapping.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from keras_net2net.surgery import handlers as H


def same_argument(node, position, other):
    """The position in ``other`` (a call of the same layer) of ``node``'s input.

    Matched by the argument it was passed as, not by its flat position (calls
    may pass different optional arguments).
    """
    label = node.labels[position]
    matches = [i for i, other_label in enumerate(other.labels) if other_label == label]
    if len(matches) != 1 or len(other.labels) != len(node.labels):
        raise H.unsupported(
            node.op,
            "is shared, and its calls pass different arguments; a shared "
            "layer is widened only when every call reads the channels the same "
            "way.",
        )
    return matches[0]


def shared_calls(handler, node, graph):
    """The other calls of a shared layer with weights (none for other layers).

    One set of weights serves every call, so every call takes part in the
    group the same way: a writer's calls all write the group's channels, a
    reader's or a pass-through's calls all read them.
    """
    if not handler.has_state:
        return []
    return [other for other in graph.calls(node.op) if other is not node]


def check_shared_calls(group: Any, mappings: dict) -> None:
    """Refuse a shared layer whose calls would need different mappings.

    A shared reader or pass-through changes its weights once, by the mapping
    of its first call's input: every other call must read channels with the
    same mapping (its input in the group, derived the same way).
    """
    graph = group.graph
    members = [(n, p) for n, p in group.readers]
    members += [(n, p) for n in group.passes for p in range(len(n.inputs))]
    for node, position in members:
        key = node.inputs[position]
        handler = H.get_handler(node.op)
        if key not in mappings or handler is None or not handler.has_state:
            continue
        for other in graph.calls(node.op):
            if other is node:
                continue
            other_key = other.inputs[same_argument(node, position, other)]
            theirs = mappings.get(other_key)
            if theirs is None or not np.array_equal(
                theirs.indices, mappings[key].indices
            ):
                raise H.unsupported(
                    node.op,
                    "is shared, and its calls read channels that would be "
                    "widened differently (or one call's not at all); its "
                    "weights can follow only one mapping.",
                )
