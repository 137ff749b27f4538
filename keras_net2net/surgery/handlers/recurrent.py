"""Recurrent layers: SimpleRNN, GRU and LSTM.

A recurrent layer writes its units (the sequence it returns and every state
it returns with ``return_state=True``: they all join the coupling group)
and reads its input's channels. Its weights put the gates side by side:
``kernel`` is ``(input, gates * units)``, ``recurrent_kernel`` is ``(units,
gates * units)`` and ``bias`` is ``(gates * units,)`` (GRU with
``reset_after=True``: ``(2, gates * units)``), with 1 gate for SimpleRNN, 3
for GRU and 4 for LSTM.

Widening the units copies each gate's columns by the same mapping
(`keras_net2net.transforms.concat_mappings` of one mapping per gate), and
the recurrent kernel also divides its rows (it reads the previous state,
whose units are copied): every copy of a unit then computes the same gates,
cell and hidden state as its original at every step, whatever the
activations. A widened input divides the kernel's rows. ``deepen`` after a
recurrent layer (one output) inserts an identity Dense on its output; an
initial state passed from another layer is refused by name.
"""

import keras

from keras_net2net.surgery.handlers.base import LayerChange
from keras_net2net.surgery.handlers.base import UnitsHandler
from keras_net2net.surgery.handlers.base import copy_transform
from keras_net2net.surgery.handlers.base import unsupported
from keras_net2net.surgery.handlers.core import check_plain_float
from keras_net2net.surgery.handlers.core import identity_dense
from keras_net2net.transforms import concat_mappings


class RecurrentHandler(UnitsHandler):
    """SimpleRNN (1 gate), GRU (3) and LSTM (4); see the module docstring.

    Args:
        gates: how many blocks of ``units`` columns the kernels hold.
    """

    identity_deepening = True

    def __init__(self, gates: int):
        self.gates = gates

    def deeper_layer(self, layer, name, *, method, kernel_size=None, seed=None):
        # The output is h itself: an identity Dense after it is exact.
        return identity_dense(layer, int(layer.units), name, method, seed)

    def check(self, layer):
        check_plain_float(layer)
        if getattr(layer, "stateful", False):
            raise unsupported(
                layer,
                "is stateful; its carried states would keep the old width. "
                "Grow a model with stateful=False.",
            )

    def width(self, layer):
        return int(layer.units)

    def channel_outputs(self, layer, node, graph):
        states = [label for label in node.labels if label not in (0, "mask")]
        if states:
            raise unsupported(
                layer,
                "is called with an initial state from another layer; that "
                "state has the old number of units, so the layer cannot be "
                "widened on its own.",
            )
        return super().channel_outputs(layer, node, graph)

    def init_key(self, layer, variable):
        return None  # the cell owns the initializers: values are assigned

    def widen_out(self, layer, mapping, options, seeds):
        gates = concat_mappings([mapping] * self.gates)
        change = LayerChange(config={"units": mapping.new_width})
        change.add("kernel", options.writer(gates, seeds))
        # The recurrent kernel reads the previous state and writes the gates.
        change.add("recurrent_kernel", options.reader(mapping, seeds, 0, noise=False))
        change.add("recurrent_kernel", options.writer(gates, seeds, noise=False))
        if layer.use_bias:
            change.add("bias", copy_transform(gates, fill=options.pad_bias))
        return change

    def widen_in(self, layer, mapping, options, seeds, position=0, node=None):
        return LayerChange().add("kernel", options.reader(mapping, seeds, axis=0))


def register(register_handler):
    L = keras.layers
    register_handler(L.SimpleRNN, RecurrentHandler(1))
    register_handler(L.GRU, RecurrentHandler(3))
    register_handler(L.LSTM, RecurrentHandler(4))
