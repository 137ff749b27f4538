"""Every use of private Keras attributes in keras-net2net lives in this module.

Keras 3 has public APIs for building modified *copies* of a model
(`keras.models.clone_model`), but none for reading a model's layer graph or for
changing a compiled model in place while `fit` runs. What we need of Keras'
internals is collected here so that a Keras upgrade breaks one module, loudly:
`check_supported()` verifies every attribute we rely on, and the test suite
calls it.

Supported Keras versions are pinned in ``pyproject.toml``.
"""

import contextlib

import keras
from keras.src.ops.function import map_graph
from keras.src.utils.tracking import DotNotTrackScope

SUPPORTED_KERAS = ">=3.13,<3.16"

_FUNCTION_GRAPH_ATTRS = (
    "_inputs_struct",
    "_outputs_struct",
    "_inputs",
    "_outputs",
    "_nodes",
    "_nodes_by_depth",
    "_operations",
    "_operations_by_depth",
)


class KerasInternalsError(RuntimeError):
    """Raised when the installed Keras lacks an internal that growth needs."""


def _require(obj, attr, what):
    if not hasattr(obj, attr):
        raise KerasInternalsError(
            f"keras-net2net relies on the private Keras attribute `{attr}` of "
            f"{what}, which this Keras ({keras.version()}) does not have. "
            f"Supported Keras versions: {SUPPORTED_KERAS}."
        )


def check_supported():
    """Verify that this Keras still has every private attribute we use."""
    inputs = keras.Input((2,))
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    functional = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    for attr in _FUNCTION_GRAPH_ATTRS + ("_layers", "_tracker"):
        _require(functional, attr, "a Functional model")
    for attr in ("_layers", "_functional", "_maybe_rebuild"):
        _require(model, attr, "a Sequential model")
    layer = functional.layers[-1]
    for attr in ("_inbound_nodes", "_outbound_nodes"):
        _require(layer, attr, "a Layer")
    node = layer._inbound_nodes[0]
    for attr in ("operation", "input_tensors", "outputs", "is_input"):
        _require(node, attr, "a Node")
    _require(node.outputs[0], "_keras_history", "a KerasTensor")
    optimizer = keras.optimizers.SGD()
    for attr in (
        "_variables",
        "_tracker",
        "_trainable_variables",
        "_trainable_variables_indices",
        "_iterations",
    ):
        _require(optimizer, attr, "an Optimizer")
    _require(functional._tracker, "config", "a Tracker")
    # `_compiled_trainable_state` (Keras >= 3.14) is optional: used if present.


# --------------------------------------------------------------------------
# Reading a model's layer graph.


def graph_function(model):
    """The Functional object that holds ``model``'s graph of layers."""
    if isinstance(model, keras.Sequential):
        if model._functional is None:
            raise ValueError(
                f"Sequential model '{model.name}' is not built (it has no "
                "input shape). Build it first, e.g. start it with "
                "keras.Input(shape) or call model.build(input_shape)."
            )
        return model._functional
    if isinstance(model, keras.Model) and hasattr(model, "_nodes_by_depth"):
        return model
    raise TypeError(
        "keras-net2net works on Sequential and Functional models. Received: "
        f"model '{getattr(model, 'name', model)}' of type "
        f"{type(model).__name__} (a subclassed model has no layer graph)."
    )


def graph_nodes(model):
    """``(layer, input_tensors, output_tensors)`` per call, in topological order.

    Input layers are included (with no input tensors).
    """
    fn = graph_function(model)
    for depth in sorted(fn._nodes_by_depth, reverse=True):
        for node in fn._nodes_by_depth[depth]:
            inputs = [] if node.is_input else list(node.input_tensors)
            yield node.operation, inputs, list(node.outputs)


def graph_outputs(model):
    return list(graph_function(model).outputs)


# --------------------------------------------------------------------------
# Changing a model in place.


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
        for attr in _FUNCTION_GRAPH_ATTRS:
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
        self.graph_attrs = {a: getattr(fn, a) for a in _FUNCTION_GRAPH_ATTRS}
        self.output_names = getattr(fn, "output_names", None)
        self.tracked_layers = list(model._layers)
        self.layer_nodes = {}
        for layer, _, _ in graph_nodes(model):
            self._remember(layer)
        state = getattr(model, "_compiled_trainable_state", None)
        self.trainable_state = dict(state) if state is not None else None

    def _remember(self, layer):
        if id(layer) not in self.layer_nodes:
            self.layer_nodes[id(layer)] = (
                layer,
                list(layer._inbound_nodes),
                list(layer._outbound_nodes),
            )

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
        for layer, inbound, outbound in self.layer_nodes.values():
            _replace_contents(layer._inbound_nodes, inbound)
            _replace_contents(layer._outbound_nodes, outbound)
            for index, node in enumerate(inbound):
                _renumber(node, index)


def _replace_contents(target, values):
    """Replace a (possibly TF-wrapped) list's items in place."""
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


