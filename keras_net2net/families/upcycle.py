"""Sparse upcycling: a dense KerasHub language model becomes a mixture of experts.

`plan_upcycle` turns an `keras_net2net.Upcycle` request into an
`UpcyclePlan`: the config of the matching MoE class, and where each of its
variables comes from. Attention, norms and embeddings are carried as they
are; every expert of a sparse block is a copy of the dense block's
feed-forward network (`keras_net2net.transforms.Replicate`; Qwen's experts
fuse ``[gate | up]``: `keras_net2net.transforms.Join`); the router starts at
small random values. The MoE classes normalise the chosen experts'
probabilities (KerasHub 0.32's Mixtral always, Qwen-MoE and Qwen3-MoE with
``norm_top_k_prob=True``, which the plan sets), so identical experts compute
the dense network whatever the router chooses: the upcycled model computes
what the dense one did. Qwen-MoE's shared expert starts silent (its output
projection zero).

========================  ======================  =============================
dense backbone            MoE backbone            sparse blocks (``every``)
========================  ======================  =============================
Llama, Llama 3, Mistral   Mixtral                 all (``every=1``)
Qwen (Qwen 2)             Qwen-MoE                all (``every=1``)
Qwen 3                    Qwen3-MoE               every ``every``-th block
========================  ======================  =============================
"""

from __future__ import annotations

import dataclasses
import functools
import re
import warnings
import zlib
from typing import Any

import keras
import numpy as np

from keras_net2net._arrays import host_copy
from keras_net2net._arrays import host_view
from keras_net2net.families.base import Family
from keras_net2net.families.moe import MixtralFamily
from keras_net2net.families.moe import Qwen3MoeFamily
from keras_net2net.families.moe import QwenMoeFamily
from keras_net2net.families.plan import FamilyPlan
from keras_net2net.families.registry import require
from keras_net2net.growth_plan import Origins
from keras_net2net.requests import Upcycle
from keras_net2net.transforms import Chain
from keras_net2net.transforms import Join
from keras_net2net.transforms import Replicate
from keras_net2net.transforms import Transpose

# How a variable of the MoE model starts: new ...
ROUTER = "router"  # normal(0, init_stddev)
FRESH = "fresh"  # normal(0, init_stddev): a new part that starts silent
ZERO = "zero"
# ... or from a variable of the dense model: as it is, copied into every
# expert, joined with the up projection and copied (Qwen's fused experts), or
# transposed (a tied output embedding untied).
AS_IS, EXPERTS, FUSED, TRANSPOSED = "as is", "experts", "fused", "transposed"


# KerasHub 0.32 builds Qwen 3's query/key norms with epsilon 1e-5 and
# Qwen3-MoE's with 1e-6, neither from the config: the one difference.
QK_EPSILON_NOTE = (
    "KerasHub's own epsilon difference, not bit-exact: Qwen3-MoE normalises "
    "each head's queries and keys with epsilon 1e-6 where Qwen 3 uses 1e-5 "
    "(neither from the config); the logits move by about epsilon / the "
    "queries' mean square"
)


@dataclasses.dataclass(frozen=True)
class Target:
    """The MoE class a dense backbone class upcycles into.

    Attributes:
        backbone: the MoE backbone's name in ``keras_hub.models``.
        task: its causal LM's name.
        family: the MoE family (splits the new variables' paths).
        block: the name of the sparse block layer.
        dense_mlp: the name of a dense block's feed-forward layer, where
            the class nests it (``"qwen3_moe_mlp/"``), else ``""``.
        fused: whether the experts fuse ``[gate | up]`` in one kernel.
        every: whether the class can keep some blocks dense.
    """

    backbone: str
    task: str
    family: type[Family]
    block: str
    dense_mlp: str = ""
    fused: bool = False
    every: bool = False


