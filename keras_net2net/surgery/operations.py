"""Public model operations: `widen`, `deepen`, their composition, and inspection."""

import contextlib
import dataclasses
import numbers
from typing import Any

import keras
import numpy as np

from keras_net2net._types import LayerRef
from keras_net2net._types import Model
from keras_net2net._types import Operations
from keras_net2net._validation import check_bool
from keras_net2net._validation import check_choice
from keras_net2net._validation import check_int
from keras_net2net._validation import check_name
from keras_net2net._validation import check_real
from keras_net2net._validation import check_seed
from keras_net2net.surgery import handlers as H
from keras_net2net.surgery.apply import apply_plan
from keras_net2net.surgery.graph import LayerGraph
from keras_net2net.surgery.groups import ChannelGroup
from keras_net2net.surgery.groups import find_group
from keras_net2net.surgery.plan import BLOCK_INITS
from keras_net2net.surgery.plan import COPY
from keras_net2net.surgery.plan import Plan
from keras_net2net.surgery.plan import plan_deepen
from keras_net2net.surgery.plan import plan_widen
from keras_net2net.transforms import WidthTransform


def _layer_name(value, name, owner):
    if isinstance(value, keras.Operation):
        return value.name
    return check_name(value, name, owner=owner, allow_none=False)


def _check_kernel_size(kernel_size, owner):
    if kernel_size is None:
        return None
    if isinstance(kernel_size, numbers.Integral) and not isinstance(
        kernel_size, (bool, np.bool_)
    ):
        return check_int(kernel_size, "kernel_size", minimum=1, owner=owner)
    if isinstance(kernel_size, (tuple, list)) and kernel_size:
        return tuple(
            check_int(k, "kernel_size", minimum=1, owner=owner) for k in kernel_size
        )
    raise TypeError(
        f"{owner}(`kernel_size`) must be None, a positive integer or a non-empty "
        f"tuple of positive integers. Received: kernel_size={kernel_size!r}"
    )


@dataclasses.dataclass(frozen=True)
class Widen:
    """A request to widen one layer (see `widen` for the arguments).

    Arguments are checked when the request is made. A layer object is
    recorded by its name (a schedule refers to the layer as it will be then).

    Example:

    ```python
    keras_net2net.grow_in_place(model, [keras_net2net.Widen("fc1", 128)])
    ```
    """

    layer: LayerRef
    units: int
    method: str = H.NET2WIDER
    noise: float = 0.0
    seed: int | None = None
    noise_on: str = H.COPIES
    pad_std: float | None = None
    pad_bias: float = 0.0

    def __post_init__(self) -> None:
        owner = "Widen"
        object.__setattr__(self, "layer", _layer_name(self.layer, "layer", owner))
        object.__setattr__(
            self, "units", check_int(self.units, "units", minimum=1, owner=owner)
        )
        check_choice(self.method, H.WIDEN_METHODS, "method", owner=owner)
        object.__setattr__(
            self, "noise", check_real(self.noise, "noise", minimum=0.0, owner=owner)
        )
        object.__setattr__(self, "seed", check_seed(self.seed, owner=owner))
        check_choice(self.noise_on, H.NOISE_TARGETS, "noise_on", owner=owner)
        if self.pad_std is not None:
            object.__setattr__(
                self,
                "pad_std",
                check_real(self.pad_std, "pad_std", positive=True, owner=owner),
            )
        object.__setattr__(
            self, "pad_bias", check_real(self.pad_bias, "pad_bias", owner=owner)
        )

    def plan(self, model: Model) -> Plan:
        return plan_widen(
            model,
            self.layer,
            self.units,
            method=self.method,
            noise=self.noise,
            seed=self.seed,
            noise_on=self.noise_on,
            pad_std=self.pad_std,
            pad_bias=self.pad_bias,
        )


