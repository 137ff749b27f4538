"""Private attributes of KerasHub and KerasTuner that keras-net2net relies on.

Like the Keras ones, each is read here only, and `check_supported` verifies it
on the installed version (a library that is not installed is not checked).
Checked on keras-hub 0.32.0 and keras-tuner 1.4.8.
"""

import importlib.util

CHECKED_ON = {"keras-hub": "0.32.0", "keras-tuner": "1.4.8"}

# KerasHub's TransformerEncoder/TransformerDecoder keep their attention
# sublayers in these attributes (the decoder's cross-attention is None when it
# has no encoder input).
HUB_SELF_ATTENTION = "_self_attention_layer"
HUB_CROSS_ATTENTION = "_cross_attention_layer"

# A KerasHub Task keeps its backbone in this attribute (behind the `backbone`
# property), the ids of its layers in `_functional_layer_ids`, and a CausalLM
# caches its compiled generation function in `generate_function`.
HUB_TASK_BACKBONE = "_backbone"
HUB_TASK_LAYER_IDS = "_functional_layer_ids"
HUB_GENERATE_FUNCTION = "generate_function"

# Methods of KerasTuner classes that keras_net2net.tuner calls or overrides.
TUNER_METHODS = {
    "Oracle": ("_random_values", "_compute_values_hash"),
    "Tuner": ("_try_build",),
}


def hub_self_attention(layer):
    """A KerasHub Transformer block's self-attention layer (None if unbuilt)."""
    return getattr(layer, HUB_SELF_ATTENTION, None)


def hub_cross_attention(layer):
    """A KerasHub Transformer decoder's cross-attention layer, or None."""
    return getattr(layer, HUB_CROSS_ATTENTION, None)


def adopt_task_backbone(task, new_task):
    """Point a KerasHub ``task`` at ``new_task``'s backbone (after `adopt_graph`).

    The backbone is already tracked by then (it is a layer of the adopted
    graph), so the attribute is set without tracking. So are the task's own
    layers kept in attributes (a classifier's ``output_dense``): they point
    to ``new_task``'s, which the adopted graph holds. A cached generation
    function is dropped (it closed over the old backbone). A ``new_task``
    of another class (an upcycled ``MixtralCausalLM`` for a
    ``LlamaCausalLM``) gives ``task`` its class too.

    Returns:
        A function of no arguments that undoes the change.
    """
    import keras

    heads = [
        name
        for name, value in vars(new_task).items()
        if not name.startswith("_")
        and isinstance(value, keras.layers.Layer)
        and isinstance(task.__dict__.get(name), type(value))
        and value is not new_task.backbone
    ]
    names = (HUB_TASK_BACKBONE, HUB_TASK_LAYER_IDS, HUB_GENERATE_FUNCTION, *heads)
    missing = object()
    before = {name: task.__dict__.get(name, missing) for name in names}
    old_class = type(task)
    for name in heads:
        object.__setattr__(task, name, getattr(new_task, name))
    object.__setattr__(task, HUB_TASK_BACKBONE, new_task.backbone)
    ids = {id(layer) for layer in task._flatten_layers()}
    object.__setattr__(task, HUB_TASK_LAYER_IDS, ids)
    if HUB_GENERATE_FUNCTION in task.__dict__:
        object.__setattr__(task, HUB_GENERATE_FUNCTION, None)
    task.__class__ = type(new_task)  # last: nothing after it can fail

    def undo():
        task.__class__ = old_class
        for name, value in before.items():
            if value is missing:
                task.__dict__.pop(name, None)
            else:
                object.__setattr__(task, name, value)

    return undo


def check_libraries(require):
    """Check the attributes above on the installed KerasHub and KerasTuner.

    ``require(obj, attr, what, library)`` raises for a missing attribute.
    """
    if importlib.util.find_spec("keras_hub") is not None:
        import keras
        import keras_hub

        for cls in (
            keras_hub.layers.TransformerEncoder,
            keras_hub.layers.TransformerDecoder,
        ):
            block = cls(intermediate_dim=8, num_heads=2)
            block(keras.Input((3, 4)))
            what = f"a built KerasHub {cls.__name__}"
            require(block, HUB_SELF_ATTENTION, what, "keras-hub")
            if cls is keras_hub.layers.TransformerDecoder:
                require(block, HUB_CROSS_ATTENTION, what, "keras-hub")
        backbone = keras_hub.models.GPT2Backbone(
            vocabulary_size=8,
            num_layers=1,
            num_heads=1,
            hidden_dim=4,
            intermediate_dim=4,
            max_sequence_length=4,
        )
        task = keras_hub.models.GPT2CausalLM(backbone, preprocessor=None)
        what = "a KerasHub CausalLM"
        for attr in (HUB_TASK_BACKBONE, HUB_TASK_LAYER_IDS, HUB_GENERATE_FUNCTION):
            require(task, attr, what, "keras-hub")
    if importlib.util.find_spec("keras_tuner") is not None:
        import keras_tuner

        for name, methods in TUNER_METHODS.items():
            for method in methods:
                what = f"KerasTuner's {name}"
                require(getattr(keras_tuner, name), method, what, "keras-tuner")
