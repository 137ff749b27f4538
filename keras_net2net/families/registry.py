"""The registry of KerasHub families: which backbone classes grow in their
config vocabulary, and the one lookup (`find`) that answers it for a model.

Families are registered lazily, the first time a model is looked up, and only
when ``keras_hub`` is imported.
"""

from __future__ import annotations

import sys
from typing import Any

from keras_net2net.families.base import Family
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


def require(model: Any) -> tuple[Family, Any, Any]:
    """`find`, or a ValueError for a model of no registered family."""
    found = find(model)
    if found is None:
        raise ValueError(
            f"`model`: {type(model).__name__} has no registered KerasHub family."
        )
    return found
