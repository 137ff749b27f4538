"""Growth requests: what to grow, as plain data.

`Widen` and `Deepen` say what a growth should do; they know nothing of how it
is planned or built. `keras_net2net.surgery.dispatch.plan_request` plans a
request against a model; `widen`, `deepen`, `grow_in_place`, `GrowModel` and
the tuner all go through it. This module is on the bottom floor of the
package: it imports nothing of keras-net2net but argument validation, so every
other layer can use it.

The option values are constants here too, so that callers can name them
(``Widen("fc1", 128, method=RANDOM_PAD)``).
"""

from __future__ import annotations

import dataclasses
import numbers
import warnings
from collections.abc import Sequence
from typing import Any
from typing import Union

import keras
import numpy as np

from keras_net2net._types import LayerRef
from keras_net2net._validation import check_bool
from keras_net2net._validation import check_choice
from keras_net2net._validation import check_int
from keras_net2net._validation import check_name
from keras_net2net._validation import check_real
from keras_net2net._validation import check_seed

# `Widen(method=...)`: copy channels (Net2WiderNet) or add random ones.
NET2WIDER = "net2wider"
RANDOM_PAD = "random-pad"
WIDEN_METHODS = (NET2WIDER, RANDOM_PAD)
# `Widen(noise_on=...)`: where symmetry-breaking noise goes: the copies'
# incoming weights, their outgoing weights (the consumers), or the consumers'
# weights with noise that sums to zero over each unit's copies (exact).
COPIES = "copies"
CONSUMERS = "consumers"
PAIRED = "paired"
NOISE_TARGETS = (COPIES, CONSUMERS, PAIRED)
# `Deepen(method=...)`: an identity layer (Net2DeeperNet) or a random one (a
# copied block with nothing zeroed).
IDENTITY = "identity"
RANDOM = "random"
DEEPEN_METHODS = (IDENTITY, RANDOM)
# `Deepen(init=...)` of a copied residual block: the copied block's weights, or
# fresh ones (with method="identity" the branch output starts at zero either way).
COPY = "copy"
BLOCK_INITS = (COPY, RANDOM)
# `Stack(order=...)`: the whole stack repeated (1, ..., L, 1, ..., L) or each
# block followed by its copies (1, 1, 2, 2, ...).
STACK = "stack"
INTERLEAVE = "interleave"
STACK_ORDERS = (STACK, INTERLEAVE)
# `Stack(copies=...)`: each copy's output projections zeroed (it starts as the
# identity: function-preserving) or the trained blocks copied as they are
# (G_stack: the function changes).
ZEROED = "zeroed"
KEPT = "kept"
STACK_COPIES = (ZEROED, KEPT)


def _layer_name(value, name, owner):
    if isinstance(value, keras.Operation):
        return value.name
    return check_name(value, name, owner=owner, allow_none=False)


def _after(value, owner):
    """``Deepen.after``: one layer's name, or a tuple of block names."""
    if not isinstance(value, (list, tuple)):
        return _layer_name(value, "after", owner)
    if not value:
        raise ValueError(
            f"{owner}(`after`) names no layer: give a layer's name, or a list "
            f"of a KerasHub model's block names. Received: after={value!r}"
        )
    return tuple(_layer_name(item, "after", owner) for item in value)


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
class Request:
    """The base class of growth requests: plain data, checked when made.

    A request says what to grow, never how: `keras_net2net.surgery.dispatch`
    finds the planner registered for its class
    (`keras_net2net.surgery.dispatch.register_planner`). A new growth
    operator is a subclass (a frozen dataclass) with its planner.
    """

    def targets(self) -> tuple[str, ...]:
        """The names of the layers (or config entries) the request grows."""
        raise NotImplementedError(
            f"{type(self).__name__} must say which layers it grows (targets)."
        )


@dataclasses.dataclass(frozen=True)
class Widen(Request):
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
    method: str = NET2WIDER
    noise: float = 0.0
    seed: int | None = None
    noise_on: str = COPIES
    pad_std: float | None = None
    pad_bias: float = 0.0

    def __post_init__(self) -> None:
        owner = "Widen"
        object.__setattr__(self, "layer", _layer_name(self.layer, "layer", owner))
        units = self.units
        integer = isinstance(units, numbers.Integral) and not isinstance(
            units, (bool, np.bool_)
        )
        if not integer or units < 1:
            raise (ValueError if integer else TypeError)(
                f"{owner}(`units`) for layer '{self.layer}' must be a positive "
                f"integer (the new width). Received: units={units!r}"
            )
        object.__setattr__(self, "units", int(units))
        check_choice(self.method, WIDEN_METHODS, "method", owner=owner)
        object.__setattr__(
            self, "noise", check_real(self.noise, "noise", minimum=0.0, owner=owner)
        )
        object.__setattr__(self, "seed", check_seed(self.seed, owner=owner))
        check_choice(self.noise_on, NOISE_TARGETS, "noise_on", owner=owner)
        if self.pad_std is not None:
            object.__setattr__(
                self,
                "pad_std",
                check_real(self.pad_std, "pad_std", positive=True, owner=owner),
            )
        object.__setattr__(
            self, "pad_bias", check_real(self.pad_bias, "pad_bias", owner=owner)
        )

    def targets(self) -> tuple[str, ...]:
        """``(layer,)``; ``"block/part"`` names a part of ``block``."""
        return (self.layer,)


