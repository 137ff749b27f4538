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

import functools

import keras
import numpy as np

from keras_net2net import _keras_internals as internals
from keras_net2net._arrays import apply_on_device
from keras_net2net._arrays import host_copy
from keras_net2net._arrays import host_view
from keras_net2net._arrays import maps_on_device
from keras_net2net.transforms import Chain


def _supported_names():
    return ", ".join(cls.__name__ for cls, _ in internals.SLOT_ATTRIBUTES)


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
    registry = dict(internals.SLOT_ATTRIBUTES)
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


# `grow_in_place(optimizer_state=...)`, `GrowModel(optimizer_state=...)`.
CARRY = "carry"
RESET_NEW = "reset_new"
RESET = "reset"
OPTIMIZER_STATES = (CARRY, RESET_NEW, RESET)


def state_origins(result, policy):
    """The origins of the grown model's optimizer state under ``policy``.

    ``"carry"``: the growth's own (copies start from their source's state);
    ``"reset_new"``: none for a variable whose weights have no origin (an
    inserted layer, a copy included), so its state starts at zero;
    ``"reset"``: none at all.
    """
    if policy == RESET:
        return {}
    if policy == RESET_NEW:
        return {
            key: origin
            for key, origin in result.state_origins.items()
            if result.origins.get(key, (None, []))[0] is not None
        }
    return result.state_origins


def _state_owner(optimizer):
    """The optimizer that holds the slots (the inner one of a LossScaleOptimizer)."""
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return optimizer.inner_optimizer
    return optimizer


def _unchanged(variable, origins):
    source, chain = origins.get(id(variable), (None, []))
    return source is variable and not chain


class SlotValue:
    """Initializer of a new slot: its source's slot through the transforms.

    The value is computed only when the slot variable is created: with
    backend ops where the transforms are exact (no host round trip) unless
    numpy is faster there (`keras_net2net._arrays.maps_on_device`), else in
    numpy.
    """

    def __init__(self, source, chain, kind, parts=None):
        self.source, self.chain, self.kind = source, Chain(chain), kind
        self.parts = parts  # a `Join` step's variable -> its slot's array

    def value(self):
        if not len(self.chain):
            return host_copy(self.source)  # the new slot's own copy
        return self.chain.apply(
            host_view(self.source), kind=self.kind, parts=self.parts
        )

    def __call__(self, shape, dtype=None):
        dtype = keras.backend.standardize_dtype(dtype or self.source.dtype)
        if self.chain.exact(self.kind) and maps_on_device(self.source):
            # Computed where the slot lives: no host round trip.
            tensor = apply_on_device(self.source, self.chain, self.kind)
            if tuple(tensor.shape) == tuple(shape):
                return keras.ops.cast(tensor, dtype)
        value = self.value()
        if tuple(value.shape) != tuple(shape):
            raise ValueError(
                f"The carried optimizer state has shape {tuple(value.shape)}, "
                f"but the new slot has shape {tuple(shape)}."
            )
        # A backend tensor, and the numpy value released before the variable
        # is created from it: one transient copy instead of two.
        tensor = keras.ops.convert_to_tensor(np.asarray(value, dtype=dtype))
        del value
        return tensor


def _slot_name(variable, slot):
    """The kind name Keras gave ``slot`` of ``variable`` ("momentum", ...)."""
    prefix = variable.path.replace("/", "_") + "_"
    return slot.name[len(prefix) :] if slot.name.startswith(prefix) else None


def plan_state(optimizer, new_variables, origins):
    """Plan the optimizer state of the grown model, before any change.

    * A variable kept as it is keeps its slot variables themselves.
    * A changed variable's slot is its source's slot through the variable's
      transforms, computed in numpy when the new slot is created (one at a
      time), so no zero slot is created and then overwritten.
    * Variables of inserted layers get zero slots.

    Args:
        optimizer: the built optimizer.
        new_variables: trainable variables of the grown model.
        origins: ``id(new variable) -> (old variable or None, transforms)``
            (`keras_net2net.transforms.WidthTransform` list).

    Returns:
        ``(slots, leftovers)``: ``slots`` maps a slot key (see
        `keras_net2net._keras_internals.slot_key`) to the slot variable to
        keep or a `SlotValue` to create it with, for
        `keras_net2net._keras_internals.rebuild_optimizer`; ``leftovers``
        (``{slot attribute: {id(new variable): SlotValue}}``) are slots whose
        Keras name is not the usual one, written by `assign_state` after the
        rebuild.
    """
    kinds = slot_kinds(optimizer)
    optimizer = _state_owner(optimizer)
    old_variables = internals.optimizer_trainable_variables(optimizer)
    old_index = {id(v): i for i, v in enumerate(old_variables)}
    slots, leftovers = {}, {}
    for attr, old_slots in internals.slot_lists(optimizer, kinds).items():
        if not old_slots:
            continue
        values = {}
        parts = functools.partial(_slot_of, old_slots, old_index)
        for variable in new_variables:
            source, chain = origins.get(id(variable), (None, []))
            if source is None or id(source) not in old_index:
                continue
            slot = old_slots[old_index[id(source)]]
            if slot is None:
                continue
            if _unchanged(variable, origins):
                slots[internals.slot_key(variable, slot)] = slot
                continue
            entry = SlotValue(slot, list(chain), kinds[attr], parts)
            name = _slot_name(source, slot)
            if name is None:
                values[id(variable)] = entry
            else:
                new_name = f"{variable.path.replace('/', '_')}_{name}"
                slots[(id(variable), new_name)] = entry
        leftovers[attr] = values
    return slots, leftovers


def _slot_of(old_slots, old_index, variable):
    """The array of ``variable``'s slot in ``old_slots`` (for a `Join` step)."""
    return host_view(old_slots[old_index[id(variable)]])


def assign_state(optimizer, leftovers):
    """Write the leftover planned slots into the rebuilt ``optimizer``."""
    optimizer = _state_owner(optimizer)
    variables = internals.optimizer_trainable_variables(optimizer)
    for attr, values in leftovers.items():
        for variable, slot in zip(variables, getattr(optimizer, attr)):
            entry = values.get(id(variable))
            if entry is not None and slot is not None:
                slot.assign(entry(tuple(slot.shape), slot.dtype))
