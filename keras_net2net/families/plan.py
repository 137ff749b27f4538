"""A family plan: what one growth of a KerasHub model changes, and building it.

`FamilyPlan` is plain data (the grown config, the mapping of every widened
dimension, where each new block comes from); its `FamilyPlan.build` builds
the same class from the grown config and maps every variable of the old
model into the new one through the family's layouts
(`keras_net2net.families.base.Family`). It is a
`keras_net2net.growth_plan.GrowthPlan`, as a graph plan is.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import zlib
from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from keras_net2net import _keras_internals as internals
from keras_net2net._arrays import host_copy
from keras_net2net._arrays import host_view
from keras_net2net.families.base import COPY
from keras_net2net.families.base import PARTS
from keras_net2net.families.base import Family
from keras_net2net.families.base import Layout
from keras_net2net.families.registry import require
from keras_net2net.growth_plan import Origins
from keras_net2net.transforms import MEAN
from keras_net2net.transforms import Chain
from keras_net2net.transforms import WidthTransform


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
    request = keras_net2net.Widen("hidden_dim", 32)
    plan = keras_net2net.families.plan_request(lm, request)
    print("\n".join(plan.describe()))
    grown, origins = plan.build(lm)
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
        identity = [i for i, (_, copied) in enumerate(self.sources) if copied]
        if identity:
            lines.append(f"  new identity blocks (indices): {identity}")
        kept = sorted(copy_indices(self.sources) - set(identity))
        if kept:
            lines.append(f"  new copies of trained blocks (indices): {kept}")
        return lines

    def build(
        self, model: Any, *, reuse_layers: bool = False, compile: bool = True
    ) -> tuple[Any, Origins]:
        """``(grown model, origins)``: the same class, every weight mapped.

        The backbone is built anew from the grown config (its task around
        it), so nothing is shared with ``model``: ``reuse_layers=True``
        raises TypeError. See `keras_net2net.growth_plan.GrowthPlan`.
        """
        if reuse_layers:
            raise TypeError(
                f"{self.description}: a KerasHub model grown in its config "
                "vocabulary is a new model; it cannot share its layers with "
                "the old one."
            )
        family, backbone, task = require(model)
        backbone_class, task_class = self.classes(backbone, task)
        # Every variable is set from the old model: built without initial values
        # (no random draws), each variable created with its mapped value.
        with internals.deferred_variables() as created:
            new_backbone = backbone_class.from_config(self.config)
        try:
            values = self.values(family, backbone, new_backbone)
            by_id = {
                id(variable): functools.partial(
                    _checked, family, variable, values.pop(variable.path)
                )
                for variable in new_backbone.weights
            }
        except BaseException:
            internals.discard_deferred(created)
            raise
        internals.initialize_variables(created, by_id)
        found = self.origins(family, backbone, new_backbone)
        if task is None:
            grown = new_backbone
        else:
            config = task.get_config()
            config.update(backbone=new_backbone, preprocessor=task.preprocessor)
            if task_class is not type(task):
                config.pop("name", None)  # the new class's own default name
            grown = task_class(**config)
            head = _carry_task_head(family, task, grown, new_backbone, self)
            found.weights.update(head)
            found.state.update(head)
        if compile and getattr(model, "compiled", False):
            _compile_like(model, grown)
        return grown, found

    def classes(self, backbone: Any, task: Any) -> tuple[Any, Any]:
        """``(backbone class, task class or None)`` of the grown model: the
        old ones (an upcycling plan names others)."""
        return type(backbone), None if task is None else type(task)

    def values(
        self, family: Family, backbone: Any, new_backbone: Any
    ) -> dict[str, Callable[[], np.ndarray]]:
        """``{path: function returning the value}`` (see `new_values`)."""
        return new_values(family, backbone, new_backbone, self)

    def origins(self, family: Family, backbone: Any, new_backbone: Any) -> Origins:
        """Where every variable of ``new_backbone`` comes from (see `origins`)."""
        return origins(family, backbone, new_backbone, self)


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
        side = role  # a family's layouts speak the same vocabulary: copy/divide
        fill, scale = _stream_entries(family, path, dim, side, mapping)
        if noise and side == COPY and len(layout) >= 2:
            stream = zlib.crc32(f"{path}:{axis}".encode()) ^ seed
            steps.append(
                WidthTransform(
                    mapping,
                    side,
                    axis,
                    noise=noise,
                    seed=stream,
                    fill=fill,
                    scale=scale,
                )
            )
        else:
            steps.append(WidthTransform(mapping, side, axis, fill=fill, scale=scale))
    return Chain(steps)


def _stream_entries(family, path, dim, side, mapping):
    """``(fill, scale)`` of a variable's stream axis grown to a width that is
    not a multiple (fresh channels): writers fill the family's `stream_fill`,
    the norms' gains are scaled by ``sqrt(copies / new width)``."""
    fresh = int(mapping.fresh.sum()) if dim == "hidden" else 0
    if not fresh or family.stream_fill is None:
        return 0.0, 1.0
    if family.is_norm_gain(path):
        ratio = (mapping.new_width - fresh) / mapping.new_width
        return (MEAN if side == COPY else 0.0), math.sqrt(ratio)
    return (family.stream_fill if side == COPY else 0.0), 1.0


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


