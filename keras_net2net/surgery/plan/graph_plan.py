"""A graph plan: every change one growth request makes to a model's graph.

`Plan` is plain data (per changed layer a `LayerChange`, per insertion the
new layers and their calls); planning (`keras_net2net.surgery.plan.widen`,
`deepen`, `blocks`) fills it and checks everything, and `Plan.build` hands it
to the builder (`keras_net2net.surgery.apply`). It is a
`keras_net2net.growth_plan.GrowthPlan`, as a KerasHub family plan is.
"""

import dataclasses
from typing import Any

from keras_net2net.growth_plan import Origins

# The module, not its function: `apply` imports `plan.data`, whose package
# imports this module (a function from a half-imported module fails).
from keras_net2net.surgery import apply as building
from keras_net2net.surgery import handlers as H
from keras_net2net.transforms import COPY


@dataclasses.dataclass
class Plan:
    """Every change of one growth request to a model's graph (plain data).

    A `keras_net2net.growth_plan.GrowthPlan`: `Plan.build` makes the grown
    model (`keras_net2net.surgery.apply`).

    Attributes:
        description: one line saying what the operation does.
        changes: ``id(op) -> (op, LayerChange)`` for operations rebuilt.
        insertions: ``id(op) -> [Insertion]`` of operations called after ``op``.
        copies: ``id(new layer) -> old layer`` for inserted layers that copy
            an existing one's weights (their optimizer state is copied too).
        details: lines describing every change (a dry run).
    """

    description: str
    changes: dict = dataclasses.field(default_factory=dict)
    insertions: dict = dataclasses.field(default_factory=dict)
    copies: dict = dataclasses.field(default_factory=dict)
    details: list = dataclasses.field(default_factory=list)
    _positions: dict = dataclasses.field(default_factory=dict, repr=False)

    def change(self, op, change):
        if change is None:
            return
        self._positions.pop(id(op), None)
        if id(op) in self.changes:
            self.changes[id(op)][1].merge(change)
        else:
            self.changes[id(op)] = (op, change)

    def resolve(self) -> "Plan":
        """Resolve every change's variable names to positions, once.

        Raises:
            ValueError: naming a layer and a variable it does not have.
        """
        for op, _ in self.changes.values():
            self.positions(op)
        return self

    def positions(self, op) -> tuple[dict, dict]:
        """``(transforms, values)`` of ``op``'s change, keyed by position in
        ``op.weights`` (empty for an operation the plan does not change)."""
        entry = self.changes.get(id(op))
        if entry is None:
            return {}, {}
        if id(op) not in self._positions:
            self._positions[id(op)] = entry[1].by_position(op)
        return self._positions[id(op)]

    def build(
        self, model: Any, *, reuse_layers: bool = False, compile: bool = True
    ) -> tuple[Any, Origins]:
        """``(grown model, origins)``: the model this plan describes.

        Unchanged layers are copied, or shared with ``model`` where
        ``reuse_layers`` (growth in place). See
        `keras_net2net.growth_plan.GrowthPlan`.
        """
        grown, pairs = building.apply_plan(
            model, self, reuse_layers=reuse_layers, compile=compile
        )
        return grown, self._origins(pairs)

    def _origins(self, pairs) -> Origins:
        """Where every variable of the new graph comes from, in the old one.

        The state differs from the weights for copies of layers, whose
        weights are new (zeroed or copied) but whose optimizer state starts
        from the copied layer's.
        """
        origins = Origins()
        for new, old in pairs:
            old_weights = list(getattr(old, "weights", [])) if old is not None else []
            transforms, values = self.positions(old) if old is not None else ({}, {})
            copied_from = self.copies.get(id(new)) if old is None else None
            # A rebuilt layer creates its variables in the same order as the old.
            for position, variable in enumerate(getattr(new, "weights", [])):
                key = id(variable)
                if old is None:
                    origins.weights[key] = (None, [])
                    source = None
                    if copied_from is not None:
                        source = copied_from.weights[position]
                    origins.state[key] = (source, [])
                    continue
                origin: tuple[Any, list]
                if new is old:
                    origin = (variable, [])
                elif position in values:
                    origin = (None, [])
                else:
                    origin = (old_weights[position], list(transforms.get(position, [])))
                origins.weights[key] = origins.state[key] = origin
        return origins

    def describe(self) -> list[str]:
        """The dry-run lines: what planning found, then one line per change."""
        return [*self.details, "changes:", *self.describe_changes()]

    def describe_changes(self):
        """One line per changed operation: config entries and weight transforms."""
        lines = []
        for op, change in self.changes.values():
            parts = []
            config = op.get_config()
            for key, value in change.full_config().items():
                parts.append(f"{key} {config.get(key)!r} -> {value!r}")
            for variable, chain in change.transforms.items():
                steps = ", ".join(
                    ("copied" if t.side == COPY else "copied and divided")
                    + f" along axis {t.axis}"
                    for t in chain
                )
                parts.append(f"{variable} {steps}")
            for variable in change.values:
                parts.append(f"{variable} set")
            lines.append(f"  {H.describe(op)}: " + "; ".join(parts))
        for insertions in self.insertions.values():
            for insertion in insertions:
                for layer, _ in insertion.layers:
                    lines.append(f"  new {H.describe(layer)}")
        return lines
