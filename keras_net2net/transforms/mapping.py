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


@dataclasses.dataclass(frozen=True)
class MappingRule:
    """What one layer needs of the mapping of the channels it shares.

    Handlers declare a rule (`Handler.mapping_rule`) when only some mappings
    keep their layer's function; planning combines the rules of a coupling
    group and chooses one mapping that satisfies all of them
    (`choose_mapping`).

    Example:

    ```python
    # LayerNormalization over the channels: equal copies of every channel.
    MappingRule(uniform=True, reason="'ln' normalises over the channels")
    # Key/value heads of 8 dimensions: copy whole heads.
    MappingRule(block=8, reason="'attention' has heads of 8 dimensions")
    ```

    Args:
        uniform: every old unit (every block) must be copied the same number
            of times; the new width is then a multiple of the old one.
        block: units come in blocks of ``block`` consecutive units that are
            copied whole (a new block copies one old block). Defaults to 1.
        reason: why, for error messages (name the layer).
    """

    uniform: bool = False
    block: int = 1
    reason: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.block, bool) or int(self.block) < 1:
            raise ValueError(
                f"MappingRule expects block >= 1. Received: block={self.block!r}"
            )


def choose_mapping(
    old_width: int,
    new_width: int,
    rules: Sequence[MappingRule] = (),
    *,
    pad: bool = False,
    seed: int | np.random.Generator | None = None,
) -> WidthMapping:
    """The mapping from ``old_width`` to ``new_width`` units that every rule allows.

    Without rules this is `random_mapping` (or `padding_mapping` with
    ``pad=True``). Blocks: the mapping is chosen over blocks (the least
    common multiple of the rules' block sizes) and expanded, so every new
    block copies one whole old block, and the old blocks stay first.
    Uniform: every old block is copied equally often (`tiled_mapping` over
    blocks). Fresh units (``pad=True``) satisfy every rule: they copy nothing.

    Args:
        old_width: current number of units.
        new_width: number of units after widening (> ``old_width``).
        rules: `MappingRule`s of the layers sharing the units.
        pad: the random-pad baseline (new units are fresh). Defaults to False.
        seed: int, `numpy.random.Generator` or None, for the random copies.

    Returns:
        A `WidthMapping`.

    Raises:
        ValueError: if no mapping satisfies the rules; the message gives the
            rule's reason and the widths that are valid.

    Example:

    ```python
    choose_mapping(4, 8, [MappingRule(block=2)], seed=0).indices
    # e.g. array([0, 1, 2, 3, 2, 3, 0, 1]): whole pairs are copied
    ```
    """
    _check_widths(old_width, new_width)
    old_width, new_width = int(old_width), int(new_width)
    block = int(np.lcm.reduce([int(r.block) for r in rules] or [1]))
    if old_width % block or new_width % block:
        reasons = [r.reason for r in rules if r.block > 1 and r.reason]
        raise ValueError(
            f"{'; '.join(reasons) or 'a layer copies whole blocks of units'}: "
            f"units are copied in whole blocks of {block}, so the width must be "
            f"a multiple of {block}. Received: old width {old_width}, new width "
            f"{new_width}."
        )
    if pad:
        return padding_mapping(old_width, new_width)
    uniform = [r for r in rules if r.uniform]
    old_blocks, new_blocks = old_width // block, new_width // block
    if uniform:
        if new_width % old_width:
            raise ValueError(
                f"{uniform[0].reason or 'a layer needs equal copies'}, so the "
                f"new width must be a multiple of {old_width} (e.g. "
                f"{2 * old_width}). Received: new width {new_width}."
            )
        blocks = tiled_mapping(old_blocks, new_blocks)
    else:
        blocks = random_mapping(old_blocks, new_blocks, seed=seed)
    return blocks.repeat(block) if block > 1 else blocks


