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

Handlers are stateless and registered per exact operation class
(`keras_net2net.surgery.handlers.register_handler`). An operation without a
handler cannot take part in a widening: growth fails and names it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import TYPE_CHECKING
from typing import Any

import keras
import numpy as np

# The request options, re-exported for the handlers (`H.NET2WIDER`, ...).
from keras_net2net.requests import CONSUMERS as CONSUMERS
from keras_net2net.requests import COPIES as COPIES
from keras_net2net.requests import DEEPEN_METHODS as DEEPEN_METHODS
from keras_net2net.requests import IDENTITY as IDENTITY
from keras_net2net.requests import NET2WIDER as NET2WIDER
from keras_net2net.requests import NOISE_TARGETS as NOISE_TARGETS
from keras_net2net.requests import RANDOM as RANDOM
from keras_net2net.requests import RANDOM_PAD as RANDOM_PAD
from keras_net2net.requests import WIDEN_METHODS as WIDEN_METHODS
from keras_net2net.transforms import WidthMapping
from keras_net2net.transforms import WidthTransform

if TYPE_CHECKING:
    from keras_net2net.surgery.graph import LayerGraph
    from keras_net2net.surgery.graph import Node

Seeds = Iterator[int]

UNITS = "units"
SAME = "same"
DERIVED = "derived"

# Activations that act on every channel independently (elementwise). Only
# these may receive widened channels: any other (softmax, sparsemax, glu, a
# custom callable, ...) is refused by name.
ELEMENTWISE_ACTIVATIONS = frozenset(
    {
        "linear",
        "relu",
        "relu6",
        "leaky_relu",
        "elu",
        "selu",
        "celu",
        "gelu",
        "silu",
        "swish",
        "sigmoid",
        "hard_sigmoid",
        "hard_silu",
        "hard_swish",
        "tanh",
        "hard_tanh",
        "softplus",
        "softsign",
        "exponential",
        "mish",
        "log_sigmoid",
        "squareplus",
        "sparse_plus",
        "sparse_sigmoid",
        "hard_shrink",
        "soft_shrink",
        "tanh_shrink",
        "threshold",
    }
)
# Activations a for which a(a(x)) == a(x): an identity layer with the same
# activation inserted after such a layer keeps the function.
IDEMPOTENT_ACTIVATIONS = frozenset({"linear", "relu"})
# Elementwise activations with a(0) == 0 (a zero residual branch stays zero).
ZERO_PRESERVING_ACTIVATIONS = frozenset(
    {
        "linear",
        "relu",
        "relu6",
        "leaky_relu",
        "elu",
        "selu",
        "celu",
        "gelu",
        "silu",
        "swish",
        "tanh",
        "hard_tanh",
        "softsign",
        "mish",
        "hard_silu",
        "hard_swish",
        "hard_shrink",
        "soft_shrink",
        "tanh_shrink",
    }
)


def variable_positions(layer: Any) -> dict[str, int]:
    """The keys by which a `LayerChange` names ``layer``'s variables.

    A variable is named by every ending of its path that no other variable
    of the layer shares (``"kernel"`` in a Dense layer; ``"query/kernel"`` or
    ``"self_attention/query/kernel"`` in a composite layer), and always by
    the last two parts of its path (``"attention_output/bias"``).

    Returns:
        ``{key: position in layer.weights}``.
    """
    weights = list(getattr(layer, "weights", []))
    paths = [variable.path.split("/") for variable in weights]
    positions = {}
    for position, parts in enumerate(paths):
        positions["/".join(parts[-2:])] = position
    for position, parts in enumerate(paths):
        for length in range(1, len(parts) + 1):
            key = "/".join(parts[-length:])
            if sum(p[-length:] == parts[-length:] for p in paths) == 1:
                positions[key] = position
    return positions


