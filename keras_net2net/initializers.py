"""Keras initializers that carry Net2Net weights into newly built layers.

These are how weights are transferred whenever a layer is (re)built: the model
operations in `keras_net2net.surgery` and `GrowModel` create the widened and
inserted layers with them, and users can write them into ordinary layer
definitions.
"""

import warnings
from collections.abc import Iterable
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from keras_net2net import transforms
from keras_net2net._arrays import host_copy
from keras_net2net._arrays import host_view
from keras_net2net._validation import check_bool
from keras_net2net._validation import check_choice
from keras_net2net._validation import check_int
from keras_net2net._validation import check_real
from keras_net2net._validation import check_seed
from keras_net2net.transforms import Chain

_DEFAULT_AXIS = {transforms.COPY: -1, transforms.DIVIDE: -2}


def _fallback(value):
    try:
        return keras.initializers.get(value)
    except (ValueError, TypeError) as error:
        raise ValueError(
            "`fallback` must be a Keras initializer (name, config or instance). "
            f"Received: fallback={value!r} ({error})"
        ) from None


@keras.saving.register_keras_serializable(package="keras_net2net")
class Net2WiderInit(keras.initializers.Initializer):
    """Initializer that produces Net2WiderNet weights from a teacher's weights.

    With ``side="copy"`` it builds the widened layer's kernel (columns follow
    the mapping) or a vector over its units (bias, BatchNormalization
    ``gamma``/``beta``/moving statistics). With ``side="divide"`` it builds a
    consumer's kernel: rows follow the mapping and are divided by the number of
    copies of their unit. Two layer definitions that share one mapping compute
    together exactly what the teacher computed (with ``noise=0``).

    After ``keras.models.load_model`` the initializer is restored without the
    teacher's weights (they are never written into the saved config) and acts
    as ``fallback``, a correctly shaped placeholder that loading overwrites.

    Example:

    ```python
    k1, b1 = teacher.get_layer("fc1").weights      # Dense(4) -> Dense(3)
    k2 = teacher.get_layer("fc2").kernel
    g = keras_net2net.transforms.random_mapping(4, 6, seed=0)
    wide = keras.layers.Dense(6, activation="relu",
                              kernel_initializer=Net2WiderInit(k1, g),
                              bias_initializer=Net2WiderInit(b1, g))
    consumer = keras.layers.Dense(
        3, kernel_initializer=Net2WiderInit(k2, g, side="divide"))
    ```

    Args:
        source: the teacher's weights (array, tensor or Keras variable), or
            None for a placeholder. Defaults to None.
        mapping: a `keras_net2net.transforms.WidthMapping`, or a 1-D sequence of
            old-unit indices (``-1`` for fresh units) whose old width is read
            from ``source``. Defaults to None.
        side: ``"copy"`` for the widened layer, ``"divide"`` for a consumer
            (``"out"`` and ``"in"``, their names before 0.2.0, are accepted).
            Defaults to ``"copy"``.
        noise: symmetry-breaking noise; 0 keeps the function exactly. With
            ``side="copy"`` it is added to the new copies, relative to the
            source's standard deviation; with ``side="divide"`` to the rows of the
            new copies, relative to their own standard deviation.
            Defaults to 0.
        fill: value for fresh units: a number, or ``"random"`` (normal noise
            with the source's standard deviation). Defaults to 0.
        seed: integer seed for ``noise``/``fill="random"``, or None.
            Defaults to None.
        fallback: initializer (name, config or instance) used when there is no
            source, e.g. after loading a saved model. Defaults to ``"zeros"``.
        axis: the widened axis. Defaults to -1 for ``side="copy"`` and -2 for
            ``side="divide"`` (a kernel's output and input axes).
        fill_std: standard deviation of ``fill="random"``. Defaults to None
            (the source's standard deviation).
        scale: a factor applied to the whole result (see
            `keras_net2net.transforms.WidthTransform`). Defaults to 1.
        paired: ``side="divide"``: the noise sums to zero over each unit's
            copies (see `keras_net2net.transforms.wider_in`). Defaults to
            False.
    """

    def __init__(
        self,
        source: Any = None,
        mapping: transforms.WidthMapping | Sequence[int] | None = None,
        side: str = transforms.COPY,
        noise: float = 0.0,
        fill: float | str = 0.0,
        seed: int | None = None,
        fallback: Any = "zeros",
        axis: int | None = None,
        fill_std: float | None = None,
        scale: float = 1.0,
        paired: bool = False,
    ) -> None:
        owner = "Net2WiderInit"
        self.scale = check_real(scale, "scale", positive=True, owner=owner)
        self.paired = check_bool(paired, "paired", owner=owner)
        self.side = transforms.wider.side_name(side, owner=owner)
        self.noise = check_real(noise, "noise", minimum=0.0, owner=owner)
        if isinstance(fill, str):
            self.fill = check_choice(fill, (transforms.RANDOM,), "fill", owner=owner)
        else:
            self.fill = check_real(fill, "fill", owner=owner)
        self.seed = check_seed(seed, owner=owner)
        self.fill_std = (
            None
            if fill_std is None
            else check_real(fill_std, "fill_std", positive=True, owner=owner)
        )
        if axis is not None:
            axis = check_int(axis, "axis", minimum=-64, owner=owner)
        self.axis = _DEFAULT_AXIS[self.side] if axis is None else axis
        self.fallback = _fallback(fallback)
        self.source = None
        self.mapping = None
        if source is None:
            if mapping is not None:
                raise ValueError(
                    "Net2WiderInit got a `mapping` but no `source`: the mapping "
                    "says which units of the source each new unit copies, so it "
                    "needs the source weights."
                )
            return
        # A snapshot: numpy arrays are kept as given, anything else is copied.
        self.source = source if isinstance(source, np.ndarray) else host_copy(source)
        if not -self.source.ndim <= self.axis < self.source.ndim:
            raise ValueError(
                f"Net2WiderInit(side={side!r}) widens axis {self.axis}, which a "
                f"source of shape {self.source.shape} does not have."
            )
        if mapping is None:
            raise ValueError("Net2WiderInit needs a `mapping` with a `source`.")
        if not isinstance(mapping, transforms.WidthMapping):
            try:
                mapping = transforms.WidthMapping(
                    np.asarray(mapping), self.source.shape[self.axis]
                )
            except (ValueError, TypeError) as error:
                raise ValueError(
                    "Net2WiderInit(`mapping`) must be a WidthMapping or a 1-D "
                    "sequence of old-unit indices. Received: "
                    f"mapping={mapping!r} ({error})"
                ) from None
        if mapping.old_width != self.source.shape[self.axis]:
            raise ValueError(
                f"Net2WiderInit: the mapping was made for old_width="
                f"{mapping.old_width}, but axis {self.axis} of the source has "
                f"size {self.source.shape[self.axis]}."
            )
        self.mapping = mapping

    @classmethod
    def chained(
        cls,
        source: Any,
        transforms: Iterable[transforms.WidthTransform],
        fallback: Any = "zeros",
    ) -> "Net2WiderInit":
        """An initializer that applies several `WidthTransform`s in order.

        Deprecated: growth no longer uses it (the builder carries a weight
        through its whole `keras_net2net.transforms.Chain` itself). Apply the
        chain to the weights (``Chain(transforms).apply(source)``) and
        initialise from the result, or widen with `keras_net2net.widen`.

        All but the last transform are applied to ``source`` here, the last
        one when the layer is built.

        Args:
            source: the teacher's weights.
            transforms: non-empty list of `keras_net2net.transforms.WidthTransform`.
            fallback: see the class arguments. Defaults to ``"zeros"``.

        Returns:
            A `Net2WiderInit`.
        """
        warnings.warn(
            "Net2WiderInit.chained is deprecated and will be removed: apply "
            "keras_net2net.transforms.Chain(transforms) to the weights instead.",
            DeprecationWarning,
            stacklevel=2,
        )
        steps = Chain(transforms)
        if not len(steps):
            raise ValueError("Net2WiderInit.chained needs at least one transform.")
        *first, last = steps
        # The earlier steps write a new array; the last one runs when the layer
        # is built (a view of ``source`` is read then, within the growth).
        value = Chain(first).apply(host_view(source))
        return cls(
            value,
            last.mapping,
            side=last.side,
            noise=last.noise,
            fill=last.fill,
            seed=last.seed,
            fallback=fallback,
            axis=last.axis,
            fill_std=last.fill_std,
            scale=last.scale,
            paired=last.paired,
        )

    @property
    def width_transform(self) -> transforms.WidthTransform | None:
        """The `WidthTransform` this initializer applies (None without a source)."""
        if self.mapping is None:
            return None
        return transforms.WidthTransform(
            self.mapping,
            self.side,
            self.axis,
            self.noise,
            self.fill,
            self.seed,
            self.fill_std,
            self.scale,
            self.paired,
        )

    def transform(self, value: Any, kind: str = "weight") -> np.ndarray:
        """Apply this initializer's mapping to an array of the teacher's shape.

        Args:
            value: array shaped like ``source``.
            kind: ``"weight"`` (noise and fill as configured), ``"linear"``
                (no noise, fresh units 0: for momentum-like optimizer state) or
                ``"squared"`` (also divides by the count squared: for second
                moments). Defaults to ``"weight"``.

        Returns:
            The transformed numpy array.
        """
        if self.mapping is None:
            raise ValueError(
                "This Net2WiderInit has no mapping (it was restored "
                "from a config); it can only act as a placeholder."
            )
        transform = self.width_transform
        assert transform is not None
        return Chain([transform]).apply(value, kind=kind)

    def __call__(self, shape: Sequence[int], dtype: Any = None) -> Any:
        if self.source is None:
            return self.fallback(shape, dtype=dtype)
        value = self.transform(self.source)
        if tuple(value.shape) != tuple(shape):
            raise ValueError(
                f"Net2WiderInit(side={self.side!r}) produces weights of shape "
                f"{tuple(value.shape)} from a source of shape "
                f"{self.source.shape}, but the layer asked for shape="
                f"{tuple(shape)}. Check the layer's width and the mapping."
            )
        return keras.ops.convert_to_tensor(value, dtype=dtype)

    def get_config(self) -> dict[str, Any]:
        return {
            "side": self.side,
            "noise": self.noise,
            "fill": self.fill,
            "seed": self.seed,
            "fallback": keras.initializers.serialize(self.fallback),
            "axis": self.axis,
            "fill_std": self.fill_std,
            "scale": self.scale,
            "paired": self.paired,
        }


