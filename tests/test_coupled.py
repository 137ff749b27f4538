"""Coupled growth: residual Adds, Concatenate, squeeze-excitation, depthwise and
separable convolutions, LayerNormalization and LayerScale."""

import math

import keras
import numpy as np
import pytest
from conftest import TOL
from conftest import assert_unchanged
from conftest import randomize_weights
from conftest import snapshot
from coupled_models import BUILDERS
from coupled_models import relative_difference

import keras_net2net as kn
from keras_net2net.surgery.handlers.merging import is_residual_add

L = keras.layers
GROWABLE = (L.Dense, L.Conv2D, L.DepthwiseConv2D, L.SeparableConv2D, L.Conv2DTranspose)
GROWABLE += (L.LSTM, L.GRU, L.SimpleRNN, L.Bidirectional)

# (model, operation, layer) -> what the refusal must say; everything else is exact
REFUSALS = {
    ("resnet", "widen", "head"): r"'head'.*model output",
    ("inverted_residual", "widen", "head"): r"model output",
    ("inverted_residual", "widen", "dw2"): r"'dw2'.*layout",
    ("dense_block", "widen", "head"): r"model output",
    ("squeeze_excitation", "widen", "head"): r"model output",
    ("convnext_block", "widen", "head"): r"model output",
    ("sequential_chain", "widen", "head"): r"model output",
    ("sequential_chain", "deepen", "fc"): r"'fc'.*'gelu'",
    ("channels_first", "widen", "head"): r"model output",
    ("decoder", "widen", "out"): r"model output",
    ("recurrent", "widen", "head"): r"model output",
    ("bidirectional", "widen", "head"): r"model output",
    ("group_norm", "widen", "head"): r"model output",
    ("generator_stem", "widen", "head"): r"model output",
}


def requests(model):
    graph = kn.surgery.LayerGraph(model)
    for op in graph.layers:
        if isinstance(op, GROWABLE):
            yield "widen", op
            yield "deepen", op
        elif is_residual_add(op):
            yield "deepen", op


@pytest.mark.parametrize("name", list(BUILDERS))
def test_every_layer_widens_and_deepens_exactly(name):
    model = BUILDERS[name]()
    shape = (4,) + tuple(model.inputs[0].shape[1:])
    x = np.random.default_rng(0).normal(size=shape).astype("float32")
    before = snapshot(model)
    done = set()
    for kind, op in requests(model):
        expected = REFUSALS.get((name, kind, op.name))
        if kind == "widen":
            group = kn.coupled_layers(model, op) if expected is None else None
            width = group.width if group else 8
            halves = group is not None and any(r.groups > 1 for r in group.core_rules())
            uniform = group is not None and (group.uniform or halves)
            # whole blocks (GroupNormalization's groups, heads): one more block
            block = math.lcm(*[r.block for r in group.core_rules()]) if group else 1
            units = 2 * width if uniform else width + (block if block > 1 else 3)
            if group is not None and group.splits and isinstance(op, L.Dense):
                # A Dense whose units a Reshape splits: its units grow with the
                # channels at every position.
                units *= op.units // width

            def grow(op=op, units=units):
                return kn.widen(model, op, units, seed=1)

        else:

            def grow(op=op):
                return kn.deepen(model, after=op)

        if expected is not None:
            with pytest.raises(ValueError, match=expected):
                grow()
        else:
            grown = grow()
            assert relative_difference(model, grown, x) <= TOL, (kind, op.name)
            assert grown.count_params() > model.count_params()
        done.add((name, kind, op.name))
    assert_unchanged(model, before)
    assert {k for k in REFUSALS if k[0] == name} <= done


