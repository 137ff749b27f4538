"""Subclassed layers traced into their layers and keras.ops calls (issue #22, 7)."""

import keras
import numpy as np
import pytest
from conftest import TOL
from conftest import randomize_weights
from keras_io_layers import TokenAndPositionEmbedding
from keras_io_layers import TransformerBlock

import keras_net2net as kn
from keras_net2net.surgery import apply_requests

L = keras.layers
ops = keras.ops


class ScaledSum(L.Layer):
    """InceptionResNetV2's CustomScaleLayer: ``x + scale * branch``."""

    def __init__(self, scale, **kwargs):
        super().__init__(**kwargs)
        self.scale = scale

    def call(self, inputs):
        return inputs[0] + inputs[1] * self.scale


class OwnScale(L.Layer):
    """A variable of its own, used in call."""

    def build(self, input_shape):
        self.gamma = self.add_weight(shape=(input_shape[-1],), initializer="ones")

    def call(self, x):
        return x * self.gamma


class BackendCode(L.Layer):
    """A call written with the backend's own functions, not keras.ops."""

    def __init__(self):
        super().__init__()
        self.dense = L.Dense(6)

    def call(self, x):
        backend = keras.backend.backend()
        if backend == "tensorflow":
            import tensorflow as tf

            return self.dense(tf.math.cumsum(x, axis=-1))
        if backend == "jax":
            import jax.numpy as jnp

            return self.dense(jnp.cumsum(x, axis=-1))
        import torch

        return self.dense(torch.cumsum(x, dim=-1))


def text_transformer():
    inputs = keras.Input((6,), dtype="int32")
    x = L.Embedding(20, 8, name="tokens")(inputs)
    x = TransformerBlock(8, 2, 16)(x)
    x = L.GlobalAveragePooling1D()(x)
    x = L.Dense(10, activation="relu", name="head")(x)
    outputs = L.Dense(2, name="out")(x)
    model = keras.Model(inputs, outputs)
    randomize_weights(model, seed=1)
    x = np.random.default_rng(0).integers(0, 20, (3, 6)).astype("int32")
    return model, x


def relative(a, b):
    a, b = (keras.ops.convert_to_numpy(v) for v in (a, b))
    return float(np.max(np.abs(a - b)) / np.max(np.abs(a)))


def block_of(model):
    return next(lay for lay in model.layers if isinstance(lay, TransformerBlock))


def test_widen_a_sublayer_of_a_subclassed_layer(tmp_path):
    model, x = text_transformer()
    before = model(x)
    block = block_of(model)
    grown = kn.widen(model, block.ffn.layers[0], 24)
    assert relative(before, grown(x)) <= TOL
    traced = grown.get_layer(block.name)
    assert type(traced).__name__ == "Functional"  # the block, traced
    # The block's own Sequential is flattened into the trace.
    assert traced.get_layer(block.ffn.layers[0].name).units == 24
    assert block.ffn.layers[0].units == 16  # the input model is unchanged
    assert relative(before, model(x)) == 0
    # Saved and loaded without the subclassed class.
    grown.save(tmp_path / "grown.keras")
    loaded = keras.saving.load_model(tmp_path / "grown.keras")
    assert relative(before, loaded(x)) <= TOL


def test_channels_pass_through_a_traced_layer():
    model, x = text_transformer()
    before = model(x)
    grown = kn.widen(model, "tokens", 16)  # d_model: att, norms, adds, ffn
    assert relative(before, grown(x)) <= TOL
    block = block_of(model)
    traced = grown.get_layer(block.name)
    assert traced.get_layer(block.ffn.layers[-1].name).units == 16


def test_the_traced_layer_is_reported():
    model, _ = text_transformer()
    result = apply_requests(model, kn.Widen("tokens", 16))
    assert "traced into its layers: TransformerBlock" in result.descriptions[0]


