"""KerasHub model families grown in their own config vocabulary, class kept.

``kn.widen(causal_lm, "hidden_dim", 64)`` and ``kn.deepen(causal_lm,
after="transformer_layer_1")`` on a KerasHub backbone or task model whose
backbone class has a registered `Family` return the same class (a
``LlamaCausalLM`` stays a ``LlamaCausalLM`` around a ``LlamaBackbone``),
built from the grown config, with every weight mapped (see
`keras_net2net.families.base`). Families are registered lazily, the first
time a model is looked up, and only when ``keras_hub`` is installed.
"""

from __future__ import annotations

import functools
import sys
from typing import Any

import keras
import numpy as np

from keras_net2net import _keras_internals as internals
from keras_net2net.families.base import Family
from keras_net2net.families.base import FamilyPlan
from keras_net2net.families.base import chain_for
from keras_net2net.families.base import new_values
from keras_net2net.families.base import origins
from keras_net2net.families.encoders import BertFamily
from keras_net2net.families.encoders import ViTFamily
from keras_net2net.families.gemma import Gemma3Family
from keras_net2net.families.gemma import GemmaFamily
from keras_net2net.families.gpt import GPTFamily
from keras_net2net.families.llama import LlamaFamily
from keras_net2net.families.moe import MixtralFamily
from keras_net2net.families.moe import Qwen3Family
from keras_net2net.families.moe import Qwen3MoeFamily
from keras_net2net.families.moe import QwenMoeFamily
from keras_net2net.families.others import FalconFamily
from keras_net2net.families.others import GPTNeoXFamily
from keras_net2net.families.others import Phi3Family
from keras_net2net.requests import COPIES
from keras_net2net.requests import NET2WIDER
from keras_net2net.requests import Deepen
from keras_net2net.requests import Request
from keras_net2net.requests import Widen

_FAMILIES: dict[type, Family] = {}
_BUILTIN_DONE = [False]

# (keras_hub.models attribute, family)
_BUILTIN = (
    ("LlamaBackbone", LlamaFamily),
    ("Llama3Backbone", LlamaFamily),
    ("MistralBackbone", LlamaFamily),
    ("QwenBackbone", LlamaFamily),
    ("GPT2Backbone", GPTFamily),
    ("OPTBackbone", GPTFamily),
    ("Phi3Backbone", Phi3Family),
    ("GPTNeoXBackbone", GPTNeoXFamily),
    ("FalconBackbone", FalconFamily),
    ("GemmaBackbone", GemmaFamily),
    ("Gemma3Backbone", Gemma3Family),
    ("Qwen3Backbone", Qwen3Family),
    ("MixtralBackbone", MixtralFamily),
    ("QwenMoeBackbone", QwenMoeFamily),
    ("Qwen3MoeBackbone", Qwen3MoeFamily),
    ("BertBackbone", BertFamily),
    ("ViTBackbone", ViTFamily),
)


def register_family(backbone_class: type, family: Family) -> None:
    """Grow models of ``backbone_class`` (exact class) in their config vocabulary.

    Example:

    ```python
    register_family(keras_hub.models.LlamaBackbone, LlamaFamily())
    ```
    """
    if not isinstance(family, Family):
        raise TypeError(
            f"`family` must be a keras_net2net.families.Family. Received: {family!r}"
        )
    _FAMILIES[backbone_class] = family


def _register_builtin() -> None:
    # A KerasHub model exists only once keras_hub is imported: until then,
    # growth does not pay for importing it (about a second).
    if _BUILTIN_DONE[0] or "keras_hub" not in sys.modules:
        return
    _BUILTIN_DONE[0] = True
    import keras_hub

    for name, family in _BUILTIN:
        cls = getattr(keras_hub.models, name, None)
        if cls is not None and cls not in _FAMILIES:
            _FAMILIES[cls] = family()


