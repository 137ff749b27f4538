"""Growing Transformers: d_model (the residual stream through embeddings,
attention, feed-forward layers and LayerNormalization), attention heads, the
feed-forward width, and whole blocks; inside fit with AdamW."""

import keras
import numpy as np
import pytest
from conftest import TOL
from conftest import assert_unchanged
from conftest import randomize_weights
from conftest import snapshot
from growth_helpers import StepProbe
from growth_helpers import logits_loss
from transformer_models import token_batch
from transformer_models import transformer_classifier

import keras_net2net as kn
from keras_net2net.surgery import apply_requests

L = keras.layers


def relative_difference(a, b, x):
    scale = np.max(np.abs(keras.ops.convert_to_numpy(a(x, training=False))))
    return kn.max_output_difference(a, b, x) / scale


GROWTHS = {
    "d_model x2 (from the embedding)": lambda m: kn.widen(m, "token_embedding", 32),
    "d_model x2 (from a residual Add)": lambda m: kn.widen(m, "add_ffn_0", 32),
    "heads 2 -> 4": lambda m: kn.widen(m, "mha_1", 4, seed=2),
    "feed-forward 32 -> 48": lambda m: kn.widen(m, "ffn_in_0", 48, seed=3),
    "key_dim 8 -> 12": lambda m: kn.widen(m, "mha_0/key_dim", 12, seed=4),
}
if keras.backend.backend() != "jax":  # unequal key/value sizes fail there
    GROWTHS["value_dim 8 -> 16"] = lambda m: kn.widen(m, "mha_1/value_dim", 16, seed=5)


@pytest.mark.parametrize("pre_ln", [True, False], ids=["pre-LN", "post-LN"])
@pytest.mark.parametrize("growth", list(GROWTHS))
def test_transformer_growth_is_exact(growth, pre_ln):
    model = transformer_classifier(pre_ln=pre_ln)
    x = token_batch()
    grown = GROWTHS[growth](model)
    assert grown.count_params() > model.count_params()
    assert relative_difference(model, grown, x) <= TOL


def test_widened_stream_touches_every_stream_layer():
    model = transformer_classifier()
    group = kn.coupled_layers(model, "token_embedding")
    writers = {n.op.name for n in group.writers}
    assert writers == {
        "token_embedding",
        "position_embedding",
        "mha_0",
        "mha_1",
        "ffn_out_0",
        "ffn_out_1",
    }
    readers = {n.op.name for n, _ in group.readers}
    assert readers == {"mha_0", "mha_1", "ffn_in_0", "ffn_in_1", "head"}
    assert {n.op.name for n, _ in group.uniform} == {
        "ln_attn_0",
        "ln_ffn_0",
        "ln_attn_1",
        "ln_ffn_1",
        "ln_final",
    }
    wide = kn.widen(model, "token_embedding", 32)
    mha = wide.get_layer("mha_0")
    assert [tuple(v.shape) for v in mha.weights][::2] == [
        (32, 2, 8),
        (32, 2, 8),
        (32, 2, 8),
        (2, 8, 32),
    ]
    heads = kn.widen(model, "mha_0", 4)
    assert heads.get_layer("mha_0").num_heads == 4
    assert heads.get_layer("mha_0").weights[0].shape == (16, 4, 8)


def test_key_and_value_dims_widen_every_head():
    model = transformer_classifier()
    keys = kn.widen(model, "mha_0/key_dim", 12)
    mha = keys.get_layer("mha_0")
    # value_dim was key_dim (the default): the values grow too.
    assert (mha.key_dim, mha.value_dim) == (12, 12)
    if keras.backend.backend() == "jax":
        # Keras' MultiHeadAttention fails on JAX for key_dim != value_dim.
        with pytest.raises(ValueError, match="on the JAX backend"):
            kn.widen(model, "mha_0/value_dim", 10)
    else:
        values = kn.widen(model, "mha_0/value_dim", 10)
        mha = values.get_layer("mha_0")
        assert (mha.key_dim, mha.value_dim) == (8, 10)
    with pytest.raises(ValueError, match="has no part 'key_dim'"):
        kn.widen(model, "ffn_in_0/key_dim", 12)
    with pytest.raises(ValueError, match="larger than the width of 'key_dim' 8"):
        kn.widen(model, "mha_0/key_dim", 8)


def test_deepen_by_a_whole_block():
    model = transformer_classifier(blocks=1)
    x = token_batch()
    deeper = kn.deepen(model, after="add_ffn_0", blocks=2)
    copies = [layer.name for layer in deeper.layers if "_block" in layer.name]
    assert any("mha_0" in n for n in copies) and any("ffn_in_0" in n for n in copies)
    assert len(copies) == 9  # (norm, attention, dropout, add), (norm, 2 Dense, ...)
    assert relative_difference(model, deeper, x) <= TOL
    # the copy of the block is zeroed at its output projections only
    mha_copy = deeper.get_layer("add_ffn_0_block1_mha_0")
    kernels = [keras.ops.convert_to_numpy(v) for v in mha_copy.weights]
    assert not np.any(kernels[-2]) and np.any(kernels[0])
    # a fresh initialisation is exact too
    fresh = kn.deepen(model, after="add_ffn_0", blocks=2, init="random", seed=1)
    assert relative_difference(model, fresh, x) <= TOL
    # method="random": the baseline, nothing zeroed (the function changes)
    for init in ("copy", "random"):
        stacked = kn.deepen(
            model, after="add_ffn_0", blocks=2, method="random", init=init
        )
        assert relative_difference(model, stacked, x) > 1e-3
        weights = stacked.get_layer("add_ffn_0_block1_mha_0").weights
        assert np.any(keras.ops.convert_to_numpy(weights[-2]))


