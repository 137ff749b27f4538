"""What a growth search may change, and the growth steps it proposes.

Pure Python (no Keras, no KerasTuner): an architecture is a small dict,

    {"widths": {layer: width}, "inserted": {layer: count}, "params": int}

read off a trial's model by the tuner; an operation is a dict,
``{"op": "widen", "layer": name, "width": int}`` or
``{"op": "deepen", "after": name}``, stored in the trial's hyperparameters
as JSON. Proposals are valid by construction: a widened layer only grows, up
to its maximum; only the named layers are touched; a location takes at most
``max_inserted`` layers.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

WIDEN = "widen"
DEEPEN = "deepen"

Architecture = dict[str, Any]
Operation = dict[str, Any]


def _names(value: Any, argument: str) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise TypeError(
            f"GrowthSpace: `{argument}` must be a list of layer names; "
            f"received {value!r} (type {type(value).__name__})."
        )
    for name in value:
        if not isinstance(name, str) or not name:
            raise TypeError(
                f"GrowthSpace: every entry of `{argument}` must be a layer name "
                f"(a non-empty string); received {name!r}."
            )
    if len(set(value)) != len(value):
        raise ValueError(
            f"GrowthSpace: `{argument}` names a layer twice; received {list(value)}."
        )
    return tuple(value)


@dataclasses.dataclass(frozen=True)
class GrowthSpace:
    """Which layers a growth search may grow, how far, and a parameter budget.

    Args:
        widen: ``{layer name: maximum width}``: layers whose units, filters
            (or the layer's own width, e.g. an Embedding's ``output_dim``) may
            grow, up to that width. Layers coupled to one of them (a residual
            Add, a normalization) grow with it.
        deepen: names of layers after which an identity layer may be
            inserted (Net2DeeperNet).
        max_inserted: at most this many layers inserted after each of them.
            Defaults to 1.
        max_params: no candidate has more parameters than this (None: no
            budget). Defaults to None.
        factors: a widened layer's new width is its width times one of these
            (rounded up, capped at its maximum). Defaults to ``(1.5, 2.0)``.
        max_operations: a growth step widens/deepens at most this many
            layers (at least one). Defaults to 2.

    Example:

    ```python
    space = GrowthSpace(
        widen={"conv1": 256, "fc1": 512}, deepen=["conv2", "fc1"],
        max_params=2_000_000,
    )
    ```
    """

    widen: Mapping[str, int] = dataclasses.field(default_factory=dict)
    deepen: Sequence[str] = ()
    max_inserted: int = 1
    max_params: int | None = None
    factors: Sequence[float] = (1.5, 2.0)
    max_operations: int = 2

    def __post_init__(self) -> None:
        if not isinstance(self.widen, Mapping):
            raise TypeError(
                "GrowthSpace: `widen` must be a dict {layer name: maximum width}; "
                f"received {self.widen!r}."
            )
        _names(list(self.widen), "widen")
        for name, width in self.widen.items():
            if isinstance(width, bool) or not isinstance(width, int) or width < 1:
                raise ValueError(
                    f"GrowthSpace: the maximum width of '{name}' must be a positive "
                    f"int; received {width!r}."
                )
        object.__setattr__(self, "widen", dict(self.widen))
        object.__setattr__(self, "deepen", _names(self.deepen, "deepen"))
        if not self.widen and not self.deepen:
            raise ValueError(
                "GrowthSpace: nothing may grow: name layers in `widen` and/or `deepen`."
            )
        for argument, minimum in (("max_inserted", 0), ("max_operations", 1)):
            value = getattr(self, argument)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(
                    f"GrowthSpace: `{argument}` must be an int >= {minimum}; "
                    f"received {value!r}."
                )
        if self.max_params is not None and (
            isinstance(self.max_params, bool)
            or not isinstance(self.max_params, int)
            or self.max_params < 1
        ):
            raise ValueError(
                "GrowthSpace: `max_params` must be a positive int or None; "
                f"received {self.max_params!r}."
            )
        factors = tuple(self.factors)
        if not factors or any(
            isinstance(f, bool) or not isinstance(f, (int, float)) or not f > 1
            for f in factors
        ):
            raise ValueError(
                "GrowthSpace: `factors` must be numbers > 1 (a widened layer "
                f"only grows); received {self.factors!r}."
            )
        object.__setattr__(self, "factors", factors)

    # -- proposals -----------------------------------------------------------

    def moves(self, architecture: Architecture) -> list[Operation]:
        """Every single operation allowed from ``architecture``."""
        moves: list[Operation] = []
        widths = architecture["widths"]
        for name, maximum in self.widen.items():
            width = widths[name]
            targets = sorted(
                {min(maximum, math.ceil(width * factor)) for factor in self.factors}
            )
            moves += [
                {"op": WIDEN, "layer": name, "width": w} for w in targets if w > width
            ]
        inserted = architecture.get("inserted", {})
        for name in self.deepen:
            if inserted.get(name, 0) < self.max_inserted:
                moves.append({"op": DEEPEN, "after": name})
        return moves

    def sample(
        self, architecture: Architecture, rng: random.Random, count: int
    ) -> list[list[Operation]]:
        """Up to ``count`` distinct growth steps from ``architecture``.

        Each step is 1 to ``max_operations`` moves on distinct layers (a
        layer is widened or deepened after, not both, in one step). Fewer
        than ``count`` when the space has fewer left.
        """
        moves = self.moves(architecture)
        by_layer: dict[str, list[Operation]] = {}
        for move in moves:
            by_layer.setdefault(_target(move), []).append(move)
        layers = sorted(by_layer)
        steps: list[list[Operation]] = []
        seen: set[str] = set()
        for _ in range(20 * max(count, 1)):
            if len(steps) == count or not layers:
                break
            size = rng.randint(1, min(self.max_operations, len(layers)))
            chosen = rng.sample(layers, size)
            step = [rng.choice(by_layer[layer]) for layer in sorted(chosen)]
            key = operations_key(step)
            if key not in seen:
                seen.add(key)
                steps.append(step)
        return steps

    def within_budget(self, params: int) -> bool:
        return self.max_params is None or params <= self.max_params

    # -- serialisation ---------------------------------------------------------

    def get_config(self) -> dict[str, Any]:
        return {
            "widen": dict(self.widen),
            "deepen": list(self.deepen),
            "max_inserted": self.max_inserted,
            "max_params": self.max_params,
            "factors": list(self.factors),
            "max_operations": self.max_operations,
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> GrowthSpace:
        return cls(**config)


def _target(operation: Operation) -> str:
    return operation["layer"] if operation["op"] == WIDEN else operation["after"]


def operations_key(operations: Sequence[Operation]) -> str:
    """A canonical string for a list of operations (to compare proposals)."""
    return ";".join(
        f"widen {o['layer']} {o['width']}"
        if o["op"] == WIDEN
        else f"deepen after {o['after']}"
        for o in operations
    )


def grown_architecture(
    architecture: Architecture, operations: Sequence[Operation]
) -> Architecture:
    """The widths and insertions after ``operations`` (params not updated)."""
    widths = dict(architecture["widths"])
    inserted = dict(architecture.get("inserted", {}))
    for operation in operations:
        if operation["op"] == WIDEN:
            widths[operation["layer"]] = operation["width"]
        else:
            inserted[operation["after"]] = inserted.get(operation["after"], 0) + 1
    return {"widths": widths, "inserted": inserted, "params": None}
