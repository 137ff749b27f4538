"""Growing a KerasHub model in its own config vocabulary, its class kept.

A KerasHub backbone is built from a config (``hidden_dim``,
``intermediate_dim``, ``num_query_heads``, ``num_layers``, ...) that holds one
value for every block. Growing it means: a new config, the same class built
from it, and every weight of the old model mapped into the new one. A
`Family` declares, for one backbone class:

* its *dimensions* (``"hidden"``, ``"intermediate"``, ``"heads"``,
  ``"kv_heads"``, ...) and which config keys widen which of them, with the
  mapping of each (`Family.plan_widen`);
* the *layout* of every variable: for each axis, the dimension it spans and
  whether the variable writes it (``COPY``: entries copied by the mapping) or
  reads it (``DIVIDE``: copied and divided by the copy count, so the copies
  together contribute what the original did); an axis of no dimension stays;
* which variables of a block start at zero in an inserted copy, so that the
  copy starts as the identity (``zeroed``).

Everything is planned (`FamilyPlan`, plain data) before anything is built; a
variable whose layout the family does not know is refused by path, so no
weight is ever carried unchanged by accident.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import zlib
from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from keras_net2net._arrays import host_copy
from keras_net2net._arrays import host_view
from keras_net2net.transforms import Chain
from keras_net2net.transforms import WidthMapping
from keras_net2net.transforms import WidthTransform

COPY = "copy"
DIVIDE = "divide"

# The dimensions every family declares, read (DIVIDE) or written (COPY).
H_IN, H_OUT = ("hidden", DIVIDE), ("hidden", COPY)
I_IN, I_OUT = ("intermediate", DIVIDE), ("intermediate", COPY)
Q_IN, Q_OUT = ("heads", DIVIDE), ("heads", COPY)
KV_OUT = ("kv_heads", COPY)

# Per axis: None, ``(dimension, COPY | DIVIDE)``, ``(dimension, role,
# slots)`` for an axis where each unit owns ``slots(config)`` consecutive
# entries (the heads of a flattened ``heads * head_dim`` axis), or
# ``(dimension, role, PARTS, n)`` for ``n`` parts side by side, each the whole
# dimension (a fused ``[gate | up]`` expert kernel).
Layout = tuple
PARTS = "parts"


class Family:
    """How one KerasHub backbone class grows (see the module docstring).

    Subclasses set the attributes and implement `plan_widen`.

    Example:

    ```python
    class MyFamily(LlamaFamily):
        name = "MyLlama"
        layouts = LlamaFamily.layouts + [
            (r"my_extra/scale", (("hidden", COPY),)),
        ]

    register_family(MyBackbone, MyFamily())
    ```

    Attributes:
        name: the family's name, for messages.
        widen_keys: config keys `widen` accepts, with what each one grows.
        refused: config keys that cannot grow exactly, with why
            (`plan_widen` raises, giving the reason).
        layouts: ``[(regex, layout)]`` matched against a variable's path
            (block variables without their ``<block_prefix><i>/``
            prefix); the first match wins.
        zeroed: regexes of block variables set to zero in an inserted copy.
        block_prefix: the blocks' names without their index.
        block_path: what precedes a block's name in its variables' paths
            (``"vit_encoder/"`` where the blocks live in one layer).
        first_block: the index of the first block's name (ViT's blocks are
            named from ``transformer_block_1``).
        task_layouts: ``[(regex, layout)]`` of the variables a task model
            holds outside its backbone (a classifier's head), matched
            against their paths; a task with other variables is refused.
        auto_named: names of sublayers that KerasHub leaves to Keras's
            automatic naming (``"mixtral_sparse_moe_block_3"``): their
            numeric suffix differs between two models of one session, so
            paths are compared without it.
    """

    name = ""
    widen_keys: dict[str, str] = {}
    refused: dict[str, str] = {}
    layouts: list[tuple[str, Layout]] = []
    zeroed: list[str] = []
    block_prefix = "transformer_layer_"
    block_path = ""
    first_block = 0
    task_layouts: list[tuple[str, Layout]] = []
    auto_named: list[str] = []

    def plan_widen(
        self, config: dict[str, Any], key: str, value: int, seed: int | None
    ) -> tuple[dict[str, Any], dict[str, WidthMapping], list[str]]:
        """``(new config, {dimension: mapping}, notes)`` for ``key`` -> ``value``.

        Raises:
            ValueError: naming the key, the value received and the valid ones.
        """
        raise NotImplementedError

    def config(self, backbone: Any) -> dict[str, Any]:
        """The backbone's config, with what ``get_config`` leaves out.

        KerasHub 0.32's Llama-style backbones take ``tie_word_embeddings`` but
        do not return it from ``get_config``; it is read from the embedding.
        """
        config = dict(backbone.get_config())
        embedding = getattr(backbone, "token_embedding", None)
        if "tie_word_embeddings" not in config and embedding is not None:
            config["tie_word_embeddings"] = bool(
                getattr(embedding, "tie_weights", False)
            )
        return config

    def finish(
        self, path: str, value: np.ndarray, old: dict[str, Any], new: dict[str, Any]
    ) -> np.ndarray:
        """Adjust a mapped value for constants that depend on the config.

        The default changes nothing; Gemma scales its embedding by
        ``sqrt(hidden_dim)``, so a wider stream divides it (see there).
        """
        return value

    def rescales(self, path: str, old: dict[str, Any], new: dict[str, Any]) -> bool:
        """Whether `finish` changes the variable at ``path`` (default: never)."""
        return False

    def check_widen(self, backbone: Any, key: str) -> None:
        """Raise a ValueError if widening ``key`` of this backbone cannot be exact."""

    def check_deepen(self, config: dict[str, Any]) -> None:
        """Raise a ValueError if inserting blocks cannot keep the function."""

    def deepen_config(
        self, config: dict[str, Any], sources: list[tuple[int, bool]]
    ) -> dict[str, Any]:
        """The config after inserting blocks (``sources`` as `FamilyPlan`'s).

        The default sets ``num_layers``; a family whose blocks differ by
        index (dense or sparse feed-forward) also moves those entries, or
        raises a ValueError when the new indices cannot keep every block's
        kind.
        """
        return {**config, "num_layers": len(sources)}

    def split(self, path: str) -> tuple[int | None, str]:
        """``(block index or None, path within the block)`` of a variable path.

        The path within the block drops the numeric suffix of `auto_named`
        sublayers.
        """
        blocks = re.escape(self.block_path + self.block_prefix)
        match = re.match(rf"^{blocks}(\d+)/(.*)$", path)
        if match is None:
            return None, path
        local = match.group(2)
        for name in self.auto_named:
            local = re.sub(rf"^{re.escape(name)}(_\d+)?/", f"{name}/", local)
        return int(match.group(1)) - self.first_block, local

    def block_name(self, index: int) -> str:
        """The name of block ``index`` (counted from 0)."""
        return f"{self.block_prefix}{index + self.first_block}"

    def task_layout(self, path: str, task: Any) -> Layout | None:
        """The layout of ``task``'s variable at ``path`` (outside the backbone)."""
        for pattern, layout in self.task_layouts:
            if re.fullmatch(pattern, path):
                return layout
        return None

    def layout(self, path: str, config: dict[str, Any]) -> Layout:
        """The layout of the variable at ``path`` (see `layouts`)."""
        for pattern, layout in self.layouts:
            if re.fullmatch(pattern, path):
                return layout
        raise ValueError(
            f"The {self.name} family does not know the variable '{path}'; "
            "keras-net2net cannot map it, so nothing was grown."
        )


@dataclasses.dataclass
class FamilyPlan:
    """Everything one growth of a KerasHub model changes (plain data).

    Attributes:
        description: one line saying what the growth does.
        config: the new backbone config.
        mappings: ``{dimension: WidthMapping}`` of the widened dimensions.
        sources: for each new block, ``(old block index, copied)``: a copied
            block starts as the identity (its `Family.zeroed` variables zero).
        notes: lines about choices made (which heads grew, ...).
        noise: symmetry-breaking noise on the new copies of every kernel that
            writes a widened dimension (relative to the kernel's standard
            deviation, as `Widen`'s ``noise``); 0 is exact.
        seed: the seed of that noise (each variable draws its own stream).

    Example:

    ```python
    plan = keras_net2net.families.plan_widen(lm, "hidden_dim", 32, seed=0)
    print("\n".join(plan.describe()))
    grown = keras_net2net.families.apply(lm, plan)
    ```
    """

    description: str
    config: dict
    mappings: dict = dataclasses.field(default_factory=dict)
    sources: list = dataclasses.field(default_factory=list)
    notes: list = dataclasses.field(default_factory=list)
    noise: float = 0.0
    seed: int = 0

    def describe(self) -> list[str]:
        """The dry-run lines."""
        lines = [self.description, *self.notes]
        for dim, mapping in self.mappings.items():
            lines.append(f"  {dim}: {mapping.old_width} -> {mapping.new_width}")
        copies = [i for i, (_, copied) in enumerate(self.sources) if copied]
        if copies:
            lines.append(f"  new identity blocks (indices): {copies}")
        return lines


def chain_for(
    family: Family,
    path: str,
    config: dict,
    mappings: dict,
    noise: float = 0.0,
    seed: int = 0,
    layout: Layout | None = None,
) -> Chain:
    """The transforms that carry the variable at ``path`` into the grown model.

    ``noise`` goes on the copied entries of the axes a kernel (2 or more
    axes) writes; vectors (biases, norm scales) are copied exactly.
    """
    steps = []
    layout = family.layout(path, config) if layout is None else layout
    for axis, entry in enumerate(layout):
        if entry is None:
            continue
        dim, role = entry[:2]
        mapping = mappings.get(dim)
        if mapping is None or mapping.is_identity:
            continue
        if len(entry) > 3 and entry[2] == PARTS:
            mapping = mapping.expand(entry[3])
        elif len(entry) > 2:
            mapping = mapping.repeat(entry[2](config))
        side = "out" if role == COPY else "in"
        if noise and side == "out" and len(layout) >= 2:
            stream = zlib.crc32(f"{path}:{axis}".encode()) ^ seed
            steps.append(WidthTransform(mapping, side, axis, noise=noise, seed=stream))
        else:
            steps.append(WidthTransform(mapping, side, axis))
    return Chain(steps)


def sources(
    family: Family, backbone: Any, new_backbone: Any, plan: FamilyPlan
) -> dict[str, tuple[Any, Chain, bool]]:
    """``{new path: (old variable, chain, zeroed)}`` for ``new_backbone``."""
    old = {family.split(v.path): v for v in backbone.weights}
    old_config = family.config(backbone)
    found = {}
    for variable in new_backbone.weights:
        copied = False
        index, local = family.split(variable.path)
        if index is not None:
            index, copied = plan.sources[index]
        zeroed = copied and any(re.fullmatch(p, local) for p in family.zeroed)
        chain = chain_for(
            family, local, old_config, plan.mappings, plan.noise, plan.seed
        )
        found[variable.path] = (old[(index, local)], chain, zeroed)
    return found


def new_values(
    family: Family, backbone: Any, new_backbone: Any, plan: FamilyPlan
) -> dict[str, Callable[[], np.ndarray]]:
    """``{path: function returning the value}`` of every variable of ``new_backbone``.

    Each value is computed only when its function is called (when its
    variable is created), from a view of the old weight: growth then holds
    one mapped weight at a time, and the allocator reuses its memory.
    """
    old_config = family.config(backbone)
    found = sources(family, backbone, new_backbone, plan)

    def value_of(variable: Any) -> np.ndarray:
        source, chain, zeroed = found[variable.path]
        if zeroed:
            dtype = keras.backend.standardize_dtype(source.dtype)
            return np.zeros(variable.shape, dtype)
        _, local = family.split(variable.path)
        if len(chain):
            value = chain.apply(host_view(source))
        else:
            value = host_copy(source)
        return family.finish(local, value, old_config, plan.config)

    return {
        variable.path: functools.partial(value_of, variable)
        for variable in new_backbone.weights
    }


def origins(
    family: Family, backbone: Any, new_backbone: Any, plan: FamilyPlan
) -> dict[int, tuple[Any, list]]:
    """``{id(new variable): (old variable or None, transforms)}``.

    What `keras_net2net.surgery.GrowthResult.origins` records: a zeroed
    variable, or one whose value `Family.finish` rescales, has no origin.
    """
    old_config = family.config(backbone)
    found = sources(family, backbone, new_backbone, plan)
    result: dict[int, tuple[Any, list]] = {}
    for variable in new_backbone.weights:
        source, chain, zeroed = found[variable.path]
        _, local = family.split(variable.path)
        if zeroed or family.rescales(local, old_config, plan.config):
            result[id(variable)] = (None, [])
        else:
            result[id(variable)] = (source, list(chain))
    return result
