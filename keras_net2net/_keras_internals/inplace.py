"""Changing a model's graph in place, with an exact undo (private Keras attributes)."""

import contextlib
import sys
from typing import Any

import keras
from keras.src.utils.tracking import DotNotTrackScope

from keras_net2net._keras_internals.graph import FUNCTION_GRAPH_ATTRS
from keras_net2net._keras_internals.graph import graph_function
from keras_net2net._keras_internals.graph import has_graph
from keras_net2net._keras_internals.graph import map_graph


@contextlib.contextmanager
def _no_tracking(obj, tf_tracking=True):
    """Set attributes on a Keras object without Keras auto-tracking.

    TensorFlow's own attribute tracking stays on unless ``tf_tracking`` is
    False, so that TF replaces (rather than keeps) its reference to the
    previous value, exactly as `Function.__init__` does.
    """
    previous = getattr(obj, "_self_setattr_tracking", None)
    if previous is not None and not tf_tracking:
        obj._self_setattr_tracking = False
    try:
        with DotNotTrackScope():
            yield
    finally:
        if previous is not None:
            obj._self_setattr_tracking = previous


def _set_graph_attrs(fn, values):
    structs = ("_inputs_struct", "_outputs_struct")
    with _no_tracking(fn, tf_tracking=False):
        for attr in structs:
            setattr(fn, attr, values[attr])
    with _no_tracking(fn):
        for attr in FUNCTION_GRAPH_ATTRS:
            if attr not in structs:
                setattr(fn, attr, values[attr])


class ModelState:
    """A snapshot of what `adopt_graph` changes, so a failed growth can undo it."""

    def __init__(self, model):
        self.model = model
        fn = graph_function(model)
        self.sequential_layers = (
            list(model._layers) if isinstance(model, keras.Sequential) else None
        )
        self.sequential_functional = getattr(model, "_functional", None)
        self.graph_attrs = {a: getattr(fn, a) for a in FUNCTION_GRAPH_ATTRS}
        self.output_names = getattr(fn, "output_names", None)
        self.tracked_layers = list(model._layers)
        self.operations = _graph_operations(fn._operations)
        self.nested_graphs = {
            id(op): (op, graph_attrs(op)) for op in self.operations if has_graph(op)
        }
        self.layer_nodes = {
            id(op): (op, list(op._inbound_nodes), list(op._outbound_nodes))
            for op in self.operations
        }
        state = getattr(model, "_compiled_trainable_state", None)
        self.trainable_state = dict(state) if state is not None else None

    def node_lists(self):
        """The lists of nodes this snapshot holds (not another model's)."""
        return [
            lst
            for _, inbound, outbound in self.layer_nodes.values()
            for lst in (inbound, outbound)
        ]

    def graphs(self):
        """The snapshot's graph attribute dicts (see `prune_nodes`)."""
        graphs = [self.graph_attrs] + [
            attrs for _, attrs in self.nested_graphs.values()
        ]
        if self.sequential_functional is not None:
            graphs.append(
                {
                    a: getattr(self.sequential_functional, a)
                    for a in FUNCTION_GRAPH_ATTRS
                }
            )
        return graphs

    def restore(self):
        model = self.model
        if self.sequential_layers is not None:
            _set_sequential(model, self.sequential_layers, self.sequential_functional)
        else:
            with _no_tracking(model):
                model.output_names = self.output_names
            _set_graph_attrs(model, self.graph_attrs)
            _retrack_layers(model, self.tracked_layers)
        if self.trainable_state is not None:
            _set_trainable_state(model, self.trainable_state)
        for op, attrs in self.nested_graphs.values():
            _set_graph_attrs(graph_function(op), attrs)
        for op, inbound, outbound in self.layer_nodes.values():
            _replace_contents(op._inbound_nodes, inbound)
            _replace_contents(op._outbound_nodes, outbound)
            for index, node in enumerate(inbound):
                _renumber(node, index)


def _replace_contents(target, values):
    """Replace a (possibly tracked) list's items in place."""
    values = list(values)
    while len(target):
        target.pop()
    target.extend(values)


def _set_sequential(model, layers, functional):
    """Give a Sequential model a new layer list and graph.

    Assigned with tracking on, as Sequential itself does, so that TF's tracking
    lets go of the previous graph; the previous layers and graph are then
    removed from the Keras tracker's store, which would otherwise keep them.
    """
    previous = list(model._layers) + [model._functional]
    model._layers = layers
    model._functional = functional
    keep = {id(x) for x in layers} | {id(functional)}
    for obj in previous:
        if obj is not None and id(obj) not in keep:
            model._tracker.untrack(obj)


