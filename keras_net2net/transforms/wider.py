"""Net2WiderNet weight transforms (numpy in, numpy out).

Kernels use the Keras layout: Dense ``(in, out)``, ConvND ``(*kernel, in, out)``;
vectors (bias, BatchNormalization parameters) are 1-D over the units.

* `wider_out` widens the layer that gets more units: its kernel columns (last
  axis) and vectors follow the mapping.
* `wider_in` adjusts a consumer of the widened units: its kernel rows (axis
  ``-2``) follow the mapping and are divided by the replication count, so the
  copies together contribute exactly what the original unit did.

``fill`` says what a *fresh* unit (mapping index ``-1``) gets: a number,
``"random"`` for normal noise with the standard deviation of the source, or
``"mean"`` for the mean of the old units' entries (a writer whose new units
must hold the mean of the old ones: LayerNormalization at any width).
``noise`` (relative to the source's standard deviation, as in the paper) is
added to the copied units only, to break their symmetry; ``noise=0`` is exact.
On the divide side, ``paired`` noise goes on every copied unit's entries (the
original's too) and sums to zero over each unit's copies: exact as well.
"""

import dataclasses

import numpy as np
from numpy.typing import ArrayLike

from keras_net2net._validation import check_choice
from keras_net2net._validation import check_real
from keras_net2net.transforms.mapping import WidthMapping

RANDOM = "random"
MEAN = "mean"
Seed = int | np.random.Generator | None


def _scale(w):
    std = float(np.std(w)) if np.size(w) else 0.0
    return std if std > 0 else 0.05


def _index(ndim, axis, mask):
    index = [slice(None)] * ndim
    index[axis] = mask
    return tuple(index)


def _fill(out, mask, fill, source, rng, axis, fill_std=None):
    if not mask.any():
        return
    index = _index(out.ndim, axis, mask)
    if fill == MEAN:
        out[index] = np.mean(source, axis=axis, keepdims=True).astype(out.dtype)
    elif isinstance(fill, str):
        if fill != RANDOM:
            raise ValueError(
                f"fill must be a number, '{RANDOM}' or '{MEAN}'. Received: "
                f"fill={fill!r}"
            )
        std = _scale(source) if fill_std is None else float(fill_std)
        out[index] = rng.normal(0.0, std, size=out[index].shape)
    else:
        out[index] = fill


def _add_noise(out, mask, noise, reference, rng, axis):
    """Add N(0, (noise * std(reference))^2) to the entries ``mask`` selects."""
    noise = check_real(noise, "noise", minimum=0.0)
    if noise == 0 or not mask.any():
        return
    index = _index(out.ndim, axis, mask)
    std = noise * float(np.std(reference))
    out[index] += rng.normal(0.0, std, size=out[index].shape).astype(out.dtype)


def _add_paired_noise(out, mapping, noise, rng, axis):
    """Add noise to the entries of every copied unit (the original included)
    that sums to zero over each unit's copies along ``axis``.

    The entries of one unit's copies read identical activations, so only
    their sum matters: the function is unchanged, while each copy's outgoing
    weights (so its gradient) differ. Relative to the std of those entries.
    """
    noise = check_real(noise, "noise", minimum=0.0)
    fresh = mapping.fresh
    source = np.where(fresh, 0, mapping.indices)
    counts = np.where(fresh, 0, mapping.counts[source])
    mask = counts > 1
    if noise == 0 or not mask.any():
        return
    moved = np.moveaxis(out, axis, 0)  # a view: writes go to ``out``
    picked = moved[mask]
    draws = rng.normal(0.0, noise * float(np.std(picked)), size=picked.shape)
    sums = np.zeros((mapping.old_width, *draws.shape[1:]))
    np.add.at(sums, source[mask], draws)
    shape = (-1,) + (1,) * (draws.ndim - 1)
    draws -= sums[source[mask]] / counts[mask].reshape(shape)
    moved[mask] = picked + draws.astype(out.dtype)


def _check_axis(w, mapping, axis, what):
    if not -w.ndim <= axis < w.ndim:
        raise ValueError(
            f"{what} expects an array with an axis {axis}. Received: shape={w.shape}"
        )
    if w.shape[axis] != mapping.old_width:
        raise ValueError(
            f"{what}: axis {axis} of the weights has size {w.shape[axis]}, but "
            f"the mapping was made for old_width={mapping.old_width}."
        )


