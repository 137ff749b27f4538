"""Scaling the learning rate at growth (the paper trains students at 1/10)."""

from typing import Any

import keras

from keras_net2net import _keras_internals as internals


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


def check_scalable(optimizer):
    """Raise if ``optimizer``'s learning rate cannot be scaled."""
    value = internals.learning_rate_object(optimizer)
    schedule = keras.optimizers.schedules.LearningRateSchedule
    if callable(value) and not isinstance(value, schedule):
        raise ValueError(
            "GrowModel(lr_scale=...) needs a float learning rate or a "
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
