"""Subclassed layers traced into the layers and `keras.ops` calls of their `call`.

A subclassed layer (keras.io's ``TransformerBlock``, InceptionResNetV2's
``CustomScaleLayer``) or a ``Lambda`` (keras.io's Siamese distance) has no
handler: growth cannot see what it does with its channels. When its ``call``
is built from Keras layers and `keras.ops`, calling it on symbolic tensors
records every sublayer and op call as a graph:
`trace_layer` returns that graph as a Functional model with the layer's name,
holding the layer's own sublayers (so its weights stay where they are).
`inline_layers` puts such models in place of the layers, and `widen`/`deepen`
do it on their own for a subclassed layer on a growth's path. The result is a
plain Functional model of standard layers: it saves and reloads without the
subclassed class.

Positions made with ``ops.arange`` of Python numbers (keras.io's position
embeddings) become a tensor of the graph while tracing, so the Embedding that
reads them is part of it (`_symbolic_positions`).

A layer is refused (by name, with the reason) when its call cannot be traced:
Python control flow on tensor values, a variable of its own used as a
constant (``add_weight``), or a sublayer called on another value that does not
come from the layer's inputs (its weights would be frozen into the graph as a
constant).

``training`` is passed as None, so the sublayers follow the model's call
context (dropout active in ``fit``), as they do inside the subclassed layer
when it passes ``training`` on.
"""

import contextlib
import inspect
import weakref
from typing import Any

import keras
import numpy as np

from keras_net2net import _keras_internals as internals
from keras_net2net._types import Model
from keras_net2net.surgery import handlers as H
from keras_net2net.surgery.apply import replace_operations
from keras_net2net.surgery.handlers import is_opaque

# One trace per layer and input signature: the ops of a trace are new objects,
# so a target found in one trace (an Add inside a block) must be the same
# object when growth traces the layer again.
_TRACES: "weakref.WeakKeyDictionary[Any, dict]" = weakref.WeakKeyDictionary()


def _traced_call(layer, inputs) -> Model:
    """The Functional model of ``layer.call(inputs)`` on symbolic ``inputs``.

    ``training`` is passed as None (the sublayers follow the call context);
    any error of the user's call propagates.
    """
    kwargs: dict[str, Any] = {}
    if "training" in inspect.signature(layer.call).parameters:
        kwargs["training"] = None
    with _symbolic_positions(keras.tree.flatten(inputs)[0]):
        outputs = layer.call(inputs, **kwargs)
    return keras.Model(inputs, outputs, name=layer.name)


def _unreached(layer, traced: Model) -> list[str]:
    """Paths of ``layer``'s variables that the traced graph does not use."""
    reached = {id(v) for v in traced.weights}
    return [v.path for v in layer.weights if id(v) not in reached]


def trace_layer(layer, node) -> Model:
    """The Functional model of ``layer``'s ``call`` at ``node`` (its graph call).

    Traced once per layer and input signature (the same ops every time).

    Example:

    ```python
    node = ...  # the call of a TransformerBlock in a Functional model
    block = trace_layer(transformer_block, node)  # att, ffn, norms and adds
    ```

    Raises:
        ValueError: naming the layer, if its call cannot be traced exactly.
    """
    args, kwargs = internals.node_arguments(node)
    tensors = [a for a in keras.tree.flatten(args) if isinstance(a, keras.KerasTensor)]
    extra = {k for k, v in kwargs.items() if k != "training" and v is not None}
    if len(args) != 1 or extra or len(tensors) != len(internals.node_inputs(node)):
        raise H.unsupported(
            layer,
            "has no handler and cannot be traced into its layers: tracing "
            "needs a call on one tensor (or one list/dict of tensors) with no "
            f"other arguments than `training`. Received: {len(args)} positional "
            f"arguments, keyword arguments {sorted(kwargs)}.",
        )
    signature = tuple(
        (tuple(t.shape), str(t.dtype)) for t in internals.node_inputs(node)
    )
    cached = _TRACES.get(layer, {}).get(signature)
    if cached is not None:
        return cached
    inputs = keras.tree.map_structure(
        lambda t: keras.Input(batch_shape=t.shape, dtype=t.dtype), args[0]
    )
    try:
        traced = _traced_call(layer, inputs)
    except Exception as error:  # noqa: BLE001 - any failure of user code
        raise H.unsupported(
            layer,
            "has no handler and its call cannot be traced into its layers and "
            f"keras.ops calls ({type(error).__name__}: {error}); e.g. Python "
            "control flow on tensor values. Register a handler with "
            "keras_net2net.register_handler.",
        ) from error
    if any(
        internals.has_graph(internals.node_operation(n))
        for n in internals.graph_calls(traced)
    ):
        traced = _flattened(traced)
    missing = _unreached(layer, traced)
    if missing:
        raise H.unsupported(
            layer,
            "has no handler and its call cannot be traced into its layers: "
            f"the traced graph does not reach its variables {missing} (a "
            "variable of its own used as a constant, or a sublayer called on "
            "a constant computed without the layer's inputs). Write it with "
            "standard layers, or register a handler with "
            "keras_net2net.register_handler.",
        )
    _TRACES.setdefault(layer, {})[signature] = traced
    return traced


