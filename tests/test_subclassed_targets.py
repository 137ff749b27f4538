"""Subclassed layers as growth targets (issue #36): deepen after a block of
the user's class inserts a new instance of it; widen of a subclassed layer
widens its output channels and keeps its class where the constructor can say
so. keras.io's layers, as the examples write them."""

import keras
import numpy as np
import pytest
from conftest import TOL
from conftest import randomize_weights
from keras_io_layers import TokenAndPositionEmbedding as FaithfulEmbedding
from keras_io_layers import TransformerBlock

import keras_net2net as kn

L = keras.layers
ops = keras.ops


class MLPMixerLayer(L.Layer):
    """keras.io "MLP-Mixer": pre-norm token and channel mixing (one shared norm)."""

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


class TokenAndPositionEmbedding(L.Layer):
    """keras.io, with ``**kwargs`` so that its config round-trips."""

    def __init__(self, maxlen, vocab_size, embed_dim, **kwargs):
        super().__init__(**kwargs)
        self.token_emb = L.Embedding(input_dim=vocab_size, output_dim=embed_dim)
        self.pos_emb = L.Embedding(input_dim=maxlen, output_dim=embed_dim)

    def call(self, x):
        maxlen = ops.shape(x)[-1]
        positions = ops.arange(start=0, stop=maxlen, step=1)
        return self.token_emb(x) + self.pos_emb(positions)


class PatchEncoder(L.Layer):
    """keras.io ViT: no get_config (Keras records its arguments)."""

    def __init__(self, num_patches, projection_dim, **kwargs):
        super().__init__(**kwargs)
        self.num_patches = num_patches
        self.projection = L.Dense(units=projection_dim)
        self.position_embedding = L.Embedding(
            input_dim=num_patches, output_dim=projection_dim
        )

    def call(self, patch):
        positions = ops.expand_dims(ops.arange(start=0, stop=self.num_patches), 0)
        return self.projection(patch) + self.position_embedding(positions)


CUSTOM = {
    "MLPMixerLayer": MLPMixerLayer,
    "TransformerBlock": TransformerBlock,
    "TokenAndPositionEmbedding": TokenAndPositionEmbedding,
    "PatchEncoder": PatchEncoder,
}


def mixer():
    patches = keras.Input((8, 12))  # 8 patches of 12 values
    x = L.Dense(16, name="stem")(patches)
    x = MLPMixerLayer(8, 16, 0.0, name="mix1")(x)
    x = MLPMixerLayer(8, 16, 0.0, name="mix2")(x)
    x = L.GlobalAveragePooling1D()(x)
    model = keras.Model(patches, L.Dense(3, name="head")(x))
    x = np.random.default_rng(0).normal(size=(4, 8, 12)).astype("float32")
    return randomize_weights(model, seed=1), x


def text_classifier():
    tokens = keras.Input((6,), dtype="int32")
    x = TokenAndPositionEmbedding(6, 30, 16)(tokens)
    x = TransformerBlock(16, 2, 32)(x)
    x = L.GlobalAveragePooling1D()(x)
    model = keras.Model(tokens, L.Dense(2, name="head")(x))
    x = np.random.default_rng(0).integers(0, 30, (4, 6)).astype("int32")
    return randomize_weights(model, seed=1), x


def vit():
    patches = keras.Input((4, 12))
    encoded = PatchEncoder(4, 16)(patches)
    x = L.LayerNormalization()(encoded)
    x = L.MultiHeadAttention(2, 8)(x, x)
    x = L.Add()([x, encoded])
    x = L.Flatten()(L.LayerNormalization()(x))
    model = keras.Model(patches, L.Dense(3, name="head")(x))
    x = np.random.default_rng(0).normal(size=(4, 4, 12)).astype("float32")
    return randomize_weights(model, seed=1), x


def _of(model, cls):
    return next((layer for layer in model.layers if isinstance(layer, cls)), None)


def _relative(model, grown, x):
    before = keras.ops.convert_to_numpy(model(x))
    after = keras.ops.convert_to_numpy(grown(x))
    return float(np.max(np.abs(after - before)) / np.max(np.abs(before)))


def _reloaded(grown, x, tmp_path):
    path = str(tmp_path / "grown.keras")
    grown.save(path)
    with keras.saving.custom_object_scope(CUSTOM):
        loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(x)),
        keras.ops.convert_to_numpy(grown(x)),
        atol=1e-6,
    )
    return loaded


