"""Small models that reproduce the couplings of modern CNNs (see test_coupled.py)."""

import keras
import numpy as np
from conftest import randomize_weights

import keras_net2net as kn

L = keras.layers


def resnet():
    """Two identity residual blocks on one stream (ResNet v1 style)."""
    inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(8, 3, padding="same", name="stem")(inputs)
    x = L.BatchNormalization(name="stem_bn")(x)
    x = L.Activation("relu", name="stem_relu")(x)
    for b in range(2):
        h = L.Conv2D(6, 3, padding="same", name=f"b{b}_c1")(x)
        h = L.BatchNormalization(name=f"b{b}_bn1")(h)
        h = L.ReLU(name=f"b{b}_relu1")(h)
        h = L.Conv2D(8, 3, padding="same", name=f"b{b}_c2")(h)
        h = L.BatchNormalization(name=f"b{b}_bn2")(h)
        x = L.Add(name=f"b{b}_add")([x, h])
        x = L.Activation("relu", name=f"b{b}_out")(x)
    x = L.GlobalAveragePooling2D(name="pool")(x)
    return randomize_weights(keras.Model(inputs, L.Dense(5, name="head")(x)))


def inverted_residual():
    """MobileNetV2-style: expand, depthwise, project, identity shortcut."""
    inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(8, 3, padding="same", name="stem")(inputs)
    h = L.Conv2D(16, 1, name="expand")(x)
    h = L.BatchNormalization(name="expand_bn")(h)
    h = L.ReLU(6.0, name="expand_relu")(h)
    h = L.DepthwiseConv2D(3, padding="same", name="dw")(h)
    h = L.BatchNormalization(name="dw_bn")(h)
    h = L.ReLU(6.0, name="dw_relu")(h)
    h = L.Conv2D(8, 1, name="project")(h)
    h = L.BatchNormalization(name="project_bn")(h)
    x = L.Add(name="add")([x, h])
    x = L.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="dw2")(x)
    x = L.SeparableConv2D(6, 3, padding="same", name="sep")(x)
    x = L.GlobalAveragePooling2D(name="pool")(x)
    return randomize_weights(keras.Model(inputs, L.Dense(5, name="head")(x)))


def dense_block():
    """DenseNet-style: every layer's output concatenated onto the stream."""
    inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(8, 3, padding="same", name="stem")(inputs)
    for b in range(2):
        h = L.BatchNormalization(name=f"d{b}_bn")(x)
        h = L.Activation("relu", name=f"d{b}_relu")(h)
        h = L.Conv2D(4, 3, padding="same", name=f"d{b}_conv")(h)
        x = L.Concatenate(name=f"d{b}_cat")([x, h])
    x = L.BatchNormalization(name="final_bn")(x)
    x = L.AveragePooling2D(2, name="pool")(x)
    x = L.Flatten(name="flatten")(x)
    return randomize_weights(keras.Model(inputs, L.Dense(5, name="head")(x)))


def squeeze_excitation():
    """SE gates as layers (Multiply) and as a raw keras.ops.multiply."""
    inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(8, 3, padding="same", name="c1")(inputs)
    g = L.GlobalAveragePooling2D(keepdims=True, name="se_pool")(x)
    g = L.Conv2D(4, 1, activation="relu", name="se_reduce")(g)
    g = L.Conv2D(8, 1, activation="sigmoid", name="se_expand")(g)
    x = L.Multiply(name="se_mul")([x, g])
    x = L.Conv2D(6, 3, padding="same", name="c2")(x)
    g = L.GlobalAveragePooling2D(name="se2_pool")(x)
    g = L.Reshape((1, 1, 6), name="se2_reshape")(g)
    g = L.Conv2D(6, 1, activation="sigmoid", name="se2")(g)
    x = keras.ops.multiply(x, g)
    x = L.GlobalAveragePooling2D(name="pool")(x)
    return randomize_weights(keras.Model(inputs, L.Dense(5, name="head")(x)))


