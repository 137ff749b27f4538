"""The optimizers' private slot lists, and what each kind of slot holds.

Keras keeps each optimizer's per-variable state in private list attributes
(Adam's ``_momentums`` and ``_velocities``, SGD's ``momentums``, ...), aligned
with its trainable variables. Growth carries every slot through the weights'
transforms, so it must know each list's name and whether it holds a linear
quantity (a momentum: mapped like the weight) or a squared one (a second
moment: divided by the copy count squared on a consumer's input axis).
`check_supported` verifies every name on the installed Keras.
"""

from typing import Any

import keras

LINEAR = "linear"
SQUARED = "squared"

# (optimizer class, {slot attribute: kind}), most derived class first. Keras'
# own backend variants (e.g. the torch SGD) resolve to their public class.
SLOT_ATTRIBUTES = [
    (
        keras.optimizers.AdamW,
        {"_momentums": LINEAR, "_velocities": SQUARED, "_velocity_hats": SQUARED},
    ),
    (
        keras.optimizers.Adam,
        {"_momentums": LINEAR, "_velocities": SQUARED, "_velocity_hats": SQUARED},
    ),
    (
        keras.optimizers.RMSprop,
        {"_velocities": SQUARED, "_momentums": LINEAR, "_average_gradients": LINEAR},
    ),
    (keras.optimizers.SGD, {"momentums": LINEAR}),
]

# The options under which each slot list exists, for `check_supported`.
_EVERY_SLOT: dict[type, dict[str, Any]] = {
    keras.optimizers.AdamW: {"amsgrad": True},
    keras.optimizers.Adam: {"amsgrad": True},
    keras.optimizers.RMSprop: {"momentum": 0.9, "centered": True},
    keras.optimizers.SGD: {"momentum": 0.9},
}


def slot_lists(optimizer, attributes):
    """``{attribute: list of slot variables}`` of a built ``optimizer``.

    A list that an option turns off (Adam's ``_velocity_hats`` without
    ``amsgrad``) is empty; `check_supported` makes sure every name exists when
    its option is on, so a renamed list fails there instead of being dropped.
    """
    return {attr: list(getattr(optimizer, attr, None) or []) for attr in attributes}


def check_slot_attributes(require, error):
    """Build each supported optimizer with every slot on, and check the names.

    ``require(obj, attr, what)`` raises ``error`` for a missing attribute.
    """
    variables = [keras.Variable([[1.0, 2.0]]), keras.Variable([3.0])]
    for cls, attributes in SLOT_ATTRIBUTES:
        optimizer = cls(**_EVERY_SLOT[cls])
        optimizer.build(variables)
        for attr in attributes:
            require(optimizer, attr, f"a built {cls.__name__} optimizer")
            if len(getattr(optimizer, attr)) != len(variables):
                raise error(
                    f"keras-net2net expects {cls.__name__}.{attr} to hold one "
                    f"slot variable per trainable variable; this Keras "
                    f"({keras.version()}) holds {len(getattr(optimizer, attr))} "
                    f"for {len(variables)}."
                )
