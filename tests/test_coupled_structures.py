"""Coupled growth through shared structures: an encoder and the decoder it
initialises, shared layers and networks, GroupNormalization after a Concatenate,
nested KerasHub backbones, and a Dense whose units a Reshape splits."""

import keras
import numpy as np
import pytest
from conftest import TOL
from conftest import assert_unchanged
from conftest import randomize_weights
from conftest import snapshot
from coupled_models import relative_difference

import keras_net2net as kn

L = keras.layers


@pytest.mark.parametrize("rnn", [L.LSTM, L.GRU, L.SimpleRNN])
def test_an_encoder_and_the_decoder_it_initialises_grow_together(rnn):
    # keras.io's character-level seq2seq: the decoder starts from the
    # encoder's states, so both layers' units share one mapping.
    encoder_inputs = keras.Input((None, 5))
    encoded = rnn(6, return_state=True, name="encoder")(encoder_inputs)
    decoder_inputs = keras.Input((None, 4))
    decoded = rnn(6, return_sequences=True, name="decoder")(
        decoder_inputs, initial_state=encoded[1:]
    )
    outputs = L.Dense(4, name="head")(decoded)
    model = randomize_weights(keras.Model([encoder_inputs, decoder_inputs], outputs))
    rng = np.random.default_rng(0)
    x = [rng.normal(size=(2, 7, 5)), rng.normal(size=(2, 5, 4))]
    x = [v.astype("float32") for v in x]
    group = kn.coupled_layers(model, "decoder")
    assert {n.op.name for n in group.writers} == {"encoder", "decoder"}
    for target in ("encoder", "decoder"):
        grown = kn.widen(model, target, 10, seed=0)
        assert grown.get_layer("encoder").units == grown.get_layer("decoder").units
        assert relative_difference(model, grown, x) <= TOL
    # Only the encoder's states are read: nothing to follow on its sequence.
    with pytest.raises(ValueError, match=r"'encoder'.*nothing reads the first"):
        kn.deepen(model, after="encoder")
    grown = kn.deepen(model, after="decoder")
    assert relative_difference(model, grown, x) <= TOL
    assert grown.count_params() > model.count_params()


def test_a_shared_layer_is_followed_by_one_shared_identity_layer(tmp_path):
    # keras.io's Attention example: one embedding and one Conv1D applied to
    # the query and to the value.
    query, value = (
        keras.Input((None,), dtype="int32"),
        keras.Input((None,), dtype="int32"),
    )
    embedding = L.Embedding(20, 8, name="emb")
    conv = L.Conv1D(8, 3, padding="same", name="conv")
    q, v = conv(embedding(query)), conv(embedding(value))
    attended = L.Attention(name="attention")([q, v])
    pooled = L.Concatenate()(
        [L.GlobalAveragePooling1D()(q), L.GlobalAveragePooling1D()(attended)]
    )
    model = randomize_weights(
        keras.Model([query, value], L.Dense(2, name="out")(pooled))
    )
    rng = np.random.default_rng(0)
    x = [rng.integers(0, 20, (2, 6)).astype("int32") for _ in range(2)]
    for after in ("emb", "conv"):
        grown = kn.deepen(model, after=after)
        new = grown.get_layer(f"{after}_deeper")
        assert len(grown.layers) == len(model.layers) + 1
        # one layer, called after each call
        assert len(kn.surgery.LayerGraph(grown).calls(new)) == 2
        assert relative_difference(model, grown, x) <= TOL
    grown.save(tmp_path / "shared.keras")
    loaded = keras.models.load_model(tmp_path / "shared.keras")
    assert relative_difference(grown, loaded, x) <= TOL
    # The query and the value widen together, but Attention's scores count
    # copied channels twice: refused, saying why.
    with pytest.raises(ValueError, match=r"'attention'.*count\s+twice"):
        kn.widen(model, "conv", 12)
    grown = kn.widen(model, "emb", 12, seed=0)  # read by the shared conv
    assert relative_difference(model, grown, x) <= TOL