MIXTRAL = Target(
    "MixtralBackbone", "MixtralCausalLM", MixtralFamily, "mixtral_sparse_moe_block"
)
QWEN_MOE = Target(
    "QwenMoeBackbone",
    "QwenMoeCausalLM",
    QwenMoeFamily,
    "qwen_sparse_moe_block",
    dense_mlp="qwen_moe_mlp/",
    fused=True,
)
QWEN3_MOE = Target(
    "Qwen3MoeBackbone",
    "Qwen3MoeCausalLM",
    Qwen3MoeFamily,
    "qwen3_sparse_moe_block",
    dense_mlp="qwen3_moe_mlp/",
    fused=True,
    every=True,
)
# Dense backbone class name -> its MoE target.
TARGETS = {
    "LlamaBackbone": MIXTRAL,
    "Llama3Backbone": MIXTRAL,
    "MistralBackbone": MIXTRAL,
    "QwenBackbone": QWEN_MOE,
    "Qwen3Backbone": QWEN3_MOE,
}
# The config entries every pair carries as they are.
_CARRIED = (
    "vocabulary_size",
    "num_layers",
    "num_query_heads",
    "num_key_value_heads",
    "hidden_dim",
    "intermediate_dim",
    "rope_max_wavelength",
    "layer_norm_epsilon",
    "dropout",
    "dtype",
)
_LLAMA31_ROPE = (
    "rope_frequency_adjustment_factor",
    "rope_low_freq_factor",
    "rope_high_freq_factor",
    "rope_pretraining_sequence_length",
)


@dataclasses.dataclass
class UpcyclePlan(FamilyPlan):
    """A `FamilyPlan` whose grown model is of the MoE class (see the module).

    Example:

    ```python
    plan = plan_upcycle(llama_causal_lm, keras_net2net.Upcycle(8, seed=0))
    mixtral_causal_lm, origins = plan.build(llama_causal_lm)
    ```

    Attributes:
        target: the `Target`.
        init_stddev: the standard deviation of the router's (and other new
            parts') normal initial values.
        expert_noise: noise on the experts' copies (0: exact).
        tied: whether the dense model ties its output embedding (a target
            that cannot tie gets a copy of it).
    """

    target: Target = MIXTRAL
    init_stddev: float = 0.02
    expert_noise: float = 0.0
    tied: bool = False

    def classes(self, backbone: Any, task: Any) -> tuple[Any, Any]:
        import keras_hub

        found = getattr(keras_hub.models, self.target.backbone)
        task_class = getattr(keras_hub.models, self.target.task)
        return found, None if task is None else task_class

    def values(self, family: Family, backbone: Any, new_backbone: Any) -> dict:
        starts = self._starts(family, backbone, new_backbone)

        def value_of(variable):
            start = starts[variable.path]
            dtype = keras.backend.standardize_dtype(variable.dtype)
            if start == ZERO:
                return np.zeros(variable.shape, dtype)
            if start in (ROUTER, FRESH):
                rng = np.random.default_rng(self._stream(variable.path))
                draw = rng.normal(0.0, self.init_stddev, variable.shape)
                return draw.astype(dtype)
            source, chain = start
            if not len(chain):
                return host_copy(source)
            return chain.apply(host_view(source), parts=host_view)

        return {
            variable.path: functools.partial(value_of, variable)
            for variable in new_backbone.weights
        }

    def origins(self, family: Family, backbone: Any, new_backbone: Any) -> Origins:
        starts = self._starts(family, backbone, new_backbone)
        found = Origins()
        for variable in new_backbone.weights:
            start = starts[variable.path]
            if isinstance(start, str):
                origin: tuple[Any, list] = (None, [])
            else:
                origin = (start[0], list(start[1]))
            found.weights[id(variable)] = found.state[id(variable)] = origin
        return found

    def _stream(self, path: str) -> int:
        """A seed of its own for each variable, the same in every session
        (paths compared without Keras's automatic name suffixes)."""
        index, local = self.target.family().split(path)
        return zlib.crc32(f"{index}/{local}".encode()) ^ self.seed

    def _starts(self, family: Family, backbone: Any, new_backbone: Any) -> dict:
        """``{new path: (old variable, Chain) | ROUTER | FRESH | ZERO}``."""
        old = {family.split(v.path): v for v in backbone.weights}
        splitter = self.target.family()
        experts = self.config["num_experts"]
        found: dict[str, Any] = {}
        for variable in new_backbone.weights:
            index, local = splitter.split(variable.path)
            start = _local_start(self.target, local, self.tied)
            if isinstance(start, str):
                found[variable.path] = start
                continue
            path, how = start
            steps: list = [Transpose()] if how == TRANSPOSED else []
            if how == FUSED:
                steps.append(
                    Join(old[(index, "feedforward_intermediate_dense/kernel")])
                )
            if how in (EXPERTS, FUSED):
                stream = self._stream(variable.path)
                steps.append(Replicate(experts, self.expert_noise, stream))
            found[variable.path] = (old[(index, path)], Chain(steps))
        return found