def find(model: Any) -> tuple[Family, Any, Any] | None:
    """``(family, backbone, task or None)`` for a registered KerasHub model.

    Example:

    ```python
    family, backbone, task = find(llama_causal_lm)  # None for other models
    ```
    """
    _register_builtin()
    if type(model) in _FAMILIES:
        return _FAMILIES[type(model)], model, None
    backbone = getattr(model, "backbone", None)
    if backbone is not None and type(backbone) in _FAMILIES:
        return _FAMILIES[type(backbone)], backbone, model
    return None


def _found(model):
    found = find(model)
    if found is None:
        raise ValueError(
            f"`model`: {type(model).__name__} has no registered KerasHub family."
        )
    return found


def plan_request(model: Any, request: Request) -> FamilyPlan | None:
    """The `FamilyPlan` of ``request`` if it is in ``model``'s config vocabulary.

    A `Widen` of a config entry (``"hidden_dim"``, ...) or a `Deepen` after a
    block with the default options is planned here; anything else (None) is
    grown through the model's layers.

    Example:

    ```python
    plan = plan_request(llama_causal_lm, keras_net2net.Widen("hidden_dim", 32))
    ```

    Raises:
        ValueError: a config entry with options other than the defaults, or a
            value that cannot be exact.
    """
    found = find(model)
    if found is None:
        return None
    family = found[0]
    if isinstance(request, Widen):
        if request.layer not in {**family.widen_keys, **family.refused}:
            return None
        if request.method != NET2WIDER or request.noise_on != COPIES:
            raise ValueError(
                f"`method`/`noise_on`: widening '{request.layer}' of a "
                f"{type(found[1]).__name__} supports method='net2wider' with "
                f"noise_on='copies' only. Received: method={request.method!r}, "
                f"noise_on={request.noise_on!r}"
            )
        return plan_widen(
            model, request.layer, request.units, request.seed, request.noise
        )
    names_block = isinstance(request.after, str) and request.after.startswith(
        family.block_prefix
    )
    if names_block and request == Deepen(request.after):
        return plan_deepen(model, request.after)
    return None


def plan_widen(
    model: Any, key: str, units: Any, seed: int | None, noise: float = 0.0
) -> FamilyPlan:
    """Plan widening the config entry ``key`` of ``model`` to ``units``.

    ``noise`` (relative to each kernel's standard deviation) goes on the new
    copies of the kernels that write the widened dimensions, to break their
    symmetry (exact copies get identical updates under Adam); 0 is exact.

    Example:

    ```python
    plan = plan_widen(llama_causal_lm, "num_key_value_heads", 4, seed=0)
    ```

    Raises:
        ValueError: naming the key and the values that are valid.
    """
    family, backbone, _ = _found(model)
    config = family.config(backbone)
    if key not in family.widen_keys and key not in family.refused:
        valid = ", ".join(f"'{k}' ({v})" for k, v in family.widen_keys.items())
        raise ValueError(
            f"`layer`: {type(backbone).__name__} cannot widen '{key}'. "
            f"Config entries it widens: {valid}."
        )
    family.check_widen(backbone, key)
    new_config, mappings, notes = family.plan_widen(config, key, units, seed)
    sources = [(i, False) for i in range(config["num_layers"])]
    noisy = f" (noise {noise:g})" if noise else ""
    if noise and seed is None:  # one draw per plan, so its chains agree
        seed = int(np.random.default_rng().integers(2**31))
    plan = FamilyPlan(
        f"widen {type(backbone).__name__} '{key}' {config[key]} -> "
        f"{new_config[key]}{noisy}",
        new_config,
        mappings,
        sources,
        notes,
        noise=float(noise),
        seed=int(seed or 0),
    )
    _check_layouts(family, backbone, plan, model)
    return plan


