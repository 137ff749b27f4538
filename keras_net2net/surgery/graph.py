"""The graph of a Sequential or Functional model, read-only, at tensor level.

`LayerGraph` flattens nested Sequential/Functional models into one graph of
*calls* (`Node`): which operation is called on which tensors and produces
which tensors. Tensors are identified by a key (the id of the KerasTensor;
a nested model's inner inputs and outputs are the same keys as the outer
tensors they stand for). Surgery asks it who produces a tensor, who consumes
it, what shape it has and whether it is a model input or output.
"""

from __future__ import annotations

import collections
from typing import Any

import keras

from keras_net2net import _keras_internals as internals


class Node:
    """One call of an operation in the (flattened) graph.

    Attributes:
        op: the layer or `keras.ops` operation called.
        inputs: keys of the tensors it was called on (flat, in argument order).
        positional: how many of them were positional arguments (the rest,
            e.g. a ``mask=``, were keyword arguments).
        labels: for each input, the argument it was passed as (the index of
            a positional argument, or a keyword's name).
        outputs: keys of the tensors it produced.
        path: the nested models that contain the call, outermost first.
        index: position in topological order.
    """

    __slots__ = (
        "op",
        "inputs",
        "outputs",
        "path",
        "index",
        "raw",
        "positional",
        "labels",
    )

    def __init__(
        self,
        op: Any,
        inputs: list[int],
        outputs: list[int],
        path: tuple[Any, ...],
        index: int,
        raw: Any,
    ) -> None:
        self.op = op
        self.inputs = inputs
        self.outputs = outputs
        self.path = path
        self.index = index
        self.raw = raw
        args, kwargs = internals.node_arguments(raw)
        self.positional = sum(
            isinstance(v, keras.KerasTensor) for v in keras.tree.flatten(args)
        )
        # The argument each tensor input was passed as: an int for the n-th
        # positional argument, a str for a keyword argument.
        self.labels: list[int | str] = []
        for path, value in keras.tree.flatten_with_path((list(args), kwargs)):
            if isinstance(value, keras.KerasTensor):
                self.labels.append(path[1])

    def constants(self) -> list[Any]:
        """The call's non-tensor arguments that are numbers or arrays."""
        args, kwargs = internals.node_arguments(self.raw)
        values = keras.tree.flatten((args, kwargs))
        return [
            v
            for v in values
            if not isinstance(v, keras.KerasTensor)
            and (isinstance(v, (int, float)) or hasattr(v, "shape"))
            and not isinstance(v, bool)
        ]

    def __repr__(self):
        return f"Node({self.op.name}, index={self.index})"