def wider_out(
    w: ArrayLike,
    mapping: WidthMapping,
    *,
    noise: float = 0.0,
    fill: float | str = 0.0,
    seed: Seed = None,
    axis: int = -1,
    fill_std: float | None = None,
) -> np.ndarray:
    """Widen the output side of a kernel or vector: copy along ``axis``.

    Entry ``j`` along ``axis`` becomes entry ``g(j)`` of ``w``.

    Args:
        w: kernel ``(..., old_width)`` or vector ``(old_width,)``.
        mapping: a `WidthMapping`.
        noise: noise std relative to ``std(w)`` added to the copies
            (units beyond ``old_width``). Defaults to 0.
        fill: value of fresh units: a number, ``"random"`` (normal noise) or
            ``"mean"`` (the mean of the old entries along ``axis``).
            Defaults to 0.
        seed: int, `numpy.random.Generator` or None. Defaults to None.
        axis: the widened axis. Defaults to -1.
        fill_std: standard deviation of a ``"random"`` fill. Defaults to None:
            the standard deviation of ``w``.

    Returns:
        Array with ``new_width`` entries along ``axis``.

    Example:

    ```python
    g = random_mapping(4, 6, seed=0)
    kernel_1 = wider_out(kernel_1, g)  # (in, 4) -> (in, 6)
    kernel_2 = wider_in(kernel_2, g)  # (4, out) -> (6, out), copies divided
    ```
    """
    w = np.asarray(w)
    _check_axis(w, mapping, axis, "wider_out")
    rng = np.random.default_rng(seed)
    fresh = mapping.fresh
    out = np.take(w, np.where(fresh, 0, mapping.indices), axis=axis)
    _fill(out, fresh, fill, w, rng, axis, fill_std)
    copies = ~fresh & (np.arange(mapping.new_width) >= mapping.old_width)
    _add_noise(out, copies, noise, w, rng, axis)
    return out


def wider_in(
    w: ArrayLike,
    mapping: WidthMapping,
    *,
    noise: float = 0.0,
    fill: float | str = 0.0,
    seed: Seed = None,
    power: int = 1,
    axis: int = -2,
    fill_std: float | None = None,
    paired: bool = False,
) -> np.ndarray:
    """Adjust the input side of a consumer kernel: copy and divide along ``axis``.

    Entry ``j`` along ``axis`` of the result is entry ``g(j)`` of ``w``
    divided by ``count(g(j)) ** power``. ``power=1`` preserves the function
    for weights; ``power=2`` is the consistent map for squared quantities such
    as Adam's second moments. ``noise`` is added to the entries of the new
    copies (``j >= old_width``), relative to their own standard deviation, as
    the original Net2Net code does on the consumer side; it changes the
    function slightly.

    Args:
        w: kernel ``(..., old_width, out)``.
        mapping: a `WidthMapping`.
        noise: noise std, relative to the std of the new copies' entries,
            added to those entries. Defaults to 0.
        fill: value of fresh rows: a number or ``"random"``. Defaults to 0.
        seed: int, `numpy.random.Generator` or None. Defaults to None.
        power: exponent of the replication count divisor. Defaults to 1.
        axis: the axis that reads the widened units. Defaults to -2.
        fill_std: standard deviation of a ``"random"`` fill. Defaults to None:
            the standard deviation of ``w``.
        paired: put the noise on the entries of every copied unit (the
            original included), summing to zero over each unit's copies:
            exact, and the copies' gradients differ. Defaults to False.

    Returns:
        Array with ``new_width`` entries along ``axis``.

    Example:

    ```python
    consumer = wider_in(consumer_kernel, random_mapping(4, 6, seed=0))
    ```
    """
    w = np.asarray(w)
    if w.ndim < 2 and axis == -2:
        raise ValueError(
            f"wider_in expects an array of rank >= 2. Received: shape={w.shape}"
        )
    _check_axis(w, mapping, axis, "wider_in")
    rng = np.random.default_rng(seed)
    fresh = mapping.fresh
    safe = np.where(fresh, 0, mapping.indices)
    counts = mapping.counts[safe]
    out = np.take(w, safe, axis=axis)
    if (counts != 1).any():
        shape = [1] * out.ndim
        shape[axis] = -1
        divisor = (counts.astype(np.float64) ** power).reshape(shape)
        if np.issubdtype(out.dtype, np.floating):
            out /= divisor.astype(out.dtype)  # in place: `out` is a fresh copy
        else:
            out = out / divisor
    _fill(out, fresh, fill, w, rng, axis, fill_std)
    copies = ~fresh & (np.arange(mapping.new_width) >= mapping.old_width)
    if noise and paired:
        _add_paired_noise(out, mapping, noise, rng, axis)
    elif noise and copies.any():
        reference = np.take(out, np.flatnonzero(copies), axis=axis)
        _add_noise(out, copies, noise, reference, rng, axis)
    return out