def plan_deepen(model: Any, after: Any) -> FamilyPlan:
    """Plan inserting identity copies of the blocks named in ``after``.

    Example:

    ```python
    plan = plan_deepen(llama_causal_lm, ["transformer_layer_0", "transformer_layer_1"])
    ```
    """
    family, backbone, _ = _found(model)
    config = family.config(backbone)
    count = config["num_layers"]
    names = [after] if isinstance(after, str) else list(after)
    indices = []
    if not names:
        raise ValueError(f"`after` names no block. Received: after={after!r}")
    known = {family.block_name(i): i for i in range(count)}
    for name in names:
        if not isinstance(name, str) or name not in known:
            raise ValueError(
                f"`after`: {type(backbone).__name__} has blocks "
                f"'{family.block_name(0)}' to '{family.block_name(count - 1)}'. "
                f"Received: after={after!r}"
            )
        indices.append(known[name])
    family.check_deepen(config)
    if len(set(indices)) != len(indices):
        raise ValueError(f"`after` names a block twice. Received: after={after!r}")
    sources: list[tuple[int, bool]] = []
    for index in range(count):
        sources.append((index, False))
        if index in indices:
            sources.append((index, True))
    config = family.deepen_config(config, sources)
    copies = ", ".join(f"'{family.block_name(i)}'" for i in sorted(indices))
    plan = FamilyPlan(
        f"deepen {type(backbone).__name__}: an identity copy after {copies} "
        f"(num_layers {count} -> {len(sources)}; blocks renumbered in order)",
        config,
        {},
        sources,
    )
    _check_layouts(family, backbone, plan, model)
    return plan


def _check_layouts(family, backbone, plan, model=None):
    """Refuse, before anything is built, a variable the family cannot map."""
    if model is not None and model is not backbone:
        inside = {id(v) for v in backbone.weights}
        outside = [
            v.path
            for v in model.weights
            if id(v) not in inside and family.task_layout(v.path, model) is None
        ]
        if outside:
            raise ValueError(
                f"`model`: {type(model).__name__} has weights outside its "
                f"backbone ({outside[:3]}), which growth in the config "
                "vocabulary would not carry; grow its backbone instead."
            )
    config = family.config(backbone)
    for variable in backbone.weights:
        family.layout(family.split(variable.path)[1], config)


def apply(model: Any, plan: FamilyPlan, compile: bool = True) -> Any:
    """Build the grown model of ``plan``: the same class, every weight mapped.

    Example:

    ```python
    grown = apply(llama_causal_lm, plan_widen(llama_causal_lm, "hidden_dim", 32, None))
    type(grown)  # LlamaCausalLM
    ```
    """
    return build(model, plan, compile)[0]


def build(model: Any, plan: FamilyPlan, compile: bool = True) -> tuple[Any, dict]:
    """``(grown model, origins)``: `apply`, with where every variable comes from.

    Example:

    ```python
    grown, origins = build(llama_causal_lm, plan)
    ```
    """
    family, backbone, task = _found(model)
    # Every variable is set from the old model: built without initial values
    # (no random draws), each variable created with its mapped value.
    with internals.deferred_variables() as created:
        new_backbone = type(backbone).from_config(plan.config)
    try:
        values = new_values(family, backbone, new_backbone, plan)
        by_id = {
            id(variable): functools.partial(
                _checked, family, variable, values.pop(variable.path)
            )
            for variable in new_backbone.weights
        }
    except BaseException:
        internals.discard_deferred(created)
        raise
    internals.initialize_variables(created, by_id)
    found = origins(family, backbone, new_backbone, plan)
    if task is None:
        grown = new_backbone
    else:
        config = task.get_config()
        config.update(backbone=new_backbone, preprocessor=task.preprocessor)
        grown = type(task)(**config)
        found.update(_carry_task_head(family, task, grown, new_backbone, plan))
    if compile and getattr(model, "compiled", False):
        _compile_like(model, grown)
    return grown, found


def _checked(family, variable, value_of):
    """The value ``value_of()`` for ``variable``, checked against its shape."""
    value = value_of()
    if tuple(value.shape) != tuple(variable.shape):
        raise ValueError(
            f"The {family.name} family mapped '{variable.path}' to shape "
            f"{tuple(value.shape)}, but the grown model's variable has "
            f"shape {tuple(variable.shape)}; nothing was grown."
        )
    return value