def _retrack_layers(model, layers):
    """Make ``layers`` (in this order) the layers that ``model`` tracks.

    Keras >= 3.14 keeps a Functional model's layers in the tracker's store
    (``model._layers`` is that list, updated in place); Keras 3.13 assigns
    ``model._layers`` a list of its own, which is re-assigned here the way
    `Functional.__init__` does it (so TF's tracking drops the old list).
    """
    store = model._tracker.config["layers"][1]
    own_list = model._layers is not store
    for layer in list(store):
        model._tracker.untrack(layer)
    for layer in layers:
        model._tracker.add_to_store("layers", layer)
    if own_list:
        with _no_tracking(model):
            model._layers = list(layers)


def _renumber(node, index):
    """Point the outputs of ``node`` at its position in its layer's node list."""
    for tensor_index, tensor in enumerate(node.outputs):
        history = tensor._keras_history
        if history.operation is node.operation and history.node_index != index:
            tensor._keras_history = type(history)(node.operation, index, tensor_index)


def _storage(lst):
    return getattr(lst, "_storage", lst)


def _graph_operations(operations):
    """``operations`` and, recursively, those of the nested models among them."""
    found, stack, seen = [], list(operations), set()
    while stack:
        op = stack.pop()
        if id(op) in seen:
            continue
        seen.add(id(op))
        found.append(op)
        if has_graph(op):
            stack.extend(graph_function(op)._operations)
    return found


def _nodes_used_elsewhere(candidates, operations, own_graphs, own_lists=()):
    """Ids of the candidate nodes that something outside the known graphs holds.

    A node is referred to by its operation's ``_inbound_nodes``, by the
    ``_outbound_nodes`` of the operations that produced its inputs, and by the
    ``_nodes_by_depth`` lists of every graph (model) that contains it. A
    reference outside these, and outside the graphs this growth made or
    replaced (``own_graphs``) and its undo snapshot (``own_lists``), is
    another model (or a user's reference) that still needs the node.

    The references are counted, not searched for: a node's reference count
    (`sys.getrefcount`) above the number of places the known lists hold it
    means someone else holds it too. This costs O(candidates + known lists),
    not a walk of the whole Python heap (`gc.get_referrers`). A reference that
    is ours but not counted (a caller's local variable) only keeps a node, so
    the error is on the safe side: another model is never broken.
    """
    if not candidates:
        return set()
    lists: dict[int, Any] = {}
    every_op = list(operations)
    for attrs in own_graphs:
        every_op.extend(_graph_operations(attrs["_operations"]))
        for nodes in attrs["_nodes_by_depth"].values():
            lists[id(nodes)] = nodes
    for op in every_op:
        for nodes in (_storage(op._inbound_nodes), _storage(op._outbound_nodes)):
            lists[id(nodes)] = nodes
    for nodes in own_lists:
        lists[id(nodes)] = nodes
    held: dict[int, int] = {}
    for nodes in lists.values():
        for node in nodes:
            held[id(node)] = held.get(id(node), 0) + 1
    used = set()
    # The references this loop itself holds (the list, the loop variable and
    # getrefcount's argument, which depend on the interpreter), measured on an
    # object held the same way.
    ours = 0
    for probe in [object()]:
        ours = sys.getrefcount(probe)
    for node in candidates:
        if sys.getrefcount(node) - ours > held.get(id(node), 0):
            used.add(id(node))
    return used


