"""Every use of private Keras attributes in keras-net2net lives in this package.

Keras 3 has public APIs for building modified *copies* of a model
(`keras.models.clone_model`), but none for reading a model's graph of
operations or for changing a compiled model in place while `fit` runs. What we
need of Keras' internals is collected here, split by concern, so that a Keras
upgrade breaks one package, loudly: `check_supported()` verifies every
attribute we rely on, and the test suite calls it.

* `graph`: reading graphs (nodes, call arguments, nested models).
* `inplace`: replacing a model's graph in place, with an exact undo.
* `training`: backend fit loops, compiled functions, optimizers, callbacks.

Supported Keras versions are pinned in ``pyproject.toml``.
"""

import keras

from keras_net2net._keras_internals.graph import application_layer_classes
from keras_net2net._keras_internals.graph import built_input_shapes
from keras_net2net._keras_internals.graph import fill_arguments
from keras_net2net._keras_internals.graph import functional_class
from keras_net2net._keras_internals.graph import graph_calls
from keras_net2net._keras_internals.graph import graph_function
from keras_net2net._keras_internals.graph import graph_inputs
from keras_net2net._keras_internals.graph import graph_outputs
from keras_net2net._keras_internals.graph import has_graph
from keras_net2net._keras_internals.graph import inputs_struct
from keras_net2net._keras_internals.graph import node_arguments
from keras_net2net._keras_internals.graph import node_inputs
from keras_net2net._keras_internals.graph import node_operation
from keras_net2net._keras_internals.graph import node_outputs
from keras_net2net._keras_internals.graph import outputs_struct
from keras_net2net._keras_internals.graph import sublayers
from keras_net2net._keras_internals.graph import tensor_producer
from keras_net2net._keras_internals.inplace import ModelState
from keras_net2net._keras_internals.inplace import adopt_graph
from keras_net2net._keras_internals.inplace import graph_attrs
from keras_net2net._keras_internals.inplace import prune_nodes
from keras_net2net._keras_internals.inplace import release_graphs
from keras_net2net._keras_internals.inplace import set_untracked_attribute
from keras_net2net._keras_internals.libraries import CHECKED_ON
from keras_net2net._keras_internals.libraries import adopt_task_backbone
from keras_net2net._keras_internals.libraries import hub_cross_attention
from keras_net2net._keras_internals.libraries import hub_self_attention
from keras_net2net._keras_internals.optimizers import LINEAR
from keras_net2net._keras_internals.optimizers import SLOT_ATTRIBUTES
from keras_net2net._keras_internals.optimizers import SQUARED
from keras_net2net._keras_internals.optimizers import slot_lists
from keras_net2net._keras_internals.training import after_variables_changed
from keras_net2net._keras_internals.training import backup_paths
from keras_net2net._keras_internals.training import deferred_variables
from keras_net2net._keras_internals.training import discard_deferred
from keras_net2net._keras_internals.training import distribution_scope
from keras_net2net._keras_internals.training import initialize_variables
from keras_net2net._keras_internals.training import learning_rate_object
from keras_net2net._keras_internals.training import optimizer_trainable_variables
from keras_net2net._keras_internals.training import rebuild_optimizer
from keras_net2net._keras_internals.training import reset_compiled_functions
from keras_net2net._keras_internals.training import sibling_callbacks
from keras_net2net._keras_internals.training import slot_key
from keras_net2net._keras_internals.training import sync_training_state

SUPPORTED_KERAS = ">=3.13,<3.16"

__all__ = [
    "CHECKED_ON",
    "adopt_task_backbone",
    "built_input_shapes",
    "KerasInternalsError",
    "LINEAR",
    "SLOT_ATTRIBUTES",
    "SQUARED",
    "hub_cross_attention",
    "hub_self_attention",
    "slot_lists",
    "sublayers",
    "ModelState",
    "SUPPORTED_KERAS",
    "adopt_graph",
    "after_variables_changed",
    "application_layer_classes",
    "backup_paths",
    "check_supported",
    "deferred_variables",
    "discard_deferred",
    "initialize_variables",
    "distribution_scope",
    "fill_arguments",
    "graph_attrs",
    "functional_class",
    "graph_calls",
    "graph_function",
    "graph_inputs",
    "graph_outputs",
    "has_graph",
    "inputs_struct",
    "learning_rate_object",
    "node_arguments",
    "node_inputs",
    "node_operation",
    "node_outputs",
    "optimizer_trainable_variables",
    "outputs_struct",
    "prune_nodes",
    "rebuild_optimizer",
    "slot_key",
    "release_graphs",
    "reset_compiled_functions",
    "set_untracked_attribute",
    "sibling_callbacks",
    "sync_training_state",
    "tensor_producer",
]


class KerasInternalsError(RuntimeError):
    """Raised when the installed Keras lacks an internal that growth needs."""


def _require(obj, attr, what, library=None):
    """Raise `KerasInternalsError` if ``obj`` lacks the private ``attr``.

    ``library`` names a library other than Keras (``"keras-hub"``, ...).
    """
    if hasattr(obj, attr):
        return
    if library is None:
        installed = f"this Keras ({keras.version()})"
        supported = f"Supported Keras versions: {SUPPORTED_KERAS}."
    else:
        from importlib.metadata import version

        installed = f"this {library} ({version(library)})"
        supported = f"Checked on {library} {CHECKED_ON[library]}."
    raise KerasInternalsError(
        f"keras-net2net relies on the private attribute `{attr}` of {what}, "
        f"which {installed} does not have. {supported}"
    )


def check_supported():
    """Verify that this Keras still has every private attribute we use."""
    from keras_net2net._keras_internals.graph import FUNCTION_GRAPH_ATTRS

    inputs = keras.Input((2,))
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    functional = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    for attr in FUNCTION_GRAPH_ATTRS + ("_layers", "_tracker"):
        _require(functional, attr, "a Functional model")
    for attr in ("_layers", "_functional", "_maybe_rebuild"):
        _require(model, attr, "a Sequential model")
    layer = functional.layers[-1]
    for attr in ("_inbound_nodes", "_outbound_nodes", "_flatten_layers"):
        _require(layer, attr, "a Layer")
    node = layer._inbound_nodes[0]
    for attr in ("operation", "input_tensors", "outputs", "is_input", "arguments"):
        _require(node, attr, "a Node")
    _require(node.arguments, "fill_in", "a Node's SymbolicArguments")
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
    _require(layer, "_build_shapes_dict", "a built Layer")
    backup = keras.callbacks.BackupAndRestore("unused_backup_dir")
    for attr in ("_weights_path", "_prev_weights_path"):
        _require(backup, attr, "a BackupAndRestore callback")
    # `_compiled_trainable_state` (Keras >= 3.14) is optional: used if present.
    from keras_net2net._keras_internals.libraries import check_libraries
    from keras_net2net._keras_internals.optimizers import check_slot_attributes

    check_slot_attributes(_require, KerasInternalsError)
    check_libraries(_require)
    from keras_net2net._keras_internals.training import check_deferred

    check_deferred(_require)