class LayerGraph:
    """Read-only view of a model's calls and the tensors between them.

    Example:

    ```python
    graph = LayerGraph(model)
    node = graph.calls(graph.get("fc1"))[0]
    readers = [n.op.name for n, _ in graph.consumers(node.outputs[0])]
    ```

    Args:
        model: a built Sequential or Functional Keras model.
    """

    def __init__(self, model: Any) -> None:
        self.model = model
        self.nodes: list[Node] = []
        self._tensors: dict[int, Any] = {}
        self._producer: dict[int, Node] = {}
        self._consumers: dict[int, list[tuple[Node, int]]] = collections.defaultdict(
            list
        )
        self._calls: dict[int, list[Node]] = collections.defaultdict(list)
        self._containers: dict[int, tuple[Any, tuple[Any, ...]]] = {}
        # id(nested model) -> (nested model, the model calling it, input keys)
        self.nested_inputs: dict[int, tuple[Any, Any, list[int]]] = {}
        alias: dict[int, int] = {}
        self._alias = alias
        self.inputs = [self._key(t, alias) for t in internals.graph_inputs(model)]
        self._walk(model, alias, ())
        self.outputs = [self._key(t, alias) for t in internals.graph_outputs(model)]
        self._output_set = set(self.outputs)
        self._input_set = set(self.inputs)

    def _key(self, tensor, alias):
        key = alias.get(id(tensor), id(tensor))
        self._tensors.setdefault(key, tensor)
        return key

    def _walk(self, owner, alias, path):
        for raw in internals.graph_calls(owner):
            op = internals.node_operation(raw)
            inputs = [self._key(t, alias) for t in internals.node_inputs(raw)]
            outputs = internals.node_outputs(raw)
            inner_inputs = (
                internals.graph_inputs(op) if internals.has_graph(op) else None
            )
            if inner_inputs is not None and len(inner_inputs) == len(inputs):
                self._containers[id(op)] = (op, path)
                self.nested_inputs[id(op)] = (op, owner, list(inputs))
                for inner, key in zip(inner_inputs, inputs):
                    alias[id(inner)] = key
                self._walk(op, alias, path + (op,))
                inner_outputs = internals.graph_outputs(op)
                for outer, inner in zip(outputs, inner_outputs):
                    alias[id(outer)] = self._key(inner, alias)
                continue
            node = Node(
                op,
                inputs,
                [self._key(t, alias) for t in outputs],
                path,
                len(self.nodes),
                raw,
            )
            self.nodes.append(node)
            self._calls[id(op)].append(node)
            for position, key in enumerate(inputs):
                self._consumers[key].append((node, position))
            for key in node.outputs:
                self._producer[key] = node

    # -- tensors ------------------------------------------------------------

    def key_of(self, tensor: Any) -> int:
        """The key of a KerasTensor of this graph (nested models' aliases resolved)."""
        return self._alias.get(id(tensor), id(tensor))

    def tensor(self, key: int) -> Any:
        """The KerasTensor of ``key``."""
        return self._tensors[key]

    def shape(self, key: int) -> tuple[int | None, ...]:
        """The shape of tensor ``key`` (batch dimension first)."""
        return tuple(self._tensors[key].shape)

    def width(self, key: int, axis: int = -1) -> int:
        """The size of axis ``axis`` (counted from the end) of tensor ``key``.

        Defaults to the last axis. An axis the tensor does not have (a
        lower-rank operand of a broadcast) has size 1.
        """
        shape = self.shape(key)
        if not -len(shape) <= axis < 0:
            return 1
        return shape[axis]  # type: ignore[return-value]

    def producer(self, key: int) -> Node | None:
        """The node that produced tensor ``key`` (None for a model input)."""
        return self._producer.get(key)

    def consumers(self, key: int) -> list[tuple[Node, int]]:
        """``(node, position)`` of every call that reads tensor ``key``."""
        return list(self._consumers.get(key, ()))

    def is_output(self, key: int) -> bool:
        """True if tensor ``key`` is an output of the model."""
        return key in self._output_set

    def is_input(self, key: int) -> bool:
        """True if tensor ``key`` is an input of the model."""
        return key in self._input_set

    # -- operations -----------------------------------------------------------

    @property
    def layers(self) -> list[Any]:
        """Every called operation (leaf layers and keras.ops), in graph order."""
        seen, order = set(), []
        for node in self.nodes:
            if id(node.op) not in seen:
                seen.add(id(node.op))
                order.append(node.op)
        return order

    def calls(self, op: Any) -> list[Node]:
        """The nodes at which ``op`` is called (more than one: shared)."""
        return list(self._calls.get(id(op), ()))

    def containers(self, op: Any) -> tuple[Any, ...]:
        """The nested models around ``op``'s first call, outermost first."""
        nodes = self._calls.get(id(op))
        return nodes[0].path if nodes else ()

    def nested_models(self) -> list[Any]:
        """Every nested model (Sequential, Functional) of the graph."""
        return [op for op, _ in self._containers.values()]

    def nested(self, layer: Any) -> Any:
        """The nested model ``layer`` names (a name or the object), or None."""
        name = layer if isinstance(layer, str) else getattr(layer, "name", None)
        for op, _ in self._containers.values():
            if op is layer:
                return op
        # A layer of the model before tracing stands for its name.
        for op, _ in self._containers.values():
            if op.name == name:
                return op
        return None

    def names(self) -> set[str]:
        """Every name used in the model (nested models and their layers too)."""
        names = {op.name for op in self.layers}
        names.update(op.name for op, _ in self._containers.values())
        names.update(
            internals.tensor_producer(self.tensor(k))[0].name for k in self.inputs
        )
        names.add(self.model.name)
        return names

    def get(self, layer: Any, argument: str = "layer") -> Any:
        """Find a called layer or operation by name or by object.

        An object that is not in the model (a layer of the model this one
        was grown from) is found by its name.

        Raises:
            ValueError: if there is no such layer in the model, or the name is
                used by several layers at different nesting levels.
        """
        if not isinstance(layer, str):
            if id(layer) in self._calls:
                return layer
            name = getattr(layer, "name", layer)
            if id(layer) in self._containers:
                raise ValueError(
                    f"`{argument}`: '{name}' is a nested model of model "
                    f"'{self.model.name}'; name one of its layers instead."
                )
        else:
            name = layer
        # A layer object of another model (the one this was grown from)
        # stands for its name, as in a request.
        matches = [op for op in self.layers if op.name == name]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise ValueError(
                f"`{argument}`: model '{self.model.name}' has "
                f"{len(matches)} layers named '{name}' (in nested models); "
                "pass the layer object instead of its name."
            )
        names = [op.name for op in self.layers if isinstance(op, keras.layers.Layer)]
        raise ValueError(
            f"`{argument}`: model '{self.model.name}' has no layer '{name}'. "
            f"Available layers: {names}"
        )