def test_deepen_after_a_pre_norm_block_inserts_one_of_its_class(tmp_path):
    model, x = mixer()
    grown = kn.deepen(model, after="mix1")
    blocks = [layer for layer in grown.layers if isinstance(layer, MLPMixerLayer)]
    assert [b.name for b in blocks] == ["mix1", "mix1_copy", "mix2"]
    assert _relative(model, grown, x) < TOL
    copy = grown.get_layer("mix1_copy")
    # Every weight copied but the two branch ends, which start at zero.
    ends = copy.mlp1.layers[1].weights + copy.mlp2.layers[1].weights
    zeroed = {id(v) for v in ends}
    for new, old in zip(copy.weights, model.get_layer("mix1").weights):
        value = keras.ops.convert_to_numpy(new)
        if id(new) in zeroed:
            assert not value.any()
        else:
            np.testing.assert_array_equal(value, keras.ops.convert_to_numpy(old))
    loaded = _reloaded(grown, x, tmp_path)
    assert isinstance(loaded.get_layer("mix1_copy"), MLPMixerLayer)


def test_the_inserted_block_trains_and_grows_in_fit():
    model, x = mixer()
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    y = np.random.default_rng(2).normal(size=(4, 3)).astype("float32")
    reference = keras.ops.convert_to_numpy(model(x))
    kn.grow_in_place(model, kn.Deepen(after="mix2"))
    copy = model.get_layer("mix2_copy")
    assert isinstance(copy, MLPMixerLayer)
    after = keras.ops.convert_to_numpy(model(x))
    assert np.max(np.abs(after - reference)) / np.max(np.abs(reference)) < TOL
    model.fit(x, y, epochs=2, verbose=0)
    assert keras.ops.convert_to_numpy(copy.mlp2.layers[1].kernel).any()


def test_a_post_norm_block_is_refused_exact_and_copied_on_request():
    model, x = text_classifier()
    block = _of(model, TransformerBlock).name
    with pytest.raises(ValueError, match="post-norm") as error:
        kn.deepen(model, after=block)
    assert "method='random'" in str(error.value)
    stacked = kn.deepen(model, after=block, method="random")
    blocks = [b for b in stacked.layers if isinstance(b, TransformerBlock)]
    assert len(blocks) == 2
    copy, original = blocks[1], blocks[0]
    for new, old in zip(copy.weights, original.weights):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(new), keras.ops.convert_to_numpy(old)
        )


def test_widen_a_subclassed_embedding_keeps_its_class(tmp_path):
    model, x = text_classifier()
    name = _of(model, TokenAndPositionEmbedding).name
    grown = kn.widen(model, name, 32)
    assert _relative(model, grown, x) < TOL
    embedding = grown.get_layer(name)
    assert isinstance(embedding, TokenAndPositionEmbedding)
    assert embedding.token_emb.output_dim == 32
    # keras.io's block takes key_dim=embed_dim: no constructor argument gives
    # its grown weights, so it stays traced (and loads without its class).
    assert _of(grown, TransformerBlock) is None
    _reloaded(grown, x, tmp_path)


def test_widen_a_patch_encoder_without_get_config(tmp_path):
    model, x = vit()
    name = _of(model, PatchEncoder).name
    grown = kn.widen(model, name, 32)
    assert _relative(model, grown, x) < TOL
    assert grown.get_layer(name).projection.units == 32
    _reloaded(grown, x, tmp_path)
    # A growth elsewhere carries the encoder untouched.
    other = kn.deepen(model, after="head")
    assert isinstance(other.get_layer(name), PatchEncoder)


def test_a_class_whose_config_does_not_round_trip_stays_traced(tmp_path):
    class Encoder(L.Layer):  # keras.io's form: no **kwargs, so no from_config
        def __init__(self, units):
            super().__init__()
            self.dense = L.Dense(units)

        def call(self, x):
            return self.dense(x)

    inputs = keras.Input((4,))
    model = keras.Model(inputs, L.Dense(2)(Encoder(6)(inputs)))
    x = np.random.default_rng(0).normal(size=(3, 4)).astype("float32")
    grown = kn.widen(model, _of(model, Encoder).name, 9)
    assert _relative(model, grown, x) < TOL
    assert _of(grown, Encoder) is None  # traced: it loads without the class
    grown.save(tmp_path / "grown.keras")
    loaded = keras.saving.load_model(tmp_path / "grown.keras")
    assert _relative(grown, loaded, x) < 1e-6


class FeedForward(L.Layer):
    """A residual feed-forward block whose width is one constructor argument."""

    def __init__(self, dim, hidden, **kwargs):
        super().__init__(**kwargs)
        self.dim, self.hidden = dim, hidden
        self.up = L.Dense(hidden, activation="gelu")
        self.down = L.Dense(dim)

    def call(self, x):
        return x + self.down(self.up(x))

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "hidden": self.hidden}


def test_widen_a_block_sublayer_rebuilds_the_block(tmp_path):
    inputs = keras.Input((5, 8))
    x = FeedForward(8, 16, name="ffn")(inputs)
    model = randomize_weights(keras.Model(inputs, L.Dense(2)(x)), seed=0)
    x = np.random.default_rng(0).normal(size=(3, 5, 8)).astype("float32")
    grown = kn.widen(model, model.get_layer("ffn").up, 24)
    assert _relative(model, grown, x) < TOL
    block = grown.get_layer("ffn")
    assert isinstance(block, FeedForward) and block.hidden == 24
    assert block.up.kernel.shape == (8, 24)
    path = str(tmp_path / "grown.keras")
    grown.save(path)
    loaded = keras.saving.load_model(path, custom_objects={"FeedForward": FeedForward})
    assert _relative(grown, loaded, x) < 1e-6