@contextlib.contextmanager
def _symbolic_positions(anchor):
    """``keras.ops.arange`` of Python numbers gives a graph tensor while tracing.

    keras.io's position embeddings call their Embedding on
    ``ops.arange(0, length)``: a constant, so the Embedding would run once,
    outside the graph, and its weights would be frozen into it. While a call
    is traced, such an ``arange`` is ``zeros_like(sum(anchor)) + range`` (the
    same values, as a tensor of the graph; the range is a constant of its
    node), so the Embedding is called in the graph.
    """
    original = keras.ops.arange

    def arange(start, stop=None, step=None, dtype=None):
        numbers = [v for v in (start, stop, step) if v is not None]
        if not all(isinstance(v, (int, np.integer)) for v in numbers):
            return original(start, stop, step, dtype=dtype)
        values = np.arange(start, stop, 1 if step is None else step)
        values = values.astype(dtype or "int32")
        zero = keras.ops.zeros_like(keras.ops.sum(anchor), dtype=values.dtype.name)
        return keras.ops.add(zero, values)

    keras.ops.arange = arange
    try:
        yield
    finally:
        keras.ops.arange = original


def _is_shape(value) -> bool:
    return isinstance(value, (tuple, list)) and all(
        d is None or isinstance(d, int) for d in value
    )


def as_graph_model(model: Model) -> Model:
    """``model``, or the Functional model of a subclassed model's ``call``.

    A subclassed `keras.Model` whose ``call`` is built from Keras layers and
    `keras.ops` is traced like a subclassed layer (on inputs of the shape
    it was built or first called with); the result shares its layers and is
    what `widen`/`deepen` grow (a Functional model: the subclass is not
    kept).

    Raises:
        ValueError: naming the model, if it was never built or its call
            cannot be traced.
    """
    if not isinstance(model, keras.Model) or internals.has_graph(model):
        return model
    shapes = internals.built_input_shapes(model)
    if shapes is None:
        raise ValueError(
            f"`model`: the subclassed model '{model.name}' "
            f"({type(model).__name__}) has no known input shape; call it on a "
            "batch (or build it) before growing it."
        )
    dtype = model.compute_dtype
    if _is_shape(shapes):
        inputs = keras.Input(batch_shape=(None, *shapes[1:]), dtype=dtype)
    elif isinstance(shapes, (list, tuple)) and all(_is_shape(s) for s in shapes):
        inputs = [keras.Input(batch_shape=(None, *s[1:]), dtype=dtype) for s in shapes]
    else:
        raise ValueError(
            f"`model`: the subclassed model '{model.name}' was built on inputs "
            f"{shapes!r}; only a tensor or a list of tensors can be traced."
        )
    try:
        traced = _traced_call(model, inputs)
    except Exception as error:  # noqa: BLE001 - any failure of user code
        raise ValueError(
            f"`model`: the call of the subclassed model '{model.name}' "
            f"({type(model).__name__}) cannot be traced into its layers and "
            f"keras.ops calls ({type(error).__name__}: {error})."
        ) from error
    missing = _unreached(model, traced)
    if missing:
        raise ValueError(
            f"`model`: the call of the subclassed model '{model.name}' "
            f"({type(model).__name__}) cannot be traced: the traced graph does "
            f"not reach its variables {missing}."
        )
    return traced


def is_traceable(model: Model, layer) -> bool:
    """Whether ``layer`` is a subclassed layer of ``model`` that traces."""
    if not is_opaque(layer):
        return False
    calls = layer_calls(model, layer)
    if len(calls) != 1:
        return False
    try:
        trace_layer(layer, calls[0])
    except ValueError:
        return False
    return True