@dataclasses.dataclass(frozen=True)
class Deepen(Request):
    """A request to deepen after one layer (see `deepen` for the arguments).

    Arguments are checked when the request is made. A layer object is
    recorded by its name; a list of a KerasHub model's block names (identity
    copies after each, with the default options) as a tuple of names.

    Example:

    ```python
    keras_net2net.grow_in_place(model, [keras_net2net.Deepen(after="fc1")])
    ```
    """

    after: LayerRef | tuple[str, ...]
    method: str = IDENTITY
    kernel_size: int | tuple[int, ...] | None = None
    seed: int | None = None
    name: str | None = None
    residual: bool = False
    init: str = COPY
    blocks: int | None = None

    def __post_init__(self) -> None:
        owner = "Deepen"
        object.__setattr__(self, "after", _after(self.after, owner))
        check_choice(self.method, DEEPEN_METHODS, "method", owner=owner)
        object.__setattr__(
            self, "kernel_size", _check_kernel_size(self.kernel_size, owner)
        )
        object.__setattr__(self, "seed", check_seed(self.seed, owner=owner))
        check_name(self.name, "name", owner=owner)
        object.__setattr__(
            self, "residual", check_bool(self.residual, "residual", owner=owner)
        )
        check_choice(self.init, BLOCK_INITS, "init", owner=owner)
        if self.blocks is not None:
            blocks = check_int(self.blocks, "blocks", minimum=1, owner=owner)
            object.__setattr__(self, "blocks", blocks)

    def targets(self) -> tuple[str, ...]:
        """``(after,)``, or the block names of a list."""
        return self.after if isinstance(self.after, tuple) else (self.after,)


@dataclasses.dataclass(frozen=True)
class Stack(Request):
    """A request to grow a model's stack of residual blocks by a whole factor.

    The depth-stacking growth operator (G_stack, Du et al. 2024; progressive
    stacking, Gong et al. 2019): every block of the stack gets ``factor - 1``
    copies of its trained weights. Of a KerasHub model of a known family, the
    stack is its Transformer layers (``num_layers`` x ``factor``, class kept);
    of a Functional model, the run of residual blocks that ends at the last
    residual ``Add`` (each block's input the previous block's ``Add``, as in
    a pre-LN Transformer), a Transformer's attention and feed-forward
    sub-blocks moving together.

    ``copies="zeroed"`` is function-preserving (each copy starts as the
    identity); ``copies="kept"`` is G_stack's operator, which changes the
    function (the copies add their trained branches again) and trains best
    (see the guide "Growing to save compute").

    Example:

    ```python
    # 1, 2, ..., L, 1, 2, ..., L: the depth doubled, the function kept.
    keras_net2net.grow_in_place(model, keras_net2net.Stack(2))
    # G_stack: four times as deep, trained copies kept as they are.
    GrowModel({AtStep(300): Stack(4, copies="kept")})
    ```

    Args:
        factor: the depth multiplier, an integer >= 2.
        order: ``"stack"`` (the whole stack repeated: 1, ..., L, 1, ..., L)
            or ``"interleave"`` (each block followed by its copies: 1, 1, 2,
            2, ...). Defaults to ``"stack"``.
        copies: ``"zeroed"`` (each copy's branch output projections zeroed:
            exact) or ``"kept"`` (exact copies: not function-preserving).
            Defaults to ``"zeroed"``.
    """

    factor: int = 2
    order: str = STACK
    copies: str = ZEROED

    def __post_init__(self) -> None:
        owner = "Stack"
        object.__setattr__(
            self, "factor", check_int(self.factor, "factor", minimum=2, owner=owner)
        )
        check_choice(self.order, STACK_ORDERS, "order", owner=owner)
        check_choice(self.copies, STACK_COPIES, "copies", owner=owner)

    @property
    def exact(self) -> bool:
        """Whether the request keeps the function (``copies="zeroed"``)."""
        return self.copies == ZEROED

    def targets(self) -> tuple[str, ...]:
        """``()``: the whole stack grows, not a named layer."""
        return ()


