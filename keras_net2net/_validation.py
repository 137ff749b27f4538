"""Argument checks shared by every public entry point (pure Python and numpy).

Each check names the argument, echoes what was received and says what is
valid, the way Keras' own errors do. Numpy scalars are accepted wherever a
Python number is.
"""

import math
import numbers

import numpy as np


def _received(value):
    return f"Received: {value!r} of type {type(value).__name__}"


def _where(name, owner):
    return f"`{name}`" if owner is None else f"{owner}(`{name}`)"


def check_int(value, name, *, minimum=0, owner=None):
    """An integer (Python or numpy, not bool) >= ``minimum``; returns an int."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"{_where(name, owner)} must be an integer >= {minimum}. {_received(value)}"
        )
    if value < minimum:
        raise ValueError(
            f"{_where(name, owner)} must be an integer >= {minimum}. "
            f"Received: {name}={value!r}"
        )
    return int(value)


def check_real(value, name, *, minimum=None, positive=False, owner=None):
    """A finite real number (Python or numpy, not bool); returns a float.

    Args:
        minimum: smallest allowed value (inclusive), or None.
        positive: require a value > 0.
    """
    if positive:
        valid = "a finite number > 0"
    elif minimum is not None:
        valid = f"a finite number >= {minimum}"
    else:
        valid = "a finite number"
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{_where(name, owner)} must be {valid}. {_received(value)}")
    value = float(value)
    if (
        not math.isfinite(value)
        or (positive and value <= 0)
        or (minimum is not None and value < minimum)
    ):
        raise ValueError(
            f"{_where(name, owner)} must be {valid}. Received: {name}={value!r}"
        )
    return value


def check_seed(seed, name="seed", *, owner=None):
    """None or an integer in [0, 2**32)."""
    if seed is None:
        return None
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral):
        raise TypeError(
            f"{_where(name, owner)} must be None or an integer >= 0. {_received(seed)}"
        )
    seed = int(seed)
    if not 0 <= seed < 2**32:
        raise ValueError(
            f"{_where(name, owner)} must be None or an integer in [0, 2**32). "
            f"Received: {name}={seed!r}"
        )
    return int(seed)


def check_choice(value, choices, name, *, owner=None):
    """One of ``choices`` (compared with ==, strings only)."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(
            f"{_where(name, owner)} must be one of {tuple(choices)}. "
            f"Received: {name}={value!r}"
        )
    return value


def check_bool(value, name, *, owner=None):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(
            f"{_where(name, owner)} must be True or False. {_received(value)}"
        )
    return bool(value)


def check_name(value, name, *, owner=None, allow_none=True):
    """A non-empty string (a layer name), or None if allowed."""
    if value is None and allow_none:
        return None
    if not isinstance(value, str) or not value:
        valid = "a non-empty string" + (" or None" if allow_none else "")
        raise TypeError(f"{_where(name, owner)} must be {valid}. {_received(value)}")
    return value
