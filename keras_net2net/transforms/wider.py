"""Net2WiderNet weight transforms (numpy in, numpy out).

Kernels use the Keras layout: Dense ``(in, out)``, ConvND ``(*kernel, in, out)``;
vectors (bias, BatchNormalization parameters) are 1-D over the units.

* `wider_out` widens the layer that gets more units: its kernel columns (last
  axis) and vectors follow the mapping.
* `wider_in` adjusts a consumer of the widened units: its kernel rows (axis
  ``-2``) follow the mapping and are divided by the replication count, so the
  copies together contribute exactly what the original unit did.

``fill`` says what a *fresh* unit (mapping index ``-1``) gets: a number, or
``"random"`` for normal noise with the standard deviation of the source.
``noise`` (relative to the source's standard deviation, as in the paper) is
added to the copied units only, to break their symmetry; ``noise=0`` is exact.
"""

import numpy as np

RANDOM = "random"


def _scale(w):
    std = float(np.std(w)) if np.size(w) else 0.0
    return std if std > 0 else 0.05


def _fill(out, mask, fill, source, rng, axis):
    if not mask.any():
        return
    index = [slice(None)] * out.ndim
    index[axis] = mask
    index = tuple(index)
    if isinstance(fill, str):
        if fill != RANDOM:
            raise ValueError(
                f"fill must be a number or '{RANDOM}'. Received: fill={fill!r}"
            )
        out[index] = rng.normal(0.0, _scale(source), size=out[index].shape)
    else:
        out[index] = fill


def _add_noise(out, mask, noise, source, rng, axis):
    if noise < 0:
        raise ValueError(f"noise must be >= 0. Received: noise={noise}")
    if noise == 0 or not mask.any():
        return
    index = [slice(None)] * out.ndim
    index[axis] = mask
    index = tuple(index)
    std = noise * float(np.std(source))
    out[index] += rng.normal(0.0, std, size=out[index].shape)


def _check_axis(w, mapping, axis, what):
    if w.ndim < (1 if axis == -1 else 2):
        raise ValueError(
            f"{what} expects an array of rank >= {-axis}. Received: shape={w.shape}"
        )
    if w.shape[axis] != mapping.old_width:
        raise ValueError(
            f"{what}: axis {axis} of the weights has size {w.shape[axis]}, but "
            f"the mapping was made for old_width={mapping.old_width}."
        )


def wider_out(w, mapping, *, noise=0.0, fill=0.0, seed=None):
    """Widen the output side (last axis) of a kernel or vector.

    Args:
        w: kernel ``(..., old_width)`` or vector ``(old_width,)``.
        mapping: a `WidthMapping`.
        noise: noise std relative to ``std(w)`` added to the copies
            (units beyond ``old_width``). Defaults to 0.
        fill: value of fresh units: a number or ``"random"``. Defaults to 0.
        seed: int, `numpy.random.Generator` or None. Defaults to None.

    Returns:
        Array of shape ``(..., new_width)``.
    """
    w = np.asarray(w)
    _check_axis(w, mapping, -1, "wider_out")
    rng = np.random.default_rng(seed)
    fresh = mapping.fresh
    out = np.take(w, np.where(fresh, 0, mapping.indices), axis=-1).astype(
        w.dtype, copy=True
    )
    _fill(out, fresh, fill, w, rng, -1)
    copies = ~fresh & (np.arange(mapping.new_width) >= mapping.old_width)
    _add_noise(out, copies, noise, w, rng, -1)
    return out


def wider_in(w, mapping, *, noise=0.0, fill=0.0, seed=None, power=1):
    """Adjust the input side (axis ``-2``) of a consumer kernel.

    Row ``j`` of the result is row ``g(j)`` of ``w`` divided by
    ``count(g(j)) ** power``. ``power=1`` preserves the function for weights;
    ``power=2`` is the consistent map for squared quantities such as Adam's
    second moments.

    Args:
        w: kernel ``(..., old_width, out)``.
        mapping: a `WidthMapping`.
        noise: noise std relative to ``std(w)`` added to the rows of
            replicated units. Defaults to 0.
        fill: value of fresh rows: a number or ``"random"``. Defaults to 0.
        seed: int, `numpy.random.Generator` or None. Defaults to None.
        power: exponent of the replication count divisor. Defaults to 1.

    Returns:
        Array of shape ``(..., new_width, out)``.
    """
    w = np.asarray(w)
    _check_axis(w, mapping, -2, "wider_in")
    rng = np.random.default_rng(seed)
    fresh = mapping.fresh
    safe = np.where(fresh, 0, mapping.indices)
    counts = mapping.counts[safe].astype(np.float64)
    out = np.take(w, safe, axis=-2).astype(np.float64)
    out /= (counts**power)[:, None]
    out = out.astype(w.dtype)
    _fill(out, fresh, fill, w, rng, -2)
    replicated = ~fresh & (counts > 1)
    _add_noise(out, replicated, noise, w, rng, -2)
    return out