def test_residual_stream_is_one_group():
    model = BUILDERS["resnet"]()
    group = kn.coupled_layers(model, "b0_c2")
    names = {layer.name for layer in group.layers()}
    assert {"stem", "b0_c2", "b1_c2"} == {n.op.name for n in group.writers}
    assert {"b0_c1", "b1_c1", "head"} == {n.op.name for n, _ in group.readers}
    assert {"b0_add", "b1_add"} == {n.op.name for n in group.merges}
    assert {"stem_bn", "b0_bn2", "b1_bn2", "pool"} <= names
    assert "b0_bn1" not in names  # inside the branch: another group
    assert group.width == 8
    for member in ("stem", "b1_add", "b0_out", "stem_bn"):  # any member names it
        assert kn.coupled_layers(model, member).width == 8
    text = kn.describe_growth(model, kn.Widen("b1_add", 12))
    assert "widen 'b1_add' 8 -> 12" in text and "merges" in text
    wide = kn.widen(model, "b1_add", 12)
    for layer in ("stem", "b0_c2", "b1_c2"):
        assert wide.get_layer(layer).filters == 12
    for layer in ("b0_c1", "b1_c1"):
        assert wide.get_layer(layer).kernel.shape[-2] == 12
    assert wide.get_layer("head").kernel.shape == (12, 5)


def test_concatenate_offsets_and_layernorm_multiples():
    model = BUILDERS["dense_block"]()
    x = np.random.default_rng(1).normal(size=(3, 8, 8, 3)).astype("float32")
    wide = kn.widen(model, "d0_conv", 7, seed=3)
    # d0_conv's 4 channels sit at offset 8 of d0_cat (width 12 -> 15) ...
    assert wide.get_layer("d0_bn").gamma.shape == (8,)
    assert wide.get_layer("d1_bn").gamma.shape == (15,)
    assert wide.get_layer("final_bn").gamma.shape == (19,)
    assert relative_difference(model, wide, x) <= TOL
    convnext = BUILDERS["convnext_block"]()
    with pytest.raises(ValueError, match=r"'b0_pw2'.*multiple of 8"):
        kn.widen(convnext, "b0_pw2", 12)
    xc = np.random.default_rng(2).normal(size=(3, 8, 8, 3)).astype("float32")
    wide = kn.widen(convnext, "b0_pw2", 24)
    assert wide.get_layer("b1_dw").groups == 24
    assert wide.get_layer("b0_ls").weights[0].shape == (24,)
    assert relative_difference(convnext, wide, xc) <= TOL


def test_concatenate_on_another_axis_is_a_merge(kind):
    inputs = keras.Input((4, 3))
    a = L.Dense(5, name="a")(inputs)
    b = L.Dense(5, name="b")(inputs)
    x = L.Concatenate(axis=1, name="cat")([a, b])  # (8, 5): same channels
    x = L.GlobalAveragePooling1D()(x)
    model = randomize_weights(keras.Model(inputs, L.Dense(2, name="out")(x)))
    group = kn.coupled_layers(model, "a")
    assert {n.op.name for n in group.writers} == {"a", "b"}
    x = np.random.default_rng(0).normal(size=(3, 4, 3)).astype("float32")
    assert relative_difference(model, kn.widen(model, "a", 9), x) <= TOL


BAD = [
    (
        "stream reaches the output",
        lambda: _stream_output_model(),
        lambda m: kn.widen(m, "a", 8),
        r"'add'.*model output",
    ),
    (
        "grouped convolution in the group",
        lambda: _grouped_model(),
        lambda m: kn.widen(m, "a", 8),
        r"'g'.*groups=2",
    ),
    (
        "layer norm, width not a multiple",
        lambda: BUILDERS["convnext_block"](),
        lambda m: kn.widen(m, "b1_pw2", 10),
        r"'b1_pw2'.*multiple of 8",
    ),
    (
        "concatenated channels merged by an Add",
        lambda: _concat_add_model(),
        lambda m: kn.widen(m, "a", 6),
        r"'add'.*derived",
    ),
    (
        "random init of a new block after a projection shortcut",
        lambda: _projection_model(),
        lambda m: kn.deepen(m, after="add", method="random"),
        r"'add'.*starts at zero",
    ),
    (
        "new block after a channels_first stream",
        lambda: _projection_model("channels_first"),
        lambda m: kn.deepen(m, after="add"),
        r"'add'.*channels last",
    ),
    (
        "residual deepening of a Sequential model",
        lambda: BUILDERS["sequential_chain"](),
        lambda m: kn.deepen(m, after="c1", residual=True),
        r"'c1'.*Sequential",
    ),
    (
        "a split reached from the channels it splits",
        lambda: _split_after_add_model(),
        lambda m: kn.widen(m, "a", 12),
        r"'to_image' \(Reshape\).*splits the channels of 'a'",
    ),
    (
        "residual deepening after a depthwise layer",
        lambda: BUILDERS["inverted_residual"](),
        lambda m: kn.deepen(m, after="dw", residual=True),
        r"'dw'.*residual=True",
    ),
]