def _local_start(target: Target, local: str, tied: bool) -> Any:
    """Where the MoE variable at ``local`` (a block-local path) starts.

    ``(dense path, how)`` (`AS_IS`, `EXPERTS`, `FUSED`, `TRANSPOSED`), or
    `ROUTER`, `FRESH` or `ZERO`.
    """
    block = re.escape(target.block)
    if local == "token_embedding/reverse_embeddings" and tied:
        return ("token_embedding/embeddings", TRANSPOSED)
    if re.fullmatch(rf"{block}/sparse_feedforward_gate_dense/kernel", local):
        return ROUTER
    if re.fullmatch(rf"{block}/shared_expert_gate_dense/kernel", local):
        return FRESH
    if re.fullmatch(
        rf"{block}/shared_expert_dense/feedforward_output_dense/kernel", local
    ):
        return ZERO
    if re.fullmatch(rf"{block}/shared_expert_dense/.*", local):
        return FRESH
    match = re.fullmatch(rf"{block}/experts/expert_feedforward_(\w+)_dense", local)
    if match:
        part = match.group(1)
        if target.fused and part == "gate":
            return ("feedforward_gate_dense/kernel", FUSED)
        return (f"feedforward_{part}_dense/kernel", EXPERTS)
    if target.dense_mlp and local.startswith(target.dense_mlp):
        return (local[len(target.dense_mlp) :], AS_IS)
    return (local, AS_IS)


def plan_upcycle(
    model: Any, request: Upcycle, *, found: tuple | None = None
) -> UpcyclePlan:
    """Plan upcycling a dense KerasHub model into its MoE class.

    Example:

    ```python
    plan = plan_upcycle(llama_causal_lm, Upcycle(8, top_k=2, seed=0))
    print("\\n".join(plan.describe()))
    ```

    Raises:
        ValueError: a backbone class with no MoE target, a setting the target
            class cannot hold exactly, or ``every`` where the target makes
            every block sparse; each named, before anything changes.
    """
    family, backbone, _ = require(model) if found is None else found
    name = type(backbone).__name__
    target = TARGETS.get(name)
    if name in {t.backbone for t in TARGETS.values()}:
        raise ValueError(
            f"`model`: a {name} is a mixture of experts already; upcycling turns "
            "a dense model into one (widen its 'intermediate_dim' to grow every "
            f"expert). Received: a {type(model).__name__}"
        )
    if target is None:
        pairs = ", ".join(f"{k} -> {t.backbone}" for k, t in TARGETS.items())
        raise ValueError(
            f"`model`: a {name} has no mixture-of-experts class to upcycle into "
            f"(upcycling pairs: {pairs}). Received: a {type(model).__name__}"
        )
    config = family.config(backbone)
    new_config, notes = _target_config(target, name, config, request)
    seed = request.seed
    if seed is None:  # one draw per plan, so its values and origins agree
        seed = int(np.random.default_rng().integers(2**31))
    layers = config["num_layers"]
    sparse = [i for i in range(layers) if (i + 1) % request.every == 0]
    if target is QWEN3_MOE:
        warnings.warn(
            f"Upcycling a {name} into a Qwen3MoeBackbone is exact only up to "
            f"{QK_EPSILON_NOTE}.",
            stacklevel=4,
        )
    qualifier = " up to KerasHub's q/k-norm epsilon" if target is QWEN3_MOE else ""
    exact = (
        f"exact{qualifier}: every expert a copy of the dense feed-forward network"
        if request.exact
        else f"experts with noise {request.noise:g}: NOT function-preserving"
    )
    notes = [
        f"  sparse blocks: {sparse} of {layers} (the others stay dense)"
        if len(sparse) < layers
        else f"  sparse blocks: all {layers}",
        f"  router: normal(0, {request.init_stddev:g}) values, seed {seed}; the "
        "chosen experts' probabilities are normalised, so identical experts "
        "compute the dense network whatever it routes",
        *notes,
    ]
    plan = UpcyclePlan(
        f"upcycle {name} -> {target.backbone}: {request.num_experts} experts, "
        f"top {request.top_k} ({exact})",
        new_config,
        {},
        [(i, False) for i in range(layers)],
        notes,
        seed=seed,
        target=target,
        init_stddev=request.init_stddev,
        expert_noise=request.noise,
        tied=bool(config.get("tie_word_embeddings")),
    )
    for variable in backbone.weights:  # a variable no table knows: refused
        family.layout(family.split(variable.path)[1], config)
    return plan


