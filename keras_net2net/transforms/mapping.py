"""Width mappings: which old unit each unit of a widened layer copies.

A mapping is the one shared notion of the Net2WiderNet math. Entry ``j`` of
``indices`` names the old unit that new unit ``j`` copies (``g(j)`` in the
paper), or ``-1`` for a *fresh* unit that copies nothing (the random-pad
baseline). The first ``old_width`` entries always keep the old units in place,
so a widened layer still starts with its original units.

Everything here is pure numpy: no Keras import.
"""

import dataclasses
from collections.abc import Sequence

import numpy as np

FRESH = -1


@dataclasses.dataclass(frozen=True, eq=False)
class WidthMapping:
    """New-unit -> old-unit mapping of a widened layer.

    Example:

    ```python
    g = WidthMapping(np.array([0, 1, 2, 1]), old_width=3)  # unit 3 copies unit 1
    g.counts  # array([1, 2, 1])
    ```

    Args:
        indices: 1-D integer array of length ``new_width``. ``indices[j]`` is
            the old unit that new unit ``j`` copies, or ``-1`` (``FRESH``) for a
            unit that copies nothing.
        old_width: number of units before widening.
    """

    indices: np.ndarray
    old_width: int

    def __post_init__(self) -> None:
        indices = np.asarray(self.indices)
        if indices.ndim != 1 or not np.issubdtype(indices.dtype, np.integer):
            raise ValueError(
                "WidthMapping expects a 1-D integer array of indices. "
                f"Received: shape={indices.shape}, dtype={indices.dtype}"
            )
        old_width = int(self.old_width)
        if old_width < 1:
            raise ValueError(
                f"WidthMapping expects old_width >= 1. Received: {old_width}"
            )
        if indices.size and (indices.min() < FRESH or indices.max() >= old_width):
            raise ValueError(
                "WidthMapping indices must lie in [-1, old_width). Received: "
                f"min={indices.min()}, max={indices.max()}, old_width={old_width}"
            )
        indices = indices.astype(np.int64)
        indices.setflags(write=False)
        object.__setattr__(self, "indices", indices)
        object.__setattr__(self, "old_width", old_width)

    @property
    def new_width(self) -> int:
        return int(self.indices.shape[0])

    @property
    def fresh(self) -> np.ndarray:
        """Boolean mask of the new units that copy no old unit."""
        return self.indices == FRESH

    @property
    def counts(self) -> np.ndarray:
        """Replication count of each old unit (length ``old_width``)."""
        return np.bincount(self.indices[~self.fresh], minlength=self.old_width)

    @classmethod
    def identity(cls, width: int) -> "WidthMapping":
        """The mapping that keeps ``width`` units as they are."""
        return cls(np.arange(int(width)), int(width))

    @property
    def is_identity(self) -> bool:
        return self.new_width == self.old_width and bool(
            np.array_equal(self.indices, np.arange(self.old_width))
        )

    def repeat(self, multiplier: int) -> "WidthMapping":
        """Mapping over an axis where unit ``c`` owns ``multiplier`` slots.

        A depthwise convolution with ``depth_multiplier`` m writes output
        channel ``c * m + j`` from input channel ``c``; its bias and its
        consumers follow this layout.

        Args:
            multiplier: slots per unit (>= 1).

        Returns:
            A `WidthMapping` of width ``multiplier * new_width``.
        """
        m = int(multiplier)
        if m < 1:
            raise ValueError(f"multiplier must be >= 1. Received: {multiplier}")
        inner = np.arange(m)[None, :]
        flat = np.where(self.fresh[:, None], FRESH, self.indices[:, None] * m + inner)
        return WidthMapping(flat.reshape(-1), m * self.old_width)

    def expand(self, positions: int) -> "WidthMapping":
        """Mapping over a flattened ``(positions, channels)`` axis.

        A channels-last ``Flatten`` turns channel ``c`` at spatial position ``p``
        into feature ``p * C + c``; the consumer's rows must follow the same
        layout.

        Args:
            positions: number of spatial positions flattened together.

        Returns:
            A `WidthMapping` of width ``positions * new_width``.
        """
        positions = int(positions)
        if positions < 1:
            raise ValueError(f"positions must be >= 1. Received: {positions}")
        offsets = np.arange(positions)[:, None] * self.old_width
        flat = np.where(self.fresh[None, :], FRESH, offsets + self.indices[None, :])
        return WidthMapping(flat.reshape(-1), positions * self.old_width)