def test_deepen_after_a_transformer_block_copies_it_whole_by_default():
    model = transformer_classifier(blocks=1)
    x = token_batch()
    result = apply_requests(model, kn.Deepen(after="add_ffn_0"))
    assert "2 residual block(s) (a whole Transformer block)" in result.descriptions[0]
    names = [layer.name for layer in result.model.layers]
    assert "add_ffn_0_block1_mha_0" in names and "add_ffn_0_block2_ffn_in_0" in names
    assert relative_difference(model, result.model, x) <= TOL
    # blocks=1 copies the feed-forward sub-block only; after the attention
    # sub-block's Add, the default copies that sub-block alone
    only_ffn = kn.deepen(model, after="add_ffn_0", blocks=1)
    assert not any("mha" in layer.name for layer in only_ffn.layers[len(names) :])
    assert len(only_ffn.layers) < len(result.model.layers)
    after_attention = apply_requests(model, kn.Deepen(after="add_attn_0"))
    assert "1 residual block(s) (" in after_attention.descriptions[0]


def test_masks_and_causal_attention():
    vocab, maxlen, d = 30, 10, 16
    tokens = keras.Input((maxlen,), dtype="int32")
    x = L.Embedding(vocab, d, mask_zero=True, name="embed")(tokens)
    h = L.LayerNormalization(name="ln")(x)
    h = L.MultiHeadAttention(2, 8, name="mha")(h, h, use_causal_mask=True)
    x = L.Add(name="add")([x, h])
    x = L.Dense(24, activation="relu", name="ffn")(x)
    out = L.Dense(3, name="head")(L.GlobalAveragePooling1D()(x))
    model = randomize_weights(keras.Model(tokens, out))
    x_in = token_batch(6, vocab, maxlen)
    x_in[:, 7:] = 0  # padding, masked
    for grown in (
        kn.widen(model, "embed", 32),
        kn.widen(model, "mha", 6),
        kn.deepen(model, after="add"),
    ):
        assert relative_difference(model, grown, x_in) <= TOL


REFUSALS = [
    (
        # (pre-LN it is exact: tests/test_norm_widths.py)
        "post-LN layer norm width not a multiple",
        lambda m: kn.widen(m, "token_embedding", 24),
        r"'token_embedding'.*post-norm.*multiple of 16",
    ),
    (
        "post-LN block",
        lambda m: kn.deepen(m, after="add_ffn_1", blocks=2),
        r"post-LN",
    ),
    (
        "blocks on a non-Add",
        lambda m: kn.deepen(m, after="ffn_in_0", blocks=2),
        r"'ffn_in_0'.*`blocks`",
    ),
    (
        "random residual branch",
        lambda m: kn.deepen(m, after="ffn_in_0", residual=True, method="random"),
        r"'ffn_in_0'.*method='random' does not apply",
    ),
    (
        "heads not larger",
        lambda m: kn.widen(m, "mha_0", 2),
        r"'mha_0'.*number of heads 2",
    ),
]


@pytest.mark.parametrize("case", REFUSALS, ids=[c[0] for c in REFUSALS])
def test_transformer_refusals(case):
    _, call, pattern = case
    model = transformer_classifier(pre_ln="post-LN" not in case[0])
    before = snapshot(model)
    with pytest.raises(ValueError, match=pattern):
        call(model)
    assert_unchanged(model, before)


def test_grouped_query_attention_is_refused_by_name():
    tokens = keras.Input((6,), dtype="int32")
    x = L.Embedding(20, 16, name="embed")(tokens)
    h = L.GroupQueryAttention(16 // 4, 4, 2, name="gqa")(x, x)
    x = L.Add()([x, h])
    model = keras.Model(tokens, L.Dense(2)(L.GlobalAveragePooling1D()(x)))
    with pytest.raises(ValueError, match=r"'gqa' \(GroupedQueryAttention\)"):
        kn.widen(model, "embed", 32)


def test_growmodel_grows_a_transformer_with_adamw(tmp_path):
    model = transformer_classifier(blocks=1)
    x = token_batch(64, seed=1)
    y = (x[:, 0] % 2).astype("int32")
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
            kn.AtStep(3): kn.Widen("token_embedding", 32),
            kn.AtStep(6): kn.Widen("mha_0", 4),
            kn.AtStep(11): kn.Deepen(after="add_ffn_0", blocks=2),
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
    assert len(grow.records) == 3
    for step in (3, 6, 11):  # not at an epoch boundary (8 steps per epoch)
        (before, params_before), (after, params_after) = (
            losses[("before", step)],
            losses[("after", step)],
        )
        assert params_after > params_before
        assert abs(after - before) <= TOL * max(1.0, before), step
    assert model.get_layer("mha_0").num_heads == 4
    assert model.get_layer("token_embedding").output_dim == 32
    path = str(tmp_path / "grown.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert kn.max_output_difference(model, loaded, x) <= TOL
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