# The two sides of a widening, in the one vocabulary used throughout: the
# layer that gets more units *copies* entries along the axis; a layer that
# reads them *divides* each copy by its copy count.
COPY = "copy"
DIVIDE = "divide"
SIDES = (COPY, DIVIDE)
# The names before 0.2.0 ("out" and "in"), still accepted.
_OLD_SIDES = {"out": COPY, "in": DIVIDE}


def side_name(side: str, owner: str | None = None) -> str:
    """``side`` in the one vocabulary: ``"copy"`` or ``"divide"``.

    Raises:
        ValueError: ``side`` is neither (nor the old ``"out"``/``"in"``);
            the message names ``owner`` where given.
    """
    side = _OLD_SIDES.get(side, side) if isinstance(side, str) else side
    return check_choice(side, SIDES, "side", owner=owner)


KINDS = ("weight", "linear", "squared")


@dataclasses.dataclass(frozen=True, eq=False)
class WidthTransform:
    """One widening of one axis of one array: the unit of the weight math.

    ``side="copy"`` copies entries along ``axis`` (a widened layer's kernel
    columns, its bias, normalisation parameters); ``side="divide"`` copies
    and divides by the copy count (a consumer's kernel rows). A widening
    that touches several axes of one array (a layer that both reads and
    writes the widened channels) is a chain of transforms.

    Example:

    ```python
    step = WidthTransform(random_mapping(4, 6, seed=0), side="divide")
    kernel = step.apply(kernel)  # (4, out) -> (6, out)
    velocity = step.apply(velocity, kind="squared")  # Adam's second moment
    ```

    Args:
        mapping: a `WidthMapping`.
        side: ``"copy"`` or ``"divide"`` (``"out"`` and ``"in"``, their
            names before 0.2.0, are accepted). Defaults to ``"copy"``.
        axis: the widened axis. Defaults to -1 (``"copy"``) or -2
            (``"divide"``).
        noise: symmetry-breaking noise (see `wider_out`/`wider_in`).
            Defaults to 0.
        fill: value of fresh units: a number, ``"random"`` or ``"mean"``.
            Defaults to 0.
        seed: integer seed or None. Defaults to None.
        fill_std: standard deviation of a ``"random"`` fill (None: the
            weight's own). Defaults to None.
        scale: a factor applied to the whole result (optimizer state:
            first moments by ``scale``, second moments by ``scale**2``).
            Used where a widening changes a layer's own normalisation, as
            attention's ``1/sqrt(key_dim)``. Defaults to 1.
        paired: ``"divide"`` side only: the noise sums to zero over each
            unit's copies (see `wider_in`). Defaults to False.
    """

    mapping: WidthMapping
    side: str = COPY
    axis: int | None = None
    noise: float = 0.0
    fill: float | str = 0.0
    seed: int | None = None
    fill_std: float | None = None
    scale: float = 1.0
    paired: bool = False

    def __post_init__(self) -> None:
        check_real(self.scale, "scale", positive=True)
        object.__setattr__(self, "side", side_name(self.side))
        if self.paired and self.side != DIVIDE:
            raise ValueError(
                "WidthTransform(`paired`): paired noise goes on the entries "
                "that read the copies (side='divide'). Received: "
                f"side={self.side!r}, paired=True"
            )
        if self.axis is None:
            object.__setattr__(self, "axis", -1 if self.side == COPY else -2)

    def apply(self, value: ArrayLike, kind: str = "weight") -> np.ndarray:
        """Transform ``value`` (an array shaped like the original weight).

        Args:
            value: the array.
            kind: ``"weight"`` (noise and fill as configured), ``"linear"``
                (no noise, fresh units 0: for momentum-like optimizer state) or
                ``"squared"`` (also divides by the count squared on the input
                side: for second moments). Defaults to ``"weight"``.

        Returns:
            The transformed numpy array.
        """
        if kind not in KINDS:
            raise ValueError(f"`kind` must be one of {KINDS}. Received: {kind!r}")
        weight = kind == "weight"
        noise = self.noise if weight else 0.0
        fill = self.fill if weight else 0.0
        axis = -1 if self.axis is None else self.axis
        if self.side == COPY:
            result = wider_out(
                value,
                self.mapping,
                noise=noise,
                fill=fill,
                seed=self.seed,
                axis=axis,
                fill_std=self.fill_std,
            )
        else:
            result = wider_in(
                value,
                self.mapping,
                noise=noise,
                fill=fill,
                seed=self.seed,
                axis=axis,
                power=2 if kind == "squared" else 1,
                fill_std=self.fill_std,
                paired=self.paired,
            )
        if self.scale != 1.0:
            factor = self.scale**2 if kind == "squared" else self.scale
            if np.issubdtype(result.dtype, np.floating):
                result *= np.asarray(factor, result.dtype)
            else:
                result = result * factor
        return result
