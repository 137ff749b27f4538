"""How much of the models Keras users write can keras-net2net grow, exactly?

The models are built the way keras.io's code examples build them (small
widths and inputs, random non-trivial weights), one per family of layers:
text classifiers (Conv1D, LSTM/GRU, Bidirectional, the keras.io Transformer
with its subclassed ``TransformerBlock`` and ``TokenAndPositionEmbedding``),
an LSTM seq2seq, the Oxford-pets U-Net, DCGAN's generator and discriminator,
a denoising autoencoder, ConvMixer, MLP-Mixer and ViT with keras.io's
subclassed ``Patches`` layers, a Siamese network with a shared embedding
network, a 3D CNN, a DDPM-style U-Net with GroupNormalization, an
``Attention``/``AdditiveAttention`` model and Wide & Deep.

Like ``applications_coverage.py`` (whose sweep it uses), it widens every
Dense/Conv-like, recurrent and Embedding layer by 25% (layers writing a
model output excepted; rounded up only where a layer copies whole blocks:
heads, groups), and every subclassed layer (its output channels), and
deepens after each of them and after every residual Add, and prints per
model: tried, exact (max |diff| / max |output| <= 1e-5 in float32), refused
(with the reason), errors (a bug). The widths are what a user would pick
(48 -> 60), not multiples of the old width where a LayerNormalization reads
the channels (``--multiples``: the rule of ``applications_coverage.py``).

    python benchmarks/keras_io_coverage.py [--models unet vit] [--out f.json]
"""

import argparse
import json
import os
import platform
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_net2net as kn  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from applications_coverage import WIDENABLE  # noqa: E402
from applications_coverage import candidates  # noqa: E402
from applications_coverage import new_width  # noqa: E402
from applications_coverage import randomize  # noqa: E402
from applications_coverage import sweep  # noqa: E402
from applications_coverage import table  # noqa: E402

L = keras.layers
ops = keras.ops
WIDENABLE_IO = WIDENABLE + (
    L.Conv1DTranspose,
    L.Conv2DTranspose,
    L.Conv3DTranspose,
    L.SeparableConv1D,
    L.LSTM,
    L.GRU,
    L.SimpleRNN,
    L.Bidirectional,
    L.Embedding,
)
VOCAB, LENGTH = 50, 12


def tokens(n=2, length=LENGTH, seed=0):
    return np.random.default_rng(seed).integers(1, VOCAB, (n, length)).astype("int32")


def images(*shape, seed=0):
    return np.random.default_rng(seed).normal(size=(2, *shape)).astype("float32")


# -- keras.io's own subclassed layers, as the examples write them -------------


class TransformerBlock(L.Layer):
    """keras.io "Text classification with Transformer" (no get_config)."""

    def __init__(self, embed_dim, num_heads, ff_dim, rate=0.1):
        super().__init__()
        self.att = L.MultiHeadAttention(num_heads=num_heads, key_dim=embed_dim)
        self.ffn = keras.Sequential(
            [L.Dense(ff_dim, activation="relu"), L.Dense(embed_dim)]
        )
        self.layernorm1 = L.LayerNormalization(epsilon=1e-6)
        self.layernorm2 = L.LayerNormalization(epsilon=1e-6)
        self.dropout1 = L.Dropout(rate)
        self.dropout2 = L.Dropout(rate)

    def call(self, inputs, training=False):
        attn_output = self.att(inputs, inputs)
        attn_output = self.dropout1(attn_output, training=training)
        out1 = self.layernorm1(inputs + attn_output)
        ffn_output = self.ffn(out1)
        ffn_output = self.dropout2(ffn_output, training=training)
        return self.layernorm2(out1 + ffn_output)


class TokenAndPositionEmbedding(L.Layer):
    def __init__(self, maxlen, vocab_size, embed_dim):
        super().__init__()
        self.token_emb = L.Embedding(input_dim=vocab_size, output_dim=embed_dim)
        self.pos_emb = L.Embedding(input_dim=maxlen, output_dim=embed_dim)

    def call(self, x):
        maxlen = ops.shape(x)[-1]
        positions = ops.arange(start=0, stop=maxlen, step=1)
        return self.token_emb(x) + self.pos_emb(positions)


