"""Keras initializers that carry Net2Net weights into newly built layers.

These are how weights are transferred whenever a layer is (re)built: the model
operations in `keras_net2net.surgery` and `GrowModel` create the widened and
inserted layers with them, and users can write them into ordinary layer
definitions.
"""

import keras
import numpy as np

from keras_net2net import transforms

_SIDES = ("out", "in")
_KINDS = ("weight", "linear", "squared")


def _validate_seed(seed):
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ValueError(
            f"`seed` must be an integer or None. Received: seed={seed!r} "
            f"of type {type(seed).__name__}"
        )
    return seed


@keras.saving.register_keras_serializable(package="keras_net2net")
class Net2WiderInit(keras.initializers.Initializer):
    """Initializer that produces Net2WiderNet weights from a teacher's weights.

    With ``side="out"`` it builds the widened layer's kernel (columns follow
    the mapping) or a vector over its units (bias, BatchNormalization
    ``gamma``/``beta``/moving statistics). With ``side="in"`` it builds a
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
        3, kernel_initializer=Net2WiderInit(k2, g, side="in"))
    ```

    Args:
        source: the teacher's weights (array, tensor or Keras variable), or
            None for a placeholder. Defaults to None.
        mapping: a `keras_net2net.transforms.WidthMapping`, or a 1-D sequence of
            old-unit indices (``-1`` for fresh units) whose old width is read
            from ``source``. Defaults to None.
        side: ``"out"`` for the widened layer, ``"in"`` for a consumer.
            Defaults to ``"out"``.
        noise: symmetry-breaking noise, relative to the source's standard
            deviation; 0 keeps the function exactly. Defaults to 0.
        fill: value for fresh units: a number, or ``"random"`` (normal noise
            with the source's standard deviation). Defaults to 0.
        seed: integer seed for ``noise``/``fill="random"``, or None.
            Defaults to None.
        fallback: initializer (name, config or instance) used when there is no
            source, e.g. after loading a saved model. Defaults to ``"zeros"``.
    """

    def __init__(
        self,
        source=None,
        mapping=None,
        side="out",
        noise=0.0,
        fill=0.0,
        seed=None,
        fallback="zeros",
    ):
        if side not in _SIDES:
            raise ValueError(f"`side` must be one of {_SIDES}. Received: side={side!r}")
        if noise < 0:
            raise ValueError(f"`noise` must be >= 0. Received: noise={noise}")
        if isinstance(fill, str) and fill != transforms.RANDOM:
            raise ValueError(
                f"`fill` must be a number or '{transforms.RANDOM}'. "
                f"Received: fill={fill!r}"
            )
        self.side = side
        self.noise = float(noise)
        self.fill = fill if isinstance(fill, str) else float(fill)
        self.seed = _validate_seed(seed)
        self.fallback = keras.initializers.get(fallback)
        self.source = None
        self.mapping = None
        if source is not None:
            self.source = np.asarray(keras.ops.convert_to_numpy(source))
            axis = -1 if side == "out" else -2
            if self.source.ndim < -axis:
                raise ValueError(
                    f"Net2WiderInit(side={side!r}) needs a source of rank >= "
                    f"{-axis}. Received: shape={self.source.shape}"
                )
            if mapping is None:
                raise ValueError("Net2WiderInit needs a `mapping` with a `source`.")
            if not isinstance(mapping, transforms.WidthMapping):
                mapping = transforms.WidthMapping(
                    np.asarray(mapping), self.source.shape[axis]
                )
            self.mapping = mapping

    def transform(self, value, kind="weight"):
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
        if kind not in _KINDS:
            raise ValueError(f"`kind` must be one of {_KINDS}. Received: {kind!r}")
        if self.mapping is None:
            raise ValueError(
                "This Net2WiderInit has no mapping (it was restored "
                "from a config); it can only act as a placeholder."
            )
        weight = kind == "weight"
        options = dict(
            noise=self.noise if weight else 0.0,
            fill=self.fill if weight else 0.0,
            seed=self.seed,
        )
        value = np.asarray(value)
        if self.side == "out":
            return transforms.wider_out(value, self.mapping, **options)
        power = 2 if kind == "squared" else 1
        return transforms.wider_in(value, self.mapping, power=power, **options)

    def __call__(self, shape, dtype=None):
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

    def get_config(self):
        return {
            "side": self.side,
            "noise": self.noise,
            "fill": self.fill,
            "seed": self.seed,
            "fallback": keras.initializers.serialize(self.fallback),
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

    def __init__(self, gain=1.0):
        self.gain = float(gain)

    def __call__(self, shape, dtype=None):
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

    def get_config(self):
        return {"gain": self.gain}
