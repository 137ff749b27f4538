"""A keras.io-style Transformer text classifier, written with the Functional API."""

import keras
import numpy as np
from conftest import randomize_weights

L = keras.layers


def transformer_classifier(
    vocab=40, maxlen=12, d=16, heads=2, ffn=32, blocks=2, pre_ln=True, seed=0
):
    """Token + position embeddings, ``blocks`` Transformer blocks, pooling, head.

    Positions are computed in the graph from the token tensor (raw keras.ops).
    ``pre_ln``: LayerNormalization before attention and feed-forward (GPT-2
    style); otherwise after each residual Add (the original Transformer).
    """
    tokens = keras.Input((maxlen,), dtype="int32", name="tokens")
    positions = keras.ops.cumsum(keras.ops.ones_like(tokens), axis=1) - 1
    x = L.Embedding(vocab, d, name="token_embedding")(tokens)
    x = x + L.Embedding(maxlen, d, name="position_embedding")(positions)
    for b in range(blocks):
        h = L.LayerNormalization(name=f"ln_attn_{b}")(x) if pre_ln else x
        h = L.MultiHeadAttention(heads, d // heads, name=f"mha_{b}")(h, h)
        h = L.Dropout(0.1, name=f"drop_attn_{b}")(h)
        x = L.Add(name=f"add_attn_{b}")([x, h])
        if not pre_ln:
            x = L.LayerNormalization(name=f"ln_attn_{b}")(x)
        h = L.LayerNormalization(name=f"ln_ffn_{b}")(x) if pre_ln else x
        h = L.Dense(ffn, activation="gelu", name=f"ffn_in_{b}")(h)
        h = L.Dense(d, name=f"ffn_out_{b}")(h)
        h = L.Dropout(0.1, name=f"drop_ffn_{b}")(h)
        x = L.Add(name=f"add_ffn_{b}")([x, h])
        if not pre_ln:
            x = L.LayerNormalization(name=f"ln_ffn_{b}")(x)
    if pre_ln:
        x = L.LayerNormalization(name="ln_final")(x)
    x = L.GlobalAveragePooling1D(name="pool")(x)
    x = L.Dropout(0.1, name="drop_head")(x)
    model = keras.Model(tokens, L.Dense(2, name="head")(x), name="transformer")
    return randomize_weights(model, seed)


def token_batch(n=8, vocab=40, maxlen=12, seed=0):
    return np.random.default_rng(seed).integers(0, vocab, (n, maxlen)).astype("int32")