class Patches(L.Layer):
    """keras.io ViT / MLP-Mixer: image patches (``__init__`` without kwargs)."""

    def __init__(self, patch_size):
        super().__init__()
        self.patch_size = patch_size

    def call(self, x):
        patches = ops.image.extract_patches(x, self.patch_size)
        batch = ops.shape(patches)[0]
        count = patches.shape[1] * patches.shape[2]
        return ops.reshape(patches, (batch, count, patches.shape[-1]))


class PatchEncoder(L.Layer):
    def __init__(self, num_patches, projection_dim):
        super().__init__()
        self.num_patches = num_patches
        self.projection = L.Dense(units=projection_dim)
        self.position_embedding = L.Embedding(
            input_dim=num_patches, output_dim=projection_dim
        )

    def call(self, patch):
        positions = ops.expand_dims(ops.arange(start=0, stop=self.num_patches), 0)
        return self.projection(patch) + self.position_embedding(positions)


class MLPMixerLayer(L.Layer):
    def __init__(self, num_patches, hidden_units, dropout_rate, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.mlp1 = keras.Sequential(
            [L.Dense(num_patches, activation="gelu"), L.Dense(num_patches)]
        )
        self.mlp2 = keras.Sequential(
            [L.Dense(num_patches, activation="gelu"), L.Dense(hidden_units)]
        )
        self.normalize = L.LayerNormalization(epsilon=1e-6)

    def call(self, inputs):
        x = self.normalize(inputs)
        x_channels = ops.transpose(x, axes=(0, 2, 1))
        mlp1_outputs = self.mlp1(x_channels)
        mlp1_outputs = ops.transpose(mlp1_outputs, axes=(0, 2, 1))
        x = mlp1_outputs + inputs
        x_patches = self.normalize(x)
        mlp2_outputs = self.mlp2(x_patches)
        return x + mlp2_outputs


def euclidean_distance(vects):
    x, y = vects
    sum_square = ops.sum(ops.square(x - y), axis=1, keepdims=True)
    return ops.sqrt(ops.maximum(sum_square, keras.backend.epsilon()))


# -- the models -----------------------------------------------------------------


def text_transformer():
    inputs = L.Input(shape=(LENGTH,))
    x = TokenAndPositionEmbedding(LENGTH, VOCAB, 16)(inputs)
    x = TransformerBlock(16, 2, 32)(x)
    x = L.GlobalAveragePooling1D()(x)
    x = L.Dropout(0.1)(x)
    x = L.Dense(20, activation="relu")(x)
    x = L.Dropout(0.1)(x)
    outputs = L.Dense(2, activation="softmax")(x)
    return keras.Model(inputs, outputs), tokens()


def conv1d_text():
    inputs = keras.Input(shape=(None,), dtype="int64")
    x = L.Embedding(VOCAB, 16)(inputs)
    x = L.Dropout(0.5)(x)
    x = L.Conv1D(16, 3, padding="valid", activation="relu", strides=1)(x)
    x = L.Conv1D(16, 3, padding="valid", activation="relu", strides=1)(x)
    x = L.GlobalMaxPooling1D()(x)
    x = L.Dense(16, activation="relu")(x)
    x = L.Dropout(0.5)(x)
    outputs = L.Dense(1, activation="sigmoid")(x)
    return keras.Model(inputs, outputs), tokens()


def bidirectional_lstm():
    inputs = keras.Input(shape=(None,), dtype="int32")
    x = L.Embedding(VOCAB, 16)(inputs)
    x = L.Bidirectional(L.LSTM(8, return_sequences=True))(x)
    x = L.Bidirectional(L.LSTM(8))(x)
    outputs = L.Dense(1, activation="sigmoid")(x)
    return keras.Model(inputs, outputs), tokens()


def gru_text():
    inputs = keras.Input(shape=(None,), dtype="int32")
    x = L.Embedding(VOCAB, 16)(inputs)
    x = L.GRU(16, return_sequences=True)(x)
    x = L.GRU(16)(x)
    outputs = L.Dense(3)(x)
    return keras.Model(inputs, outputs), tokens()


def lstm_seq2seq():
    encoder_inputs = keras.Input(shape=(None, 10))
    _, state_h, state_c = L.LSTM(16, return_state=True)(encoder_inputs)
    decoder_inputs = keras.Input(shape=(None, 8))
    decoder_outputs, _, _ = L.LSTM(16, return_sequences=True, return_state=True)(
        decoder_inputs, initial_state=[state_h, state_c]
    )
    outputs = L.Dense(8, activation="softmax")(decoder_outputs)
    model = keras.Model([encoder_inputs, decoder_inputs], outputs)
    return model, [images(6, 10), images(5, 8, seed=1)]


def unet():
    """keras.io "Image segmentation with a U-Net-like architecture"."""
    inputs = keras.Input(shape=(32, 32, 3))
    x = L.Conv2D(8, 3, strides=2, padding="same")(inputs)
    x = L.BatchNormalization()(x)
    x = L.Activation("relu")(x)
    previous_block_activation = x
    for filters in [16, 32]:
        x = L.Activation("relu")(x)
        x = L.SeparableConv2D(filters, 3, padding="same")(x)
        x = L.BatchNormalization()(x)
        x = L.Activation("relu")(x)
        x = L.SeparableConv2D(filters, 3, padding="same")(x)
        x = L.BatchNormalization()(x)
        x = L.MaxPooling2D(3, strides=2, padding="same")(x)
        residual = L.Conv2D(filters, 1, strides=2, padding="same")(
            previous_block_activation
        )
        x = L.add([x, residual])
        previous_block_activation = x
    for filters in [32, 16, 8]:
        x = L.Activation("relu")(x)
        x = L.Conv2DTranspose(filters, 3, padding="same")(x)
        x = L.BatchNormalization()(x)
        x = L.Activation("relu")(x)
        x = L.Conv2DTranspose(filters, 3, padding="same")(x)
        x = L.BatchNormalization()(x)
        x = L.UpSampling2D(2)(x)
        residual = L.UpSampling2D(2)(previous_block_activation)
        residual = L.Conv2D(filters, 1, padding="same")(residual)
        x = L.add([x, residual])
        previous_block_activation = x
    outputs = L.Conv2D(3, 3, activation="softmax", padding="same")(x)
    return keras.Model(inputs, outputs), images(32, 32, 3)


def dcgan_generator():
    latent = 16
    model = keras.Sequential(
        [
            keras.Input(shape=(latent,)),
            L.Dense(4 * 4 * 32),
            L.Reshape((4, 4, 32)),
            L.Conv2DTranspose(32, kernel_size=4, strides=2, padding="same"),
            L.LeakyReLU(negative_slope=0.2),
            L.Conv2DTranspose(16, kernel_size=4, strides=2, padding="same"),
            L.LeakyReLU(negative_slope=0.2),
            L.Conv2D(3, kernel_size=5, padding="same", activation="sigmoid"),
        ]
    )
    return model, images(latent)


def dcgan_discriminator():
    model = keras.Sequential(
        [
            keras.Input(shape=(16, 16, 3)),
            L.Conv2D(16, kernel_size=4, strides=2, padding="same"),
            L.LeakyReLU(negative_slope=0.2),
            L.Conv2D(32, kernel_size=4, strides=2, padding="same"),
            L.LeakyReLU(negative_slope=0.2),
            L.Flatten(),
            L.Dropout(0.2),
            L.Dense(1, activation="sigmoid"),
        ]
    )
    return model, images(16, 16, 3)


def denoising_autoencoder():
    inputs = L.Input(shape=(16, 16, 1))
    x = L.Conv2D(8, (3, 3), activation="relu", padding="same")(inputs)
    x = L.MaxPooling2D((2, 2), padding="same")(x)
    x = L.Conv2D(8, (3, 3), activation="relu", padding="same")(x)
    x = L.MaxPooling2D((2, 2), padding="same")(x)
    x = L.Conv2DTranspose(8, (3, 3), strides=2, activation="relu", padding="same")(x)
    x = L.Conv2DTranspose(8, (3, 3), strides=2, activation="relu", padding="same")(x)
    outputs = L.Conv2D(1, (3, 3), activation="sigmoid", padding="same")(x)
    return keras.Model(inputs, outputs), images(16, 16, 1)


def convmixer():
    def activation_block(x):
        x = L.Activation("gelu")(x)
        return L.BatchNormalization()(x)

    inputs = keras.Input((16, 16, 3))
    x = L.Rescaling(scale=1.0 / 255)(inputs)
    x = L.Conv2D(16, kernel_size=2, strides=2)(x)
    x = activation_block(x)
    for _ in range(2):
        x0 = x
        x = L.DepthwiseConv2D(kernel_size=3, padding="same")(x)
        x = L.Add()([activation_block(x), x0])
        x = L.Conv2D(16, kernel_size=1)(x)
        x = activation_block(x)
    x = L.GlobalAvgPool2D()(x)
    outputs = L.Dense(10, activation="softmax")(x)
    return keras.Model(inputs, outputs), images(16, 16, 3)


def mlp_mixer():
    inputs = L.Input(shape=(16, 16, 3))
    patches = Patches(4)(inputs)
    x = L.Dense(units=16)(patches)
    x = keras.Sequential([MLPMixerLayer(16, 16, 0.0) for _ in range(2)])(x)
    x = L.GlobalAveragePooling1D()(x)
    logits = L.Dense(10)(x)
    return keras.Model(inputs, logits), images(16, 16, 3)


def vit():
    """keras.io "Image classification with Vision Transformer"."""
    inputs = L.Input(shape=(16, 16, 3))
    patches = Patches(4)(inputs)
    encoded = PatchEncoder(16, 16)(patches)
    for _ in range(2):
        x1 = L.LayerNormalization(epsilon=1e-6)(encoded)
        attention_output = L.MultiHeadAttention(num_heads=2, key_dim=16)(x1, x1)
        x2 = L.Add()([attention_output, encoded])
        x3 = L.LayerNormalization(epsilon=1e-6)(x2)
        x3 = L.Dense(32, activation="gelu")(x3)
        x3 = L.Dense(16, activation="gelu")(x3)
        encoded = L.Add()([x3, x2])
    representation = L.LayerNormalization(epsilon=1e-6)(encoded)
    representation = L.Flatten()(representation)
    features = L.Dense(32, activation="gelu")(representation)
    logits = L.Dense(10)(features)
    return keras.Model(inputs, logits), images(16, 16, 3)


def siamese():
    # keras.io "Siamese network with a contrastive loss": a Functional
    # embedding network applied to both images.
    image = L.Input((16, 16, 1))
    x = L.BatchNormalization()(image)
    x = L.Conv2D(4, (5, 5), activation="tanh")(x)
    x = L.AveragePooling2D(pool_size=(2, 2))(x)
    x = L.Conv2D(8, (3, 3), activation="tanh")(x)
    x = L.AveragePooling2D(pool_size=(2, 2))(x)
    x = L.Flatten()(x)
    x = L.BatchNormalization()(x)
    x = L.Dense(10, activation="tanh")(x)
    embedding = keras.Model(image, x, name="embedding")
    input_1, input_2 = L.Input((16, 16, 1)), L.Input((16, 16, 1))
    merge = L.Lambda(euclidean_distance, output_shape=(1,))(
        [embedding(input_1), embedding(input_2)]
    )
    x = L.BatchNormalization()(merge)
    outputs = L.Dense(1, activation="sigmoid")(x)
    model = keras.Model([input_1, input_2], outputs)
    return model, [images(16, 16, 1), images(16, 16, 1, seed=1)]


def cnn3d():
    inputs = keras.Input((12, 12, 12, 1))
    x = L.Conv3D(filters=8, kernel_size=3, activation="relu")(inputs)
    x = L.MaxPool3D(pool_size=2)(x)
    x = L.BatchNormalization()(x)
    x = L.Conv3D(filters=16, kernel_size=3, activation="relu")(x)
    x = L.BatchNormalization()(x)
    x = L.GlobalAveragePooling3D()(x)
    x = L.Dense(units=16, activation="relu")(x)
    x = L.Dropout(0.3)(x)
    outputs = L.Dense(units=1, activation="sigmoid")(x)
    return keras.Model(inputs, outputs), images(12, 12, 12, 1)


def ddpm_unet():
    """keras.io DDPM's U-Net, without the time embedding (GroupNorm, swish)."""

    def residual_block(x, width, groups=4):
        if x.shape[-1] == width:
            residual = x
        else:
            residual = L.Conv2D(width, kernel_size=1)(x)
        x = L.GroupNormalization(groups=groups)(x)
        x = L.Activation("swish")(x)
        x = L.Conv2D(width, kernel_size=3, padding="same")(x)
        x = L.GroupNormalization(groups=groups)(x)
        x = L.Activation("swish")(x)
        x = L.Conv2D(width, kernel_size=3, padding="same")(x)
        return L.Add()([x, residual])

    inputs = keras.Input((16, 16, 3))
    x = L.Conv2D(8, kernel_size=(3, 3), padding="same")(inputs)
    skips = [x]
    for width in (8, 16):
        x = residual_block(x, width)
        skips.append(x)
        x = L.Conv2D(width, kernel_size=3, strides=2, padding="same")(x)
    x = residual_block(x, 16)
    for width in (16, 8):
        x = L.UpSampling2D(size=2, interpolation="nearest")(x)
        x = L.Conv2D(width, kernel_size=3, padding="same")(x)
        x = L.Concatenate(axis=-1)([x, skips.pop()])
        x = residual_block(x, width)
    x = L.GroupNormalization(groups=4)(x)
    x = L.Activation("swish")(x)
    outputs = L.Conv2D(3, (3, 3), padding="same")(x)
    return keras.Model(inputs, outputs), images(16, 16, 3)


def attention(layer):
    """The keras.io/api example of ``layers.Attention`` (a CNN+attention model)."""

    def build():
        query_input = keras.Input(shape=(None,), dtype="int32")
        value_input = keras.Input(shape=(None,), dtype="int32")
        token_embedding = L.Embedding(input_dim=VOCAB, output_dim=16)
        query_embeddings = token_embedding(query_input)
        value_embeddings = token_embedding(value_input)
        cnn_layer = L.Conv1D(filters=16, kernel_size=4, padding="same")
        query_seq_encoding = cnn_layer(query_embeddings)
        value_seq_encoding = cnn_layer(value_embeddings)
        query_value_attention_seq = layer()([query_seq_encoding, value_seq_encoding])
        query_encoding = L.GlobalAveragePooling1D()(query_seq_encoding)
        query_value_attention = L.GlobalAveragePooling1D()(query_value_attention_seq)
        x = L.Concatenate()([query_encoding, query_value_attention])
        outputs = L.Dense(2)(x)
        model = keras.Model([query_input, value_input], outputs)
        return model, [tokens(), tokens(seed=1)]

    return build


def wide_and_deep():
    wide_inputs = keras.Input((6,))
    deep_inputs = keras.Input((10,))
    x = L.Dense(16, activation="relu")(deep_inputs)
    x = L.Dense(16, activation="relu")(x)
    both = L.concatenate([wide_inputs, x])
    outputs = L.Dense(1, activation="sigmoid")(both)
    model = keras.Model([wide_inputs, deep_inputs], outputs)
    return model, [images(6), images(10, seed=1)]


MODELS = {
    "text_transformer": text_transformer,
    "conv1d_text": conv1d_text,
    "bidirectional_lstm": bidirectional_lstm,
    "gru_text": gru_text,
    "lstm_seq2seq": lstm_seq2seq,
    "unet": unet,
    "dcgan_generator": dcgan_generator,
    "dcgan_discriminator": dcgan_discriminator,
    "denoising_autoencoder": denoising_autoencoder,
    "convmixer": convmixer,
    "mlp_mixer": mlp_mixer,
    "vit": vit,
    "siamese": siamese,
    "cnn3d": cnn3d,
    "ddpm_unet": ddpm_unet,
    "attention": attention(L.Attention),
    "additive_attention": attention(L.AdditiveAttention),
    "wide_and_deep": wide_and_deep,
}


def user_width(model, op):
    """25% wider, rounded up to whole blocks (heads, groups) only; a
    subclassed layer or nested model by its output channels."""
    if kn.surgery.handlers.get_handler(op) is None:
        return op.output.shape[-1] + max(1, round(0.25 * op.output.shape[-1]))
    return new_width(model, op, multiples=False)


def multiple_width(model, op):
    """`new_width` (a multiple where a normalisation reads the channels); a
    subclassed layer's output channels doubled."""
    if kn.surgery.handlers.get_handler(op) is None:
        return 2 * op.output.shape[-1]
    return new_width(model, op)


def io_candidates(model):
    """`candidates`, and each subclassed layer with weights and one output
    tensor: widened (its output channels) and, taking one tensor of its
    output's shape, deepened after (a new instance of its class)."""
    found = candidates(model, WIDENABLE_IO)
    graph = kn.surgery.LayerGraph(model)
    outputs = {id(graph.producer(key).op) for key in graph.outputs}
    for op in model.layers:
        # The user's own layers that write channels (weights of their own).
        if not kn.surgery.handlers.is_opaque(op) or id(op) in outputs:
            continue
        if isinstance(op, L.Lambda) or not op.weights:
            continue
        shapes = [tuple(t.shape) for t in keras.tree.flatten(op.output)]
        inputs = [tuple(t.shape) for t in keras.tree.flatten(op.input)]
        if len(shapes) != 1 or len(shapes[0]) < 2:
            continue
        found.append(("widen", op))
        if inputs == shapes:
            found.append(("deepen", op))
    return found


GUIDE = "docs/guides/coupling-groups.md (results: docs/guides/results.md)"


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog=f"Guide: {GUIDE}"
    )
    parser.add_argument("--models", nargs="*", default=None, help="subset of models")
    parser.add_argument("--out", default=None, help="JSON file for the results")
    parser.add_argument(
        "--multiples",
        action="store_true",
        help="widen normalised groups to a multiple of their width (the "
        "applications_coverage.py rule) instead of by 25%%",
    )
    args = parser.parse_args(argv)
    print(f"Guide: {GUIDE}", file=sys.stderr)
    names = args.models or list(MODELS)
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        parser.error(f"unknown models {unknown}; known: {sorted(MODELS)}")
    rows = []
    for name in names:
        model, x = MODELS[name]()
        randomize(model)
        width = multiple_width if args.multiples else user_width
        rows.append(sweep(name, model, x, width=width, found=io_candidates(model)))
        print(f"{name}: {rows[-1]['exact']}/{rows[-1]['tried']} exact", flush=True)
    print(table(rows))
    tried = sum(r["tried"] for r in rows)
    exact = sum(r["exact"] for r in rows)
    errors = sum(len(r["errors"]) + len(r["not_exact"]) for r in rows)
    print(
        f"\nall: {exact}/{tried} exact ({100 * exact / max(tried, 1):.1f}%), "
        f"{errors} errors"
    )
    meta = {
        "keras": keras.version(),
        "backend": keras.backend.backend(),
        "python": platform.python_version(),
        "machine": platform.processor() or platform.machine(),
    }
    if args.out:
        Path(args.out).write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