def copy_indices(sources: list) -> set[int]:
    """The new blocks that copy a block already in the stack before them
    (identity copies and kept copies alike): every occurrence of a source
    block after its first."""
    seen: set[int] = set()
    copies = set()
    for new_index, (old_index, _) in enumerate(sources):
        if old_index in seen:
            copies.add(new_index)
        seen.add(old_index)
    return copies


def origins(
    family: Family, backbone: Any, new_backbone: Any, plan: FamilyPlan
) -> Origins:
    """Where every variable of ``new_backbone`` comes from.

    What `keras_net2net.surgery.GrowthResult.origins` records: a zeroed
    variable, or one whose value `Family.finish` rescales, has no origin. A
    copied block's variables are new weights whose optimizer state starts
    from their source's (as a copied layer's in a graph plan).
    """
    old_config = family.config(backbone)
    found = sources(family, backbone, new_backbone, plan)
    copies = copy_indices(plan.sources)
    result = Origins()
    for variable in new_backbone.weights:
        source, chain, zeroed = found[variable.path]
        index, local = family.split(variable.path)
        if zeroed or family.rescales(local, old_config, plan.config):
            origin: tuple[Any, list] = (None, [])
        else:
            origin = (source, list(chain))
        result.state[id(variable)] = origin
        result.weights[id(variable)] = (None, []) if index in copies else origin
    return result


def _checked(family, variable, value_of):
    """The value ``value_of()`` for ``variable``, checked against its shape."""
    value = value_of()
    if tuple(value.shape) != tuple(variable.shape):
        raise ValueError(
            f"The {family.name} family mapped '{variable.path}' to shape "
            f"{tuple(value.shape)}, but the grown model's variable has "
            f"shape {tuple(variable.shape)}; nothing was grown."
        )
    return value


def _carry_task_head(family, task, grown, new_backbone, plan):
    """Map a task's own variables (a classifier's head) into ``grown``'s."""
    inside = {id(v) for v in new_backbone.weights}
    old = {v.path: v for v in task.weights}
    config = family.config(task.backbone)
    found = {}
    for variable in grown.weights:
        if id(variable) in inside:
            continue
        layout = family.task_layout(variable.path, task)
        source = old.get(variable.path)
        if layout is None or source is None:
            raise ValueError(
                f"`model`: {type(task).__name__} has the variable "
                f"'{variable.path}' outside its backbone, which the "
                f"{family.name} family cannot map; nothing was grown."
            )
        chain = chain_for(family, variable.path, config, plan.mappings, layout=layout)
        variable.assign(chain.apply(keras.ops.convert_to_numpy(source)))
        found[id(variable)] = (source, list(chain))
    return found


def _compile_like(model, grown):
    """Compile ``grown`` with ``model``'s compile arguments (a fresh optimizer).

    KerasHub tasks override ``compile`` (so Keras's ``compile_from_config``
    refuses them); their sampler is not among the arguments Keras records.
    """
    config = model.get_compile_config()
    if config is None:
        return
    grown.compile(**keras.saving.deserialize_keras_object(config))
    if hasattr(model, "sampler"):
        grown.sampler = model.sampler
