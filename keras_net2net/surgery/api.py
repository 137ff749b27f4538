"""The public surgery functions: `widen`, `deepen`, `upcycle`, `describe_growth` and
`coupled_layers` (which return new models or descriptions, never changing
their input), and `max_output_difference` to check them."""

from typing import Any

import keras
import numpy as np

from keras_net2net._types import LayerRef
from keras_net2net._types import Model
from keras_net2net.requests import COPY
from keras_net2net.requests import MISSING
from keras_net2net.requests import Deepen
from keras_net2net.requests import Request
from keras_net2net.requests import Requests
from keras_net2net.requests import Upcycle
from keras_net2net.requests import Widen
from keras_net2net.requests import as_requests
from keras_net2net.requests import renamed_requests
from keras_net2net.surgery import handlers as H
from keras_net2net.surgery.coupling import ChannelGroup
from keras_net2net.surgery.coupling import find_group
from keras_net2net.surgery.coupling import split_below
from keras_net2net.surgery.dispatch import apply_requests
from keras_net2net.surgery.dispatch import grow
from keras_net2net.surgery.dispatch import plan_traced
from keras_net2net.surgery.dispatch import tracing
from keras_net2net.surgery.graph import LayerGraph
from keras_net2net.surgery.inline import inline_layers
from keras_net2net.surgery.inline import is_traceable


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
            the current width. A Dense whose units a Reshape splits into
            positions and channels takes its own new units, a multiple of
            the positions (the channels grow).
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
            Net2Net code does) or ``"paired"`` (the consumers' weights of
            every copied unit, the original included, with noise that sums
            to zero over the unit's copies: the function is unchanged, as
            HyperCloning does, and the copies receive different gradients,
            so they diverge under Adam). Defaults to ``"copies"``.
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
        TypeError: an argument of the wrong type (``units`` not an integer).
    """
    request = Widen(
        layer,
        units,
        method=method,
        noise=noise,
        seed=seed,
        noise_on=noise_on,
        pad_std=pad_std,
        pad_bias=pad_bias,
    )
    return _grow(model, request, layer)


def _grow(model: Model, request: Request, layer: LayerRef) -> Model:
    """The grown copy of ``model``: one request down the one growth path
    (`keras_net2net.surgery.dispatch`), compiled like ``model``."""
    target = layer if isinstance(layer, keras.Operation) else None
    return grow(model, [(request, target)]).model


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
    blocks: int | None = None,
) -> Model:
    """Return a copy of ``model`` that is deeper after ``after``.

    Three kinds of insertion, all function-preserving (with the default
    ``method="identity"``):

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
        method: ``"identity"`` (function-preserving) or ``"random"`` (the
            baseline: a Glorot-uniform layer instead of an identity one; a
            copied block or block layer with nothing zeroed, so it changes the
            function, like stacking). Not with ``residual=True``. Defaults to
            ``"identity"``.
        kernel_size: kernel size of a new Conv layer (odd). Defaults to
            ``after``'s kernel size.
        seed: seed of the random initialisation. Defaults to None.
        name: name of the new layer (a prefix for several). Defaults to
            ``"<after>_deeper"`` (``_residual``, ``_block``), with a counter if
            taken.
        residual: insert a zero-initialised residual branch instead of an
            identity layer. Defaults to False.
        init: for a copied block: ``"copy"`` (the block's weights) or
            ``"random"`` (fresh initialisation); with ``method="identity"``
            the zeroed layer is zero either way. Defaults to ``"copy"``.
        blocks: how many consecutive residual blocks ending at ``after`` (an
            Add) to copy. Defaults to None: the whole block that ends there,
            which is 2 in a pre-LN Transformer (the feed-forward sub-block
            and the attention sub-block right before it) and 1 otherwise.

    Returns:
        A new model of the same kind, compiled like ``model`` (fresh optimizer)
        if ``model`` was compiled.

    Raises:
        ValueError: naming the layer, if it is unknown, of an unsupported type,
            has a non-idempotent activation (identity method), an even kernel,
            or does not close a copyable residual block.
        TypeError: an argument of the wrong type.
    """
    request = Deepen(
        after,
        method=method,
        kernel_size=kernel_size,
        seed=seed,
        name=name,
        residual=residual,
        init=init,
        blocks=blocks,
    )
    return _grow(model, request, after)


def upcycle(
    model: Model,
    num_experts: int,
    top_k: int = 2,
    *,
    every: int = 1,
    init_stddev: float = 0.02,
    noise: float = 0.0,
    shared_expert_dim: int | None = None,
    seed: int | None = None,
) -> Model:
    """Return a mixture-of-experts copy of a dense KerasHub language model.

    Sparse upcycling (Komatsuzaki et al. 2022): every expert starts as a copy
    of the dense block's feed-forward network, the router at small random
    values; since the MoE classes normalise the chosen experts'
    probabilities, the upcycled model computes exactly what the dense one did
    (with ``noise=0``). Attention, norms and embeddings are carried as they
    are. ``LlamaCausalLM``/``MistralCausalLM`` become ``MixtralCausalLM``,
    ``QwenCausalLM`` a ``QwenMoeCausalLM`` (norm_top_k_prob on, its shared
    expert starting silent), ``Qwen3CausalLM`` a ``Qwen3MoeCausalLM``; a
    bare backbone becomes the MoE backbone. To carry the optimizer's state
    (each expert's from the dense network's), upcycle in place:
    ``grow_in_place(lm, Upcycle(8))`` or ``GrowModel`` with an `Upcycle`.

    Example:

    ```python
    moe = keras_net2net.upcycle(llama_causal_lm, num_experts=8, top_k=2)
    type(moe).__name__  # 'MixtralCausalLM'
    ```

    Args:
        model: a dense KerasHub causal LM (or its backbone) of a family that
            has a MoE class.
        num_experts: experts per sparse block, an integer >= 2.
        top_k: experts each token is routed to. Defaults to 2.
        every: every ``every``-th block becomes sparse, the others stay
            dense (Qwen3-MoE only; the other MoE classes make every block
            sparse). Defaults to 1.
        init_stddev: standard deviation of the router's (and Qwen-MoE's
            shared expert's) normal initial values. Defaults to 0.02.
        noise: noise on the experts' copies, relative to each kernel's
            standard deviation (NOT function-preserving when > 0). Defaults
            to 0.
        shared_expert_dim: Qwen-MoE's shared expert width. Defaults to None
            (the dense feed-forward width).
        seed: seed of the new values. Defaults to None.

    Returns:
        The MoE model, compiled like ``model`` (fresh optimizer) if ``model``
        was compiled.

    Raises:
        ValueError: a model with no MoE class, or a setting the MoE class
            cannot hold exactly (named, with why).
    """
    request = Upcycle(
        num_experts,
        top_k,
        every=every,
        init_stddev=init_stddev,
        noise=noise,
        shared_expert_dim=shared_expert_dim,
        seed=seed,
    )
    return grow(model, [(request, None)]).model


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
            widened (as for `widen`). For a Dense whose units a Reshape
            splits into positions and channels, the group of those channels
            (its ``width`` counts channels, not the Dense's units).

    Returns:
        A `keras_net2net.surgery.ChannelGroup`.

    A subclassed layer on the way (or holding ``layer``) is traced into its
    layers, as `widen` does; the group then names the layers of its trace.

    Raises:
        ValueError: as `widen` does, if the channels cannot be widened.
    """
    target = layer.split("/", 1)[0] if isinstance(layer, str) else layer
    return tracing(model, lambda current: _group(current, layer), [target])[0]


def _group(model: Model, layer: LayerRef) -> ChannelGroup:
    graph = LayerGraph(model)
    target = graph.get(layer)
    handler = H.get_handler(target)
    if handler is None:
        raise H.unsupported(target, "is not a layer type keras-net2net supports.")
    node = graph.calls(target)[0]
    if handler.at(target, node, graph).role == H.LAYOUT:
        raise H.unsupported(
            target, "derives its channel layout from its inputs; it has no group."
        )
    split = split_below(graph, node)
    if split is not None:  # its units are the channels at each position
        return find_group(graph, split[0], target.name, axis=split[1])
    return find_group(graph, node, target.name)


def trace_layers(model: Model, layers: Any = None) -> Model:
    """A model with subclassed layers replaced by the graph of their ``call``.

    `widen`, `deepen` and `grow_in_place` do this on their own for a
    subclassed layer (one without a handler) on a growth's path or holding
    its target; this shows what they see. Each traced layer becomes a
    Functional model with its name, made of its sublayers and the
    `keras.ops` calls of its ``call``; every layer is shared with ``model``.
    The result saves and reloads without the subclassed classes.

    Example:

    ```python
    plain = keras_net2net.trace_layers(text_classifier)
    plain.get_layer("transformer_block").summary()  # its attention, norms, ffn
    ```

    Args:
        model: a built Sequential or Functional model.
        layers: the subclassed layers (objects or names) to trace. Defaults to
            None: every subclassed layer without a handler that traces.

    Returns:
        A new model (``model`` itself if there is nothing to trace).

    Raises:
        ValueError: naming a given layer that cannot be traced (Python
            control flow on tensor values, a variable of its own, a sublayer
            called on a value computed without the layer's inputs).
    """
    graph = LayerGraph(model)
    if layers is None:
        chosen = [op for op in graph.layers if is_traceable(model, op)]
    else:
        listed = layers if isinstance(layers, (list, tuple)) else [layers]
        chosen = [graph.get(layer, argument="layers") for layer in listed]
    return inline_layers(model, chosen) if chosen else model


def describe_growth(
    model: Model, requests: Requests = MISSING, *, operations: Requests = MISSING
) -> str:
    """A dry run: every change that ``requests`` would make, as text.

    Nothing is changed, and the last request's model is not built: each
    request is planned (where every check happens) on a copy of the model
    as the previous ones leave it.

    Example:

    ```python
    print(keras_net2net.describe_growth(model, keras_net2net.Widen("fc1", 128)))
    ```

    Args:
        model: a built Sequential or Functional model.
        requests: a `Widen`/`Deepen` or a list of them.
        operations: the old name of ``requests`` (deprecated).

    Returns:
        A string, one block per request.

    Raises:
        ValueError: as the requests would.
    """
    requests = renamed_requests(requests, operations, "describe_growth")
    requests = as_requests(requests)
    if not requests:
        return ""
    before = apply_requests(model, requests[:-1], compile=False)
    # Traced like the growth itself (a subclassed layer in the way).
    last = plan_traced(before.model, requests[-1])[0]
    return "\n".join(before.details + last.describe())


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
