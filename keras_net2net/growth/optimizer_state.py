"""Carrying optimizer state across a growth.

Each supported optimizer keeps one list of slot variables per kind of state
(SGD ``momentums``; Adam ``_momentums`` and ``_velocities``; ...), aligned with
its trainable variables. After growth, every slot of a new variable is derived
from the slot of the variable it came from:

* unchanged variables keep their slot values;
* transformed variables get the weight's mapping applied to the slot. A
  ``"linear"`` slot (momentum, first moment, mean gradient) is mapped like the
  weight: copied along the widened axis, divided by the replication count on a
  consumer's input axis. A ``"squared"`` slot (Adam/RMSprop second moment) is
  the square of such a quantity, so it is divided by the count *squared*; the
  per-weight update ``m / sqrt(v)`` of a copied unit then equals the update of
  its original. Noise is never added to slots, and fresh (random-pad) units
  start at zero;
* variables of inserted layers start at zero, like a freshly built optimizer.
"""

import keras
import numpy as np

from keras_net2net import _keras_internals as internals

# (optimizer class, {slot attribute: kind}). Keras' own backend variants (e.g.
# the torch SGD) resolve to their public class; user subclasses are refused.
SLOT_REGISTRY = [
    (
        keras.optimizers.AdamW,
        {"_momentums": "linear", "_velocities": "squared", "_velocity_hats": "squared"},
    ),
    (
        keras.optimizers.Adam,
        {"_momentums": "linear", "_velocities": "squared", "_velocity_hats": "squared"},
    ),
    (
        keras.optimizers.RMSprop,
        {
            "_velocities": "squared",
            "_momentums": "linear",
            "_average_gradients": "linear",
        },
    ),
    (keras.optimizers.SGD, {"momentums": "linear"}),
]


def _supported_names():
    return ", ".join(cls.__name__ for cls, _ in SLOT_REGISTRY)


def slot_kinds(optimizer):
    """The slot attributes of ``optimizer`` and their kinds.

    Raises:
        ValueError: if the optimizer (or one of its options) is not supported.
    """
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return slot_kinds(optimizer.inner_optimizer)
    for option in ("use_ema", "gradient_accumulation_steps"):
        if getattr(optimizer, option, None):
            raise ValueError(
                f"GrowModel does not support optimizers with `{option}` set. "
                f"Received: {type(optimizer).__name__}({option}="
                f"{getattr(optimizer, option)!r})."
            )
    registry = dict(SLOT_REGISTRY)
    for cls in type(optimizer).__mro__:
        if cls in registry:
            return registry[cls]
        if not cls.__module__.startswith("keras."):
            break  # a user subclass: its state layout is unknown
    raise ValueError(
        f"GrowModel cannot carry the state of optimizer "
        f"{type(optimizer).__name__} across growth. Supported optimizers: "
        f"{_supported_names()}."
    )


def _state_owner(optimizer):
    """The optimizer that holds the slots (the inner one of a LossScaleOptimizer)."""
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return optimizer.inner_optimizer
    return optimizer


def _slots(optimizer, kinds):
    return {attr: list(getattr(optimizer, attr, None) or []) for attr in kinds}


def plan_state(optimizer, new_variables, origins):
    """Compute the slot values of ``new_variables`` (numpy), before any change.

    Args:
        optimizer: the built optimizer.
        new_variables: trainable variables of the grown model.
        origins: ``id(new variable) -> (old variable or None, transforms)``
            (`keras_net2net.transforms.WidthTransform` list).

    Returns:
        ``{slot attribute: {id(new variable): array}}``; missing means zero.
    """
    kinds = slot_kinds(optimizer)
    optimizer = _state_owner(optimizer)
    old_variables = internals.optimizer_trainable_variables(optimizer)
    old_index = {id(v): i for i, v in enumerate(old_variables)}
    planned = {}
    for attr, slots in _slots(optimizer, kinds).items():
        if not slots:
            continue
        values = {}
        for variable in new_variables:
            source, chain = origins.get(id(variable), (None, []))
            if source is None or id(source) not in old_index:
                continue
            value = keras.ops.convert_to_numpy(slots[old_index[id(source)]])
            for transform in chain:
                value = transform.apply(value, kind=kinds[attr])
            values[id(variable)] = np.asarray(value)
        planned[attr] = values
    return planned


def assign_state(optimizer, planned):
    """Write planned slot values into a freshly rebuilt ``optimizer``."""
    optimizer = _state_owner(optimizer)
    variables = internals.optimizer_trainable_variables(optimizer)
    for attr, values in planned.items():
        for variable, slot in zip(variables, getattr(optimizer, attr)):
            value = values.get(id(variable))
            if value is not None:
                dtype = keras.backend.standardize_dtype(slot.dtype)
                slot.assign(value.astype(dtype))