def convnext_block():
    """ConvNeXt-style: nested Sequential stem, grouped depthwise Conv,
    LayerNormalization, LayerScale and raw `x + y` residual adds."""
    from keras_net2net._keras_internals import application_layer_classes

    layer_scale = application_layer_classes()["LayerScale"]
    inputs = keras.Input((8, 8, 3))
    stem = keras.Sequential(
        [
            L.Conv2D(8, 2, strides=2, name="stem_conv"),
            L.LayerNormalization(epsilon=1e-6, name="stem_ln"),
        ],
        name="stem",
    )
    x = stem(inputs)
    for b in range(2):
        h = L.Conv2D(8, 3, padding="same", groups=8, name=f"b{b}_dw")(x)
        h = L.LayerNormalization(epsilon=1e-6, name=f"b{b}_ln")(h)
        h = L.Dense(16, name=f"b{b}_pw1")(h)
        h = L.Activation("gelu", name=f"b{b}_gelu")(h)
        h = L.Dense(8, name=f"b{b}_pw2")(h)
        h = layer_scale(0.5, 8, name=f"b{b}_ls")(h)
        x = x + h
    x = L.GlobalAveragePooling2D(name="pool")(x)
    x = L.LayerNormalization(name="head_ln")(x)
    return randomize_weights(keras.Model(inputs, L.Dense(5, name="head")(x)))


def sequential_chain():
    """A Sequential chain through depthwise, separable and normalisation layers."""
    return randomize_weights(
        keras.Sequential(
            [
                keras.Input((8, 8, 3)),
                L.Conv2D(6, 3, padding="same", name="c1"),
                L.LayerNormalization(name="ln"),
                L.PReLU(name="prelu"),
                L.DepthwiseConv2D(3, padding="same", name="dw"),
                L.BatchNormalization(name="bn"),
                L.SeparableConv2D(5, 3, padding="same", activation="relu", name="sep"),
                L.MaxPooling2D(2, name="pool"),
                L.Reshape((16, 5), name="reshape"),
                L.Dense(7, activation="gelu", name="fc"),
                L.Flatten(name="flatten"),
                L.Dense(3, name="head"),
            ]
        )
    )


def channels_first():
    """The couplings above with ``data_format="channels_first"`` (BN axis=1):
    residual Add, SE gate, depthwise, separable, Concatenate(axis=1), pooling,
    padding, Flatten and global pooling.

    TensorFlow on CPU runs NCHW convolutions only through oneDNN, whose
    output mis-broadcasts a per-channel bias when a spatial size equals the
    number of filters (TF 2.21); no spatial size here equals a channel count.
    """
    cf = {"data_format": "channels_first"}
    inputs = keras.Input((3, 9, 10))
    x = L.Conv2D(8, 3, padding="same", name="stem", **cf)(inputs)
    x = L.BatchNormalization(axis=1, name="stem_bn")(x)
    x = L.ReLU(name="stem_relu")(x)
    h = L.Conv2D(8, 1, name="b_c1", **cf)(x)
    h = L.DepthwiseConv2D(3, padding="same", name="b_dw", **cf)(h)
    x = L.Add(name="b_add")([x, h])
    g = L.GlobalAveragePooling2D(keepdims=True, name="se_pool", **cf)(x)
    g = L.Conv2D(8, 1, activation="sigmoid", name="se_expand", **cf)(g)
    x = L.Multiply(name="se_mul")([x, g])
    h = L.SeparableConv2D(4, 3, padding="same", name="sep", **cf)(x)
    x = L.Concatenate(axis=1, name="cat")([x, h])
    x = L.MaxPooling2D(2, name="pool", **cf)(x)
    x = L.ZeroPadding2D(1, name="pad", **cf)(x)
    a = L.Dense(6, name="fc")(L.Flatten(name="flatten", **cf)(x))
    b = L.Dense(6, name="fc_gap")(L.GlobalAveragePooling2D(name="gap", **cf)(x))
    x = L.Add(name="fc_add")([a, b])
    return randomize_weights(keras.Model(inputs, L.Dense(5, name="head")(x)))


def decoder():
    """An autoencoder-style decoder: strided Conv2DTranspose upsampling
    (channels_last and channels_first), BatchNormalization, a skip Add."""
    inputs = keras.Input((5, 5, 3))
    x = L.Conv2D(8, 3, padding="same", name="enc")(inputs)
    x = L.Conv2DTranspose(6, 3, strides=2, padding="same", name="up1")(x)
    x = L.BatchNormalization(name="up1_bn")(x)
    x = L.ReLU(name="up1_relu")(x)
    skip = L.Conv2DTranspose(6, 2, strides=2, name="skip")(
        L.Conv2D(4, 1, name="s")(inputs)
    )
    x = L.Add(name="merge")([x, skip])
    x = L.Conv2DTranspose(4, 3, padding="same", activation="relu", name="up2")(x)
    x = L.Permute((3, 1, 2), name="to_cf")(x)  # channels first from here
    x = L.Conv2DTranspose(5, 3, strides=2, data_format="channels_first", name="up3")(x)
    x = L.Conv2D(3, 3, data_format="channels_first", name="out")(x)
    x = L.Flatten(data_format="channels_first", name="flat")(x)
    return randomize_weights(keras.Model(inputs, x))