def test_a_shared_tanh_layer_is_followed_by_one_shared_residual_branch(tmp_path):
    # keras.io's Siamese network: one tanh embedding for both images.
    left, right = keras.Input((5,)), keras.Input((5,))
    shared = L.Dense(6, activation="tanh", name="embed")
    distance = L.Subtract()([shared(left), shared(right)])
    model = randomize_weights(keras.Model([left, right], L.Dense(1)(distance)))
    rng = np.random.default_rng(0)
    x = [rng.normal(size=(3, 5)).astype("float32") for _ in range(2)]
    grown = kn.deepen(model, after="embed")  # tanh: a residual branch
    branch = grown.get_layer("embed_residual_expand")
    assert len(kn.surgery.LayerGraph(grown).calls(branch)) == 2  # shared too
    assert relative_difference(model, grown, x) <= TOL
    grown.save(tmp_path / "siamese.keras")
    loaded = keras.models.load_model(tmp_path / "siamese.keras")
    assert relative_difference(grown, loaded, x) <= TOL


def test_a_shared_network_widens_once_for_all_its_calls(tmp_path):
    # keras.io's Siamese network: one embedding network applied to two
    # images; every call's readers are adjusted, its weights change once.
    embedding = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            L.Conv2D(4, 3, activation="relu", name="conv"),
            L.MaxPooling2D(2),
            L.Flatten(),
            L.BatchNormalization(name="bn"),
            L.Dense(6, activation="relu", name="embed"),
        ],
        name="embedding",
    )
    left, right = keras.Input((8, 8, 1)), keras.Input((8, 8, 1))
    distance = L.Subtract()([embedding(left), embedding(right)])
    outputs = L.Dense(1, name="out")(L.Dense(5, activation="relu", name="fc")(distance))
    model = randomize_weights(keras.Model([left, right], outputs))
    rng = np.random.default_rng(0)
    x = [rng.normal(size=(2, 8, 8, 1)).astype("float32") for _ in range(2)]
    before = snapshot(model)
    for target, units in (("conv", 7), ("embed", 9)):
        grown = kn.widen(model, target, units, seed=0)
        assert relative_difference(model, grown, x) <= TOL, target
        nested = grown.get_layer("embedding")
        assert (
            nested.get_layer(target).count_params()
            > embedding.get_layer(target).count_params()
        )
    assert_unchanged(model, before)
    # A shared BatchNormalization whose calls read a widened layout and a
    # tensor outside the group cannot follow one mapping: refused.
    inputs = keras.Input((4, 4, 2))
    bn = L.BatchNormalization(name="shared_bn")
    flat = L.Flatten()(L.Conv2D(2, 3, name="c")(inputs))  # 8 features
    other = L.Dense(8, name="d")(L.Flatten()(inputs))
    mixed = L.Concatenate()([bn(flat), bn(other)])
    mixed_model = keras.Model(inputs, L.Dense(1)(mixed))
    with pytest.raises(ValueError, match=r"'shared_bn'.*shared"):
        kn.widen(mixed_model, "c", 4)
    compiled = keras.models.clone_model(grown)
    compiled.set_weights(grown.get_weights())
    compiled.compile(keras.optimizers.Adam(0.01), "mse")
    compiled.fit(x, np.zeros((2, 1)), verbose=0)
    reference = keras.ops.convert_to_numpy(compiled(x))
    kn.grow_in_place(compiled, kn.Widen("conv", 9))  # in place, optimizer kept
    after = keras.ops.convert_to_numpy(compiled(x))
    assert np.abs(after - reference).max() <= TOL * np.abs(reference).max()
    grown.save(tmp_path / "siamese.keras")
    loaded = keras.models.load_model(tmp_path / "siamese.keras")
    assert relative_difference(grown, loaded, x) <= TOL


def test_group_normalization_after_a_concatenate_grows_by_whole_groups():
    # A DDPM U-Net's up path: the upsampled stream concatenated with a skip.
    inputs = keras.Input((6, 6, 3))
    skip = L.Conv2D(8, 3, padding="same", name="skip")(inputs)
    up = L.Conv2D(8, 3, padding="same", name="up")(inputs)
    up = L.GroupNormalization(groups=2, name="gn_up")(up)
    merged = L.Concatenate(name="concat")([up, skip])
    x = L.GroupNormalization(groups=4, name="gn_cat")(merged)
    x = L.Activation("swish")(x)
    model = randomize_weights(keras.Model(inputs, L.Conv2D(2, 1, name="out")(x)))
    x = np.random.default_rng(0).normal(size=(2, 6, 6, 3)).astype("float32")
    grown = kn.widen(model, "up", 12, seed=0)  # one more group of 4
    assert relative_difference(model, grown, x) <= TOL
    assert grown.get_layer("gn_up").groups == 3
    assert grown.get_layer("gn_cat").groups == 5
    with pytest.raises(ValueError, match=r"'gn_up'.*groups of 4.*multiple of 4"):
        kn.widen(model, "up", 10)
    # The skip's channels start at 8 in the concatenation: whole groups too.
    grown = kn.widen(model, "skip", 16, seed=0)
    assert relative_difference(model, grown, x) <= TOL
    assert grown.get_layer("gn_cat").groups == 6


