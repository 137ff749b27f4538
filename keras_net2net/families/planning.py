"""Planning growth in a KerasHub model's config vocabulary.

`plan_request` decides whether a request is in the config vocabulary of the
model's family (a config entry to widen, blocks to copy) and plans it as a
`FamilyPlan`; every check happens here, before anything is built.
`inserted_blocks` and `train_only` serve block expansion (LLaMA-Pro).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from keras_net2net.families.plan import FamilyPlan
from keras_net2net.families.registry import find
from keras_net2net.families.registry import require
from keras_net2net.families.upcycle import plan_upcycle
from keras_net2net.requests import COPIES
from keras_net2net.requests import NET2WIDER
from keras_net2net.requests import STACK
from keras_net2net.requests import Deepen
from keras_net2net.requests import Request
from keras_net2net.requests import Stack
from keras_net2net.requests import Upcycle
from keras_net2net.requests import Widen


def plan_request(
    model: Any, request: Request, *, found: tuple | None = None
) -> FamilyPlan | None:
    """The `FamilyPlan` of ``request`` if it is in ``model``'s config vocabulary.

    A `Widen` of a config entry (``"hidden_dim"``, ...) or a `Deepen` after a
    block (or a list of blocks) with the default options is planned here;
    anything else (None) is grown through the model's layers.

    Example:

    ```python
    plan = plan_request(llama_causal_lm, keras_net2net.Widen("hidden_dim", 32))
    ```

    Args:
        model: a KerasHub backbone or task model.
        request: a `Widen` or `Deepen`.
        found: what `find` returned for ``model``, where the caller has
            asked already. Defaults to None (asked here).

    Raises:
        ValueError: a config entry with options other than the defaults, or a
            value that cannot be exact.
    """
    found = find(model) if found is None else found
    if found is None:
        return None
    planner: Any = _IN_CONFIG_VOCABULARY.get(type(request))
    return None if planner is None else planner(model, request, found)


def _widen_entry(model: Any, request: Widen, found: tuple) -> FamilyPlan | None:
    """A `Widen` of a config entry; None for a layer name."""
    if request.layer not in {**found[0].widen_keys, **found[0].refused}:
        return None
    return plan_widen(model, request, found=found)


def _deepen_blocks(model: Any, request: Deepen, found: tuple) -> FamilyPlan | None:
    """A `Deepen` after blocks with the default options; None for others."""
    if isinstance(request.after, tuple):  # several blocks: identity copies
        if request != Deepen(request.after):
            raise ValueError(
                "`after`: a list of blocks inserts identity copies with the "
                "default options only; pass one block at a time for others. "
                f"Received: {request!r}"
            )
        return plan_deepen(model, request, found=found)
    names_block = request.after.startswith(found[0].block_prefix)
    if names_block and request == Deepen(request.after):
        return plan_deepen(model, request, found=found)
    return None


def plan_widen(model: Any, request: Widen, *, found: tuple | None = None) -> FamilyPlan:
    """Plan widening the config entry ``request.layer`` to ``request.units``.

    ``request.noise`` (relative to each kernel's standard deviation) goes on
    the new copies of the kernels that write the widened dimensions, to break
    their symmetry (exact copies get identical updates under Adam); 0 is
    exact. Only ``method="net2wider"`` with ``noise_on="copies"`` applies.

    Example:

    ```python
    plan = plan_widen(llama_causal_lm, Widen("num_key_value_heads", 4, seed=0))
    ```

    Raises:
        ValueError: naming the key and the values that are valid.
    """
    family, backbone, _ = require(model) if found is None else found
    key, units, seed, noise = request.layer, request.units, request.seed, request.noise
    if request.method != NET2WIDER or request.noise_on != COPIES:
        raise ValueError(
            f"`method`/`noise_on`: widening '{key}' of a "
            f"{type(backbone).__name__} supports method='net2wider' with "
            f"noise_on='copies' only. Received: method={request.method!r}, "
            f"noise_on={request.noise_on!r}"
        )
    config = family.config(backbone)
    if key not in family.widen_keys and key not in family.refused:
        valid = ", ".join(f"'{k}' ({v})" for k, v in family.widen_keys.items())
        raise ValueError(
            f"`layer`: {type(backbone).__name__} cannot widen '{key}'. "
            f"Config entries it widens: {valid}."
        )
    family.check_widen(backbone, key)
    new_config, mappings, notes = family.plan_widen(config, key, units, seed)
    # Falcon's heads move to their ALiBi slopes' positions (read through
    # their own mapping): noise on "the copies" would land on kept heads.
    moved = ["heads"] if "heads_read" in mappings else []
    if noise and moved:
        raise ValueError(
            f"`noise`: widening '{key}' of a {type(backbone).__name__} moves its "
            f"old units ({', '.join(moved)}: Falcon's heads go to the positions "
            "of their ALiBi slopes), so copy noise would land on kept units; "
            "grow with noise=0 (the new heads already differ: another slope). "
            f"Received: noise={noise!r}"
        )
    sources = [(i, False) for i in range(config["num_layers"])]
    noisy = f" (noise {noise:g})" if noise else ""
    if noise and seed is None:  # one draw per plan, so its chains agree
        seed = int(np.random.default_rng().integers(2**31))
    plan = FamilyPlan(
        f"widen {type(backbone).__name__} '{key}' {config[key]} -> "
        f"{new_config[key]}{noisy}",
        new_config,
        mappings,
        sources,
        notes,
        noise=float(noise),
        seed=int(seed or 0),
    )
    _check_layouts(family, backbone, plan, model)
    return plan


def plan_deepen(
    model: Any, request: Deepen, *, found: tuple | None = None
) -> FamilyPlan:
    """Plan inserting identity copies of the blocks named in ``request.after``.

    Example:

    ```python
    blocks = ["transformer_layer_0", "transformer_layer_1"]
    plan = plan_deepen(llama_causal_lm, Deepen(blocks))
    ```
    """
    family, backbone, _ = require(model) if found is None else found
    after = request.after
    config = family.config(backbone)
    count = config["num_layers"]
    names = [after] if isinstance(after, str) else list(after)
    indices = []
    if not names:
        raise ValueError(f"`after` names no block. Received: after={after!r}")
    known = {family.block_name(i): i for i in range(count)}
    for name in names:
        if not isinstance(name, str) or name not in known:
            raise ValueError(
                f"`after`: {type(backbone).__name__} has blocks "
                f"'{family.block_name(0)}' to '{family.block_name(count - 1)}'. "
                f"Received: after={after!r}"
            )
        indices.append(known[name])
    family.check_deepen(config)
    if len(set(indices)) != len(indices):
        raise ValueError(f"`after` names a block twice. Received: after={after!r}")
    sources: list[tuple[int, bool]] = []
    for index in range(count):
        sources.append((index, False))
        if index in indices:
            sources.append((index, True))
    config = family.deepen_config(config, sources)
    copies = ", ".join(f"'{family.block_name(i)}'" for i in sorted(indices))
    plan = FamilyPlan(
        f"deepen {type(backbone).__name__}: an identity copy after {copies} "
        f"(num_layers {count} -> {len(sources)}; blocks renumbered in order)",
        config,
        {},
        sources,
    )
    _check_layouts(family, backbone, plan, model)
    return plan


def plan_stack(model: Any, request: Stack, *, found: tuple | None = None) -> FamilyPlan:
    """Plan a `keras_net2net.Stack` of a KerasHub model's Transformer layers.

    ``num_layers`` becomes ``factor`` x itself, the model keeps its class.
    ``order="stack"`` repeats the whole stack (block ``i`` of copy ``c`` is
    block ``i``), ``"interleave"`` follows each block by its copies;
    ``copies="zeroed"`` zeroes each copy's output projections (exact),
    ``"kept"`` copies every weight (G_stack: the function changes).

    Example:

    ```python
    plan = plan_stack(llama_causal_lm, Stack(2, copies="kept"))
    ```

    Raises:
        ValueError: ``copies="zeroed"`` where the family's inserted blocks
            cannot start as the identity, or a family whose blocks differ by
            index in a way the new order cannot keep.
    """
    family, backbone, _ = require(model) if found is None else found
    config = family.config(backbone)
    count, factor, exact = config["num_layers"], request.factor, request.exact
    if exact:
        family.check_deepen(config)
    if request.order == STACK:
        pairs = [(c, i) for c in range(factor) for i in range(count)]
    else:
        pairs = [(c, i) for i in range(count) for c in range(factor)]
    sources = [(index, exact and copy > 0) for copy, index in pairs]
    config = family.deepen_config(config, sources)
    what = "copies zeroed: exact" if exact else "copies kept: NOT function-preserving"
    order = "whole stack repeated" if request.order == STACK else "interleaved"
    plan = FamilyPlan(
        f"stack {type(backbone).__name__} x{factor} (num_layers {count} -> "
        f"{len(sources)}; {order}; {what})",
        config,
        {},
        sources,
    )
    _check_layouts(family, backbone, plan, model)
    return plan


def _stack_blocks(model: Any, request: Stack, found: tuple) -> FamilyPlan:
    return plan_stack(model, request, found=found)


def _upcycle(model: Any, request: Upcycle, found: tuple) -> FamilyPlan:
    return plan_upcycle(model, request, found=found)


def _check_layouts(family, backbone, plan, model=None):
    """Refuse, before anything is built, a variable the family cannot map."""
    if model is not None and model is not backbone:
        inside = {id(v) for v in backbone.weights}
        outside = [
            v.path
            for v in model.weights
            if id(v) not in inside and family.task_layout(v.path, model) is None
        ]
        if outside:
            raise ValueError(
                f"`model`: {type(model).__name__} has weights outside its "
                f"backbone ({outside[:3]}), which growth in the config "
                "vocabulary would not carry; grow its backbone instead."
            )
    config = family.config(backbone)
    for variable in backbone.weights:
        family.layout(family.split(variable.path)[1], config)


def inserted_blocks(model: Any, after: Any) -> list[str]:
    """The names the blocks inserted by ``deepen(model, after=...)`` get.

    Blocks are renumbered in order, so a block inserted after block ``i``
    is named with index ``i + 1 + (blocks inserted before it)``.

    Example:

    ```python
    after = ["transformer_layer_0", "transformer_layer_2"]
    grown = keras_net2net.deepen(lm, after=after)
    inserted_blocks(lm, after)  # ['transformer_layer_1', 'transformer_layer_4']
    ```
    """
    family, _, _ = require(model)
    plan = plan_deepen(model, Deepen(after))
    return [family.block_name(i) for i, (_, c) in enumerate(plan.sources) if c]


def train_only(model: Any, blocks: list[str]) -> list[str]:
    """Freeze every layer of a KerasHub model except the named blocks.

    LLaMA-Pro's block expansion trains only the inserted blocks: pass
    `inserted_blocks`' names. Compile the model again afterwards (Keras
    reads ``trainable`` when it compiles).

    Args:
        model: a KerasHub backbone or task model of a registered family.
        blocks: names of blocks of its backbone (``"transformer_layer_3"``).

    Returns:
        The paths of the variables left trainable.

    Example:

    ```python
    grown = keras_net2net.deepen(lm, after=after)
    train_only(grown, inserted_blocks(lm, after))
    grown.compile(optimizer="adamw", loss=...)
    ```
    """
    family, backbone, _ = require(model)
    if not hasattr(backbone, "transformer_layers"):
        raise ValueError(
            f"`model`: train_only needs the backbone's `transformer_layers`, "
            f"which a {type(backbone).__name__} does not have ({family.name} "
            "keeps its blocks inside another layer); set `trainable` on its "
            "layers yourself."
        )
    names = {layer.name for layer in backbone.transformer_layers}
    unknown = [b for b in blocks if b not in names]
    if unknown or not blocks:
        raise ValueError(
            f"`blocks` must name blocks of {type(backbone).__name__} "
            f"({sorted(names)}). Received: {blocks!r}"
        )
    for layer in model.layers:
        layer.trainable = False
    backbone.trainable = True
    for layer in backbone.layers:
        layer.trainable = layer.name in blocks
    return [v.path for v in model.trainable_weights]


# The requests a family plans in its config vocabulary, by request class;
# any other request grows through the model's layers.
_IN_CONFIG_VOCABULARY = {
    Widen: _widen_entry,
    Deepen: _deepen_blocks,
    Stack: _stack_blocks,
    Upcycle: _upcycle,
}