def recurrent():
    """LSTM (sequence and both states used), GRU (reset_after) and SimpleRNN
    over a projected, masked sequence."""
    inputs = keras.Input((6, 5))
    x = L.Masking(name="mask")(inputs)
    x = L.Dense(8, name="proj")(x)
    seq, h, c = L.LSTM(7, return_sequences=True, return_state=True, name="lstm")(x)
    x = L.GRU(6, return_sequences=True, name="gru")(seq)
    x = L.SimpleRNN(5, name="rnn")(x)
    x = L.Concatenate(name="cat")([x, h, c])
    return randomize_weights(keras.Model(inputs, L.Dense(3, name="head")(x)))


def bidirectional():
    """Bidirectional LSTM (concat), GRU (sum) and SimpleRNN (ave) layers over a
    projected sequence."""
    inputs = keras.Input((6, 5))
    x = L.Dense(8, name="proj")(inputs)
    x = L.Bidirectional(L.LSTM(4, return_sequences=True), name="bi_lstm")(x)
    x = L.Bidirectional(
        L.GRU(5, return_sequences=True), merge_mode="sum", name="bi_gru"
    )(x)
    x = L.Bidirectional(L.SimpleRNN(3), merge_mode="ave", name="bi_rnn")(x)
    return randomize_weights(keras.Model(inputs, L.Dense(3, name="head")(x)))


def group_norm():
    """GroupNormalization (channels_last and channels_first, groups=-1 too)
    in a diffusion-UNet-style residual block (no spatial size equals a channel
    count: see `channels_first`)."""
    inputs = keras.Input((5, 7, 3))
    x = L.Conv2D(8, 3, padding="same", name="stem")(inputs)
    h = L.GroupNormalization(groups=4, name="gn1")(x)
    h = L.Activation("silu", name="act1")(h)
    h = L.Conv2D(8, 3, padding="same", name="conv1")(h)
    h = L.GroupNormalization(groups=2, name="gn2")(h)
    x = L.Add(name="add")([x, h])
    x = L.Conv2D(6, 1, name="proj")(x)
    x = L.GroupNormalization(groups=-1, name="instance")(x)
    x = L.Permute((3, 1, 2), name="to_cf")(x)
    x = L.Conv2D(6, 1, data_format="channels_first", name="cf")(x)
    x = L.GroupNormalization(groups=3, axis=1, name="gn_cf")(x)
    x = L.GlobalAveragePooling2D(data_format="channels_first", name="pool")(x)
    return randomize_weights(keras.Model(inputs, L.Dense(3, name="head")(x)))


def generator_stem():
    """DCGAN / WGAN-GP generator stems: a Dense whose units a Reshape splits
    into positions x channels (through BatchNormalization and LeakyReLU), then
    transposed convolutions; and a channels_first split."""
    inputs = keras.Input((6,))
    x = L.Dense(4 * 4 * 8, use_bias=False, name="stem")(inputs)
    x = L.BatchNormalization(name="stem_bn")(x)
    x = L.LeakyReLU(0.2, name="stem_act")(x)
    x = L.Reshape((4, 4, 8), name="to_image")(x)
    x = L.Conv2DTranspose(6, 4, strides=2, padding="same", name="up")(x)
    x = L.LeakyReLU(0.2, name="up_act")(x)
    x = L.Conv2D(3, 3, padding="same", activation="tanh", name="rgb")(x)
    c = L.Dense(5 * 2 * 3, name="cf_stem")(inputs)
    c = L.Reshape((5, 2, 3), name="to_cf")(c)
    c = L.Conv2D(4, 1, data_format="channels_first", name="cf_conv")(c)
    c = L.Flatten(data_format="channels_first", name="cf_flat")(c)
    x = L.Concatenate(name="cat")([L.Flatten(name="flat")(x), c])
    return randomize_weights(keras.Model(inputs, L.Dense(3, name="head")(x)))


BUILDERS = {
    "resnet": resnet,
    "inverted_residual": inverted_residual,
    "dense_block": dense_block,
    "squeeze_excitation": squeeze_excitation,
    "convnext_block": convnext_block,
    "sequential_chain": sequential_chain,
    "channels_first": channels_first,
    "decoder": decoder,
    "recurrent": recurrent,
    "bidirectional": bidirectional,
    "group_norm": group_norm,
    "generator_stem": generator_stem,
}


def relative_difference(a, b, x):
    scale = np.max(np.abs(keras.ops.convert_to_numpy(a(x, training=False))))
    return kn.max_output_difference(a, b, x) / scale
