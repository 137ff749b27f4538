"""What a handler is: the roles a layer type can play in growth.

Every operation of a model's graph takes part in a widening in one of three
roles, each with its own handler base class:

* `UnitsHandler` (Dense, Conv, Embedding, ...): *writes* a new channel axis
  (its output units, which can be widened: ``widen_out``) and *reads* its
  inputs' channels (a widened input is absorbed by dividing the incoming
  weights of copied units by their replication count: ``widen_in``). It can
  also be followed by an identity copy of itself (``deeper_layer``).
* `PassThroughHandler` (activations, BatchNormalization, pooling, merges such
  as Add, ...): its output has the *same* channel axis as its channel inputs.
  Several channel inputs (a merge) put them all in one coupling group.
  Per-channel parameters follow the mapping (``follow``).
* `LayoutHandler` (Flatten, Concatenate, depthwise convolutions with a depth
  multiplier, ...): its output's channel axis is *derived* from its inputs'
  by a new index layout (``derive``); it is only crossed forwards.

One vocabulary for the roles: a handler's ``role`` (`UNITS`,
`PASS_THROUGH`, `LAYOUT`) names its base class (`UnitsHandler`,
`PassThroughHandler`, `LayoutHandler`). In a `ChannelGroup` a units layer
*writes* the channels (its entries are copied: ``widen_out``) and/or *reads*
them (its entries are divided: ``widen_in``); a pass-through with several
channel inputs is a *merge*.

Every handler plays one role. A layer type whose part depends on its
configuration or on the call (Concatenate, Reshape, a grouped Conv, a
depthwise multiplier) is registered with the handler of its usual part, which
answers another handler for a call that needs one (`Handler.at`).

Handlers are stateless and registered per exact operation class
(`keras_net2net.surgery.handlers.register_handler`). An operation without a
handler cannot take part in a widening: growth fails and names it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING
from typing import Any

import numpy as np

from keras_net2net.surgery.handlers.change import LayerChange
from keras_net2net.surgery.handlers.change import Widening

# Where the guide imported them from before 0.2.0 (now `keras_net2net.surgery`).
from keras_net2net.surgery.handlers.change import copy_transform as copy_transform
from keras_net2net.surgery.handlers.change import divide_transform as divide_transform
from keras_net2net.surgery.handlers.common import format_axis
from keras_net2net.surgery.handlers.common import input_rank
from keras_net2net.surgery.handlers.common import unsupported
from keras_net2net.transforms import MappingRule
from keras_net2net.transforms import WidthMapping

if TYPE_CHECKING:
    from keras_net2net.surgery.graph import LayerGraph
    from keras_net2net.surgery.graph import Node

Seeds = Iterator[int]

# The three roles, named as their base classes are (`UnitsHandler`,
# `PassThroughHandler`, `LayoutHandler`).
UNITS = "units"
PASS_THROUGH = "pass-through"
LAYOUT = "layout"
# Their names before 0.2.0, for handlers written then.
SAME, DERIVED = PASS_THROUGH, LAYOUT


class Handler:
    """Base class of all handlers. Handlers are stateless.

    Subclass one of `UnitsHandler`, `PassThroughHandler` or `LayoutHandler`
    and register it with `register_handler`.

    Example:

    ```python
    class ScaleByTwo(keras.layers.Layer):
        def call(self, x):
            return 2.0 * x

    register_handler(ScaleByTwo, PassThroughHandler())
    ```

    Attributes:
        role: `UNITS`, `PASS_THROUGH` or `LAYOUT` (see the module docstring):
            the base class's; a layer whose part differs by call answers
            another handler from `at`.
        has_state: whether growth may change the layer's weights or config;
            a layer without state may be shared (called several times).
        identity_deepening: `deeper_layer` builds an identity copy of the
            layer, so `deepen(after=layer)` can insert one (Net2DeeperNet).
        residual_deepening: `residual_layers` builds a residual branch that
            starts at zero (`deepen(after=layer, residual=True)`).
        copies_itself: `deepen(after=layer)` inserts a copy of the whole layer
            (a Transformer block) whose output projections start at zero;
            `check_copy` refuses layers it cannot copy.

    Planning asks a handler only what it declares: the attributes above, and
    methods with a neutral default here: where its channels are
    (`channel_axis`, `output_axis`, `channel_outputs`, `acts_across`), what
    it needs of the mapping (`mapping_rule`, `internal_rule`) and
    `zero_change`.
    `register_handler` checks that each declared ability is implemented.
    """

    role: str | None = None
    has_state = True
    identity_deepening = False
    residual_deepening = False
    copies_itself = False

    def at(
        self,
        layer: Any,
        node: Node,
        graph: LayerGraph,
        axis: int | None = None,
    ) -> Handler:
        """The handler that plays ``layer``'s part at the call ``node``.

        Every handler plays one role, its base class's. A layer type whose
        part depends on its configuration or on the call (a Concatenate along
        the channel axis derives a layout, along another axis it merges; a
        grouped Conv in its depthwise form passes channels through) is
        registered with the handler of its usual part, which answers here
        the handler of another role where the call needs one. The group walk
        asks once per call, after the registered handler's `check`, and keeps
        the answer (`ChannelGroup.handlers`). Defaults to ``self``.

        ``axis`` is the channel axis (counted from the end) of the group
        tensor the node is reached on, when known.
        """
        return self

    def channel_axis(self, layer: Any, node: Node, graph: LayerGraph) -> int | None:
        """The axis (counted from the end) on which ``layer`` reads and writes channels.

        Defaults to the axis of ``layer.data_format`` (-1 without one).
        None: the layer is elementwise and works on any axis; its output
        channels are on its input's channel axis.
        """
        return format_axis(layer, input_rank(node, graph))

    def output_axis(self, layer: Any, node: Node, graph: LayerGraph, axis: int) -> int:
        """The channel axis of the outputs when the channels are read on ``axis``.

        Defaults to ``axis``; a layer that moves or removes axes answers where
        the channels go (global pooling without ``keepdims``: -1).
        """
        return axis

    def acts_across(self, layer: Any, node: Node, graph: LayerGraph, axis: int) -> bool:
        """Whether ``layer`` leaves channels on ``axis`` untouched, slice by slice.

        A Dense (or a LayerNormalization over the last axis) applied to a
        tensor whose channels are on another axis (MLP-Mixer's token mixing,
        after a transpose) maps each channel's slice on its own, with weights
        that do not involve the channels: the channels pass through it, and
        it is not changed. Defaults to False.
        """
        return False

    def channel_outputs(self, layer: Any, node: Node, graph: LayerGraph) -> list[int]:
        """Positions (in ``node.outputs``) of the outputs that carry the channels.

        Defaults to every output: all of them join the coupling group (an
        RNN's states as well as its sequence). An output that is not on the
        channel axis (attention scores) is left out here.
        """
        return list(range(len(node.outputs)))

    def mapping_rule(
        self, layer: Any, node: Node, graph: LayerGraph, axis: int
    ) -> MappingRule | None:
        """What the layer needs of its group's mapping (None: any mapping).

        ``axis`` is the group's channel axis at the layer. LayerNormalization
        over the channels needs equal copies of every channel
        (``MappingRule(uniform=True)``); a layer whose channels come in heads
        or groups that must be copied whole answers ``MappingRule(block=n)``.
        The planner chooses one mapping that satisfies every rule of the group
        (`keras_net2net.transforms.choose_mapping`) or refuses the width,
        naming the rule's reason.
        """
        return None

    def internal_rule(self, layer: Any, part: str | None = None) -> MappingRule | None:
        """What the mapping of the layer's own axis needs (see `mapping_rule`).

        ``part`` None: the axis of `UnitsHandler.internal_width` (attention
        heads); else the named part (see `parts`).
        """
        return None

    def check(self, layer: Any) -> None:
        """Raise a ValueError naming ``layer`` if its configuration is unsupported."""

    def init_key(self, layer: Any, variable: str) -> str | None:
        """Config key of the initializer that creates ``variable`` (or None)."""
        return f"{variable}_initializer"

    def zero_change(self, layer: Any) -> dict[str, np.ndarray] | None:
        """Values that make the layer output zeros (None if it cannot)."""
        return None

    def deeper_layer(
        self,
        layer: Any,
        name: str,
        *,
        method: str,
        kernel_size: Any = None,
        seed: int | None = None,
    ) -> tuple[Any, Any]:
        """``(new layer, values)``: an identity copy (if `identity_deepening`)."""
        raise unsupported(
            layer, "cannot be followed by an identity copy (deepen() after it)."
        )

    def identity_blocker(self, layer: Any) -> str | None:
        """Why an identity copy after ``layer`` would not be exact (None: it is).

        `deepen` then inserts a residual branch that starts at zero instead,
        where the handler declares `residual_deepening`. Defaults to None.
        """
        return None

    def residual_layers(
        self,
        layer: Any,
        names: list[str],
        *,
        kernel_size: Any = None,
        seed: int | None = None,
    ) -> tuple[Any, Any]:
        """``((expand, values), (project, values))``: a branch that starts at
        zero (if `residual_deepening`)."""
        raise unsupported(layer, "cannot be followed by a residual branch.")

    def check_copy(self, layer: Any) -> None:
        """Raise a ValueError naming ``layer`` if it cannot be copied (if
        `copies_itself`)."""
        raise unsupported(layer, "cannot be copied as a block.")

    def parts(self, layer: Any) -> dict[str, int]:
        """Axes of a composite layer widened by naming them, with their widths.

        ``widen(model, "<layer>/<part>", units)`` widens one; a plain layer
        has none (the default).
        """
        return {}

    def part_stream_width(self, layer: Any, part: str, units: int) -> int | None:
        """The stream width that widening ``part`` to ``units`` requires.

        None (the default): the part is widened on its own (`widen_part`).
        A width: the layer's whole coupling group is widened to it, and the
        layer sees ``(layer.name, units)`` in `Widening.heads`.
        """
        return None

    def widen_part(
        self,
        layer: Any,
        part: str,
        mapping: WidthMapping,
        options: Widening,
        seeds: Seeds,
    ) -> LayerChange:
        """`LayerChange` that widens the part ``part`` (see `parts`)."""
        raise unsupported(layer, f"has no part '{part}' to widen.")


class UnitsHandler(Handler):
    """A layer that writes a new channel axis and reads its inputs' channels.

    Subclasses implement `width`, `widen_out`, `widen_in` and, to support
    `deepen`, `deeper_layer`.

    Example:

    ```python
    class MyDenseHandler(UnitsHandler):
        def width(self, layer):
            return layer.units

        def widen_out(self, layer, mapping, options, seeds):
            return LayerChange(config={"units": mapping.new_width}).add(
                "kernel", copy_transform(mapping)
            )

        def widen_in(self, layer, mapping, options, seeds, position=0):
            return LayerChange().add("kernel", divide_transform(mapping))
    ```
    """

    role = UNITS

    def width(self, layer: Any) -> int:
        """The layer's current number of output units."""
        raise NotImplementedError

    def reads(self, layer: Any, node: Node) -> list[int]:
        """Positions (in the node's flat tensor inputs) whose channels are read."""
        return [0]

    def widen_out(
        self, layer: Any, mapping: WidthMapping, options: Widening, seeds: Seeds
    ) -> LayerChange:
        """`LayerChange` that widens the layer's output units by ``mapping``."""
        raise unsupported(layer, "cannot be widened.")

    def widen_in(
        self,
        layer: Any,
        mapping: WidthMapping,
        options: Widening,
        seeds: Seeds,
        position: int = 0,
        node: Node | None = None,
    ) -> LayerChange:
        """`LayerChange` that absorbs widened input channels at ``position``.

        ``node`` is the call whose input ``position`` is widened (a layer that
        reads several inputs, such as attention, tells them apart by it).
        """
        raise unsupported(layer, "cannot read widened channels.")

    def coupled_inputs(self, layer: Any, node: Node, graph: LayerGraph) -> list[int]:
        """Positions of inputs whose channels are the layer's own units.

        A recurrent layer called with ``initial_state=`` starts from those
        states, so they share the mapping of the units it writes: widening
        either widens both (an encoder-decoder's two LSTMs grow together).
        None by default.
        """
        return []

    def output_rule(
        self, layer: Any, node: Node, graph: LayerGraph, axis: int
    ) -> MappingRule | None:
        """What the layer needs of the mapping of the units it writes.

        `mapping_rule` constrains the channels a layer reads; this, those it
        writes (None, the default: any mapping). ``Bidirectional`` with
        ``merge_mode="concat"`` writes ``[forward | backward]`` units: each
        half must copy units of its own half (``MappingRule(groups=2)``).
        """
        return None

    def internal_width(self, layer: Any) -> int | None:
        """Width of the axis widened when ``layer`` itself is the target.

        None (the default) means the layer's output channels. Attention layers
        answer their number of heads.
        """
        return None

    def widen_internal(
        self, layer: Any, mapping: WidthMapping, options: Widening, seeds: Seeds
    ) -> LayerChange:
        """`LayerChange` that widens the axis of `internal_width`."""
        raise unsupported(layer, "has no internal width to widen.")

    def zero_preserving(self, layer: Any) -> bool:
        """False: a layer with weights does not pass zeros through unchanged."""
        return False


class PassThroughHandler(Handler):
    """A layer whose output has the same channel axis as its channel inputs.

    The default has no parameters: an elementwise layer (Dropout, ReLU, ...).
    Override `follow` for per-channel parameters.

    Example:

    ```python
    register_handler(MyElementwiseLayer, PassThroughHandler())
    ```
    """

    role = PASS_THROUGH
    has_state = False

    def channel_axis(self, layer: Any, node: Node, graph: LayerGraph) -> int | None:
        """None (elementwise, any axis), or the axis of ``layer.data_format``."""
        if hasattr(layer, "data_format"):
            return format_axis(layer, input_rank(node, graph))
        return None

    def channel_inputs(self, layer: Any, node: Node, graph: LayerGraph) -> list[int]:
        """Positions of the inputs whose channel axis is the output's.

        Defaults to the positional tensor arguments (not a ``mask=``).
        """
        return list(range(node.positional))

    def follow(
        self, layer: Any, mapping: WidthMapping, options: Widening, seeds: Seeds
    ) -> LayerChange | None:
        """`LayerChange` for per-channel parameters/config (None: nothing)."""
        return None

    def zero_preserving(self, layer: Any) -> bool:
        """True if the layer maps an all-zero input to an all-zero output."""
        return not self.has_state


class LayoutHandler(Handler):
    """A layer whose output channels are a new layout of its inputs' channels.

    Example:

    ```python
    class MyFlattenHandler(LayoutHandler):
        def derive(self, layer, node, graph, mappings):
            positions = math.prod(graph.shape(node.inputs[0])[1:-1])
            return mappings[0].expand(positions)
    ```
    """

    role = LAYOUT
    has_state = False

    def channel_inputs(self, layer: Any, node: Node, graph: LayerGraph) -> list[int]:
        """Positions of the inputs whose channels the output's layout includes."""
        return list(range(node.positional))

    def derive(
        self,
        layer: Any,
        node: Node,
        graph: LayerGraph,
        mappings: list[WidthMapping | None],
    ) -> WidthMapping:
        """Output `WidthMapping` from the inputs' mappings (None: unchanged input)."""
        raise NotImplementedError

    def follow(
        self, layer: Any, mapping: WidthMapping, options: Widening, seeds: Seeds
    ) -> LayerChange | None:
        """`LayerChange` for parameters/config (None: nothing).

        The same hook as `PassThroughHandler.follow`: ``mapping`` is the
        mapping of the channel input the group reaches the layer on (the
        output's is `derive`'s).
        """
        return None

    def split_positions(
        self, layer: Any, node: Node, graph: LayerGraph, axis: int
    ) -> tuple[int, int] | None:
        """``(outer, inner)`` when the layer *splits* its input's last axis.

        A Reshape of a Dense's units into ``(positions, channels)`` (a DCGAN
        generator's stem) makes its output channels (on ``axis``, counted
        from the end) a layout of the input's last axis read backwards: input
        unit ``(o * C + c) * inner + i`` is channel ``c``, at ``outer``
        positions before the channel axis and ``inner`` after it. Growth then
        crosses the layer backwards: the input's mapping is the output's
        repeated ``inner`` times and expanded over ``outer`` positions
        (`WidthMapping.repeat`, `WidthMapping.expand`), and the Dense that
        writes it is widened by that layout. None (the default): the layout
        is only crossed forwards (`derive`).
        """
        return None

    def follow_split(
        self, layer: Any, mapping: WidthMapping, axis: int
    ) -> LayerChange | None:
        """`LayerChange` of a splitting layer whose output channels (on
        ``axis``) are widened by ``mapping`` (see `split_positions`)."""
        return None

    def zero_preserving(self, layer: Any) -> bool:
        """True if the layer maps an all-zero input to an all-zero output."""
        return not self.has_state
