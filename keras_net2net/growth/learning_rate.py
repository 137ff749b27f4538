"""The learning rate at growth: scaled (the paper trains students at 1/10),
re-warmed (`Rewarmed`), and a schedule with a stable phase to grow in
(`WarmupStableDecay`)."""

import math
from collections.abc import Sequence
from typing import Any

import keras

from keras_net2net import _keras_internals as internals
from keras_net2net._validation import check_choice
from keras_net2net._validation import check_int
from keras_net2net._validation import check_real

DECAYS = ("linear", "cosine")


@keras.saving.register_keras_serializable(package="keras_net2net")
class ScaledSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """A learning-rate schedule multiplied by a constant factor.

    `GrowModel(lr_scale=...)` wraps an optimizer's schedule in this, so the
    schedule keeps following the optimizer's iterations at a scaled level.

    Example:

    ```python
    decay = keras.optimizers.schedules.ExponentialDecay(0.1, 1000, 0.9)
    optimizer = keras.optimizers.SGD(ScaledSchedule(decay, 0.1))
    ```

    Args:
        schedule: a `keras.optimizers.schedules.LearningRateSchedule`.
        factor: the multiplier.
    """

    def __init__(
        self, schedule: keras.optimizers.schedules.LearningRateSchedule, factor: float
    ) -> None:
        self.schedule = schedule
        self.factor = float(factor)

    def __call__(self, step: Any) -> Any:
        return self.schedule(step) * self.factor

    def get_config(self) -> dict[str, Any]:
        return {
            "schedule": keras.saving.serialize_keras_object(self.schedule),
            "factor": self.factor,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "ScaledSchedule":
        config = dict(config)
        config["schedule"] = keras.saving.deserialize_keras_object(config["schedule"])
        return cls(**config)


def check_scalable(optimizer, argument="lr_scale"):
    """Raise if ``optimizer``'s learning rate cannot be scaled or re-warmed."""
    value = internals.learning_rate_object(optimizer)
    schedule = keras.optimizers.schedules.LearningRateSchedule
    if callable(value) and not isinstance(value, schedule):
        raise ValueError(
            f"GrowModel({argument}=...) needs a float learning rate or a "
            "LearningRateSchedule; this optimizer's learning rate is the "
            f"callable {value!r}."
        )


def scale_learning_rate(optimizer, factor):
    """Multiply ``optimizer``'s learning rate (or schedule) by ``factor``."""
    check_scalable(optimizer)
    value = internals.learning_rate_object(optimizer)
    if isinstance(value, keras.optimizers.schedules.LearningRateSchedule):
        optimizer.learning_rate = ScaledSchedule(value, factor)
    else:
        current = float(keras.ops.convert_to_numpy(value))
        optimizer.learning_rate = current * factor


@keras.saving.register_keras_serializable(package="keras_net2net")
class WarmupStableDecay(keras.optimizers.schedules.LearningRateSchedule):
    """A warm-up, stable, decay (WSD) learning-rate schedule.

    Linear warm-up from 0 to ``peak`` over ``warmup_steps``, ``peak`` for
    ``stable_steps``, then a decay to ``final`` over ``decay_steps`` (linear
    or cosine), and ``final`` after that. Growth fits its stable phase: a
    model grown there trains on at the peak rate and decays once, at the end
    (Deep Progressive Training, arXiv 2511.04981).

    Example:

    ```python
    steps = 3000
    schedule = WarmupStableDecay(4e-3, warmup_steps=150,
                                 stable_steps=2250, decay_steps=600)
    optimizer = keras.optimizers.AdamW(schedule)
    ```

    Args:
        peak: the learning rate of the stable phase.
        warmup_steps: steps of the linear warm-up (0: none).
        stable_steps: steps at ``peak``.
        decay_steps: steps of the decay (0: none).
        final: the learning rate at the end of the decay. Defaults to 0.
        decay: ``"linear"`` or ``"cosine"``. Defaults to ``"linear"``.
    """

    def __init__(
        self,
        peak: float,
        warmup_steps: int,
        stable_steps: int,
        decay_steps: int,
        final: float = 0.0,
        decay: str = "linear",
    ) -> None:
        owner = "WarmupStableDecay"
        self.peak = check_real(peak, "peak", positive=True, owner=owner)
        self.warmup_steps = check_int(warmup_steps, "warmup_steps", owner=owner)
        self.stable_steps = check_int(stable_steps, "stable_steps", owner=owner)
        self.decay_steps = check_int(decay_steps, "decay_steps", owner=owner)
        self.final = check_real(final, "final", minimum=0.0, owner=owner)
        check_choice(decay, DECAYS, "decay", owner=owner)
        self.decay = decay

    def __call__(self, step: Any) -> Any:
        ops = keras.ops
        step = ops.cast(step, "float32")
        warm = ops.minimum(1.0, (step + 1.0) / float(max(1, self.warmup_steps)))
        start = float(self.warmup_steps + self.stable_steps)
        done = ops.clip((step - start) / float(max(1, self.decay_steps)), 0.0, 1.0)
        if self.decay == "cosine":
            done = 0.5 * (1.0 - ops.cos(math.pi * done))
        decayed = self.peak + (self.final - self.peak) * done
        return ops.where(step < float(self.warmup_steps), warm * self.peak, decayed)

    def get_config(self) -> dict[str, Any]:
        return {
            "peak": self.peak,
            "warmup_steps": self.warmup_steps,
            "stable_steps": self.stable_steps,
            "decay_steps": self.decay_steps,
            "final": self.final,
            "decay": self.decay,
        }


@keras.saving.register_keras_serializable(package="keras_net2net")
class Rewarmed(keras.optimizers.schedules.LearningRateSchedule):
    """A learning rate continued with a linear re-warm after each growth.

    At each step ``g`` of ``growth_steps`` the rate drops to ``1 /
    warmup_steps`` of ``schedule``'s and climbs back linearly over
    ``warmup_steps``; ``schedule`` itself goes on (it is not restarted).
    `GrowModel(rewarm_steps=N)` wraps the optimizer's learning rate in this
    at each growth; new weights (and moments reset by
    ``optimizer_state="reset"``) then start with small steps, as G_stack and
    HyperCloning re-warm after growing.

    Example:

    ```python
    decay = keras.optimizers.schedules.CosineDecay(4e-3, 3000)
    optimizer = keras.optimizers.AdamW(Rewarmed(decay, [300], 150))
    ```

    Args:
        schedule: a `keras.optimizers.schedules.LearningRateSchedule`, or a
            float (a constant rate).
        growth_steps: the optimizer steps at which growth happened.
        warmup_steps: the length of each re-warm, in steps (>= 1).
    """

    def __init__(
        self, schedule: Any, growth_steps: Sequence[int], warmup_steps: int
    ) -> None:
        owner = "Rewarmed"
        if not callable(schedule):
            schedule = check_real(schedule, "schedule", positive=True, owner=owner)
        self.schedule = schedule
        self.growth_steps = tuple(
            check_int(s, "growth_steps", owner=owner) for s in growth_steps
        )
        self.warmup_steps = check_int(
            warmup_steps, "warmup_steps", minimum=1, owner=owner
        )

    def __call__(self, step: Any) -> Any:
        ops = keras.ops
        rate = self.schedule(step) if callable(self.schedule) else self.schedule
        step = ops.cast(step, "float32")
        factor = 1.0
        for start in self.growth_steps:  # overlapping re-warms: the lowest
            ramp = ops.minimum(1.0, (step - float(start) + 1.0) / self.warmup_steps)
            factor = ops.minimum(factor, ops.where(step >= float(start), ramp, 1.0))
        return rate * factor

    def after_growth(self, step: int) -> "Rewarmed":
        """The same schedule with one more growth at ``step``."""
        return Rewarmed(self.schedule, (*self.growth_steps, step), self.warmup_steps)

    def get_config(self) -> dict[str, Any]:
        schedule = self.schedule
        if callable(schedule):
            schedule = keras.saving.serialize_keras_object(schedule)
        return {
            "schedule": schedule,
            "growth_steps": list(self.growth_steps),
            "warmup_steps": self.warmup_steps,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "Rewarmed":
        config = dict(config)
        if isinstance(config["schedule"], dict):
            config["schedule"] = keras.saving.deserialize_keras_object(
                config["schedule"]
            )
        return cls(**config)


def rewarm_learning_rate(optimizer, step, warmup_steps):
    """Re-warm ``optimizer``'s learning rate over ``warmup_steps`` from ``step``."""
    check_scalable(optimizer, "rewarm_steps")
    value = internals.learning_rate_object(optimizer)
    if isinstance(value, Rewarmed) and value.warmup_steps == warmup_steps:
        optimizer.learning_rate = value.after_growth(step)
        return
    if not isinstance(value, keras.optimizers.schedules.LearningRateSchedule):
        value = float(keras.ops.convert_to_numpy(value))
    optimizer.learning_rate = Rewarmed(value, (step,), warmup_steps)


def check_no_rate_setter(callbacks):
    """Refuse, before ``fit``, a callback that sets the learning rate beside
    ``GrowModel(rewarm_steps=...)``: the rate becomes a schedule (`Rewarmed`)
    at the first growth, which Keras does not let a callback set."""
    setters = (
        keras.callbacks.ReduceLROnPlateau,
        keras.callbacks.LearningRateScheduler,
    )
    found = [type(c).__name__ for c in callbacks if isinstance(c, setters)]
    if found:
        raise ValueError(
            f"GrowModel(rewarm_steps=...) wraps the learning rate in a schedule "
            f"(Rewarmed) at each growth, which {found[0]} cannot set afterwards "
            "(Keras refuses to set a scheduled rate). Use one of them, or give "
            "the optimizer a schedule and let GrowModel re-warm it."
        )
