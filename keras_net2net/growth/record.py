"""`GrowthRecord`: what one growth event of `GrowModel` did."""

import dataclasses
import warnings


@dataclasses.dataclass(frozen=True)
class GrowthRecord:
    """What one growth event did.

    `GrowModel.records` lists them; ``model.growth_history`` holds them as dicts.

    Example:

    ```python
    grow = GrowModel({1: Widen("fc1", 128)})
    model.fit(x, y, epochs=3, callbacks=[grow])
    print(grow.records[0].describe())  # epoch, step, trigger, requests, params
    ```

    Attributes:
        epoch: epoch index (0-based) at whose start or during which it happened.
        step: global training step (0-based) before which it happened.
        trigger: why (e.g. ``"epoch 2"``, ``"plateau of val_loss (patience 1)"``).
        requests: one description per request (what it grew).
        params_before: ``model.count_params()`` before.
        params_after: ``model.count_params()`` after.
    """

    epoch: int
    step: int
    trigger: str
    requests: tuple[str, ...]
    params_before: int
    params_after: int

    @property
    def operations(self) -> tuple[str, ...]:
        """The old name of ``requests`` (deprecated)."""
        warnings.warn(
            "GrowthRecord.operations is deprecated; it is now GrowthRecord.requests.",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.requests

    def describe(self) -> str:
        grown = "; ".join(self.requests)
        return (
            f"GrowModel: epoch {self.epoch}, step {self.step} ({self.trigger}): "
            f"{grown}; params {self.params_before:,} -> {self.params_after:,}"
        )