def _carry_task_head(family, task, grown, new_backbone, plan):
    """Map a task's own variables (a classifier's head) into ``grown``'s."""
    inside = {id(v) for v in new_backbone.weights}
    old = {v.path: v for v in task.weights}
    config = family.config(task.backbone)
    found = {}
    for variable in grown.weights:
        if id(variable) in inside:
            continue
        layout = family.task_layout(variable.path, task)
        source = old.get(variable.path)
        if layout is None or source is None:
            raise ValueError(
                f"`model`: {type(task).__name__} has the variable "
                f"'{variable.path}' outside its backbone, which the "
                f"{family.name} family cannot map; nothing was grown."
            )
        chain = chain_for(family, variable.path, config, plan.mappings, layout=layout)
        variable.assign(chain.apply(keras.ops.convert_to_numpy(source)))
        found[id(variable)] = (source, list(chain))
    return found


def _compile_like(model, grown):
    """Compile ``grown`` with ``model``'s compile arguments (a fresh optimizer).

    KerasHub tasks override ``compile`` (so Keras's ``compile_from_config``
    refuses them); their sampler is not among the arguments Keras records.
    """
    config = model.get_compile_config()
    if config is None:
        return
    grown.compile(**keras.saving.deserialize_keras_object(config))
    if hasattr(model, "sampler"):
        grown.sampler = model.sampler


__all__ = [
    "BertFamily",
    "Family",
    "FamilyPlan",
    "FalconFamily",
    "GPTFamily",
    "GemmaFamily",
    "Gemma3Family",
    "GPTNeoXFamily",
    "LlamaFamily",
    "MixtralFamily",
    "Phi3Family",
    "Qwen3Family",
    "Qwen3MoeFamily",
    "QwenMoeFamily",
    "apply",
    "build",
    "find",
    "inserted_blocks",
    "plan_request",
    "plan_deepen",
    "plan_widen",
    "register_family",
    "train_only",
    "ViTFamily",
]


def inserted_blocks(model: Any, after: Any) -> list[str]:
    """The names the blocks inserted by ``deepen(model, after=...)`` get.

    Blocks are renumbered in order, so a block inserted after block ``i``
    is named with index ``i + 1 + (blocks inserted before it)``.

    Example:

    ```python
    after = ["transformer_layer_0", "transformer_layer_2"]
    grown = keras_net2net.deepen(lm, after=after)
    inserted_blocks(lm, after)  # ['transformer_layer_1', 'transformer_layer_4']
    ```
    """
    family, _, _ = _found(model)
    plan = plan_deepen(model, after)
    return [family.block_name(i) for i, (_, c) in enumerate(plan.sources) if c]


def train_only(model: Any, blocks: list[str]) -> list[str]:
    """Freeze every layer of a KerasHub model except the named blocks.

    LLaMA-Pro's block expansion trains only the inserted blocks: pass
    `inserted_blocks`' names. Compile the model again afterwards (Keras
    reads ``trainable`` when it compiles).

    Args:
        model: a KerasHub backbone or task model of a registered family.
        blocks: names of blocks of its backbone (``"transformer_layer_3"``).

    Returns:
        The paths of the variables left trainable.

    Example:

    ```python
    grown = keras_net2net.deepen(lm, after=after)
    train_only(grown, inserted_blocks(lm, after))
    grown.compile(optimizer="adamw", loss=...)
    ```
    """
    family, backbone, _ = _found(model)
    if not hasattr(backbone, "transformer_layers"):
        raise ValueError(
            f"`model`: train_only needs the backbone's `transformer_layers`, "
            f"which a {type(backbone).__name__} does not have ({family.name} "
            "keeps its blocks inside another layer); set `trainable` on its "
            "layers yourself."
        )
    names = {layer.name for layer in backbone.transformer_layers}
    unknown = [b for b in blocks if b not in names]
    if unknown or not blocks:
        raise ValueError(
            f"`blocks` must name blocks of {type(backbone).__name__} "
            f"({sorted(names)}). Received: {blocks!r}"
        )
    for layer in model.layers:
        layer.trainable = False
    backbone.trainable = True
    for layer in backbone.layers:
        layer.trainable = layer.name in blocks
    return [v.path for v in model.trainable_weights]