def _target_config(
    target: Target, name: str, config: dict, request: Upcycle
) -> tuple[dict, list[str]]:
    """The MoE backbone's config, or a ValueError naming what cannot be held."""

    def refuse(what: str) -> None:
        raise ValueError(
            f"`model`: a {name} cannot be upcycled into a {target.backbone} "
            f"exactly: {what}. Nothing was changed."
        )

    if request.every != 1 and not target.every:
        refuse(
            f"every={request.every} asks for dense blocks between sparse ones, "
            f"but a {target.backbone} makes every block sparse (use every=1)"
            + (
                " (keras-hub builds each Qwen-MoE block with the layer index 0, "
                "so its blocks are all dense or all sparse)"
                if target is QWEN_MOE
                else ""
            )
        )
    if request.every > config["num_layers"]:
        refuse(
            f"every={request.every} leaves no block sparse (num_layers="
            f"{config['num_layers']})"
        )
    if request.shared_expert_dim is not None and target is not QWEN_MOE:
        raise ValueError(
            f"`shared_expert_dim`: a {target.backbone} has no shared expert (only "
            "Qwen-MoE has one). Received: "
            f"shared_expert_dim={request.shared_expert_dim}"
        )
    new = {key: config[key] for key in _CARRIED if key in config}
    new.update(num_experts=request.num_experts, top_k=request.top_k)
    notes: list[str] = []
    if target is MIXTRAL:
        set_rope = [k for k in _LLAMA31_ROPE if config.get(k) is not None]
        if set_rope:
            refuse(
                f"{set_rope} are set (Llama 3.1 rotary frequency scaling), "
                "which Mixtral's rotary embeddings do not have"
            )
        head_dim = config.get("head_dim")
        if head_dim and head_dim != config["hidden_dim"] // config["num_query_heads"]:
            refuse(
                f"head_dim={head_dim} is not hidden_dim // num_query_heads, and "
                "Mixtral derives its head size"
            )
        new["rope_scaling_factor"] = config.get(
            "rope_position_scaling_factor", config.get("rope_scaling_factor", 1.0)
        )
        new["sliding_window"] = config.get("sliding_window")
        if config.get("tie_word_embeddings"):
            notes.append(
                "  output embedding untied: Mixtral cannot tie it, so it starts "
                "as a copy of the tied one"
            )
        return new, notes
    new.update(
        rope_scaling_factor=config.get("rope_scaling_factor", 1.0),
        moe_intermediate_dim=config["intermediate_dim"],
        norm_top_k_prob=True,
        tie_word_embeddings=bool(config.get("tie_word_embeddings")),
        sliding_window_size=config.get("sliding_window_size", 32768),
        mlp_only_layers=[],
        decoder_sparse_step=request.every,
    )
    if target is QWEN_MOE:
        if config.get("use_sliding_window_attention"):
            refuse(
                "use_sliding_window_attention=True: KerasHub 0.32's Qwen applies "
                "its sliding window on TensorFlow only (its fused attention on "
                "JAX and PyTorch attends to everything), Qwen-MoE on every "
                "backend, so no Qwen-MoE computes what this model does on all three"
            )
        shared = request.shared_expert_dim or config["intermediate_dim"]
        new.update(
            shared_expert_intermediate_dim=shared, use_sliding_window_attention=False
        )
        notes.append(
            f"  shared expert (width {shared}) starts silent: its output "
            "projection zero, its other weights and its gate new"
        )
    else:
        new["head_dim"] = config.get("head_dim")
        notes.append(f"  exact only up to {QK_EPSILON_NOTE}")
    return new, notes
