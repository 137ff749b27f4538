"""Growing KerasHub Transformers: models built from keras_hub.layers (the
keras.io way) and KerasHub backbones (GPT-2, BERT) built from tiny configs with
random weights (nothing is downloaded).

KerasHub is an optional extra (``keras-net2net[keras-hub]``); CI installs it
for the three backends' runs. The oldest-Keras run cannot install it (KerasHub
needs a newer Keras), so this module is skipped there.
"""

import keras
import numpy as np
import pytest
from conftest import TOL
from conftest import assert_unchanged
from conftest import snapshot
from growth_helpers import StepProbe
from growth_helpers import logits_loss

import keras_net2net as kn

keras_hub = pytest.importorskip("keras_hub", reason="keras-hub is not installed")

L = keras.layers
VOCAB, SEQ = 40, 12


def randomize(model, seed=0):
    """Random non-trivial weights: kernels, biases, embeddings, LN gamma/beta."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        shape = tuple(variable.shape)
        if len(shape) >= 2:
            fan_in = np.prod(shape[:-1]) if len(shape) == 2 else shape[0]
            value = rng.normal(0.0, 1.2 / np.sqrt(fan_in), shape)
        else:
            value = rng.normal(0.0, 0.3, shape)
            if variable.name == "gamma":
                value = 1.0 + value
        variable.assign(value.astype("float32"))
    return model


def tokens(batch=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(1, VOCAB, (batch, SEQ)).astype("int32")


def hub_classifier(pre_ln=True, blocks=2, dim=16, heads=2, ffn=32):
    """keras.io-style text classifier from keras_hub.layers."""
    inputs = keras.Input((SEQ,), dtype="int32", name="tokens")
    x = keras_hub.layers.TokenAndPositionEmbedding(VOCAB, SEQ, dim, name="embedding")(
        inputs
    )
    for i in range(blocks):
        x = keras_hub.layers.TransformerEncoder(
            ffn, heads, normalize_first=pre_ln, name=f"block_{i}"
        )(x)
    x = L.GlobalAveragePooling1D(name="pool")(x)
    outputs = L.Dense(3, name="head")(x)
    return randomize(keras.Model(inputs, outputs, name="hub_classifier"))


def gpt2_classifier():
    """A tiny GPT2Backbone (random weights) with a classification head."""
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=VOCAB,
        num_layers=2,
        num_heads=2,
        hidden_dim=16,
        intermediate_dim=32,
        max_sequence_length=SEQ,
        dropout=0.0,
    )
    ids = keras.Input((SEQ,), dtype="int32", name="token_ids")
    mask = keras.Input((SEQ,), dtype="int32", name="padding_mask")
    h = backbone({"token_ids": ids, "padding_mask": mask})
    outputs = L.Dense(3, name="head")(L.GlobalAveragePooling1D(name="pool")(h))
    return randomize(keras.Model([ids, mask], outputs, name="gpt2_classifier"))


def bert_classifier():
    """A tiny BertBackbone (post-LN) with a head on its pooled output."""
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=VOCAB,
        num_layers=2,
        num_heads=2,
        hidden_dim=16,
        intermediate_dim=32,
        max_sequence_length=SEQ,
        dropout=0.0,
    )
    ids = keras.Input((SEQ,), dtype="int32", name="token_ids")
    segments = keras.Input((SEQ,), dtype="int32", name="segment_ids")
    mask = keras.Input((SEQ,), dtype="int32", name="padding_mask")
    out = backbone({"token_ids": ids, "segment_ids": segments, "padding_mask": mask})
    outputs = L.Dense(3, name="head")(out["pooled_output"])
    return randomize(keras.Model([ids, segments, mask], outputs, name="bert_cls"))


def backbone_inputs(model, seed=0):
    x = tokens(seed=seed)
    mask = np.ones_like(x)
    mask[:, SEQ - 3 :] = 0  # padded positions: the padding mask is used
    if len(model.inputs) == 2:
        return [x, mask]
    segments = np.zeros_like(x)
    segments[:, SEQ // 2 :] = 1
    return [x, segments, mask]


def relative_difference(a, b, x):
    scale = np.max(np.abs(keras.ops.convert_to_numpy(a(x, training=False))))
    return kn.max_output_difference(a, b, x) / scale


def layers_of(model, cls):
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found += layers_of(layer, cls)
        elif isinstance(layer, cls):
            found.append(layer)
    return found


GROWTHS = {
    "stream x2": lambda m: kn.widen(m, "block_0", 32),
    "stream x3 from the embedding": lambda m: kn.widen(m, "embedding", 48),
    "heads 2 -> 4": lambda m: kn.widen(m, "block_1/self_attention_layer", 4),
    "feed-forward 32 -> 48": lambda m: kn.widen(
        m, "block_0/feedforward_intermediate_dense", 48, seed=1
    ),
}


@pytest.mark.parametrize("pre_ln", [True, False], ids=["pre-LN", "post-LN"])
@pytest.mark.parametrize("growth", list(GROWTHS))
def test_keras_hub_layers_grow_exactly(growth, pre_ln):
    model = hub_classifier(pre_ln=pre_ln)
    x = tokens()
    grown = GROWTHS[growth](model)
    assert grown.count_params() > model.count_params()
    assert relative_difference(model, grown, x) <= TOL


def test_stream_growth_widens_every_head_and_heads_growth_keeps_their_size():
    model = hub_classifier()
    wide = kn.widen(model, "block_0", 32)
    for name in ("block_0", "block_1"):
        attention = wide.get_layer(name)._self_attention_layer
        assert (attention.num_heads, attention.key_dim) == (2, 16)
    heads = kn.widen(model, "block_1/self_attention_layer", 4)
    assert heads.get_layer("block_1").num_heads == 4
    assert heads.get_layer("block_1")._self_attention_layer.key_dim == 8
    assert heads.get_layer("block_0")._self_attention_layer.key_dim == 16
    assert heads.get_layer("embedding").embedding_dim == 32
    ffn = kn.widen(model, "block_0/feedforward_intermediate_dense", 48)
    assert ffn.get_layer("block_0").intermediate_dim == 48
    assert ffn.get_layer("block_1").intermediate_dim == 32


def test_deepen_inserts_an_identity_copy_of_a_pre_ln_block():
    model = hub_classifier(pre_ln=True)
    x = tokens()
    for init in ("copy", "random"):
        deeper = kn.deepen(model, after="block_1", init=init)
        blocks = layers_of(deeper, keras_hub.layers.TransformerEncoder)
        assert len(blocks) == 3
        assert relative_difference(model, deeper, x) <= TOL
        # method="random": the baseline copy, nothing zeroed
        stacked = kn.deepen(model, after="block_1", init=init, method="random")
        assert relative_difference(model, stacked, x) > 1e-3
    deeper = kn.deepen(model, after="block_0")
    inserted = deeper.get_layer("block_0_copy")
    source = model.get_layer("block_0")
    # Copied weights, except the zeroed output projections.
    for new, old in zip(inserted.weights, source.weights):
        if "attention_output" in new.path or "feedforward_output" in new.path:
            assert not np.any(keras.ops.convert_to_numpy(new))
        else:
            np.testing.assert_array_equal(
                keras.ops.convert_to_numpy(new), keras.ops.convert_to_numpy(old)
            )


GPT2_GROWTHS = {
    "stream x2": lambda m: kn.widen(m, "transformer_layer_0", 32),
    "stream x2 from the token embedding": lambda m: kn.widen(m, "token_embedding", 32),
    "heads 2 -> 4": lambda m: kn.widen(m, "transformer_layer_1/self_attention", 4),
    "feed-forward 32 -> 48": lambda m: kn.widen(
        m, "transformer_layer_0/feedforward_intermediate_dense", 48
    ),
    "one more block": lambda m: kn.deepen(m, after="transformer_layer_1"),
}


@pytest.mark.parametrize("growth", list(GPT2_GROWTHS))
def test_gpt2_backbone_grows_exactly(growth):
    model = gpt2_classifier()
    x = backbone_inputs(model)
    grown = GPT2_GROWTHS[growth](model)
    assert grown.count_params() > model.count_params()
    assert relative_difference(model, grown, x) <= TOL
    if growth == "one more block":
        assert len(layers_of(grown, keras_hub.layers.TransformerDecoder)) == 3


@pytest.mark.parametrize(
    "growth",
    ["stream x2", "heads 2 -> 4", "feed-forward"],
)
def test_bert_backbone_grows_exactly(growth):
    model = bert_classifier()
    x = backbone_inputs(model)
    grown = {
        "stream x2": lambda: kn.widen(model, "token_embedding", 32),
        "heads 2 -> 4": lambda: kn.widen(
            model, "transformer_layer_0/self_attention_layer", 4
        ),
        "feed-forward": lambda: kn.widen(
            model, "transformer_layer_1/feedforward_intermediate_dense", 40
        ),
    }[growth]()
    assert relative_difference(model, grown, x) <= TOL


def pooled_model():
    model = hub_classifier()
    return keras.Model(model.inputs, model.get_layer("pool").output)


REFUSALS = {
    "post-LN block copy": (
        lambda: bert_classifier(),
        lambda m: kn.deepen(m, after="transformer_layer_1"),
        "post-LN block",
    ),
    "stream width not a multiple": (
        lambda: hub_classifier(),
        lambda m: kn.widen(m, "block_0", 24),
        "must be a multiple of 16",
    ),
    "heads not a multiple": (
        lambda: hub_classifier(),
        lambda m: kn.widen(m, "block_0/self_attention_layer", 3),
        "multiple of its current 2 heads",
    ),
    "fewer heads": (
        lambda: hub_classifier(),
        lambda m: kn.widen(m, "block_0/self_attention_layer", 2),
        "larger than its current 2 heads",
    ),
    "unknown part": (
        lambda: hub_classifier(),
        lambda m: kn.widen(m, "block_0/query", 8),
        "has no part 'query'",
    ),
    "a stream that is a model output": (
        lambda: pooled_model(),
        lambda m: kn.widen(m, "block_0", 32),
        "output",
    ),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_keras_hub_refusals_leave_the_model_untouched(case):
    build, grow, message = REFUSALS[case]
    model = build()
    before = snapshot(model)
    with pytest.raises(ValueError, match=message):
        grow(model)
    assert_unchanged(model, before)


def test_in_place_growth_of_a_backbone_object_is_refused():
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=VOCAB,
        num_layers=1,
        num_heads=2,
        hidden_dim=16,
        intermediate_dim=32,
        max_sequence_length=SEQ,
    )
    before = snapshot(backbone)
    with pytest.raises(TypeError, match="GPT2Backbone.*in place"):
        kn.grow_in_place(backbone, [kn.Deepen(after="transformer_layer_0")])
    assert_unchanged(backbone, before)
    # widen/deepen return a new model instead: in the config vocabulary the
    # class is kept; through a block's layers it is a plain Functional model.
    deeper = kn.deepen(backbone, after="transformer_layer_0")
    assert type(deeper).__name__ == "GPT2Backbone"
    random = kn.deepen(backbone, after="transformer_layer_0", init="random")
    assert type(random).__name__ == "Functional"
    x = backbone_inputs(gpt2_classifier())
    x = {"token_ids": x[0], "padding_mask": x[1]}
    assert kn.max_output_difference(backbone, deeper, x) <= TOL


def test_growmodel_grows_keras_hub_blocks_with_adamw(tmp_path):
    model = hub_classifier(blocks=1)
    x = tokens(64, seed=1)
    y = (x[:, 0] % 3).astype("int32")
    fixed_x, fixed_y = x[:16], y[:16]
    losses = {}

    def probe(tag):
        return StepProbe(tag, losses, lambda m: logits_loss(m, fixed_x, fixed_y))

    model.compile(
        keras.optimizers.AdamW(3e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    grow = kn.GrowModel(
        {
            kn.AtStep(3): kn.Widen("embedding", 32),
            kn.AtStep(6): kn.Widen("block_0/self_attention_layer", 4),
            kn.AtStep(9): kn.Widen("block_0/feedforward_intermediate_dense", 48),
            kn.AtStep(11): kn.Deepen(after="block_0"),
        }
    )
    model.fit(
        x,
        y,
        epochs=2,
        batch_size=8,
        verbose=0,
        callbacks=[probe("before"), grow, probe("after")],
    )
    assert len(grow.records) == 4
    for step in (3, 6, 9, 11):
        (before, params_before), (after, params_after) = (
            losses[("before", step)],
            losses[("after", step)],
        )
        assert params_after > params_before
        assert abs(after - before) <= TOL * max(1.0, before), step
    assert model.get_layer("block_0").num_heads == 4
    assert model.get_layer("embedding").embedding_dim == 64
    assert len(layers_of(model, keras_hub.layers.TransformerEncoder)) == 2
    path = str(tmp_path / "grown.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert kn.max_output_difference(model, loaded, x) <= TOL
    history = model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    assert np.isfinite(history.history["loss"][-1])
