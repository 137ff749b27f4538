"""Mapping rules: what a layer needs of its group's mapping, and the mapping
that satisfies every rule of a group (pure numpy)."""

import dataclasses
from collections.abc import Sequence

import numpy as np

from keras_net2net.transforms.mapping import FRESH
from keras_net2net.transforms.mapping import WidthMapping
from keras_net2net.transforms.mapping import _check_widths
from keras_net2net.transforms.mapping import concat_mappings
from keras_net2net.transforms.mapping import padding_mapping
from keras_net2net.transforms.mapping import random_mapping
from keras_net2net.transforms.mapping import tiled_mapping


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
        groups: the units form ``groups`` equal runs of consecutive units
            (GroupNormalization's groups) whose number stays: each new group
            copies units of its own old group only (with ``uniform``, each
            of them equally often). Defaults to 1.
    """

    uniform: bool = False
    block: int = 1
    reason: str = ""
    groups: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.block, bool) or int(self.block) < 1:
            raise ValueError(
                f"MappingRule expects block >= 1. Received: block={self.block!r}"
            )
        if isinstance(self.groups, bool) or int(self.groups) < 1:
            raise ValueError(
                f"MappingRule expects groups >= 1. Received: groups={self.groups!r}"
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
    grouped = [r for r in rules if r.groups > 1]
    if grouped:
        return _grouped_mapping(old_width, new_width, rules, grouped, pad, seed)
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


def _grouped_mapping(old_width, new_width, rules, grouped, pad, seed):
    """`choose_mapping` within each of the groups the rules keep.

    Several group counts nest: within the groups of their least common
    multiple, every coarser group also only copies its own units.
    """
    reason = grouped[0].reason or "a layer keeps its groups of units"
    if any(r.block > 1 for r in rules):
        raise ValueError(
            f"{reason}: its groups cannot be combined with another layer's "
            "whole blocks of units on the same channels."
        )
    count = int(np.lcm.reduce([int(r.groups) for r in grouped]))
    if old_width % count or new_width % count:
        raise ValueError(
            f"{reason}: the {count} groups keep their number, so the width must "
            f"be a multiple of {count}. Received: old width {old_width}, new "
            f"width {new_width}."
        )
    old_size, new_size = old_width // count, new_width // count
    inner = [MappingRule(uniform=r.uniform, reason=r.reason) for r in rules]
    rng = np.random.default_rng(seed)
    try:
        parts = [
            choose_mapping(old_size, new_size, inner, pad=pad, seed=rng)
            for _ in range(count)
        ]
    except ValueError as error:
        raise ValueError(f"{error} (within each of the {count} groups)") from None
    return concat_mappings(parts)


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
    groups = int(rule.groups)
    if groups > 1:
        if mapping.old_width % groups or mapping.new_width % groups:
            return False
        old_size = mapping.old_width // groups
        new_size = mapping.new_width // groups
        owner = np.arange(mapping.new_width) // new_size
        copied = ~mapping.fresh
        if np.any(mapping.indices[copied] // old_size != owner[copied]):
            return False
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
    output projection divides the copies (`WidthTransform` ``side="divide"``).

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