@dataclasses.dataclass(frozen=True)
class Upcycle(Request):
    """A request to turn a dense KerasHub language model into a mixture of experts.

    Sparse upcycling (Komatsuzaki et al. 2022): every expert of a sparse
    block starts as a copy of the dense block's feed-forward network, the
    router at small random values. The MoE classes' routers normalise the
    chosen experts' probabilities, so copies of one network compute exactly
    that network whatever the router says: the upcycled model computes what
    the dense one did. A ``LlamaCausalLM`` or ``MistralCausalLM`` becomes a
    ``MixtralCausalLM``, a ``QwenCausalLM`` a ``QwenMoeCausalLM``, a
    ``Qwen3CausalLM`` a ``Qwen3MoeCausalLM`` (see `upcycle`).

    Example:

    ```python
    moe = keras_net2net.upcycle(llama_causal_lm, num_experts=8, top_k=2)
    GrowModel({AtStep(1000): keras_net2net.Upcycle(8)})  # inside fit
    ```

    Args:
        num_experts: experts per sparse block, an integer >= 2.
        top_k: experts each token is routed to, 1 <= top_k <= num_experts.
            Defaults to 2.
        every: every ``every``-th block becomes sparse (blocks ``i`` with
            ``(i + 1) % every == 0``), the others stay dense, where the target
            class can tell them apart (Qwen3-MoE). Defaults to 1 (all blocks).
        init_stddev: the standard deviation of the new weights' normal
            initial values (the router; Qwen-MoE's shared expert and its
            gate). Defaults to 0.02.
        noise: noise on each expert's copy of the weights, relative to each
            kernel's standard deviation, to make the experts differ from the
            start (NOT function-preserving when > 0). Defaults to 0 (exact).
        shared_expert_dim: the width of Qwen-MoE's shared expert, which
            starts silent (its output projection zero). Defaults to None
            (the dense feed-forward width).
        seed: the seed of the router's (and the noise's) values. Defaults
            to None.
    """

    num_experts: int
    top_k: int = 2
    every: int = 1
    init_stddev: float = 0.02
    noise: float = 0.0
    shared_expert_dim: int | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        owner = "Upcycle"
        experts = check_int(self.num_experts, "num_experts", minimum=2, owner=owner)
        top_k = check_int(self.top_k, "top_k", minimum=1, owner=owner)
        if top_k > experts:
            raise ValueError(
                f"{owner}(`top_k`) must be at most num_experts={experts}. "
                f"Received: top_k={top_k}"
            )
        object.__setattr__(self, "num_experts", experts)
        object.__setattr__(self, "top_k", top_k)
        object.__setattr__(
            self, "every", check_int(self.every, "every", minimum=1, owner=owner)
        )
        object.__setattr__(
            self,
            "init_stddev",
            check_real(self.init_stddev, "init_stddev", positive=True, owner=owner),
        )
        object.__setattr__(
            self, "noise", check_real(self.noise, "noise", minimum=0.0, owner=owner)
        )
        if self.shared_expert_dim is not None:
            object.__setattr__(
                self,
                "shared_expert_dim",
                check_int(
                    self.shared_expert_dim, "shared_expert_dim", minimum=1, owner=owner
                ),
            )
        object.__setattr__(self, "seed", check_seed(self.seed, "seed", owner=owner))

    @property
    def exact(self) -> bool:
        """Whether the request keeps the function (no noise on the experts)."""
        return self.noise == 0

    def targets(self) -> tuple[str, ...]:
        """``()``: every sparse block grows, not a named layer."""
        return ()


Requests = Union[Request, Sequence[Request]]  # noqa: UP007 - a runtime alias


# A keyword argument not given (`renamed_requests`).
MISSING: Any = object()


def renamed_requests(requests: Any, operations: Any, function: str) -> Any:
    """``requests``, or the value given by its old keyword ``operations``.

    ``operations=`` was the keyword's name before 0.2.0 (when "operations"
    meant four things); it still works, with a DeprecationWarning.

    Raises:
        TypeError: both keywords, or neither, were given.
    """
    if operations is MISSING:
        if requests is MISSING:
            raise TypeError(f"{function}() missing the argument `requests`.")
        return requests
    if requests is not MISSING:
        raise TypeError(
            f"{function}() got both `requests` and its old name `operations`; "
            "pass `requests` only."
        )
    warnings.warn(
        f"{function}(operations=...) is deprecated; the keyword is now "
        f"`requests`: {function}(model, requests=...).",
        DeprecationWarning,
        stacklevel=3,
    )
    return operations


def as_requests(requests: Requests, argument: str = "requests") -> list[Request]:
    """A list of requests (`Widen`, `Deepen`, `Stack`, ...) from one or a list.

    Raises:
        TypeError: ``requests`` is neither (the message names ``argument``).
    """
    if isinstance(requests, Request):
        return [requests]
    if not isinstance(requests, (list, tuple)):
        raise TypeError(
            f"`{argument}` must be a Widen, a Deepen, a Stack, or a list of them. "
            f"Received: {requests!r} of type {type(requests).__name__}"
        )
    for request in requests:
        if not isinstance(request, Request):
            raise TypeError(
                f"`{argument}` must contain only growth requests (keras_net2net."
                "Widen, Deepen, Stack). "
                f"Received: {request!r} of type {type(request).__name__}"
            )
    return list(requests)
