"""Reading a model's graph of operations (private Keras attributes)."""

import keras
from keras.src.ops.function import map_graph  # noqa: F401  (re-exported)

# Attributes of a Functional (or a Sequential's inner Functional) that hold
# its graph.
FUNCTION_GRAPH_ATTRS = (
    "_inputs_struct",
    "_outputs_struct",
    "_inputs",
    "_outputs",
    "_nodes",
    "_nodes_by_depth",
    "_operations",
    "_operations_by_depth",
)


def graph_function(model):
    """The Functional object that holds ``model``'s graph of operations."""
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


def built_input_shapes(model):
    """The input shape(s) a subclassed model was built or first called with.

    None if it was never built with a known input shape.
    """
    shapes = getattr(model, "_build_shapes_dict", None) or {}
    return next(iter(shapes.values())) if len(shapes) == 1 else None


def has_graph(operation):
    """True for a nested Sequential or Functional model (a graph of its own)."""
    if isinstance(operation, keras.Sequential):
        return operation._functional is not None
    return isinstance(operation, keras.Model) and hasattr(operation, "_nodes_by_depth")


def functional_class():
    """The class of models built with the Functional API."""
    from keras.src.models.functional import Functional

    return Functional


def graph_calls(model):
    """The nodes (calls) of ``model``'s graph in topological order.

    Returns:
        A list of Keras ``Node`` objects; input nodes are excluded.
    """
    fn = graph_function(model)
    nodes = []
    for depth in sorted(fn._nodes_by_depth, reverse=True):
        for node in fn._nodes_by_depth[depth]:
            if node.operation is not None and not node.is_input:
                nodes.append(node)
    return nodes


def graph_inputs(model):
    """Flat list of the input KerasTensors of ``model``'s graph."""
    return list(graph_function(model).inputs)


def graph_outputs(model):
    """Flat list of the output KerasTensors of ``model``'s graph."""
    return list(graph_function(model).outputs)


def inputs_struct(model):
    return graph_function(model)._inputs_struct


def outputs_struct(model):
    return graph_function(model)._outputs_struct


def node_operation(node):
    return node.operation


def node_inputs(node):
    """The KerasTensors a node was called on, flattened in argument order."""
    return list(node.input_tensors)


def node_outputs(node):
    return list(node.outputs)


def node_arguments(node):
    """``(args, kwargs)`` of the call, with KerasTensors and constants."""
    return node.arguments.args, node.arguments.kwargs


def fill_arguments(node, tensors):
    """``(args, kwargs)`` of the call with KerasTensors replaced.

    Args:
        node: a Keras ``Node``.
        tensors: ``id(KerasTensor) -> replacement`` for every tensor input.
    """
    return node.arguments.fill_in(tensors)


def tensor_producer(tensor):
    """``(operation, node_index, tensor_index)`` of a KerasTensor."""
    history = tensor._keras_history
    return history.operation, history.node_index, history.tensor_index


def application_layer_classes():
    """Private layer classes that keras.applications models are built from.

    ConvNeXt defines ``LayerScale`` and ``StochasticDepth`` in a private
    module. Returns ``{name: class}`` for those this Keras has.
    """
    try:
        from keras.src.applications import convnext
    except ImportError:  # pragma: no cover - depends on the Keras build
        return {}
    names = ("LayerScale", "StochasticDepth")
    return {n: getattr(convnext, n) for n in names if hasattr(convnext, n)}


def sublayers(layer):
    """Every layer ``layer`` holds, nested ones included (not itself)."""
    return list(layer._flatten_layers(include_self=False))