def test_an_ops_only_layer_is_traced():
    inputs = keras.Input((5, 5, 3))
    x = L.Conv2D(4, 3, padding="same", name="stem")(inputs)
    branch = L.Conv2D(4, 1, name="branch")(x)
    x = ScaledSum(0.2)([x, branch])
    x = L.Activation("relu")(x)
    outputs = L.Conv2D(2, 1, name="out")(x)
    model = keras.Model(inputs, outputs)
    randomize_weights(model)
    data = np.random.default_rng(0).normal(size=(2, 5, 5, 3)).astype("float32")
    grown = kn.widen(model, "stem", 6)
    assert relative(model(data), grown(data)) <= TOL
    assert grown.get_layer("branch").filters == 6


def test_grow_in_place_through_a_traced_layer():
    model, x = text_transformer()
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(True))
    y = np.array([0, 1, 0])
    model.train_on_batch(x, y)
    before = model(x)
    kn.grow_in_place(model, kn.Widen("tokens", 16))
    assert relative(before, model(x)) <= TOL
    model.train_on_batch(x, y)  # trains with the carried Adam state


def test_a_layer_with_its_own_variable_is_refused_by_name():
    inputs = keras.Input((6,), dtype="int32")
    x = L.Embedding(20, 8, name="tokens")(inputs)
    x = OwnScale()(x)
    model = keras.Model(inputs, L.Dense(2)(x))
    with pytest.raises(ValueError, match="OwnScale.*a variable of its own"):
        kn.widen(model, "tokens", 12)


def test_position_embeddings_of_ops_arange_are_traced(tmp_path):
    inputs = keras.Input((6,), dtype="int32")
    embedding = TokenAndPositionEmbedding(6, 20, 8)
    x = L.GlobalAveragePooling1D()(embedding(inputs))
    model = randomize_weights(keras.Model(inputs, L.Dense(2)(x)))
    tokens = np.random.default_rng(0).integers(0, 20, (3, 6)).astype("int32")
    grown = kn.widen(model, embedding.token_emb, 12)  # and pos_emb with it
    assert relative(model(tokens), grown(tokens)) <= TOL
    traced = grown.get_layer(embedding.name)
    assert traced.get_layer(embedding.pos_emb.name).output_dim == 12
    grown.save(tmp_path / "positions.keras")
    loaded = keras.saving.load_model(tmp_path / "positions.keras")
    assert relative(model(tokens), loaded(tokens)) <= TOL


class GainedBlock(L.Layer):
    """A sublayer, and a variable of its own used in call."""

    def __init__(self):
        super().__init__()
        self.dense = L.Dense(8)

    def build(self, input_shape):
        self.gain = self.add_weight(shape=(8,), initializer="ones")

    def call(self, x):
        return self.dense(x) * self.gain


def test_a_sublayer_of_an_untraceable_layer_is_refused_with_the_reason():
    inputs = keras.Input((4,))
    block = GainedBlock()
    model = keras.Model(inputs, L.Dense(2)(block(inputs)))
    with pytest.raises(ValueError, match="GainedBlock.*a variable of its own"):
        kn.widen(model, block.dense, 12)


def test_a_call_that_does_not_trace_is_refused_by_name():
    inputs = keras.Input((4,))
    x = L.Dense(6, name="first")(inputs)
    x = BackendCode()(x)
    model = keras.Model(inputs, L.Dense(2)(x))
    with pytest.raises(ValueError, match="BackendCode.*cannot be traced"):
        kn.widen(model, "first", 8)


def test_a_lambda_of_keras_ops_is_traced_and_the_result_loads_safely(tmp_path):
    inputs = keras.Input((5,))
    x = L.Dense(6, name="first")(inputs)
    x = L.Lambda(lambda t: ops.gelu(t) * 0.5 + t, name="lam")(x)
    model = randomize_weights(keras.Model(inputs, L.Dense(2, name="head")(x)))
    data = np.random.default_rng(0).normal(size=(3, 5)).astype("float32")
    result = apply_requests(model, kn.Widen("first", 9))
    assert "traced into its layers: Lambda 'lam'" in result.descriptions[0]
    grown = result.model
    assert relative(model(data), grown(data)) <= TOL
    assert grown.get_layer("head").kernel.shape == (9, 2)
    # The trace holds keras.ops calls, not the Python function: the grown
    # model loads with safe_mode on, which the Lambda's model cannot.
    grown.save(tmp_path / "grown.keras")
    loaded = keras.saving.load_model(tmp_path / "grown.keras")
    assert relative(model(data), loaded(data)) <= TOL


