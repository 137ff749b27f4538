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
recurrent layer inserts an identity Dense on its (first) output. An initial
state passed from another layer carries the layer's own units: the layer
and the state's writer share one mapping (`coupled_inputs`), so an encoder
and a decoder LSTM grow together.

``Bidirectional`` runs two such layers, one over the reversed sequence. With
``merge_mode="concat"`` its output is ``[forward units | backward units]``:
the group's mapping keeps the two runs (each new half copies units of its
own half, `MappingRule` ``groups=2``), and each direction is widened by its
half. With ``"sum"``, ``"ave"`` or ``"mul"`` both directions share the
output's mapping (a copied unit's sum, mean or product is a copy too).
"""

import copy

import keras

from keras_net2net.surgery.handlers.base import UnitsHandler
from keras_net2net.surgery.handlers.change import LayerChange
from keras_net2net.surgery.handlers.change import copy_transform
from keras_net2net.surgery.handlers.common import unsupported
from keras_net2net.surgery.handlers.core import check_plain_float
from keras_net2net.surgery.handlers.core import identity_dense
from keras_net2net.transforms import MappingRule
from keras_net2net.transforms import WidthMapping
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

    def coupled_inputs(self, layer, node, graph):
        # The initial state (every input but the sequence and its mask).
        return [i for i, label in enumerate(node.labels) if label not in (0, "mask")]

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
            change.add("bias", copy_transform(gates, fill=options.bias_fill()))
        return change

    def widen_in(self, layer, mapping, options, seeds, position=0, node=None):
        return LayerChange().add("kernel", options.reader(mapping, seeds, axis=0))


_GATES = {"SimpleRNN": 1, "GRU": 3, "LSTM": 4}
MERGES = ("concat", "sum", "ave", "mul")


class BidirectionalHandler(UnitsHandler):
    """``Bidirectional`` around an LSTM, GRU or SimpleRNN (module docstring)."""

    identity_deepening = True

    def _directions(self, layer):
        """``(forward, backward, their handler)``."""
        forward, backward = layer.forward_layer, layer.backward_layer
        gates = _GATES.get(type(forward).__name__)
        if (
            gates is None
            or type(forward)
            not in (keras.layers.LSTM, keras.layers.GRU, keras.layers.SimpleRNN)
            or type(backward) is not type(forward)
            or int(backward.units) != int(forward.units)
        ):
            raise unsupported(
                layer,
                "wraps a layer other than an LSTM, GRU or SimpleRNN (with a "
                "backward layer of the same type and units); only those grow.",
            )
        return forward, backward, RecurrentHandler(gates)

    def check(self, layer):
        forward, backward, handler = self._directions(layer)
        handler.check(forward)
        handler.check(backward)
        if layer.merge_mode not in MERGES or getattr(layer, "return_state", False):
            raise unsupported(
                layer,
                f"has merge_mode={layer.merge_mode!r} (return_state="
                f"{getattr(layer, 'return_state', False)}); it grows with one "
                f"output and merge_mode in {MERGES}.",
            )

    def width(self, layer):
        units = int(layer.forward_layer.units)
        return 2 * units if layer.merge_mode == "concat" else units

    def output_rule(self, layer, node, graph, axis):
        if layer.merge_mode != "concat":
            return None
        return MappingRule(
            groups=2,
            reason=f"'{layer.name}' concatenates its forward and backward units",
        )

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

    def deeper_layer(self, layer, name, *, method, kernel_size=None, seed=None):
        return identity_dense(layer, self.width(layer), name, method, seed)

    def init_key(self, layer, variable):
        return None

    def _each(self, layer, changes):
        """One change of ``layer`` from per-direction changes of the inner layers."""
        combined = LayerChange()
        for inner, change in changes:
            prefix = f"{inner.name}/{inner.cell.name}"
            for key, chain in change.transforms.items():
                for transform in chain:
                    combined.add(f"{prefix}/{key}", transform)
        return combined

    def widen_out(self, layer, mapping, options, seeds):
        forward, backward, handler = self._directions(layer)
        units = int(forward.units)
        if layer.merge_mode == "concat":
            half = mapping.new_width // 2
            indices = mapping.indices
            second = indices[half:]
            mappings = [
                WidthMapping(indices[:half], units),
                WidthMapping(second - units * (second >= 0), units),
            ]
        else:
            half, mappings = mapping.new_width, [mapping, mapping]
        change = self._each(
            layer,
            [
                (inner, handler.widen_out(inner, g, options, seeds))
                for inner, g in zip((forward, backward), mappings)
            ],
        )
        change.config.update(_inner_configs(layer, units=half))
        return change

    def widen_in(self, layer, mapping, options, seeds, position=0, node=None):
        forward, backward, handler = self._directions(layer)
        change = self._each(
            layer,
            [
                (inner, handler.widen_in(inner, mapping, options, seeds))
                for inner in (forward, backward)
            ],
        )
        # Rebuilt on the wider input (a units change, if any, overrides).
        change.defaults.update(_inner_configs(layer))
        return change


def _inner_configs(layer, units=None):
    """The wrapped layers' configs, without their built input shape."""
    config = layer.get_config()
    entries = {}
    for key in ("layer", "backward_layer"):
        if config.get(key) is None:
            continue
        entry = copy.deepcopy(config[key])
        entry.pop("build_config", None)
        if units is not None:
            entry["config"]["units"] = units
        entries[key] = entry
    return entries


def register(register_handler):
    L = keras.layers
    register_handler(L.SimpleRNN, RecurrentHandler(1))
    register_handler(L.GRU, RecurrentHandler(3))
    register_handler(L.LSTM, RecurrentHandler(4))
    register_handler(L.Bidirectional, BidirectionalHandler())
