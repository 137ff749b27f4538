"""Growing a KerasHub model in its own config vocabulary, its class kept.

A KerasHub backbone is built from a config (``hidden_dim``,
``intermediate_dim``, ``num_query_heads``, ``num_layers``, ...) that holds one
value for every block. Growing it means: a new config, the same class built
from it, and every weight of the old model mapped into the new one. A
`Family` declares, for one backbone class:

* its *dimensions* (``"hidden"``, ``"intermediate"``, ``"heads"``,
  ``"kv_heads"``, ...) and which config keys widen which of them, with the
  mapping of each (`Family.plan_widen`);
* the *layout* of every variable: for each axis, the dimension it spans and
  whether the variable writes it (``COPY``: entries copied by the mapping) or
  reads it (``DIVIDE``: copied and divided by the copy count, so the copies
  together contribute what the original did); an axis of no dimension stays;
* which variables of a block start at zero in an inserted copy, so that the
  copy starts as the identity (``zeroed``).

Everything is planned (`FamilyPlan`, plain data) before anything is built; a
variable whose layout the family does not know is refused by path, so no
weight is ever carried unchanged by accident.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from keras_net2net.transforms import WidthMapping

COPY = "copy"
DIVIDE = "divide"

# The dimensions every family declares, read (DIVIDE) or written (COPY).
H_DIVIDE, H_COPY = ("hidden", DIVIDE), ("hidden", COPY)
I_DIVIDE, I_COPY = ("intermediate", DIVIDE), ("intermediate", COPY)
Q_DIVIDE, Q_COPY = ("heads", DIVIDE), ("heads", COPY)
KV_COPY = ("kv_heads", COPY)
# Their names before 0.2.0, for families written then.
H_IN, H_OUT, I_IN, I_OUT = H_DIVIDE, H_COPY, I_DIVIDE, I_COPY
Q_IN, Q_OUT, KV_OUT = Q_DIVIDE, Q_COPY, KV_COPY

# Per axis: None, ``(dimension, COPY | DIVIDE)``, ``(dimension, role,
# slots)`` for an axis where each unit owns ``slots(config)`` consecutive
# entries (the heads of a flattened ``heads * head_dim`` axis), or
# ``(dimension, role, PARTS, n)`` for ``n`` parts side by side, each the whole
# dimension (a fused ``[gate | up]`` expert kernel).
Layout = tuple
PARTS = "parts"


class Family:
    """How one KerasHub backbone class grows (see the module docstring).

    Subclasses set the attributes and implement `plan_widen`.

    Example:

    ```python
    class MyFamily(LlamaFamily):
        name = "MyLlama"
        layouts = LlamaFamily.layouts + [
            (r"my_extra/scale", (("hidden", COPY),)),
        ]

    register_family(MyBackbone, MyFamily())
    ```

    Attributes:
        name: the family's name, for messages.
        widen_keys: config keys `widen` accepts, with what each one grows.
        refused: config keys that cannot grow exactly, with why
            (`plan_widen` raises, giving the reason).
        layouts: ``[(regex, layout)]`` matched against a variable's path
            (block variables without their ``<block_prefix><i>/``
            prefix); the first match wins.
        zeroed: regexes of block variables set to zero in an inserted copy.
        block_prefix: the blocks' names without their index.
        block_path: what precedes a block's name in its variables' paths
            (``"vit_encoder/"`` where the blocks live in one layer).
        first_block: the index of the first block's name (ViT's blocks are
            named from ``transformer_block_1``).
        task_layouts: ``[(regex, layout)]`` of the variables a task model
            holds outside its backbone (a classifier's head), matched
            against their paths; a task with other variables is refused.
        auto_named: names of sublayers that KerasHub leaves to Keras's
            automatic naming (``"mixtral_sparse_moe_block_3"``): their
            numeric suffix differs between two models of one session, so
            paths are compared without it.
        stream_fill: what the stream's new channels hold where ``hidden_dim``
            grows to a width that is not a multiple of its own: ``0.0``
            (RMS normalisation, every writer of the stream linear), or None
            (only multiples). The norms' gains (`norm_gains`) are scaled and
            the config's `epsilon_key` follows (see
            `keras_net2net.surgery.plan.stream`).
        norm_gains: regexes of the stream normalisations' gain variables.
        epsilon_key: the config key of the stream normalisations' epsilon.
    """

    name = ""
    widen_keys: dict[str, str] = {}
    refused: dict[str, str] = {}
    layouts: list[tuple[str, Layout]] = []
    zeroed: list[str] = []
    block_prefix = "transformer_layer_"
    block_path = ""
    first_block = 0
    task_layouts: list[tuple[str, Layout]] = []
    auto_named: list[str] = []
    stream_fill: float | None = None
    norm_gains: list[str] = []
    epsilon_key = "layer_norm_epsilon"

    def plan_widen(
        self, config: dict[str, Any], key: str, value: int, seed: int | None
    ) -> tuple[dict[str, Any], dict[str, WidthMapping], list[str]]:
        """``(new config, {dimension: mapping}, notes)`` for ``key`` -> ``value``.

        Raises:
            ValueError: naming the key, the value received and the valid ones.
        """
        raise NotImplementedError

    def config(self, backbone: Any) -> dict[str, Any]:
        """The backbone's config, with what ``get_config`` leaves out.

        KerasHub 0.32's Llama-style backbones take ``tie_word_embeddings`` but
        do not return it from ``get_config``; it is read from the embedding.
        """
        config = dict(backbone.get_config())
        embedding = getattr(backbone, "token_embedding", None)
        if "tie_word_embeddings" not in config and embedding is not None:
            config["tie_word_embeddings"] = bool(
                getattr(embedding, "tie_weights", False)
            )
        return config

    def finish(
        self, path: str, value: np.ndarray, old: dict[str, Any], new: dict[str, Any]
    ) -> np.ndarray:
        """Adjust a mapped value for constants that depend on the config.

        The default changes nothing; Gemma scales its embedding by
        ``sqrt(hidden_dim)``, so a wider stream divides it (see there).
        """
        return value

    def rescales(self, path: str, old: dict[str, Any], new: dict[str, Any]) -> bool:
        """Whether `finish` changes the variable at ``path`` (default: never)."""
        return False

    def check_widen(self, backbone: Any, key: str) -> None:
        """Raise a ValueError if widening ``key`` of this backbone cannot be exact."""

    def check_deepen(self, config: dict[str, Any]) -> None:
        """Raise a ValueError if inserting blocks cannot keep the function."""

    def deepen_config(
        self, config: dict[str, Any], sources: list[tuple[int, bool]]
    ) -> dict[str, Any]:
        """The config after inserting blocks (``sources`` as `FamilyPlan`'s).

        The default sets ``num_layers``; a family whose blocks differ by
        index (dense or sparse feed-forward) also moves those entries, or
        raises a ValueError when the new indices cannot keep every block's
        kind.
        """
        return {**config, "num_layers": len(sources)}

    def split(self, path: str) -> tuple[int | None, str]:
        """``(block index or None, path within the block)`` of a variable path.

        The path within the block drops the numeric suffix of `auto_named`
        sublayers.
        """
        blocks = re.escape(self.block_path + self.block_prefix)
        match = re.match(rf"^{blocks}(\d+)/(.*)$", path)
        if match is None:
            return None, path
        local = match.group(2)
        for name in self.auto_named:
            local = re.sub(rf"^{re.escape(name)}(_\d+)?/", f"{name}/", local)
        return int(match.group(1)) - self.first_block, local

    def block_name(self, index: int) -> str:
        """The name of block ``index`` (counted from 0)."""
        return f"{self.block_prefix}{index + self.first_block}"

    def task_layout(self, path: str, task: Any) -> Layout | None:
        """The layout of ``task``'s variable at ``path`` (outside the backbone)."""
        for pattern, layout in self.task_layouts:
            if re.fullmatch(pattern, path):
                return layout
        return None

    def is_norm_gain(self, path: str) -> bool:
        """Whether the variable at ``path`` is a stream normalisation's gain."""
        return any(re.fullmatch(pattern, path) for pattern in self.norm_gains)

    def layout(self, path: str, config: dict[str, Any]) -> Layout:
        """The layout of the variable at ``path`` (see `layouts`)."""
        for pattern, layout in self.layouts:
            if re.fullmatch(pattern, path):
                return layout
        raise ValueError(
            f"The {self.name} family does not know the variable '{path}'; "
            "keras-net2net cannot map it, so nothing was grown."
        )