@keras.saving.register_keras_serializable(package="keras_net2net")
class IdentityConvInit(keras.initializers.Initializer):
    """Initializer that makes a ConvND kernel compute the identity.

    The sibling of `keras.initializers.Identity` (which covers Dense kernels)
    for kernels of shape ``(*kernel_size, in, out)``: the centre tap maps input
    channel ``i`` to output channel ``i`` (times ``gain``), all other taps are
    zero. With stride 1 and ``padding="same"`` the convolution returns its
    input, which is how Net2DeeperNet inserts a layer without changing the
    function. Kernel sizes must be odd.

    Example:

    ```python
    layer = keras.layers.Conv2D(
        16, 3, padding="same", kernel_initializer=IdentityConvInit())
    ```

    Args:
        gain: multiplicative factor of the identity. Defaults to 1.
    """

    def __init__(self, gain: float = 1.0) -> None:
        self.gain = check_real(gain, "gain", owner="IdentityConvInit")

    def __call__(self, shape: Sequence[int], dtype: Any = None) -> Any:
        if len(shape) < 3:
            raise ValueError(
                "IdentityConvInit can only be used for convolution kernels of "
                f"rank >= 3 (use keras.initializers.Identity for Dense). "
                f"Received: shape={tuple(shape)} of rank {len(shape)}."
            )
        dtype = keras.backend.standardize_dtype(dtype or keras.config.floatx())
        kernel = transforms.identity_conv_kernel(
            shape[:-2], shape[-2], shape[-1], dtype="float64"
        )
        return keras.ops.convert_to_tensor(self.gain * kernel, dtype=dtype)

    def get_config(self) -> dict[str, Any]:
        return {"gain": self.gain}
