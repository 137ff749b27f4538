"""Public model operations: `widen`, `deepen`, their composition, and a checker."""

import dataclasses

import keras
import numpy as np

from keras_net2net.surgery import handlers as H
from keras_net2net.surgery.plan import apply_plan
from keras_net2net.surgery.plan import plan_deepen
from keras_net2net.surgery.plan import plan_widen


@dataclasses.dataclass(frozen=True)
class Widen:
    """A request to widen one layer (see `widen` for the arguments)."""

    layer: str
    units: int
    method: str = H.NET2WIDER
    noise: float = 0.0
    seed: int = None

    def plan(self, model):
        return plan_widen(
            model,
            self.layer,
            self.units,
            method=self.method,
            noise=self.noise,
            seed=self.seed,
        )


@dataclasses.dataclass(frozen=True)
class Deepen:
    """A request to insert an identity layer (see `deepen` for the arguments)."""

    after: str
    method: str = H.IDENTITY
    kernel_size: object = None
    seed: int = None
    name: str = None

    def plan(self, model):
        return plan_deepen(
            model,
            self.after,
            method=self.method,
            kernel_size=self.kernel_size,
            seed=self.seed,
            name=self.name,
        )


@dataclasses.dataclass
class GrowthResult:
    """What `apply_operations` built.

    Attributes:
        model: the grown model.
        descriptions: one line per operation.
        origins: ``id(new variable)`` -> ``(old variable or None, transforms)``
            where ``transforms`` is the list of `Net2WiderInit` that turned
            the old variable into the new one (empty: copied or shared).
    """

    model: keras.Model
    descriptions: list
    origins: dict


def apply_operations(model, operations, *, reuse_layers=False, name_failures=False):
    """Apply several `Widen`/`Deepen` operations in order, as one growth.

    Every operation is planned (and so validated) on the model as the previous
    operations left it.

    Args:
        model: a built Sequential or Functional model.
        operations: list of `Widen`/`Deepen`.
        reuse_layers: share unchanged layers with ``model`` (in-place growth)
            instead of cloning them. Defaults to False.
        name_failures: prefix an error with the operation that raised it.
            Defaults to False.

    Returns:
        A `GrowthResult`.
    """
    origins = {id(v): (v, []) for v in model.weights}
    current, descriptions = model, []
    for operation in operations:
        if not isinstance(operation, (Widen, Deepen)):
            raise TypeError(
                "Growth operations must be keras_net2net.Widen or Deepen. "
                f"Received: {operation!r} of type {type(operation).__name__}"
            )
        try:
            plan = operation.plan(current)
            current, pairs = apply_plan(current, plan, reuse_layers=reuse_layers)
        except (ValueError, TypeError) as error:
            if not name_failures:
                raise
            raise type(error)(f"{operation} failed: {error}") from error
        descriptions.append(plan.description)
        new_origins = {}
        for layer in current.layers:
            old = pairs.get(id(layer))
            old_vars = {v.name: v for v in old.weights} if old is not None else {}
            change = plan.changes.get(layer.name)
            for variable in layer.weights:
                if layer is old or old is None:
                    new_origins[id(variable)] = origins.get(id(variable), (None, []))
                    continue
                source, chain = origins[id(old_vars[variable.name])]
                init = change.initializers.get(variable.name) if change else None
                new_origins[id(variable)] = (
                    source,
                    chain + [init] if init is not None else chain,
                )
        origins = new_origins
    return GrowthResult(current, descriptions, origins)


