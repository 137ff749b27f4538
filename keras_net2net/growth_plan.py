"""What every plan is: the interface graph and family plans share.

A *plan* is everything one growth request changes, decided and checked before
anything is built. Two kinds exist: a graph plan
(`keras_net2net.surgery.plan.Plan`: layers rebuilt and inserted, for any
Sequential or Functional model) and a family plan
(`keras_net2net.families.FamilyPlan`: a KerasHub model rebuilt from its grown
config, class kept). Whoever applies a plan asks it only what `GrowthPlan`
declares, never which kind it is.

`Origins` is what building a plan returns besides the model: where every
variable of the grown model comes from, so that the optimizer's state can
follow the weights. This module is on the bottom floor of the package: it
imports nothing of keras-net2net.
"""

from __future__ import annotations

import dataclasses
from typing import Any
from typing import Protocol
from typing import runtime_checkable

# ``id(new variable) -> (old variable or None, [WidthTransform, ...])``.
OriginMap = dict[int, tuple[Any, list]]


@dataclasses.dataclass
class Origins:
    """Where every variable of a grown model comes from.

    Each map takes ``id(new variable)`` to ``(old variable or None,
    transforms)``: the list of `keras_net2net.transforms.WidthTransform` that
    turn the old variable's value into the new one (empty: copied or shared;
    old variable None: new, with no origin).

    Attributes:
        weights: the variables' values.
        state: the same for the optimizer's state. It differs from
            ``weights`` for a copied layer (a copied residual block): its
            weights are new, but its state starts from the copied layer's.

    Example:

    ```python
    grown, origins = plan.build(model)
    source, transforms = origins.weights[id(grown.get_layer("fc1").kernel)]
    ```
    """

    weights: OriginMap = dataclasses.field(default_factory=dict)
    state: OriginMap = dataclasses.field(default_factory=dict)

    @classmethod
    def unchanged(cls, model: Any) -> Origins:
        """Every variable of ``model`` is its own origin."""
        own: OriginMap = {id(v): (v, []) for v in model.weights}
        return cls(own, dict(own))

    @classmethod
    def same(cls, origins: OriginMap) -> Origins:
        """``origins`` for both the weights and the state."""
        return cls(origins, dict(origins))

    def after(self, earlier: Origins) -> Origins:
        """These origins composed with ``earlier`` ones (the growth before).

        A variable that comes from an old variable comes from where that one
        came from, with the transforms of both growths in order.
        """
        return Origins(
            _compose(self.weights, earlier.weights),
            _compose(self.state, earlier.state),
        )


def _compose(found: OriginMap, base: OriginMap) -> OriginMap:
    composed: OriginMap = {}
    for key, (source, steps) in found.items():
        first, chain = (
            (None, []) if source is None else base.get(id(source), (None, []))
        )
        later = _parts_before(steps, base)
        if first is None or later is None:
            composed[key] = (None, [])
        else:
            composed[key] = (first, chain + later)
    return composed


def _parts_before(steps: list, base: OriginMap) -> list | None:
    """``steps`` with each `Join`'s other variable (``part``) taken back to its
    origin in the earlier growth, through that growth's transforms; None
    where the part has no origin."""
    out = []
    for step in steps:
        part = getattr(step, "part", None)
        if part is not None:
            origin, chain = base.get(id(part), (None, []))
            if origin is None:
                return None
            step = dataclasses.replace(step, part=origin, steps=(*chain, *step.steps))
        out.append(step)
    return out


@runtime_checkable
class GrowthPlan(Protocol):
    """Every change of one growth request, checked, nothing built yet.

    Attributes:
        description: one line saying what the growth does.
    """

    description: str

    def describe(self) -> list[str]:
        """The dry-run lines: what planning found and every change."""
        ...

    def build(
        self, model: Any, *, reuse_layers: bool = False, compile: bool = True
    ) -> tuple[Any, Origins]:
        """``(grown model, origins)``: the model this plan describes.

        Args:
            model: the model the plan was made for.
            reuse_layers: share the unchanged layers (and their variables)
                with ``model``, as growth in place does, instead of copying
                them. A plan that cannot share them raises TypeError.
            compile: compile the grown model like ``model`` (a fresh
                optimizer) where ``model`` was compiled and nothing is shared.
        """
        ...