def test_widen_inside_a_block_keeps_it_traced_where_no_argument_matches():
    model, x = mixer()
    inner = model.get_layer("mix1").mlp2.layers[0]
    grown = kn.widen(model, inner, 12)
    assert _relative(model, grown, x) < TOL
    # num_patches sets both mlp1 and mlp2's first width: not one argument,
    # so the block stays traced rather than rebuilt wrongly.
    assert not isinstance(grown.get_layer("mix1"), MLPMixerLayer)
    assert isinstance(grown.get_layer("mix2"), MLPMixerLayer)


def test_widen_a_nested_model_widens_its_output_channels():
    inner_in = keras.Input((5,))
    inner = keras.Model(
        inner_in, L.Dense(6, activation="relu")(inner_in), name="encoder"
    )
    x_in = keras.Input((5,))
    model = randomize_weights(
        keras.Model(x_in, L.Dense(2, name="head")(inner(x_in))), seed=0
    )
    x = np.random.default_rng(0).normal(size=(3, 5)).astype("float32")
    grown = kn.widen(model, "encoder", 9)
    assert _relative(model, grown, x) < TOL
    assert grown.get_layer("head").kernel.shape == (9, 2)


class Scaled(L.Layer):
    """A numpy argument: Keras records no config, so it cannot be copied."""

    def __init__(self, table):
        super().__init__()
        self.table = table
        self.dense = L.Dense(3)

    def call(self, x):
        return self.dense(x) * ops.convert_to_tensor(self.table)


def test_an_untouched_layer_that_cannot_be_copied_is_carried(tmp_path):
    inputs = keras.Input((4,))
    scaled = Scaled(np.arange(3.0, dtype="float32"))
    x = L.Dense(5, name="fc")(scaled(inputs))
    model = randomize_weights(keras.Model(inputs, L.Dense(2, name="head")(x)))
    x = np.random.default_rng(0).normal(size=(3, 4)).astype("float32")
    grown = kn.widen(model, "fc", 8)  # traced into its Dense, which is copied
    assert _relative(model, grown, x) < TOL
    inner = grown.get_layer(scaled.name).get_layer(scaled.dense.name)
    assert inner is not scaled.dense  # the input model keeps its own
    grown.save(tmp_path / "grown.keras")
    loaded = keras.saving.load_model(tmp_path / "grown.keras")
    assert _relative(grown, loaded, x) < 1e-6


def euclidean_distance(vects):
    x, y = vects
    sum_square = ops.sum(ops.square(x - y), axis=1, keepdims=True)
    return ops.sqrt(ops.maximum(sum_square, keras.backend.epsilon()))


def test_keras_io_forms_as_written(tmp_path):
    # keras.io's embedding (no **kwargs: its config cannot round-trip) widens
    # exactly and stays traced, so the grown model loads without the class.
    tokens = keras.Input((6,), dtype="int32")
    x = FaithfulEmbedding(6, 30, 16)(tokens)
    x = L.LayerNormalization()(x)
    model = randomize_weights(keras.Model(tokens, L.Dense(2)(x)), seed=0)
    data = np.random.default_rng(0).integers(0, 30, (3, 6)).astype("int32")
    grown = kn.widen(model, _of(model, FaithfulEmbedding).name, 20)  # 1.25x
    assert _relative(model, grown, data) < TOL
    grown.save(tmp_path / "grown.keras")
    loaded = keras.saving.load_model(tmp_path / "grown.keras")
    assert _relative(grown, loaded, data) < 1e-6
    # keras.io's Siamese network: the shared embedding network widens, the
    # Lambda distance (a sum over the channels) refuses its last layer by name.
    image = keras.Input((8, 8, 1))
    h = L.Conv2D(4, 3, activation="tanh", name="conv")(image)
    h = L.Dense(6, activation="tanh", name="embed")(L.Flatten()(h))
    tower = keras.Model(image, h, name="tower")
    a, b = keras.Input((8, 8, 1)), keras.Input((8, 8, 1))
    distance = L.Lambda(euclidean_distance, output_shape=(1,))([tower(a), tower(b)])
    siamese = randomize_weights(keras.Model([a, b], L.Dense(1)(distance)), seed=0)
    pair = [np.random.default_rng(i).normal(size=(2, 8, 8, 1)) for i in (0, 1)]
    pair = [p.astype("float32") for p in pair]
    grown = kn.widen(siamese, "conv", 6)
    assert kn.max_output_difference(siamese, grown, pair) <= 1e-5
    with pytest.raises(ValueError, match=r"'sum.*reduces over the widened channels"):
        kn.widen(siamese, "embed", 9)