def _stream_output_model():
    inputs = keras.Input((4,))
    a = L.Dense(4, name="a")(inputs)
    b = L.Dense(4, name="b")(a)
    return randomize_weights(keras.Model(inputs, L.Add(name="add")([a, b])))


def _split_after_add_model():
    # The Dense's units are merged with another's before the split: the
    # split is reached forwards, from the units it splits.
    inputs = keras.Input((4,))
    x = L.Add()([L.Dense(8, name="a")(inputs), L.Dense(8, name="b")(inputs)])
    x = L.Reshape((2, 2, 2), name="to_image")(x)
    x = L.Conv2D(3, 1, name="conv")(x)
    return randomize_weights(keras.Model(inputs, L.Dense(2)(L.Flatten()(x))))


def _grouped_model():
    inputs = keras.Input((6, 6, 2))
    a = L.Conv2D(4, 3, name="a")(inputs)
    g = L.Conv2D(4, 3, groups=2, name="g")(a)
    return randomize_weights(keras.Model(inputs, L.Dense(2)(L.Flatten()(g))))


def _concat_add_model():
    inputs = keras.Input((4,))
    a = L.Dense(3, name="a")(inputs)
    b = L.Dense(2, name="b")(inputs)
    c = L.Dense(5, name="c")(inputs)
    x = L.Add(name="add")([L.Concatenate(name="cat")([a, b]), c])
    return randomize_weights(keras.Model(inputs, L.Dense(2, name="out")(x)))


def _projection_model(data_format=None):
    if data_format is None:
        inputs, layer, extra = keras.Input((4,)), L.Dense, {}
    else:
        inputs, layer = keras.Input((4, 5, 5)), L.Conv2D
        extra = {"kernel_size": 1, "data_format": data_format}
    a = layer(3, name="short", **extra)(inputs)
    b = layer(3, name="branch", **extra)(inputs)
    x = L.Add(name="add")([a, b])
    return randomize_weights(keras.Model(inputs, layer(2, name="out", **extra)(x)))


@pytest.mark.parametrize("shape", [(4,), (6, 4), (6, 6, 4)])
def test_deepen_after_a_projection_shortcut_inserts_a_new_block(shape):
    # x = short(in) + branch(in): no identity-shortcut block to copy, so a
    # new one on the stream (Dense or Conv of the stream's rank, end at zero).
    layer = {1: L.Dense, 2: L.Conv1D, 3: L.Conv2D}[len(shape)]
    extra = {} if layer is L.Dense else {"kernel_size": 1}
    inputs = keras.Input(shape)
    a = layer(3, name="short", **extra)(inputs)
    b = layer(3, name="branch", activation="relu", **extra)(inputs)
    x = L.Add(name="add")([a, b])
    model = randomize_weights(keras.Model(inputs, layer(2, name="out", **extra)(x)))
    x = np.random.default_rng(0).normal(size=(2, *shape)).astype("float32")
    before = snapshot(model)
    grown = kn.deepen(model, after="add")
    assert_unchanged(model, before)
    old = {existing.name for existing in model.layers}
    new = [
        inserted
        for inserted in grown.layers
        if inserted.name not in old and not isinstance(inserted, L.InputLayer)
    ]
    assert [type(inserted) for inserted in new] == [layer, layer, L.Add]
    assert not keras.ops.convert_to_numpy(new[1].kernel).any()
    a = keras.ops.convert_to_numpy(model(x))
    b = keras.ops.convert_to_numpy(grown(x))
    assert np.max(np.abs(a - b)) / np.max(np.abs(a)) <= TOL
    assert "closes no identity-shortcut block" in kn.describe_growth(
        model, kn.Deepen(after="add")
    )


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_coupled_requests_raise_before_any_change(case):
    _, build, call, pattern = case
    model = build()
    before = snapshot(model)
    with pytest.raises(ValueError, match=pattern):
        call(model)
    assert_unchanged(model, before)