def test_residual_blocks_inside_a_nested_kerashub_resnet_backbone(tmp_path):
    keras_hub = pytest.importorskip("keras_hub")
    backbone = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64],
        input_conv_kernel_sizes=[3],
        stackwise_num_filters=[64, 16],
        stackwise_num_blocks=[2, 2],
        stackwise_num_strides=[1, 2],
        block_type="basic_block",
        use_pre_activation=False,
        image_shape=(16, 16, 3),
    )
    inputs = keras.Input((16, 16, 3))
    x = L.GlobalAveragePooling2D()(backbone(inputs))
    model = randomize_weights(keras.Model(inputs, L.Dense(2)(x)))
    x = np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype("float32")
    # an identity-shortcut block (copied) and a projection-shortcut one (a new
    # block on the stream), both inside the nested backbone
    for after in ("stack1_block1_add", "stack1_block0_add"):
        grown = kn.deepen(model, after=after)
        assert relative_difference(model, grown, x) <= TOL
        assert grown.count_params() > model.count_params()
    grown.save(tmp_path / "resnet.keras")
    loaded = keras.models.load_model(tmp_path / "resnet.keras")
    assert relative_difference(grown, loaded, x) <= TOL


def test_a_dense_whose_units_a_reshape_splits_widens_its_channels(tmp_path):
    # keras.io's DCGAN generator: Dense(4 * 4 * 32) -> Reshape((4, 4, 32)).
    model = randomize_weights(
        keras.Sequential(
            [
                keras.Input((16,)),
                L.Dense(4 * 4 * 32, name="stem"),
                L.Reshape((4, 4, 32), name="to_image"),
                L.Conv2DTranspose(16, 4, strides=2, padding="same", name="up"),
                L.LeakyReLU(0.2),
                L.Conv2D(3, 5, padding="same", activation="sigmoid", name="rgb"),
            ]
        )
    )
    x = np.random.default_rng(0).normal(size=(3, 16)).astype("float32")
    group = kn.coupled_layers(model, "stem")
    assert group.width == 32 and [n.op.name for n in group.splits] == ["to_image"]
    assert (
        "splits (their input's units are the channels at each position): "
        "to_image" in group.summary()
    )
    # 25% more units: 40 channels at each of the 16 positions
    grown = kn.widen(model, "stem", 4 * 4 * 40, seed=0)
    assert grown.get_layer("stem").units == 640
    assert grown.get_layer("to_image").target_shape == (4, 4, 40)
    assert grown.get_layer("up").kernel.shape == (4, 4, 16, 40)
    assert relative_difference(model, grown, x) <= TOL
    # Each new channel copies an old one at every position (p * 40 + c).
    old_kernel = keras.ops.convert_to_numpy(model.get_layer("stem").kernel)
    new_kernel = keras.ops.convert_to_numpy(grown.get_layer("stem").kernel)
    np.testing.assert_array_equal(
        new_kernel.reshape(16, 16, 40)[:, :, :32], old_kernel.reshape(16, 16, 32)
    )
    grown.save(tmp_path / "dcgan.keras")
    loaded = keras.models.load_model(tmp_path / "dcgan.keras")
    assert relative_difference(grown, loaded, x) <= TOL
    # In place, the same growth (the Reshape's target_shape follows).
    result = kn.grow_in_place(model, kn.Widen("stem", 4 * 4 * 40, seed=0))
    assert model.get_layer("to_image").target_shape == (4, 4, 40)
    assert relative_difference(loaded, model, x) <= TOL
    assert "32 -> 40 channels of 'to_image' at 16 positions" in result.descriptions[0]
