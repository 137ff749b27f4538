"""KerasHub model families grown in their own config vocabulary, class kept.

``kn.widen(causal_lm, "hidden_dim", 64)`` and ``kn.deepen(causal_lm,
after="transformer_layer_1")`` on a KerasHub backbone or task model whose
backbone class has a registered `Family` return the same class (a
``LlamaCausalLM`` stays a ``LlamaCausalLM`` around a ``LlamaBackbone``),
built from the grown config, with every weight mapped (see
`keras_net2net.families.base`). Families are registered lazily, the first
time a model is looked up, and only when ``keras_hub`` is installed.

The modules: `base` (`Family`: the variable layouts a family declares),
one module per family (`llama`, `gpt`, `gemma`, `moe`, `encoders`,
`others`), `registry` (`find`: which family a model is), `planning` (a
request in the config vocabulary -> a `FamilyPlan`), `plan`
(`FamilyPlan` and how it builds the grown model) and `upcycle` (a dense
model -> its mixture-of-experts class: `UpcyclePlan`). This module only
re-exports.
"""

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
from keras_net2net.families.plan import FamilyPlan
from keras_net2net.families.planning import inserted_blocks
from keras_net2net.families.planning import plan_deepen
from keras_net2net.families.planning import plan_request
from keras_net2net.families.planning import plan_widen
from keras_net2net.families.planning import train_only
from keras_net2net.families.registry import find
from keras_net2net.families.registry import register_family
from keras_net2net.families.upcycle import UpcyclePlan
from keras_net2net.families.upcycle import plan_upcycle

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
    "find",
    "inserted_blocks",
    "plan_request",
    "plan_deepen",
    "plan_upcycle",
    "plan_widen",
    "register_family",
    "train_only",
    "UpcyclePlan",
    "ViTFamily",
]
