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
    if importlib.util.find_spec("keras_tuner") is not None:
        import keras_tuner

        for name, methods in TUNER_METHODS.items():
            for method in methods:
                what = f"KerasTuner's {name}"
                require(getattr(keras_tuner, name), method, what, "keras-tuner")