def test_a_lambda_that_mixes_channels_or_does_not_trace_is_refused_by_name():
    # keras.io's Siamese distance sums over the channels: copies would count
    # a channel twice.
    def euclidean_distance(vects):
        x, y = vects
        sum_square = ops.sum(ops.square(x - y), axis=1, keepdims=True)
        return ops.sqrt(ops.maximum(sum_square, keras.backend.epsilon()))

    a, b = keras.Input((4,)), keras.Input((4,))
    tower = L.Dense(6, name="tower")
    distance = L.Lambda(euclidean_distance, output_shape=(1,), name="distance")(
        [tower(a), tower(b)]
    )
    model = keras.Model([a, b], L.Dense(1, activation="sigmoid")(distance))
    with pytest.raises(ValueError, match=r"sum|Sum") as error:
        kn.widen(model, "tower", 8)
    assert "Traced on the way: Lambda 'distance'" in str(error.value)
    inputs = keras.Input((4,))
    x = L.Dense(6, name="first")(inputs)
    x = L.Lambda(
        lambda t: t if float(ops.sum(t)) > 0 else -t, output_shape=(6,), name="branchy"
    )(x)
    model = keras.Model(inputs, L.Dense(2)(x))
    with pytest.raises(ValueError, match=r"'branchy' \(Lambda\).*cannot be traced"):
        kn.widen(model, "first", 8)


def test_trace_layers_shows_what_growth_sees(tmp_path):
    model, x = text_transformer()
    plain = kn.trace_layers(model)
    assert relative(model(x), plain(x)) == 0
    block = block_of(model)
    assert type(plain.get_layer(block.name)).__name__ == "Functional"
    assert kn.trace_layers(plain) is plain  # nothing left to trace
    group = kn.coupled_layers(model, "tokens")  # traces the block too
    assert "layer_normalization" in " ".join(lay.name for lay in group.layers())
    with pytest.raises(ValueError, match="`layers`: .* has no layer 'nope'"):
        kn.trace_layers(model, ["nope"])


def test_deepen_inside_a_traced_layer():
    model, x = text_transformer()
    before = model(x)
    block = block_of(model)
    for after in (block.att, block.ffn.layers[0]):
        grown = kn.deepen(model, after=after)
        assert relative(before, grown(x)) <= TOL
        assert len(grown.weights) == len(model.weights) + 2  # a Dense's two


def test_a_residual_block_inside_a_traced_layer_is_copied():
    model, x = text_transformer()
    before = model(x)
    plain = kn.trace_layers(model)
    adds = [
        op
        for op in kn.surgery.LayerGraph(plain).layers
        if kn.surgery.handlers.merging.is_residual_add(op)
    ]
    # x + attention(x), x + ffn(x): copied with their output projection
    # zeroed (the block's own Sequential is flattened into the trace).
    added = []
    for add in adds:
        grown = kn.deepen(model, after=add)  # found in the same trace
        assert relative(before, grown(x)) <= TOL
        added.append(len(grown.weights) - len(model.weights))
    assert added == [8, 4]  # one more attention; two more Dense layers
    grown = kn.deepen(model, after=block_of(model).ffn.layers[0], residual=True)
    assert relative(before, grown(x)) <= TOL