def prune_nodes(model):
    """Drop every graph node of ``model``'s layers that is not in its graph.

    Rebuilding a graph from reused layers leaves them with nodes of the old
    graph (and of any temporary model); those keep old layers and tensors
    alive and confuse serialisation. Node indices are renumbered and the
    graph's node keys recomputed.
    """
    fn = graph_function(model)
    keep = {id(n) for nodes in fn._nodes_by_depth.values() for n in nodes}
    for layer in fn._operations:
        inbound = [n for n in layer._inbound_nodes if id(n) in keep]
        outbound = [n for n in layer._outbound_nodes if id(n) in keep]
        _replace_contents(layer._inbound_nodes, inbound)
        _replace_contents(layer._outbound_nodes, outbound)
        for index, node in enumerate(layer._inbound_nodes):
            _renumber(node, index)
    nodes, by_depth, operations, ops_by_depth = map_graph(fn._inputs, fn._outputs)
    values = {a: getattr(fn, a) for a in _FUNCTION_GRAPH_ATTRS}
    values.update(
        _nodes=nodes,
        _nodes_by_depth=by_depth,
        _operations=operations,
        _operations_by_depth=ops_by_depth,
    )
    _set_graph_attrs(fn, values)


def adopt_graph(model, new_model):
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
            model, {a: getattr(new_model, a) for a in _FUNCTION_GRAPH_ATTRS}
        )
        _retrack_layers(model, new_model._layers)
    prune_nodes(model)
    _set_trainable_state(
        model, {layer: layer.trainable for layer in model._flatten_layers()}
    )


def _set_trainable_state(model, values):
    """Update the compiled-trainable-state dict (keyed by layer) in place.

    Mutating it in place matters: TensorFlow's tracking keeps a reference to
    this very object, and a new dict would leave the old layers alive.
    """
    state = getattr(model, "_compiled_trainable_state", None)
    if state is not None:
        state.clear()
        state.update(values)


def reset_compiled_functions(model):
    """Make `fit` trace a new train step for the new variables."""
    model.make_train_function(force=True)
    model.test_function = None
    model.predict_function = None


# --------------------------------------------------------------------------
# Backend-specific training state.


def sync_training_state(model):
    """Write the values a backend's fit loop holds back into the variables.

    JAX's fit loop keeps the variables' values in its own state tuple (and
    purges the variables) while it trains; reading or replacing variables in
    between steps needs them synced first. A no-op on other backends.
    """
    sync = getattr(model, "jax_state_sync", None)
    if sync is not None:
        sync()


def after_variables_changed(model):
    """Tell the backend's fit loop that the model has new variables.

    * JAX: drop the loop's stale state and make it re-read the variables
      before the next step.
    * torch: re-track the model's parameters (a ParameterDict keyed by
      variable path), so `zero_grad` and `parameters()` see the new ones and
      no longer hold the replaced ones.
    """
    if hasattr(model, "_jax_state_synced"):
        model._jax_state = None
        model._jax_state_synced = True
    for obj in (model, getattr(model, "_functional", None)):
        if obj is not None and hasattr(obj, "_torch_params"):
            obj._track_variables()


# --------------------------------------------------------------------------
# Optimizer state.


def optimizer_trainable_variables(optimizer):
    return list(optimizer._trainable_variables)


def rebuild_optimizer(optimizer, variables):
    """Rebuild ``optimizer``'s per-variable state for ``variables`` in place.

    The iteration counter and the learning rate (variable or schedule) are kept;
    every other optimizer variable is dropped and `build` creates fresh (zero)
    slots. A LossScaleOptimizer keeps its loss-scale variables and rebuilds its
    inner optimizer. Returns a function that undoes the rebuild.
    """
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        undo_inner = rebuild_optimizer(optimizer.inner_optimizer, variables)
        saved = (optimizer._trainable_variables_indices, optimizer._trainable_variables)

        def undo_outer():
            (optimizer._trainable_variables_indices, optimizer._trainable_variables) = (
                saved
            )
            undo_inner()

        optimizer._trainable_variables_indices = {}
        # The base build only records the variables (no new optimizer state).
        keras.optimizers.Optimizer.build(optimizer, variables)
        return undo_outer
    keep = {id(optimizer._iterations), id(getattr(optimizer, "_learning_rate", None))}
    saved_dict = dict(optimizer.__dict__)
    saved_vars = list(optimizer._variables)
    saved_ids = {k: set(v) for k, v in optimizer._tracker.stored_ids.items()}
    for variable in saved_vars:
        if id(variable) not in keep:
            optimizer._tracker.untrack(variable)
    optimizer._trainable_variables_indices = {}
    optimizer.built = False

    def undo():
        optimizer.__dict__.update(saved_dict)
        _replace_contents(optimizer._variables, saved_vars)
        optimizer._tracker.stored_ids = saved_ids

    try:
        optimizer.build(variables)
    except BaseException:
        undo()
        raise
    return undo


def learning_rate_object(optimizer):
    """The optimizer's learning-rate variable, schedule or callable."""
    return optimizer._learning_rate


def distribution_scope(model):
    """Context in which new variables are created like the model's own."""
    strategy = getattr(model, "distribute_strategy", None)
    if strategy is not None and hasattr(strategy, "scope"):
        return strategy.scope()
    return contextlib.nullcontext()


def set_untracked_attribute(obj, name, value):
    """Set a plain Python attribute that neither Keras nor TF should track."""
    object.__setattr__(obj, name, value)