@dataclasses.dataclass(frozen=True)
class Deepen:
    """A request to deepen after one layer (see `deepen` for the arguments).

    Arguments are checked when the request is made. A layer object is
    recorded by its name.

    Example:

    ```python
    keras_net2net.grow_in_place(model, [keras_net2net.Deepen(after="fc1")])
    ```
    """

    after: LayerRef
    method: str = H.IDENTITY
    kernel_size: int | tuple[int, ...] | None = None
    seed: int | None = None
    name: str | None = None
    residual: bool = False
    init: str = COPY
    blocks: int = 1

    def __post_init__(self) -> None:
        owner = "Deepen"
        object.__setattr__(self, "after", _layer_name(self.after, "after", owner))
        check_choice(self.method, H.DEEPEN_METHODS, "method", owner=owner)
        object.__setattr__(
            self, "kernel_size", _check_kernel_size(self.kernel_size, owner)
        )
        object.__setattr__(self, "seed", check_seed(self.seed, owner=owner))
        check_name(self.name, "name", owner=owner)
        object.__setattr__(
            self, "residual", check_bool(self.residual, "residual", owner=owner)
        )
        check_choice(self.init, BLOCK_INITS, "init", owner=owner)
        object.__setattr__(
            self, "blocks", check_int(self.blocks, "blocks", minimum=1, owner=owner)
        )

    def plan(self, model: Model) -> Plan:
        return plan_deepen(
            model,
            self.after,
            method=self.method,
            kernel_size=self.kernel_size,
            seed=self.seed,
            name=self.name,
            residual=self.residual,
            init=self.init,
            blocks=self.blocks,
        )


@dataclasses.dataclass
class GrowthResult:
    """What `apply_operations` built.

    Example:

    ```python
    result = keras_net2net.grow_in_place(model, Widen("fc1", 128))
    source, transforms = result.origins[id(model.get_layer("fc1").kernel)]
    ```

    Attributes:
        model: the grown model.
        descriptions: one line per operation.
        origins: ``id(new variable)`` -> ``(old variable or None, transforms)``
            where ``transforms`` is the list of
            `keras_net2net.transforms.WidthTransform` that turned the old
            variable into the new one (empty: copied or shared; old variable
            None: a new variable).
        state_origins: as ``origins``, for the optimizer state: a copy of a
            layer (a copied residual block) starts from that layer's state.
        details: every plan's dry-run description lines.
        graphs: the intermediate models built on the way (in-place growth
            releases their graph nodes).
    """

    model: Model
    descriptions: list[str]
    origins: dict[int, tuple[Any, list[WidthTransform]]]
    state_origins: dict[int, tuple[Any, list[WidthTransform]]] = dataclasses.field(
        default_factory=dict
    )
    details: list[str] = dataclasses.field(default_factory=list)
    graphs: list[Model] = dataclasses.field(default_factory=list)


def as_operations(
    operations: Operations, argument: str = "operations"
) -> list[Widen | Deepen]:
    """A list of `Widen`/`Deepen` from one operation or a list of them."""
    if isinstance(operations, (Widen, Deepen)):
        return [operations]
    if not isinstance(operations, (list, tuple)):
        raise TypeError(
            f"`{argument}` must be a Widen, a Deepen, or a list of them. "
            f"Received: {operations!r} of type {type(operations).__name__}"
        )
    for operation in operations:
        if not isinstance(operation, (Widen, Deepen)):
            raise TypeError(
                f"`{argument}` must contain only keras_net2net.Widen or Deepen. "
                f"Received: {operation!r} of type {type(operation).__name__}"
            )
    return list(operations)


def _origins(plan, pairs, origins, state):
    """Where every variable of the new graph comes from (see `GrowthResult`).

    Returns ``(origins, state origins)``: they differ for copies of layers,
    whose weights are new (zeroed or copied) but whose optimizer state starts
    from the copied layer's.
    """
    Origins = dict[int, tuple[Any, list[WidthTransform]]]
    new_origins: Origins = {}
    new_state: Origins = {}
    for new, old in pairs:
        old_weights = list(getattr(old, "weights", [])) if old is not None else []
        entry = plan.changes.get(id(old)) if old is not None else None
        transforms, values = entry[1].by_position(old) if entry else ({}, {})
        copied_from = plan.copies.get(id(new)) if old is None else None
        # A rebuilt layer creates its variables in the same order as the old one.
        for position, variable in enumerate(getattr(new, "weights", [])):
            for base, out in ((origins, new_origins), (state, new_state)):
                if old is None:
                    out[id(variable)] = (None, [])
                    if copied_from is not None and out is new_state:
                        # A copy of a layer starts from that layer's state.
                        source = copied_from.weights[position]
                        out[id(variable)] = base.get(id(source), (None, []))
                elif new is old:
                    out[id(variable)] = base.get(id(variable), (None, []))
                elif position in values:
                    out[id(variable)] = (None, [])
                else:
                    source, chain = base.get(id(old_weights[position]), (None, []))
                    steps = list(transforms.get(position, []))
                    out[id(variable)] = (source, chain + steps)
    return new_origins, new_state