def test_a_residual_branch_inside_a_nested_functional_model():
    inner_in = keras.Input((6,))
    h = L.Dense(6, activation="gelu", name="inner_gelu")(inner_in)
    inner = keras.Model(inner_in, L.Dense(6, name="inner_out")(h), name="inner")
    inputs = keras.Input((4,))
    outputs = L.Dense(2)(inner(L.Dense(6)(inputs)))
    model = randomize_weights(keras.Model(inputs, outputs))
    x = np.random.default_rng(0).normal(size=(3, 4)).astype("float32")
    grown = kn.deepen(model, after="inner_gelu", residual=True)
    assert relative(model(x), grown(x)) <= TOL
    assert len(grown.weights) > len(model.weights)


class TwoLayerNet(keras.Model):
    """A subclassed model (keras.io's "subclassing API" style)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.hidden = L.Dense(16, activation="relu")
        self.drop = L.Dropout(0.2)
        self.out = L.Dense(2)

    def call(self, x, training=False):
        return self.out(self.drop(self.hidden(x), training=training))


def test_a_subclassed_model_is_traced_into_a_functional_model(tmp_path):
    net = TwoLayerNet()
    x = np.random.default_rng(0).normal(size=(3, 8)).astype("float32")
    with pytest.raises(ValueError, match="no known input shape"):
        kn.widen(net, "hidden", 24)
    net(x)
    randomize_weights(net)
    net.compile("adam", "mse")
    grown = kn.widen(net, net.hidden, 24)
    assert type(grown).__name__ == "Functional" and grown.name == net.name
    assert relative(net(x), grown(x)) <= TOL
    assert grown.compiled  # compiled like the subclassed model
    grown.save(tmp_path / "net.keras")
    loaded = keras.saving.load_model(tmp_path / "net.keras")
    assert relative(net(x), loaded(x)) <= TOL
    with pytest.raises(TypeError, match="subclassed"):
        kn.grow_in_place(net, kn.Widen("hidden", 24))


def test_keras_applications_own_custom_scale_layer_is_traced():
    inception_resnet_v2 = pytest.importorskip(
        "keras.src.applications.inception_resnet_v2"
    )
    inputs = keras.Input((6, 6, 3))
    x = L.Conv2D(8, 3, padding="same", name="stem")(inputs)
    branch = L.Conv2D(8, 1, name="branch")(x)
    x = inception_resnet_v2.CustomScaleLayer(scale=0.17, name="scale")([x, branch])
    model = keras.Model(inputs, L.Conv2D(2, 1)(L.Activation("relu")(x)))
    randomize_weights(model)
    data = np.random.default_rng(0).normal(size=(2, 6, 6, 3)).astype("float32")
    result = apply_requests(model, kn.Widen("stem", 12))
    assert "CustomScaleLayer 'scale'" in result.descriptions[0]
    assert relative(model(data), result.model(data)) <= TOL
    # Deepen after the Add inside it: its block's branch is outside the
    # traced layer, so a new block (zero-ended) follows the Add, and says why.
    scale = kn.trace_layers(model).get_layer("scale")
    add = next(op for op in scale.operations if "add" in op.name.lower())
    result = apply_requests(model, kn.Deepen(after=add))
    assert (
        "cannot be copied ('branch' of its branch is in another model"
        in (result.descriptions[0])
    )
    assert relative(model(data), result.model(data)) <= TOL
    assert result.model.count_params() > model.count_params()
    assert "cannot be copied" in kn.describe_growth(model, kn.Deepen(after=add))


def test_grow_model_grows_through_a_traced_layer_inside_fit(tmp_path):
    model, _ = text_transformer()
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(True))
    rng = np.random.default_rng(0)
    x = rng.integers(0, 20, (16, 6)).astype("int32")
    y = rng.integers(0, 2, 16)
    grow = kn.GrowModel({kn.AtStep(2): kn.Widen("tokens", 16)})
    model.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[grow])
    (record,) = grow.records
    assert "TransformerBlock" in record.requests[0]
    assert model.get_layer("tokens").output_dim == 16
    model.save(tmp_path / "grown.keras")
    loaded = keras.saving.load_model(tmp_path / "grown.keras")
    assert relative(model(x), loaded(x)) <= TOL
