"""Net2DeeperNet identity kernels (numpy only)."""

import numbers
from collections.abc import Sequence

import numpy as np


def identity_dense_kernel(units: int, dtype: str = "float32") -> np.ndarray:
    """Identity kernel ``(units, units)`` for a Dense layer.

    Example:

    ```python
    identity_dense_kernel(3)  # np.eye(3)
    ```
    """
    return np.eye(int(units), dtype=dtype)


def check_identity_kernel_size(kernel_size: Sequence[int]) -> tuple[int, ...]:
    """Raise unless every kernel dimension is an odd integer (a centre tap exists).

    Example:

    ```python
    check_identity_kernel_size((3, 3))  # (3, 3); (2, 2) raises ValueError
    ```
    """
    try:
        sizes = tuple(kernel_size)
    except TypeError:
        sizes = ()
    integral = all(
        isinstance(k, numbers.Integral) and not isinstance(k, (bool, np.bool_))
        for k in sizes
    )
    sizes_int = tuple(int(k) for k in sizes) if integral else ()
    if not sizes_int or any(k < 1 or k % 2 == 0 for k in sizes_int):
        shown = sizes_int or kernel_size
        raise ValueError(
            "An identity convolution needs odd kernel sizes, so that the "
            f"kernel has a centre tap. Received: kernel_size={shown}"
        )
    return sizes_int


def identity_conv_kernel(
    kernel_size: Sequence[int],
    in_channels: int,
    out_channels: int | None = None,
    dtype: str = "float32",
) -> np.ndarray:
    """Identity kernel ``(*kernel_size, in, out)`` for a ConvND layer.

    The centre tap maps channel ``i`` to channel ``i``; every other tap is zero.
    With ``same`` padding and stride 1 the convolution returns its input. A
    grouped kernel (``in_channels = out_channels / groups``, e.g. 1 for a
    depthwise convolution) maps output channel ``o`` from its own channel
    within its group, ``o mod in_channels``.

    Args:
        kernel_size: tuple of odd ints.
        in_channels: number of input channels.
        out_channels: number of output channels. Defaults to ``in_channels``.
        dtype: numpy dtype. Defaults to ``"float32"``.

    Returns:
        The identity kernel.

    Example:

    ```python
    identity_conv_kernel((3, 3), 16).shape  # (3, 3, 16, 16)
    ```
    """
    kernel_size = check_identity_kernel_size(kernel_size)
    out_channels = in_channels if out_channels is None else out_channels
    in_channels, out_channels = int(in_channels), int(out_channels)
    kernel = np.zeros(kernel_size + (in_channels, out_channels), dtype)
    centre = kernel[tuple(k // 2 for k in kernel_size)]
    if out_channels % in_channels == 0:
        outputs = np.arange(out_channels)
        centre[outputs % in_channels, outputs] = 1
    else:
        centre[...] = np.eye(in_channels, out_channels, dtype=dtype)
    return kernel