def widen(model, layer, units, *, method=H.NET2WIDER, noise=0.0, seed=None):
    """Return a copy of ``model`` in which ``layer`` has ``units`` units.

    Net2WiderNet: the new units copy randomly chosen old units, and every
    consumer of the layer's output (found through BatchNormalization, Dropout,
    activations, pooling, Flatten and global pooling) divides the incoming
    weights of each copied unit by its number of copies, so the new model
    computes the same function (exactly, with ``noise=0``). All other weights
    are copied. The input model is not modified.

    Example:

    ```python
    wider = keras_net2net.widen(model, "fc1", 128)
    keras_net2net.max_output_difference(model, wider, x)  # ~1e-7
    ```

    Args:
        model: a built Sequential or Functional model.
        layer: name of a Dense/Conv1D/Conv2D/Conv3D layer, or the layer.
        units: the new width (``units`` for Dense, ``filters`` for Conv);
            must be larger than the current one.
        method: ``"net2wider"`` (copy units) or ``"random-pad"`` (the
            baseline: random new units). Defaults to ``"net2wider"``.
        noise: symmetry-breaking noise added to the incoming weights of the
            new copies, relative to the kernel's standard deviation, so that
            copies are no longer identical; it changes the function slightly.
            0 preserves the function exactly. Defaults to 0.
        seed: integer seed of the mapping and the noise. Defaults to None.

    Returns:
        A new model of the same kind (Sequential or Functional), compiled like
        ``model`` (with a fresh optimizer) if ``model`` was compiled.

    Raises:
        ValueError: naming the layer, if the layer is unknown, not wider, not
            widenable, or feeds a layer type that cannot absorb new units.
    """
    return apply_operations(
        model, [Widen(layer, units, method=method, noise=noise, seed=seed)]
    ).model


def deepen(model, after, *, method=H.IDENTITY, kernel_size=None, seed=None, name=None):
    """Return a copy of ``model`` with a new layer inserted after ``after``.

    Net2DeeperNet: the new layer is of the same kind as ``after`` (Dense with
    the same units and activation; Conv with the same filters and activation,
    stride 1 and ``same`` padding) and initialised to the identity, so the
    function is unchanged when ``after``'s activation is ReLU or linear.

    Example:

    ```python
    deeper = keras_net2net.deepen(model, after="conv2")
    ```

    Args:
        model: a built Sequential or Functional model.
        after: name of a Dense/Conv1D/Conv2D/Conv3D layer, or the layer.
        method: ``"identity"`` or ``"random"`` (Glorot-uniform, the baseline).
            Defaults to ``"identity"``.
        kernel_size: kernel size of a new Conv layer (odd). Defaults to
            ``after``'s kernel size.
        seed: seed of the random initialisation. Defaults to None.
        name: name of the new layer. Defaults to ``"<after>_deeper"`` (with a
            counter if taken).

    Returns:
        A new model of the same kind, compiled like ``model`` (fresh optimizer)
        if ``model`` was compiled.

    Raises:
        ValueError: naming the layer, if it is unknown, not Dense/Conv, has a
            non-idempotent activation (identity method), or an even kernel.
    """
    operation = Deepen(
        after, method=method, kernel_size=kernel_size, seed=seed, name=name
    )
    return apply_operations(model, [operation]).model


def max_output_difference(model_a, model_b, x):
    """Largest absolute difference between two models' outputs on ``x``.

    Both models run in inference mode (``training=False``).

    Args:
        model_a: a Keras model.
        model_b: a Keras model with the same inputs and outputs structure.
        x: input batch (array or structure of arrays).

    Returns:
        A Python float.
    """
    outputs_a = keras.tree.flatten(model_a(x, training=False))
    outputs_b = keras.tree.flatten(model_b(x, training=False))
    if len(outputs_a) != len(outputs_b):
        raise ValueError(
            f"The models have different numbers of outputs: {len(outputs_a)} "
            f"and {len(outputs_b)}."
        )
    largest = 0.0
    for a, b in zip(outputs_a, outputs_b):
        a = np.asarray(keras.ops.convert_to_numpy(a), dtype=np.float64)
        b = np.asarray(keras.ops.convert_to_numpy(b), dtype=np.float64)
        if a.shape != b.shape:
            raise ValueError(f"Output shapes differ: {a.shape} and {b.shape}.")
        largest = max(largest, float(np.max(np.abs(a - b))) if a.size else 0.0)
    return largest