def apply_operations(
    model: Model,
    operations: Operations,
    *,
    reuse_layers: bool = False,
    name_failures: bool = False,
    compile: bool = True,
) -> GrowthResult:
    """Apply several `Widen`/`Deepen` operations in order, as one growth.

    Every operation is planned (and so validated) on the model as the previous
    operations left it. An empty list returns ``model`` itself, untouched.

    Example:

    ```python
    result = apply_operations(model, [Widen("fc1", 128), Deepen(after="fc1")])
    grown, lines = result.model, result.descriptions
    ```

    Args:
        model: a built Sequential or Functional model.
        operations: a `Widen`/`Deepen` or a list of them.
        reuse_layers: share unchanged layers with ``model`` (in-place growth)
            instead of cloning them. Defaults to False.
        name_failures: prefix an error with the operation that raised it.
            Defaults to False.
        compile: compile new models like ``model`` (see `widen`); False for
            dry runs and validation. Defaults to True.

    Returns:
        A `GrowthResult`.
    """
    operations = as_operations(operations)
    origins: dict[int, tuple[Any, list[WidthTransform]]] = {
        id(v): (v, []) for v in model.weights
    }
    state = dict(origins)
    result = GrowthResult(model, [], origins, state_origins=state)
    current = model
    for operation in operations:
        with _naming_failures(operation, name_failures):
            plan = operation.plan(current)
            new_model, pairs = apply_plan(
                current, plan, reuse_layers=reuse_layers, compile=compile
            )
        if current is not model:
            result.graphs.append(current)
        result.descriptions.append(plan.description)
        result.details.extend(plan.details)
        if not any(line == "changes:" for line in plan.details):
            result.details.append("changes:")
            result.details.extend(plan.describe_changes())
        origins, state = _origins(plan, pairs, origins, state)
        current = new_model
    result.model = current
    result.origins = origins
    result.state_origins = state
    return result


def check_operation(model: Model, operation: "Widen | Deepen") -> None:
    """Check that ``operation`` applies to ``model``, without building anything.

    Planning is where every request is checked (layers found, widths valid,
    coupling groups growable); this stops there. Use `apply_operations` when
    the grown model is needed, e.g. to check a later operation against it.

    Raises:
        ValueError, TypeError: the operation does not apply; the message
            starts with the operation.
    """
    with _naming_failures(operation, True):
        operation.plan(model)


@contextlib.contextmanager
def _naming_failures(operation, name_failures):
    try:
        yield
    except (ValueError, TypeError) as error:
        if not name_failures:
            raise
        raise type(error)(f"{operation} failed: {error}") from error


def _check_widen_args(method, noise, seed, noise_on, pad_std, pad_bias):
    check_choice(method, H.WIDEN_METHODS, "method")
    check_real(noise, "noise", minimum=0.0)
    check_seed(seed)
    check_choice(noise_on, H.NOISE_TARGETS, "noise_on")
    if pad_std is not None:
        check_real(pad_std, "pad_std", positive=True)
    check_real(pad_bias, "pad_bias")


