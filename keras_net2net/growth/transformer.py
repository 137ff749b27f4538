"""Plain-Keras Transformers grown to a target configuration, in stages.

A Transformer written with the Functional API (``MultiHeadAttention``,
``Dense`` feed-forward layers, residual ``Add``s, as on keras.io) has no
config to grow; its growth is a list of `Widen`/`Deepen` requests naming its
layers, and the layers of a later stage exist only once the earlier stages
have run. `transformer_config` reads the configuration of such a model in
KerasHub's vocabulary (``hidden_dim``, ``num_heads``, ``intermediate_dim``,
``num_layers``) and `transformer_schedule` writes the `GrowModel` schedule
that grows it to target configurations at given moments.

A block is recognised as a residual branch holding one ``MultiHeadAttention``
(the attention sub-block) followed by a residual branch holding exactly two
``Dense`` layers (the feed-forward sub-block); normalisation, dropout and
activation layers may sit anywhere in the branches.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import keras

from keras_net2net._types import Model
from keras_net2net._validation import check_choice
from keras_net2net._validation import check_int
from keras_net2net._validation import check_real
from keras_net2net._validation import check_seed
from keras_net2net.growth.schedule import Trigger
from keras_net2net.requests import INTERLEAVE
from keras_net2net.requests import KEPT
from keras_net2net.requests import STACK
from keras_net2net.requests import STACK_COPIES
from keras_net2net.requests import STACK_ORDERS
from keras_net2net.requests import ZEROED
from keras_net2net.requests import Deepen
from keras_net2net.requests import Request
from keras_net2net.requests import Stack
from keras_net2net.requests import Widen
from keras_net2net.surgery import apply_requests
from keras_net2net.surgery import check_request
from keras_net2net.surgery import coupled_layers
from keras_net2net.surgery.graph import LayerGraph
from keras_net2net.surgery.handlers.merging import is_residual_add
from keras_net2net.surgery.plan.blocks import residual_branch
from keras_net2net.surgery.plan.stack import stack_ends

CONFIG_KEYS = ("hidden_dim", "num_heads", "intermediate_dim", "num_layers")
METHODS = ("net2net", "random")
L = keras.layers


@dataclasses.dataclass(frozen=True)
class TransformerBlock:
    """The layers of one Transformer block, by name.

    Attributes:
        attention: the ``MultiHeadAttention`` layer.
        ffn_in: the feed-forward branch's first ``Dense`` (its width is
            ``intermediate_dim``).
        ffn_out: the feed-forward branch's second ``Dense`` (it writes the
            residual stream).
        end: the ``Add`` that closes the feed-forward branch (the block's end).
    """

    attention: str
    ffn_in: str
    ffn_out: str
    end: str


def transformer_blocks(model: Model) -> list[TransformerBlock]:
    """The Transformer blocks of a Functional model, in graph order.

    Args:
        model: a built Functional (or Sequential) Keras model.

    Returns:
        A list of `TransformerBlock`.

    Raises:
        ValueError: if the model has no block of the recognised form.
    """
    graph = LayerGraph(model)
    blocks, attention = [], None
    for node in graph.nodes:
        if not is_residual_add(node.op) or getattr(node.op, "name", None) is None:
            continue
        branch = residual_branch(graph, node)
        if branch is None:
            attention = None
            continue
        mha = [
            n.op for n in branch if isinstance(n.op, keras.layers.MultiHeadAttention)
        ]
        dense = [n.op for n in branch if isinstance(n.op, keras.layers.Dense)]
        if len(mha) == 1 and not dense:
            attention = mha[0]
        elif attention is not None and not mha and len(dense) == 2:
            blocks.append(
                TransformerBlock(
                    attention.name, dense[0].name, dense[1].name, node.op.name
                )
            )
            attention = None
        else:
            attention = None
    if not blocks:
        raise ValueError(
            f"Model '{model.name}' has no Transformer block that "
            "transformer_config() recognises: a residual branch (x + f(x), "
            "closed by an `Add`) holding one MultiHeadAttention, followed by a "
            "residual branch holding exactly two Dense layers (the feed-forward "
            "network)."
        )
    return blocks


def transformer_config(model: Model) -> dict[str, int]:
    """The configuration of a plain-Keras Transformer, in KerasHub's words.

    Example:

    ```python
    keras_net2net.transformer_config(model)
    # {'hidden_dim': 64, 'num_heads': 2, 'intermediate_dim': 256, 'num_layers': 2}
    ```

    Args:
        model: a built Functional Keras model with Transformer blocks (see
            the module docstring for the form recognised).

    Returns:
        ``{"hidden_dim", "num_heads", "intermediate_dim", "num_layers"}``.

    Raises:
        ValueError: if no block is recognised, or the blocks differ in their
            number of heads or feed-forward width.
    """
    blocks = transformer_blocks(model)
    heads = {model.get_layer(b.attention).num_heads for b in blocks}
    ffn = {model.get_layer(b.ffn_in).units for b in blocks}
    if len(heads) > 1 or len(ffn) > 1:
        raise ValueError(
            f"The Transformer blocks of model '{model.name}' differ (heads "
            f"{sorted(heads)}, feed-forward widths {sorted(ffn)}); a "
            "configuration describes blocks that are all alike. Grow such a "
            "model with Widen/Deepen requests."
        )
    return {
        "hidden_dim": int(model.get_layer(blocks[0].ffn_out).units),
        "num_heads": heads.pop(),
        "intermediate_dim": ffn.pop(),
        "num_layers": len(blocks),
    }


def transformer_requests(
    model: Model,
    target: Mapping[str, int],
    *,
    method: str = "net2net",
    noise: float = 0.0,
    seed: int | None = None,
    order: str = INTERLEAVE,
    copies: str = ZEROED,
) -> list[Request]:
    """The requests that grow a plain-Keras Transformer to ``target``.

    Width first (the residual stream, then each block's heads and
    feed-forward width), then depth: with ``num_layers`` = k x the current
    number, one `Stack` request (k - 1 copies of each block after it, or of
    the whole stack after it with ``order="stack"``; each copy's output
    projections zeroed, so it starts as the identity, or kept); otherwise
    the first blocks get one copy more than the others.

    Example:

    ```python
    requests = transformer_requests(model, {"hidden_dim": 128, "num_layers": 4})
    keras_net2net.grow_in_place(model, requests)
    ```

    Args:
        model: a built Functional Keras model with Transformer blocks.
        target: some of ``hidden_dim``, ``num_heads``, ``intermediate_dim``
            and ``num_layers``; each at least its current value (keys left
            out stay as they are).
        method: ``"net2net"`` (function-preserving: Net2WiderNet copies and
            identity blocks) or ``"random"`` (the baseline: random new units
            and fresh, randomly initialised blocks with nothing zeroed).
            Defaults to ``"net2net"``.
        noise: symmetry-breaking noise on the widened copies (see `Widen`);
            ``"net2net"`` only. Defaults to 0.
        seed: seed of the first `Widen`; the next ones count up from it.
            Defaults to None.
        order: where the new blocks go, as `Stack`'s ``order``:
            ``"interleave"`` (each block followed by its copies) or
            ``"stack"`` (the whole stack repeated; ``num_layers`` must be a
            whole multiple). Defaults to ``"interleave"``.
        copies: as `Stack`'s ``copies``: ``"zeroed"`` (function-preserving)
            or ``"kept"`` (G_stack: trained copies as they are, the
            function changes). Defaults to ``"zeroed"``.

    Returns:
        A list of `Widen`/`Deepen`/`Stack` requests (empty if ``target`` is
        the current configuration).

    Raises:
        ValueError: for an unknown key, a value below the current one, or a
            model whose blocks are not recognised.
    """
    check_choice(method, METHODS, "method", owner="transformer_requests")
    noise = check_real(noise, "noise", minimum=0.0, owner="transformer_requests")
    seed = check_seed(seed, owner="transformer_requests")
    check_choice(order, STACK_ORDERS, "order", owner="transformer_requests")
    check_choice(copies, STACK_COPIES, "copies", owner="transformer_requests")
    if method == "random" and (order, copies) != (INTERLEAVE, ZEROED):
        raise ValueError(
            "transformer_requests: method='random' inserts fresh blocks after "
            "each block; `order` and `copies` say how trained blocks are "
            f"copied. Received: order={order!r}, copies={copies!r}"
        )
    if method == "random" and noise:
        raise ValueError(
            "transformer_requests: `noise` breaks the symmetry of copied units, "
            f"which method='random' does not make. Received: noise={noise}"
        )
    current = transformer_config(model)
    target = _check_target(model, target, current)
    blocks = transformer_blocks(model)
    seeds = iter(range(seed or 0, (seed or 0) + 1_000_000))

    def widen(layer: str, units: int) -> Widen:
        this = None if seed is None else next(seeds)
        if method == "random":
            return Widen(layer, units, method="random-pad", seed=this)
        return Widen(layer, units, noise=noise, seed=this)

    requests: list[Request] = []
    if target["hidden_dim"] != current["hidden_dim"]:
        requests.append(widen(_stream_writer(model, blocks[0]), target["hidden_dim"]))
    for block in blocks:
        if target["num_heads"] != current["num_heads"]:
            requests.append(widen(block.attention, target["num_heads"]))
        if target["intermediate_dim"] != current["intermediate_dim"]:
            requests.append(widen(block.ffn_in, target["intermediate_dim"]))
    factor, extra = divmod(target["num_layers"], current["num_layers"])
    # One Stack where the stack it repeats is exactly these blocks.
    stackable = stack_ends(model) == [block.end for block in blocks]
    if method != "random" and factor > 1 and not extra and stackable:
        requests.append(Stack(factor, order=order, copies=copies))
        return requests
    if order == STACK and factor * current["num_layers"] != target["num_layers"]:
        raise ValueError(
            f"transformer_requests: order='stack' repeats the whole stack, so "
            f"num_layers must be a whole multiple of the current "
            f"{current['num_layers']}. Received: num_layers={target['num_layers']}"
        )
    if order == STACK and target["num_layers"] != current["num_layers"]:
        raise ValueError(
            f"transformer_requests: order='stack' repeats the run of residual "
            f"blocks, but in model '{model.name}' that run is not its "
            f"Transformer blocks {[b.end for b in blocks]} (another residual "
            "block, or blocks not directly one after the other); use "
            "order='interleave'."
        )
    for index, block in enumerate(blocks):
        for _ in range(factor - 1 + (index < extra)):
            requests.append(
                Deepen(
                    after=block.end,
                    blocks=2,
                    method="random"
                    if method == "random" or copies == KEPT
                    else "identity",
                    init="random" if method == "random" else "copy",
                )
            )
    return requests


def transformer_schedule(
    model: Model,
    stages: Mapping[Trigger, Mapping[str, int]] | Sequence[tuple[Trigger, Any]],
    *,
    method: str = "net2net",
    noise: float = 0.0,
    seed: int | None = None,
    order: str = INTERLEAVE,
    copies: str = ZEROED,
) -> list[tuple[Trigger, list[Request]]]:
    """A `GrowModel` schedule that grows a plain-Keras Transformer in stages.

    Each stage names a target configuration; its requests are written for
    the model as the earlier stages leave it (so a later stage can widen the
    blocks an earlier one inserted). The stages are simulated here, on a
    copy: ``model`` is not changed, and a target that cannot be reached
    fails now, naming its stage.

    Example:

    ```python
    steps = 3000
    schedule = keras_net2net.transformer_schedule(model, {
        AtStep(steps // 4): {"hidden_dim": 128, "num_heads": 4,
                             "intermediate_dim": 512},
        AtStep(steps // 2): {"num_layers": 4},
    }, noise=0.05, seed=0)
    model.fit(data, steps_per_epoch=steps, callbacks=[GrowModel(schedule)])
    ```

    Args:
        model: a built Functional Keras model with Transformer blocks (see
            `transformer_config`).
        stages: ``{trigger: target}`` or a list of ``(trigger, target)``
            pairs, in the order they will be applied; a trigger is anything
            `GrowModel` takes, a target a dict of some of ``hidden_dim``,
            ``num_heads``, ``intermediate_dim`` and ``num_layers``.
        method: as for `transformer_requests`.
        noise: as for `transformer_requests`.
        seed: seed of the first `Widen` of the first stage; every later
            `Widen` counts up from it. Defaults to None.
        order: as for `transformer_requests`.
        copies: as for `transformer_requests`.

    Returns:
        A list of ``(trigger, requests)`` pairs, for `GrowModel`.
    """
    items = list(stages.items()) if isinstance(stages, Mapping) else list(stages)
    if not items:
        raise ValueError(
            "transformer_schedule: `stages` must be a non-empty dict "
            f"{{trigger: target}} or list of pairs. Received: stages={stages!r}"
        )
    seed = check_seed(seed, owner="transformer_schedule")
    schedule: list[tuple[Trigger, list[Request]]] = []
    current = model
    for index, item in enumerate(items):
        if not (isinstance(item, (tuple, list)) and len(item) == 2):
            raise ValueError(
                "transformer_schedule: each stage must be a (trigger, target) "
                f"pair. Received: {item!r}"
            )
        trigger, target = item
        try:
            requests = transformer_requests(
                current,
                target,
                method=method,
                noise=noise,
                seed=seed,
                order=order,
                copies=copies,
            )
            if not requests:
                raise ValueError(
                    f"the target {dict(target)!r} is the configuration the model "
                    "already has; a stage must grow it."
                )
            if index + 1 < len(items):
                current = apply_requests(current, requests, compile=False).model
            else:  # the last model is not needed: plan (so check) its last step
                *first, last = requests
                check_request(apply_requests(current, first, compile=False).model, last)
        except ValueError as error:
            raise ValueError(
                f"transformer_schedule: stage {index} ({trigger!r}): {error}"
            ) from error
        if seed is not None:
            seed += sum(isinstance(r, Widen) for r in requests)
        schedule.append((trigger, requests))
    return schedule


def _check_target(model, target, current):
    if not isinstance(target, Mapping):
        raise TypeError(
            "A Transformer target must be a dict of some of "
            f"{', '.join(CONFIG_KEYS)}. Received: {target!r}"
        )
    unknown = sorted(set(target) - set(CONFIG_KEYS))
    if unknown:
        raise ValueError(
            f"Unknown Transformer configuration key(s) {unknown}; valid keys: "
            f"{', '.join(CONFIG_KEYS)}. Received: {dict(target)!r}"
        )
    out = dict(current)
    for key, value in target.items():
        value = check_int(value, key, minimum=1, owner="Transformer target")
        if value < current[key]:
            raise ValueError(
                f"Transformer target {key}={value} is below model "
                f"'{model.name}''s current {key}={current[key]}; growth only "
                "adds units, heads and blocks."
            )
        out[key] = value
    return out


def _stream_writer(model, block):
    """The first layer (in graph order) that writes the residual stream."""
    group = coupled_layers(model, block.ffn_out)
    first = min(group.writers, key=lambda node: node.index)
    return first.op.name