def concat_mappings(mappings: Sequence[WidthMapping]) -> WidthMapping:
    """Mapping of a concatenated axis: each part keeps its own mapping.

    Example:

    ```python
    both = concat_mappings([random_mapping(3, 5), WidthMapping.identity(2)])
    ```

    Part ``k``'s new units land at the offset of part ``k`` in the new
    concatenated axis and copy old units at its offset in the old axis.

    Args:
        mappings: list of `WidthMapping`, one per concatenated part.

    Returns:
        A `WidthMapping` over the concatenated axis.
    """
    parts, old_offset = [], 0
    for mapping in mappings:
        parts.append(np.where(mapping.fresh, FRESH, mapping.indices + old_offset))
        old_offset += mapping.old_width
    return WidthMapping(np.concatenate(parts), old_offset)


def _check_widths(old_width: int, new_width: int) -> None:
    if int(new_width) <= int(old_width):
        raise ValueError(
            f"The new width must be larger than the old width. Received: "
            f"old_width={old_width}, new_width={new_width}"
        )


def random_mapping(
    old_width: int,
    new_width: int,
    seed: int | np.random.Generator | None = None,
) -> WidthMapping:
    """Net2WiderNet mapping: keep every old unit, copy random ones for the rest.

    Args:
        old_width: current number of units.
        new_width: number of units after widening (> ``old_width``).
        seed: int, `numpy.random.Generator` or None. Defaults to None.

    Returns:
        A `WidthMapping` whose extra units copy uniformly chosen old units.

    Example:

    ```python
    g = random_mapping(64, 128, seed=0)
    ```
    """
    _check_widths(old_width, new_width)
    rng = np.random.default_rng(seed)
    extra = rng.integers(0, old_width, size=int(new_width) - int(old_width))
    return WidthMapping(np.concatenate([np.arange(old_width), extra]), old_width)


def tiled_mapping(old_width: int, new_width: int) -> WidthMapping:
    """Mapping that copies every old unit the same number of times.

    ``new_width`` must be a multiple of ``old_width``; new unit ``j`` copies
    old unit ``j mod old_width``. Layers that normalise over the widened axis
    (LayerNormalization) keep their function only under such a mapping: the
    mean and variance over the copies equal those over the originals.

    Args:
        old_width: current number of units.
        new_width: a multiple of ``old_width`` larger than it.

    Returns:
        A `WidthMapping` in which every old unit has ``new_width // old_width``
        copies.

    Example:

    ```python
    tiled_mapping(3, 6).indices  # array([0, 1, 2, 0, 1, 2])
    ```
    """
    _check_widths(old_width, new_width)
    if int(new_width) % int(old_width):
        raise ValueError(
            f"A tiled mapping needs a new width that is a multiple of the old "
            f"width. Received: old_width={old_width}, new_width={new_width}"
        )
    return WidthMapping(np.arange(int(new_width)) % int(old_width), old_width)


def padding_mapping(old_width: int, new_width: int) -> WidthMapping:
    """Random-pad baseline mapping: keep every old unit, add fresh ones.

    Args:
        old_width: current number of units.
        new_width: number of units after widening (> ``old_width``).

    Returns:
        A `WidthMapping` whose extra units are marked fresh (``-1``).

    Example:

    ```python
    padding_mapping(3, 5).indices  # array([ 0,  1,  2, -1, -1])
    ```
    """
    _check_widths(old_width, new_width)
    extra = np.full(int(new_width) - int(old_width), FRESH)
    return WidthMapping(np.concatenate([np.arange(old_width), extra]), old_width)


def stream_mapping(old_width: int, new_width: int) -> WidthMapping:
    """Mapping of a normalised stream at any larger width: equal copies of
    every unit as often as they fit, fresh units for the rest.

    A normalisation over the units (LayerNormalization, RMSNormalization)
    keeps its statistics when the fresh units hold the mean of the old ones
    (zero for RMS) and its gains are scaled (see
    `keras_net2net.surgery.plan.stream`). A multiple of ``old_width`` gives
    `tiled_mapping`.

    Args:
        old_width: current number of units.
        new_width: number of units after widening (> ``old_width``).

    Returns:
        A `WidthMapping`: ``new_width // old_width`` copies of every unit,
        then ``new_width % old_width`` fresh units.

    Example:

    ```python
    stream_mapping(4, 10).indices  # array([0, 1, 2, 3, 0, 1, 2, 3, -1, -1])
    ```
    """
    _check_widths(old_width, new_width)
    old_width, new_width = int(old_width), int(new_width)
    copies = new_width // old_width * old_width
    indices = np.concatenate(
        [np.arange(copies) % old_width, np.full(new_width - copies, FRESH)]
    )
    return WidthMapping(indices, old_width)