def widen(
    model: Model,
    layer: LayerRef,
    units: int,
    *,
    method: str = H.NET2WIDER,
    noise: float = 0.0,
    seed: int | None = None,
    noise_on: str = H.COPIES,
    pad_std: float | None = None,
    pad_bias: float = 0.0,
) -> Model:
    """Return a copy of ``model`` in which ``layer``'s channels are widened.

    Net2WiderNet on the whole coupling group of ``layer`` (see
    `coupled_layers`): the new channels copy randomly chosen old ones in every
    layer that writes them (``layer`` and, through residual Adds and other
    merges, every other writer of the same channels), every layer that reads
    them divides the incoming weights of each copied channel by its number of
    copies, and per-channel parameters on the way (BatchNormalization,
    LayerNormalization, depthwise kernels, ...) are copied. The new model
    computes the same function (exactly, with ``noise=0``). All other weights
    are copied. The input model is not modified.

    Example:

    ```python
    wider = keras_net2net.widen(model, "fc1", 128)
    keras_net2net.max_output_difference(model, wider, x)  # ~1e-7
    ```

    Args:
        model: a built Sequential or Functional model.
        layer: name (or object) of a layer whose output channels to widen: a
            Dense/Conv/SeparableConv layer, or any member of a coupling
            group whose output is on the group's channels (an Add, a
            BatchNormalization, ...). A MultiHeadAttention layer gets more
            heads. ``"<layer>/<part>"`` widens one part of a composite layer:
            ``"mha/key_dim"``, ``"mha/value_dim"``, and a KerasHub
            Transformer block's ``feedforward_intermediate_dense`` or
            self-attention (heads).
        units: the new width of the channels; larger than the current one. A
            group that passes through LayerNormalization needs a multiple of
            the current width.
        method: ``"net2wider"`` (copy channels) or ``"random-pad"`` (the
            baseline: random new channels). Defaults to ``"net2wider"``.
        noise: symmetry-breaking noise, so that copies are no longer
            identical; it changes the function slightly. 0 preserves the
            function exactly. Defaults to 0.
        seed: integer seed of the mapping and the noise. Defaults to None.
        noise_on: where the noise goes: ``"copies"`` (the new copies'
            incoming weights, relative to the kernel's standard deviation) or
            ``"consumers"`` (their outgoing weights in the consumers, relative
            to the standard deviation of those weights, as the original
            Net2Net code does). Defaults to ``"copies"``.
        pad_std: for ``method="random-pad"``: the standard deviation of the
            new random kernel entries (widened layers and consumers).
            Defaults to None (each kernel's own standard deviation).
        pad_bias: for ``method="random-pad"``: the bias of the new units.
            Defaults to 0.

    Returns:
        A new model of the same kind (Sequential or Functional), compiled like
        ``model`` (with a fresh optimizer) if ``model`` was compiled.

    Raises:
        ValueError: naming the layer, if the layer is unknown, the width not
            larger, or an operation coupled with the channels cannot take part
            (unsupported type, a model output, a shared layer, ...).
    """
    _check_widen_args(method, noise, seed, noise_on, pad_std, pad_bias)
    if isinstance(layer, keras.Operation):
        target = layer
    else:
        target = check_name(layer, "layer", allow_none=False)
    plan = plan_widen(
        model,
        target,
        units,
        method=method,
        noise=noise,
        seed=seed,
        noise_on=noise_on,
        pad_std=pad_std,
        pad_bias=pad_bias,
    )
    return apply_plan(model, plan)[0]


