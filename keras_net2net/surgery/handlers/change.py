"""What a handler returns: the change of one layer, and the widening it serves.

A `LayerChange` lists the config entries, weight transforms and values one
growth gives one layer; `Widening` carries the request (and what the graph
adds) to every handler a widening reaches; `copy_transform` and
`divide_transform` are the two transforms handlers build (a writer's copies,
a reader's copied-and-divided rows).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import numpy as np

from keras_net2net.requests import COPIES
from keras_net2net.requests import PAIRED
from keras_net2net.requests import RANDOM
from keras_net2net.requests import RANDOM_PAD
from keras_net2net.requests import Widen
from keras_net2net.transforms import COPY
from keras_net2net.transforms import DIVIDE
from keras_net2net.transforms import WidthMapping
from keras_net2net.transforms import WidthTransform


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
class Widening:
    """One widening in progress: the `Widen` request, and what the graph adds.

    Every handler the widening reaches gets it; they read the request's
    options (``widening.request.pad_bias``) and build their weights'
    transforms with `writer` and `reader`.

    Attributes:
        request: the `keras_net2net.Widen` being planned.
        heads: ``(layer name, new number of heads)`` of attention blocks that
            get more heads of the same size while their stream widens (see
            `Handler.parts`).
        fresh: what the writers' fresh units hold where the group widens to
            a width that is not a multiple of its own through a normalisation
            (`keras_net2net.surgery.plan.stream`): ``"mean"`` (of the old
            units: LayerNormalization) or ``0.0`` (RMSNormalization); None
            otherwise (fresh units only in the random-pad baseline).
    """

    request: Widen
    heads: tuple[tuple[str, int], ...] = ()
    fresh: float | str | None = None

    @property
    def random_pad(self) -> bool:
        return self.request.method == RANDOM_PAD

    def fill(self) -> float | str:
        """What fresh (random-pad) kernel entries get: ``"random"`` or 0."""
        return RANDOM if self.random_pad else 0.0

    def bias_fill(self) -> float | str:
        """What a writer's fresh bias entries get: `fresh` where set, else the
        request's ``pad_bias``."""
        return self.request.pad_bias if self.fresh is None else self.fresh

    def copy_noise(self) -> float:
        """Noise on the new copies' incoming weights (the widened layer)."""
        return self.request.noise if self.request.noise_on == COPIES else 0.0

    def consumer_noise(self) -> float:
        """Noise on the copies' outgoing weights (the consumers)."""
        return self.request.noise if self.request.noise_on != COPIES else 0.0

    def paired_noise(self) -> bool:
        """Whether the consumers' noise sums to zero over each unit's copies."""
        return self.request.noise_on == PAIRED

    def writer(
        self,
        mapping: WidthMapping,
        seeds: Iterator[int],
        axis: int = -1,
        *,
        noise: bool = True,
        scale: float = 1.0,
    ) -> WidthTransform:
        """The transform of a weight that writes the widened units: a copy.

        Fresh (random-pad) entries get `fill` with ``pad_std``; copies get
        the request's noise where it goes on copies (``noise=False``: never,
        e.g. for a depthwise kernel). Draws one seed from ``seeds``.
        """
        return copy_transform(
            mapping,
            axis,
            fill=self.fill() if self.fresh is None else self.fresh,
            noise=self.copy_noise() if noise else 0.0,
            seed=next(seeds),
            fill_std=self.request.pad_std,
            scale=scale,
        )

    def reader(
        self,
        mapping: WidthMapping,
        seeds: Iterator[int],
        axis: int = -2,
        *,
        noise: bool = True,
        scale: float = 1.0,
    ) -> WidthTransform:
        """The transform of a weight that reads the widened units: copied rows
        divided by their copy count, with the request's noise where it goes
        on consumers. Draws one seed from ``seeds``."""
        return divide_transform(
            mapping,
            axis,
            fill=self.fill(),
            noise=self.consumer_noise() if noise else 0.0,
            seed=next(seeds),
            fill_std=self.request.pad_std,
            scale=scale,
            paired=self.paired_noise(),
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
    """A transform that copies entries along ``axis`` (see `WidthTransform`).

    What a handler's ``widen_out`` or ``follow`` adds for a variable whose
    entries along ``axis`` are the widened units (the *copy* side).

    Example:

    ```python
    g = WidthMapping(np.array([0, 1, 2, 1]), old_width=3)
    LayerChange(config={"units": 4}).add("bias", copy_transform(g))
    ```
    """
    return WidthTransform(mapping, COPY, axis, noise, fill, seed, fill_std, scale)


def divide_transform(
    mapping: WidthMapping,
    axis: int = -2,
    *,
    fill: float | str = 0.0,
    noise: float = 0.0,
    seed: int | None = None,
    fill_std: float | None = None,
    scale: float = 1.0,
    paired: bool = False,
) -> WidthTransform:
    """A transform that copies and divides by the copy count along ``axis``.

    What a handler's ``widen_in`` adds for a variable that reads widened
    channels on ``axis`` (the *divide* side): the copies together contribute
    what the original entry did. ``paired``: the noise sums to zero over
    each unit's copies (exact; see `keras_net2net.transforms.wider_in`).

    Example:

    ```python
    g = WidthMapping(np.array([0, 1, 2, 1]), old_width=3)
    LayerChange().add("kernel", divide_transform(g, axis=-2))
    ```
    """
    return WidthTransform(
        mapping, DIVIDE, axis, noise, fill, seed, fill_std, scale, paired
    )
