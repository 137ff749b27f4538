"""Weights on the host without copies, and exact transforms where they live.

Growth reads each changed weight (and its optimizer slots) once, transforms it
in numpy (which always writes a new array) and creates the new variable from
the result. `keras.ops.convert_to_numpy` copies, twice on TensorFlow; for a
1e8-parameter model those copies were a third of a growth event's time.
`host_view` returns a read-only numpy view of a CPU value instead (each
backend's public zero-copy path) and falls back to a copy elsewhere. Never
keep a view beyond the growth that read it, and never hand it to a backend
as the value of a new variable (use `host_copy`).
"""

from typing import Any

import keras
import numpy as np

from keras_net2net.transforms import DIVIDE
from keras_net2net.transforms import Chain


def host_view(value: Any) -> np.ndarray:
    """A numpy array with ``value``'s contents, read-only, no copy if possible."""
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, keras.Variable):
        value = value.value
    backend = keras.backend.backend()
    try:
        if backend == "tensorflow":
            import tensorflow as tf

            tensor = tf.convert_to_tensor(value)  # a resource variable's read
            if "CPU" in tensor.device.upper():
                array = np.asarray(memoryview(tensor))
                if array.shape == tuple(tensor.shape):
                    return array
        elif backend == "jax":
            return np.asarray(value)  # a read-only view of a CPU array
        elif backend == "torch":
            tensor = value.detach()
            if tensor.device.type == "cpu":
                array = tensor.numpy()  # shares the parameter's memory
                array.flags.writeable = False
                return array
    except (AttributeError, TypeError, ValueError, RuntimeError, BufferError):
        pass  # e.g. a dtype without a buffer format: copy instead
    return keras.ops.convert_to_numpy(value)


def host_copy(value: Any) -> np.ndarray:
    """A writable numpy copy of ``value`` (safe to give to a new variable)."""
    return np.array(host_view(value), copy=True)


def maps_on_device(value: Any) -> bool:
    """Whether `apply_on_device` is the faster way to transform ``value``.

    It avoids a transfer to the host and back, so it is used everywhere
    except for JAX arrays on the CPU: JAX compiles each operation for each new
    shape, which costs more there than numpy's work on a zero-copy view
    (a 9.2e7-parameter Llama's AdamW slots: 1.5 s against 1.0 s per growth).
    """
    if keras.backend.backend() != "jax":
        return True
    x = value.value if isinstance(value, keras.Variable) else value
    try:
        return any(device.platform != "cpu" for device in x.devices())
    except AttributeError:  # not a jax.Array
        return True


def apply_on_device(value: Any, chain: Chain, kind: str = "weight") -> Any:
    """Apply an exact ``chain`` with ``keras.ops``, where ``value`` lives.

    The same result as ``chain.apply`` in numpy, without a transfer to the
    host and back. Only for chains that are ``chain.exact(kind)`` (every new
    unit copies an old one, no noise: noise and random fills are drawn in
    numpy).

    Args:
        value: a variable or backend tensor.
        chain: a `keras_net2net.transforms.Chain`.
        kind: ``"weight"``, ``"linear"`` or ``"squared"`` (see
            ``WidthTransform.apply``). Defaults to ``"weight"``.

    Returns:
        A backend tensor (a copy of ``value`` for an empty chain).
    """
    if not chain.exact(kind):
        raise ValueError(
            "apply_on_device needs an exact chain (no fresh units, no noise); "
            "apply it on the host with Chain.apply."
        )
    ops = keras.ops
    x = value.value if isinstance(value, keras.Variable) else value
    if not len(chain):
        return ops.copy(x)
    for transform in chain:
        mapping = transform.mapping
        axis = -1 if transform.axis is None else transform.axis
        indices = np.asarray(mapping.indices, dtype="int32")
        x = ops.take(x, indices, axis=axis)
        shape = [1] * len(x.shape)
        shape[axis] = -1
        if transform.side == DIVIDE:
            counts = mapping.counts[indices].astype("float64")
            divisor = counts ** (2 if kind == "squared" else 1)
            if np.any(divisor != 1.0):
                x = ops.divide(x, ops.cast(divisor.reshape(shape), x.dtype))
        if transform.scale != 1.0:
            factor = transform.scale**2 if kind == "squared" else transform.scale
            x = ops.multiply(x, ops.cast(factor, x.dtype))
    return x