@dataclasses.dataclass
class LayerChange:
    """What one growth changes in one layer.

    Example:

    ```python
    change = LayerChange(config={"units": 8}).add("kernel", copy_transform(g))
    ```

    Attributes:
        config: entries of the layer config to replace (e.g. ``units``).
        transforms: variable name -> list of `WidthTransform` that turn the
            old variable into the new one (several when the layer is widened
            along several axes, e.g. read and written in one group).
        values: variable name -> numpy array to assign after building (for
            variables that are set rather than transformed, e.g. zeros).
        defaults: config entries applied unless ``config`` sets them (another
            change of the same layer may).

    Variables are named as `variable_positions` says.
    """

    config: dict[str, Any] = dataclasses.field(default_factory=dict)
    transforms: dict[str, list[WidthTransform]] = dataclasses.field(
        default_factory=dict
    )
    values: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    defaults: dict[str, Any] = dataclasses.field(default_factory=dict)

    def add(self, variable: str, transform: WidthTransform) -> LayerChange:
        """Append ``transform`` to ``variable``'s chain; returns ``self``."""
        self.transforms.setdefault(variable, []).append(transform)
        return self

    def merge(self, other: LayerChange | None) -> LayerChange:
        """Combine with another change of the same layer (transforms compose)."""
        if other is None:
            return self
        for key, value in other.config.items():
            if key in self.config and self.config[key] != value:
                raise ValueError(
                    f"Conflicting changes of config entry '{key}': "
                    f"{self.config[key]!r} and {value!r}."
                )
            self.config[key] = value
        for variable, chain in other.transforms.items():
            self.transforms.setdefault(variable, []).extend(chain)
        self.values.update(other.values)
        self.defaults.update(other.defaults)
        return self

    def full_config(self) -> dict[str, Any]:
        """``defaults`` overridden by ``config``."""
        return {**self.defaults, **self.config}

    def by_position(
        self, layer: Any
    ) -> tuple[dict[int, list[WidthTransform]], dict[int, np.ndarray]]:
        """``(transforms, values)`` keyed by position in ``layer.weights``."""
        positions = variable_positions(layer)

        def position(key):
            if key not in positions:
                raise ValueError(
                    f"Layer '{layer.name}' has no variable '{key}'. Its variables: "
                    f"{sorted(positions)}"
                )
            return positions[key]

        transforms = {position(k): chain for k, chain in self.transforms.items()}
        values = {position(k): value for k, value in self.values.items()}
        return transforms, values


@dataclasses.dataclass(frozen=True)
class WidenOptions:
    """Options of one widening, shared by every handler it reaches."""

    method: str = NET2WIDER
    noise: float = 0.0
    noise_on: str = COPIES
    pad_std: float | None = None
    pad_bias: float = 0.0
    # (layer name, new number of heads): attention blocks that get more heads
    # of the same size while their stream widens (see `Handler.parts`).
    heads: tuple[tuple[str, int], ...] = ()

    @property
    def random_pad(self) -> bool:
        return self.method == RANDOM_PAD

    def fill(self) -> float | str:
        """What fresh (random-pad) kernel entries get: ``"random"`` or 0."""
        return RANDOM if self.random_pad else 0.0

    def copy_noise(self) -> float:
        """Noise on the new copies' incoming weights (the widened layer)."""
        return self.noise if self.noise_on == COPIES else 0.0

    def consumer_noise(self) -> float:
        """Noise on the new copies' outgoing weights (the consumers)."""
        return self.noise if self.noise_on == CONSUMERS else 0.0


def describe(layer):
    """``Layer 'name' (Class)``, or ``Operation 'name' (Class, a keras.ops call)``."""
    if isinstance(layer, keras.layers.Layer):
        return f"Layer '{layer.name}' ({type(layer).__name__})"
    return f"Operation '{layer.name}' ({type(layer).__name__}, a keras.ops call)"


def unsupported(layer, reason):
    """The ValueError for ``layer`` that cannot take part in a growth."""
    return ValueError(f"{describe(layer)} {reason}")


def activation_name(activation):
    """Serialised name of an activation function ('?' for custom callables)."""
    if activation is None:
        return "linear"
    # Keras's own functions by name: serialize() may import optional modules
    # (TensorFlow, seconds) the first time it runs.
    name = getattr(activation, "__name__", None)
    if isinstance(name, str):
        try:
            if keras.activations.get(name) is activation:
                return name
        except (ValueError, TypeError):
            pass
    try:
        name = keras.activations.serialize(activation)
    except (ValueError, TypeError):
        name = None
    if isinstance(name, str):
        return name
    if isinstance(name, dict):
        name = name.get("config", name.get("class_name"))
        if isinstance(name, str):
            return name
    return getattr(activation, "__name__", "?")


_CHANNEL_MIXING = ("softmax", "log_softmax", "sparsemax", "glu")


def check_elementwise_activation(layer, activation, consequence):
    """Refuse ``activation`` unless it is known to be elementwise.

    Args:
        layer: the layer applying it (named in the error).
        activation: the activation function.
        consequence: what cannot be done, e.g. ``"its output cannot be
            widened"``.
    """
    name = activation_name(activation)
    if name not in ELEMENTWISE_ACTIVATIONS:
        why = (
            "which mixes channels"
            if name in _CHANNEL_MIXING
            else "which is not known to act on each channel independently"
        )
        raise unsupported(
            layer,
            f"applies the activation '{name}', {why}, so {consequence}. "
            "Elementwise activations: "
            f"{', '.join(sorted(ELEMENTWISE_ACTIVATIONS))}.",
        )
    return name


def check_channels_last(layer):
    data_format = getattr(layer, "data_format", "channels_last")
    if data_format not in (None, "channels_last"):
        raise unsupported(
            layer,
            f"uses data_format='{data_format}'; keras-net2net supports "
            "channels_last only.",
        )


