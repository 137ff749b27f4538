"""Net2DeeperNet identity kernels (numpy only)."""

import numpy as np


def identity_dense_kernel(units, dtype="float32"):
    """Identity kernel ``(units, units)`` for a Dense layer."""
    return np.eye(int(units), dtype=dtype)


def check_identity_kernel_size(kernel_size):
    """Raise unless every kernel dimension is odd (so a centre tap exists)."""
    kernel_size = tuple(int(k) for k in kernel_size)
    if not kernel_size or any(k < 1 or k % 2 == 0 for k in kernel_size):
        raise ValueError(
            "An identity convolution needs odd kernel sizes, so that the "
            f"kernel has a centre tap. Received: kernel_size={kernel_size}"
        )
    return kernel_size


def identity_conv_kernel(kernel_size, in_channels, out_channels=None, dtype="float32"):
    """Identity kernel ``(*kernel_size, in, out)`` for a ConvND layer.

    The centre tap maps channel ``i`` to channel ``i``; every other tap is zero.
    With ``same`` padding and stride 1 the convolution returns its input.

    Args:
        kernel_size: tuple of odd ints.
        in_channels: number of input channels.
        out_channels: number of output channels. Defaults to ``in_channels``.
        dtype: numpy dtype. Defaults to ``"float32"``.

    Returns:
        The identity kernel.
    """
    kernel_size = check_identity_kernel_size(kernel_size)
    out_channels = in_channels if out_channels is None else out_channels
    kernel = np.zeros(kernel_size + (int(in_channels), int(out_channels)), dtype)
    centre = tuple(k // 2 for k in kernel_size)
    kernel[centre] = np.eye(int(in_channels), int(out_channels), dtype=dtype)
    return kernel
