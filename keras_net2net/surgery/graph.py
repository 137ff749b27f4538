"""The graph of a Sequential or Functional model, read-only, at tensor level.

`LayerGraph` flattens nested Sequential/Functional models into one graph of
*calls* (`Node`): which operation is called on which tensors and produces
which tensors. Tensors are identified by a key (the id of the KerasTensor;
a nested model's inner inputs and outputs are the same keys as the outer
tensors they stand for). Surgery asks it who produces a tensor, who consumes
it, what shape it has and whether it is a model input or output.
"""

import collections

import keras

from keras_net2net import _keras_internals as internals


class Node:
    """One call of an operation in the (flattened) graph.

    Attributes:
        op: the layer or `keras.ops` operation called.
        inputs: keys of the tensors it was called on (flat, in argument order).
        positional: how many of them were positional arguments (the rest,
            e.g. a ``mask=``, were keyword arguments).
        outputs: keys of the tensors it produced.
        path: the nested models that contain the call, outermost first.
        index: position in topological order.
    """

    __slots__ = ("op", "inputs", "outputs", "path", "index", "raw", "positional")

    def __init__(self, op, inputs, outputs, path, index, raw):
        self.op = op
        self.inputs = inputs
        self.outputs = outputs
        self.path = path
        self.index = index
        self.raw = raw
        args, _ = internals.node_arguments(raw)
        self.positional = sum(
            isinstance(v, keras.KerasTensor) for v in keras.tree.flatten(args)
        )

    def constants(self):
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

    Args:
        model: a built Sequential or Functional Keras model.
    """

    def __init__(self, model):
        self.model = model
        self.nodes = []
        self._tensors = {}
        self._producer = {}
        self._consumers = collections.defaultdict(list)
        self._calls = collections.defaultdict(list)
        self._containers = {}
        alias = self._alias = {}
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

    def key_of(self, tensor):
        """The key of a KerasTensor of this graph (nested models' aliases resolved)."""
        return self._alias.get(id(tensor), id(tensor))

    def tensor(self, key):
        return self._tensors[key]

    def shape(self, key):
        return tuple(self._tensors[key].shape)

    def width(self, key):
        return self.shape(key)[-1]

    def producer(self, key):
        """The node that produced tensor ``key`` (None for a model input)."""
        return self._producer.get(key)

    def consumers(self, key):
        """``(node, position)`` of every call that reads tensor ``key``."""
        return list(self._consumers.get(key, ()))

    def is_output(self, key):
        return key in self._output_set

    def is_input(self, key):
        return key in self._input_set

    # -- operations -----------------------------------------------------------

    @property
    def layers(self):
        """Every called operation (leaf layers and keras.ops), in graph order."""
        seen, order = set(), []
        for node in self.nodes:
            if id(node.op) not in seen:
                seen.add(id(node.op))
                order.append(node.op)
        return order

    def calls(self, op):
        """The nodes at which ``op`` is called (more than one: shared)."""
        return list(self._calls.get(id(op), ()))

    def containers(self, op):
        """The nested models around ``op``'s first call, outermost first."""
        nodes = self._calls.get(id(op))
        return nodes[0].path if nodes else ()

    def names(self):
        """Every name used in the model (nested models and their layers too)."""
        names = {op.name for op in self.layers}
        names.update(op.name for op, _ in self._containers.values())
        names.update(
            internals.tensor_producer(self.tensor(k))[0].name for k in self.inputs
        )
        names.add(self.model.name)
        return names

    def get(self, layer, argument="layer"):
        """Find a called layer or operation by name or by object.

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