def prune_nodes(model, own_graphs=(), own_lists=()):
    """Drop the graph nodes of ``model``'s operations that no graph needs.

    Rebuilding a graph from reused layers leaves them with nodes of the old
    graph (and of temporary models); those keep old layers and tensors alive.
    A node that another model (one sharing these layers) still lists is kept,
    and so is every node of its operation, so that the other model's node
    indices stay valid. Node indices are renumbered and the graph's node keys
    recomputed.

    Args:
        model: the model whose graph was just replaced.
        own_graphs: graph attribute dicts (``_nodes_by_depth`` ...) of the
            graphs this growth replaced or created; their references do not
            count as "another model".
        own_lists: other lists of nodes held by the growth (its undo
            snapshot), which do not count either.
    """
    fn = graph_function(model)
    operations = _graph_operations(fn._operations)
    graphs = [fn] + [graph_function(op) for op in operations if has_graph(op)]
    keep = {
        id(n) for fn in graphs for nodes in fn._nodes_by_depth.values() for n in nodes
    }
    candidates = [
        node
        for op in operations
        for node in list(op._inbound_nodes) + list(op._outbound_nodes)
        if id(node) not in keep
    ]
    candidates = list({id(n): n for n in candidates}.values())
    used = _nodes_used_elsewhere(candidates, operations, own_graphs, own_lists)
    for op in operations:
        # Outbound lists hold no indices: drop what no graph needs.
        outbound = [n for n in op._outbound_nodes if id(n) in keep or id(n) in used]
        _replace_contents(op._outbound_nodes, outbound)
        if any(id(n) in used for n in op._inbound_nodes):
            continue  # another model needs this operation's node indices
        inbound = [n for n in op._inbound_nodes if id(n) in keep]
        _replace_contents(op._inbound_nodes, inbound)
        for index, node in enumerate(op._inbound_nodes):
            _renumber(node, index)
    for fn in graphs:
        nodes, by_depth, ops, ops_by_depth = map_graph(fn._inputs, fn._outputs)
        values = {a: getattr(fn, a) for a in FUNCTION_GRAPH_ATTRS}
        values.update(
            _nodes=nodes,
            _nodes_by_depth=by_depth,
            _operations=ops,
            _operations_by_depth=ops_by_depth,
        )
        _set_graph_attrs(fn, values)


def graph_attrs(model):
    """The graph attribute dict of ``model`` (for `prune_nodes`' own_graphs)."""
    fn = graph_function(model)
    return {a: getattr(fn, a) for a in FUNCTION_GRAPH_ATTRS}


def adopt_graph(model, new_model, own_graphs=(), own_lists=()):
    """Make ``model`` compute ``new_model``'s graph, keeping the ``model`` object.

    ``new_model`` must be of the same kind (Sequential or Functional) and is
    consumed: do not use it afterwards. Layers of ``model`` that are not in the
    new graph are untracked, so their variables leave ``model.weights``.
    """
    if isinstance(model, keras.Sequential):
        _set_sequential(model, list(new_model._layers), new_model._functional)
    else:
        with _no_tracking(model):
            model.output_names = list(new_model.output_names)
        _set_graph_attrs(
            model, {a: getattr(new_model, a) for a in FUNCTION_GRAPH_ATTRS}
        )
        _retrack_layers(model, new_model._layers)
    prune_nodes(model, own_graphs, own_lists)
    _set_trainable_state(
        model, {layer: layer.trainable for layer in model._flatten_layers()}
    )


def release_graphs(model, temporaries, previous=()):
    """Empty the graphs of temporary models that a growth built and dropped.

    Growth builds the grown graph as a temporary model (and, for several
    operations, intermediate ones); ``model`` adopts the last one's graph. The
    temporaries would otherwise keep their graph nodes listed until Python's
    cycle collector runs, and a later growth would take them for another
    model that still needs those nodes. Graphs that ``model`` uses now, and
    the nested models of its previous graph (``previous``: operations, e.g. a
    user's sub-model that a later operation replaced), are kept.
    """
    fn = graph_function(model)
    in_use = {id(fn)} | {
        id(graph_function(op))
        for op in _graph_operations(fn._operations) + list(previous)
        if has_graph(op)
    }
    empty: dict[str, Any] = {
        "_inputs_struct": [],
        "_outputs_struct": [],
        "_inputs": [],
        "_outputs": [],
        "_nodes": set(),
        "_nodes_by_depth": {},
        "_operations": [],
        "_operations_by_depth": {},
    }
    for temporary in temporaries:
        try:
            temp_fn = graph_function(temporary)
        except (TypeError, ValueError):
            continue
        nested = [
            graph_function(op)
            for op in _graph_operations(temp_fn._operations)
            if has_graph(op)
        ]
        for graph in [temp_fn] + nested:
            if id(graph) not in in_use:
                _set_graph_attrs(graph, dict(empty))


def _set_trainable_state(model, values):
    """Update the compiled-trainable-state dict (keyed by layer) in place.

    Mutating it in place matters: TensorFlow's tracking keeps a reference to
    this very object, and a new dict would leave the old layers alive.
    """
    state = getattr(model, "_compiled_trainable_state", None)
    if state is not None:
        state.clear()
        state.update(values)


def set_untracked_attribute(obj, name, value):
    """Set a plain Python attribute that neither Keras nor TF should track."""
    object.__setattr__(obj, name, value)
