"""The layer graph of a Sequential or Functional model, read-only.

`LayerGraph` answers the questions that surgery asks: which layer is called
``name``, which layers consume a layer's output, what shape reaches a layer,
and whether a layer's output leaves the model.
"""

import collections

from keras_net2net import _keras_internals as internals


class LayerGraph:
    """Read-only view of a model's layers and the edges between them.

    Args:
        model: a built Sequential or Functional Keras model.
    """

    def __init__(self, model):
        self.model = model
        self._consumers = collections.defaultdict(list)
        self._input_shapes = {}
        self._calls = collections.Counter()
        self._layers = []
        producer = {}
        for layer, inputs, outputs in internals.graph_nodes(model):
            self._calls[id(layer)] += 1
            if self._calls[id(layer)] == 1:
                self._layers.append(layer)
            self._input_shapes[id(layer)] = [tuple(t.shape) for t in inputs]
            for tensor in inputs:
                source = producer.get(id(tensor))
                if source is not None:
                    self._consumers[id(source)].append(layer)
            for tensor in outputs:
                producer[id(tensor)] = layer
        self._producer = producer
        self._output_layers = {
            id(producer[id(t)]) for t in internals.graph_outputs(model)
        }

    @property
    def layers(self):
        """All layers of the graph (input layers included), in topological order."""
        return list(self._layers)

    def get(self, layer, argument="layer"):
        """Find a layer of the model by name or by object.

        Raises:
            ValueError: if there is no such layer in the model.
        """
        for candidate in self._layers:
            if candidate is layer or (
                isinstance(layer, str) and candidate.name == layer
            ):
                return candidate
        name = layer if isinstance(layer, str) else getattr(layer, "name", layer)
        names = [x.name for x in self._layers]
        raise ValueError(
            f"`{argument}`: model '{self.model.name}' has no layer '{name}'. "
            f"Available layers: {names}"
        )

    def names(self):
        return {layer.name for layer in self._layers}

    def consumers(self, layer):
        """Layers called on ``layer``'s output, in graph order."""
        return list(self._consumers[id(layer)])

    def is_output(self, layer):
        """True if ``layer``'s output is an output of the model."""
        return id(layer) in self._output_layers

    def calls(self, layer):
        """How many times the model calls ``layer`` (more than 1: shared)."""
        return self._calls[id(layer)]

    def input_shape(self, layer):
        """Shape of the (first) tensor that reaches ``layer``."""
        shapes = self._input_shapes.get(id(layer)) or [None]
        return shapes[0]