def _flattened(model: Model) -> Model:
    """``model`` with the layers of its nested models called directly.

    A traced layer's own Sequential (keras.io's ``self.ffn``) becomes part of
    the trace, so that growth can insert residual branches and copy blocks
    there (it does so only at one level of nesting).
    """
    old_inputs = internals.graph_inputs(model)
    inputs = [keras.Input(batch_shape=t.shape, dtype=t.dtype) for t in old_inputs]
    tensors = {id(old): new for old, new in zip(old_inputs, inputs)}
    _call_flat(model, tensors)
    outputs = [tensors[id(t)] for t in internals.graph_outputs(model)]
    return keras.Model(
        keras.tree.pack_sequence_as(internals.inputs_struct(model), inputs),
        keras.tree.pack_sequence_as(internals.outputs_struct(model), outputs),
        name=model.name,
    )


def _call_flat(model: Model, tensors: dict) -> None:
    for node in internals.graph_calls(model):
        op = internals.node_operation(node)
        if internals.has_graph(op):
            inner = internals.graph_inputs(op)
            outer = internals.node_inputs(node)
            if len(inner) != len(outer):
                raise H.unsupported(op, "is called on other inputs than its own.")
            tensors.update({id(i): tensors[id(o)] for i, o in zip(inner, outer)})
            _call_flat(op, tensors)
            results = [tensors[id(t)] for t in internals.graph_outputs(op)]
        else:
            args, kwargs = internals.fill_arguments(node, tensors)
            results = keras.tree.flatten(op(*args, **kwargs))
        for old, new in zip(internals.node_outputs(node), results):
            tensors[id(old)] = new


def layer_calls(model: Model, layer) -> list:
    """The graph nodes (calls) of ``layer`` in ``model`` and its nested models."""
    found = []
    for node in internals.graph_calls(model):
        op = internals.node_operation(node)
        if op is layer:
            found.append(node)
        elif internals.has_graph(op):
            found.extend(layer_calls(op, layer))
    return found


def inline_layers(model: Model, layers) -> Model:
    """A model like ``model`` with each of ``layers`` replaced by its trace.

    Every other layer is reused (shared with ``model``), so are the traced
    layers' sublayers: the new model computes the same function with the same
    variables. Growth copies what it does not change afterwards.

    Args:
        model: a built Sequential or Functional model.
        layers: subclassed layers of ``model`` (or of its nested models),
            each called once.

    Returns:
        A new model; ``model`` is not changed.

    Raises:
        ValueError: naming a layer that cannot be traced (nothing changes).
    """
    replacements = {}
    for layer in layers:
        calls = layer_calls(model, layer)
        if len(calls) != 1:
            raise H.unsupported(
                layer,
                f"has no handler and is called {len(calls)} times; only a "
                "layer called once can be traced into its layers.",
            )
        replacements[id(layer)] = trace_layer(layer, calls[0])
    return replace_operations(model, replacements)


def holds(model: Model, target) -> bool:
    """Whether ``target`` (a layer or a name) is a layer of ``model`` or nested."""
    for node in internals.graph_calls(model):
        op = internals.node_operation(node)
        if op is target or (isinstance(target, str) and op.name == target):
            return True
        if internals.has_graph(op) and holds(op, target):
            return True
    return False


def _attributes_hold(layer, target, depth: int = 3) -> bool:
    """Whether ``target`` is among ``layer``'s attributes (sublayers, lists)."""
    if depth == 0:
        return False
    for value in vars(layer).values():
        values = value if isinstance(value, (list, tuple)) else [value]
        for item in values:
            if not isinstance(item, keras.layers.Layer) or item is layer:
                continue
            if item is target or (isinstance(target, str) and item.name == target):
                return True
            if _attributes_hold(item, target, depth - 1):
                return True
    return False


def opaque_holder(model: Model, target):
    """The subclassed layer of ``model`` whose traced call holds ``target``.

    ``target`` is a layer or a layer name that ``model``'s graph does not show
    (a sublayer of a subclassed layer). Returns None if no subclassed layer
    holds it.

    Raises:
        ValueError: the refusal to trace the subclassed layer that holds
            ``target`` (as one of its attributes), if it cannot be traced.
    """
    for node in internals.graph_calls(model):
        op = internals.node_operation(node)
        if internals.has_graph(op):
            found = opaque_holder(op, target)
            if found is not None:
                return found
        elif is_opaque(op):
            try:
                traced = trace_layer(op, node)
            except ValueError:
                if _attributes_hold(op, target):
                    raise
                continue
            if holds(traced, target) or opaque_holder(traced, target) is not None:
                return op
    return None