def satisfies(mapping: WidthMapping, rule: MappingRule) -> bool:
    """Whether ``mapping`` keeps the function of a layer with ``rule``.

    Fresh units (``-1``) copy nothing and satisfy every rule.

    Args:
        mapping: a `WidthMapping`.
        rule: a `MappingRule`.

    Returns:
        True if every copied block is whole and, for a uniform rule, every old
        unit is copied equally often.

    Example:

    ```python
    pairs = MappingRule(block=2)
    satisfies(WidthMapping(np.array([0, 1, 2, 3, 0, 1]), 4), pairs)  # True
    satisfies(WidthMapping(np.array([0, 1, 2, 3, 1, 2]), 4), pairs)  # False
    ```
    """
    block = int(rule.block)
    if block > 1:
        if mapping.old_width % block or mapping.new_width % block:
            return False
        blocks = mapping.indices.reshape(-1, block)
        first = blocks[:, :1]
        whole = np.where(
            first == FRESH, blocks == FRESH, blocks == first + np.arange(block)
        )
        if not (whole.all() and np.all((first == FRESH) | (first % block == 0))):
            return False
    if rule.uniform and not mapping.fresh.any():
        counts = mapping.counts
        return bool(counts.min() == counts.max())
    return True


def grouped_query_mappings(
    query_heads: int,
    kv_heads: int,
    new_query_heads: int,
    new_kv_heads: int,
    seed: int | np.random.Generator | None = None,
) -> tuple[WidthMapping, WidthMapping]:
    """Head mappings of grouped-query attention that keep its function.

    Query head ``h`` attends with key/value head ``h // (query_heads //
    kv_heads)`` (KerasHub repeats each key/value head for its group). New
    key/value heads copy old ones in place (new head ``k`` copies ``k // a``,
    ``a = new_kv_heads // kv_heads``), so every old group now owns ``a``
    adjacent new groups; the query heads of those groups copy the old
    group's query heads, each once first, then random ones of the same group.
    Every query head then attends with a copy of its own key/value head; the
    output projection divides the copies (`WidthTransform` ``side="in"``).

    Args:
        query_heads: current number of query heads.
        kv_heads: current number of key/value heads (divides ``query_heads``).
        new_query_heads: at least ``query_heads``, a multiple of
            ``new_kv_heads``.
        new_kv_heads: a multiple of ``kv_heads``.
        seed: int, `numpy.random.Generator` or None, for the extra copies.

    Returns:
        ``(query mapping, key/value mapping)``.

    Raises:
        ValueError: if the new numbers of heads cannot keep the function.

    Example:

    ```python
    queries, kv = grouped_query_mappings(4, 2, 8, 2, seed=0)
    queries.indices  # array([0, 1, 1, 1, 2, 3, 3, 3]): groups {0, 1} and {2, 3}
    ```
    """
    q, kv, new_q, new_kv = (
        int(query_heads),
        int(kv_heads),
        int(new_query_heads),
        int(new_kv_heads),
    )
    if kv < 1 or q % kv:
        raise ValueError(
            f"query_heads={q} must be a multiple of kv_heads={kv} (both >= 1)."
        )
    if new_kv < kv or new_kv % kv:
        raise ValueError(
            f"The new number of key/value heads must be a multiple of {kv}. "
            f"Received: {new_kv}."
        )
    if new_q < q or new_q % new_kv:
        raise ValueError(
            f"The new number of query heads must be at least {q} and a multiple "
            f"of the number of key/value heads ({new_kv}). Received: {new_q}."
        )
    rng = np.random.default_rng(seed)
    group, new_group = q // kv, new_q // kv  # query heads per old group
    within = np.concatenate(
        [np.arange(group), rng.integers(0, group, size=new_group - group)]
    )
    queries = (np.arange(kv)[:, None] * group + within[None, :]).reshape(-1)
    kv_mapping = WidthMapping(np.arange(new_kv) // (new_kv // kv), kv)
    return WidthMapping(queries, q), kv_mapping