def copy_transform(
    mapping: WidthMapping,
    axis: int = -1,
    *,
    fill: float | str = 0.0,
    noise: float = 0.0,
    seed: int | None = None,
    fill_std: float | None = None,
    scale: float = 1.0,
) -> WidthTransform:
    """A transform that copies entries along ``axis`` (see `WidthTransform`)."""
    return WidthTransform(mapping, "out", axis, noise, fill, seed, fill_std, scale)


def divide_transform(
    mapping: WidthMapping,
    axis: int = -2,
    *,
    fill: float | str = 0.0,
    noise: float = 0.0,
    seed: int | None = None,
    fill_std: float | None = None,
    scale: float = 1.0,
) -> WidthTransform:
    """A transform that copies and divides by the copy count along ``axis``."""
    return WidthTransform(mapping, "in", axis, noise, fill, seed, fill_std, scale)


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
        role: `UNITS`, `SAME` or `DERIVED` (see the module docstring), or a
            per-layer answer from `role_of`.
        has_state: whether growth may change the layer's weights or config;
            a layer without state may be shared (called several times).
    """

    role: str | None = None
    has_state = True

    def role_of(
        self, layer: Any, node: Node | None = None, graph: LayerGraph | None = None
    ) -> str | None:
        """The role ``layer`` plays at ``node`` (`UNITS`, `SAME` or `DERIVED`)."""
        return self.role

    def check(self, layer: Any) -> None:
        """Raise a ValueError naming ``layer`` if its configuration is unsupported."""

    def init_key(self, layer: Any, variable: str) -> str | None:
        """Config key of the initializer that creates ``variable`` (or None)."""
        return f"{variable}_initializer"

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
        layer sees ``(layer.name, units)`` in `WidenOptions.heads`.
        """
        return None

    def widen_part(
        self,
        layer: Any,
        part: str,
        mapping: WidthMapping,
        options: WidenOptions,
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
        self, layer: Any, mapping: WidthMapping, options: WidenOptions, seeds: Seeds
    ) -> LayerChange:
        """`LayerChange` that widens the layer's output units by ``mapping``."""
        raise unsupported(layer, "cannot be widened.")

    def widen_in(
        self,
        layer: Any,
        mapping: WidthMapping,
        options: WidenOptions,
        seeds: Seeds,
        position: int = 0,
        node: Node | None = None,
    ) -> LayerChange:
        """`LayerChange` that absorbs widened input channels at ``position``.

        ``node`` is the call whose input ``position`` is widened (a layer that
        reads several inputs, such as attention, tells them apart by it).
        """
        raise unsupported(layer, "cannot read widened channels.")

    def internal_width(self, layer: Any) -> int | None:
        """Width of the axis widened when ``layer`` itself is the target.

        None (the default) means the layer's output channels. Attention layers
        answer their number of heads.
        """
        return None

    def widen_internal(
        self, layer: Any, mapping: WidthMapping, options: WidenOptions, seeds: Seeds
    ) -> LayerChange:
        """`LayerChange` that widens the axis of `internal_width`."""
        raise unsupported(layer, "has no internal width to widen.")

    def deeper_layer(
        self,
        layer: Any,
        name: str,
        *,
        method: str,
        kernel_size: Any = None,
        seed: int | None = None,
    ) -> tuple[Any, Any]:
        """``(new layer, values)``: an identity copy (see `DenseHandler`)."""
        raise unsupported(
            layer, "cannot be followed by an identity copy (deepen() after it)."
        )

    def zero_change(self, layer: Any) -> dict[str, np.ndarray] | None:
        """Values that make the layer output zeros (None if it cannot)."""
        return None

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

    role = SAME
    has_state = False

    def channel_inputs(self, layer: Any, node: Node, graph: LayerGraph) -> list[int]:
        """Positions of the inputs whose channel axis is the output's.

        Defaults to the positional tensor arguments (not a ``mask=``).
        """
        return list(range(node.positional))

    def uniform_copies(self, layer: Any, node: Node, graph: LayerGraph) -> str | None:
        """A reason string if every channel must be copied equally often, else None."""
        return None

    def follow(
        self, layer: Any, mapping: WidthMapping, options: WidenOptions, seeds: Seeds
    ) -> LayerChange | None:
        """`LayerChange` for per-channel parameters/config (None: nothing)."""
        return None

    def zero_preserving(self, layer: Any) -> bool:
        """True if the layer maps an all-zero input to an all-zero output."""
        return not self.has_state

    def zero_change(self, layer: Any) -> dict[str, np.ndarray] | None:
        """Values that make the layer output zeros (None if it cannot)."""
        return None


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

    role = DERIVED
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
        self,
        layer: Any,
        node: Node,
        graph: LayerGraph,
        mappings: list[WidthMapping | None],
        options: WidenOptions,
        seeds: Seeds,
    ) -> LayerChange | None:
        """`LayerChange` for parameters/config (None: nothing)."""
        return None

    def zero_preserving(self, layer: Any) -> bool:
        """True if the layer maps an all-zero input to an all-zero output."""
        return not self.has_state