def deepen(
    model: Model,
    after: LayerRef,
    *,
    method: str = H.IDENTITY,
    kernel_size: int | tuple[int, ...] | None = None,
    seed: int | None = None,
    name: str | None = None,
    residual: bool = False,
    init: str = COPY,
    blocks: int = 1,
) -> Model:
    """Return a copy of ``model`` that is deeper after ``after``.

    Three kinds of insertion, all function-preserving:

    * after a Dense/Conv/DepthwiseConv/SeparableConv layer (Net2DeeperNet): a
      layer of the same kind (same units/filters and activation; stride 1,
      ``same`` padding) initialised to the identity. Exact when ``after``'s
      activation is ReLU or linear.
    * after a Dense/Conv layer with ``residual=True``: a residual branch
      ``h + project(expand(h))`` whose ``project`` layer starts at zero, so it
      adds nothing at first, exactly, whatever the activations.
    * after an ``Add`` that closes a residual block ``x + f(x)``: a copy of the
      block (fresh names), whose branch output is zero (its last Dense/Conv,
      attention output projection, normalisation or LayerScale is zeroed), so
      it is exactly the identity. ``blocks=2`` copies the two consecutive
      blocks that end there (a pre-LN Transformer block: attention, then
      feed-forward).

    When ``after`` produces a model output, the output keeps its name: the
    new layer takes ``after``'s name and ``after`` is renamed to ``name``.

    Example:

    ```python
    deeper = keras_net2net.deepen(model, after="conv2")
    ```

    Args:
        model: a built Sequential or Functional model.
        after: name (or object) of the layer to insert after.
        method: ``"identity"`` or ``"random"`` (Glorot-uniform, the baseline)
            for an identity copy. Defaults to ``"identity"``.
        kernel_size: kernel size of a new Conv layer (odd). Defaults to
            ``after``'s kernel size.
        seed: seed of the random initialisation. Defaults to None.
        name: name of the new layer (a prefix for several). Defaults to
            ``"<after>_deeper"`` (``_residual``, ``_block``), with a counter if
            taken.
        residual: insert a zero-initialised residual branch instead of an
            identity layer. Defaults to False.
        init: for a copied block: ``"copy"`` (the block's weights) or
            ``"random"`` (fresh initialisation); the zeroed layer is zero
            either way. Defaults to ``"copy"``.
        blocks: how many consecutive residual blocks ending at ``after`` (an
            Add) to copy. Defaults to 1.

    Returns:
        A new model of the same kind, compiled like ``model`` (fresh optimizer)
        if ``model`` was compiled.

    Raises:
        ValueError: naming the layer, if it is unknown, of an unsupported type,
            has a non-idempotent activation (identity method), an even kernel,
            or does not close a copyable residual block.
    """
    operation = Deepen(
        after,
        method=method,
        kernel_size=kernel_size,
        seed=seed,
        name=name,
        residual=residual,
        init=init,
        blocks=blocks,
    )
    target = after if isinstance(after, keras.Operation) else operation.after
    plan = plan_deepen(
        model,
        target,
        method=method,
        kernel_size=operation.kernel_size,
        seed=seed,
        name=name,
        residual=residual,
        init=init,
        blocks=operation.blocks,
    )
    return apply_plan(model, plan)[0]


def coupled_layers(model: Model, layer: LayerRef) -> ChannelGroup:
    """The coupling group of ``layer``: every layer that a widening of it changes.

    Example:

    ```python
    group = keras_net2net.coupled_layers(resnet, "conv2_block1_0_conv")
    print(group.summary())  # writers, readers, merges, pass-throughs
    [l.name for l in group.layers()]
    ```

    Args:
        model: a built Sequential or Functional model.
        layer: name (or object) of a layer whose output channels would be
            widened (as for `widen`).

    Returns:
        A `keras_net2net.surgery.ChannelGroup`.

    Raises:
        ValueError: as `widen` does, if the channels cannot be widened.
    """
    graph = LayerGraph(model)
    target = graph.get(layer)
    handler = H.get_handler(target)
    if handler is None:
        raise H.unsupported(target, "is not a layer type keras-net2net supports.")
    node = graph.calls(target)[0]
    if handler.role_of(target, node, graph) == H.DERIVED:
        raise H.unsupported(
            target, "derives its channel layout from its inputs; it has no group."
        )
    return find_group(graph, node.outputs[0], target.name)


def describe_growth(model: Model, operations: Operations) -> str:
    """A dry run: every change that ``operations`` would make, as text.

    Nothing is changed. Operations after the first are planned on a copy of
    the model as the previous ones leave it.

    Example:

    ```python
    print(keras_net2net.describe_growth(model, keras_net2net.Widen("fc1", 128)))
    ```

    Args:
        model: a built Sequential or Functional model.
        operations: a `Widen`/`Deepen` or a list of them.

    Returns:
        A string, one block per operation.

    Raises:
        ValueError: as the operations would.
    """
    return "\n".join(apply_operations(model, operations, compile=False).details)


def max_output_difference(model_a: Model, model_b: Model, x: Any) -> float:
    """Largest absolute difference between two models' outputs on ``x``.

    Both models run in inference mode (``training=False``).

    Example:

    ```python
    wider = keras_net2net.widen(model, "fc1", 128)
    assert keras_net2net.max_output_difference(model, wider, x) < 1e-5
    ```

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
