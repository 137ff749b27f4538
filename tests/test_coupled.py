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


def relative_difference(a, b, x):
    scale = np.max(np.abs(keras.ops.convert_to_numpy(a(x, training=False))))
    return kn.max_output_difference(a, b, x) / scale


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


def _trainable_values(model, names):
    return {
        (name, i): np.array(keras.ops.convert_to_numpy(v))
        for name in names
        for i, v in enumerate(model.get_layer(name).trainable_weights)
    }


def test_new_layers_receive_gradient():
    model = BUILDERS["resnet"]()
    model = kn.deepen(model, after="b1_add")
    model = kn.deepen(model, after="stem", residual=True)
    new = [
        layer.name
        for layer in model.layers
        if layer.name.startswith(("b1_add_block", "stem_residual"))
        and layer.trainable_weights
    ]
    assert len(new) >= 6
    model.compile(keras.optimizers.SGD(0.05), "mse")
    x = np.random.default_rng(0).normal(size=(16, 8, 8, 3)).astype("float32")
    y = np.random.default_rng(1).normal(size=(16, 5)).astype("float32")
    before = _trainable_values(model, new)
    model.fit(x, y, epochs=3, batch_size=8, verbose=0)
    after = _trainable_values(model, new)
    unchanged = [k for k in before if np.array_equal(before[k], after[k])]
    # A conv bias right before a BatchNormalization never receives gradient in
    # training mode (the batch mean removes it), in the original block too.
    before_bn = {("b1_add_block_b1_c1", 1), ("b1_add_block_b1_c2", 1)}
    assert set(unchanged) <= before_bn


def test_growmodel_widens_a_stream_and_inserts_a_block_in_one_fit():
    model = BUILDERS["resnet"]()
    model.compile(keras.optimizers.Adam(0.01), "mse")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 8, 8, 3)).astype("float32")
    y = rng.normal(size=(32, 5)).astype("float32")
    probes = {}

    class Loss(keras.callbacks.Callback):
        def __init__(self, tag):
            super().__init__()
            self.tag = tag

        def on_train_batch_begin(self, batch, logs=None):
            out = keras.ops.convert_to_numpy(self.model(x[:8], training=False))
            probes.setdefault(self.tag, []).append(
                (float(np.mean((out - y[:8]) ** 2)), self.model.count_params())
            )

    grow = kn.GrowModel(
        {kn.AtStep(3): kn.Widen("b0_add", 12), kn.AtStep(6): kn.Deepen(after="b1_add")}
    )
    model.fit(
        x,
        y,
        epochs=3,
        batch_size=8,
        verbose=0,
        callbacks=[Loss("before"), grow, Loss("after")],
    )
    assert len(grow.records) == 2
    for step in (3, 6):
        (loss_b, params_b), (loss_a, params_a) = (
            probes["before"][step],
            probes["after"][step],
        )
        assert params_a > params_b
        assert abs(loss_a - loss_b) <= TOL * max(1.0, loss_b)
    assert model.get_layer("stem").filters == 12
    assert model.get_layer("b1_add_block_add") is not None
    assert int(model.optimizer.iterations) == 12


def test_optimizer_slots_follow_the_group_mapping():
    model = BUILDERS["convnext_block"]()
    model.compile(keras.optimizers.Adam(0.01), "mse")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 8, 8, 3)).astype("float32")
    y = rng.normal(size=(16, 5)).astype("float32")
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    optimizer = model.optimizer

    def slots(attr):
        return {
            id(v): np.array(keras.ops.convert_to_numpy(s))
            for v, s in zip(optimizer._trainable_variables, getattr(optimizer, attr))
        }

    before = {attr: slots(attr) for attr in ("_momentums", "_velocities")}
    result = kn.grow_in_place(model, kn.Widen("b0_pw2", 16))
    changed = 0
    for attr, kind in (("_momentums", "linear"), ("_velocities", "squared")):
        after = slots(attr)
        for variable in model.trainable_variables:
            source, chain = result.origins[id(variable)]
            expected = before[attr][id(source)]
            for step in chain:
                expected = step.apply(expected, kind=kind)
            np.testing.assert_allclose(after[id(variable)], expected, rtol=1e-6)
            changed += bool(chain)
    assert changed >= 2 * 12  # stem, LNs, depthwise convs, pw layers, LayerScales
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)


@pytest.mark.parametrize(
    "name, layer",
    [
        ("recurrent", "lstm"),
        ("bidirectional", "bi_lstm"),
        ("group_norm", "stem"),
        ("decoder", "up1"),
    ],
)
def test_new_layer_families_save_and_load_after_growth(tmp_path, name, layer):
    model = BUILDERS[name]()
    shape = (2,) + tuple(model.inputs[0].shape[1:])
    x = np.random.default_rng(0).normal(size=shape).astype("float32")
    group = kn.coupled_layers(model, layer)
    grown = kn.widen(model, layer, 2 * group.width, seed=0)
    grown.save(tmp_path / "grown.keras")
    loaded = keras.models.load_model(tmp_path / "grown.keras")
    assert kn.max_output_difference(grown, loaded, x) <= TOL
    assert relative_difference(model, loaded, x) <= TOL


class OutputProbe(keras.callbacks.Callback):
    """The model's outputs on a fixed batch at each epoch's start."""

    def __init__(self, x):
        super().__init__()
        self.x, self.out, self.slots = x, {}, {}

    def on_epoch_begin(self, epoch, logs=None):
        out = self.model(self.x, training=False)
        self.out[epoch] = keras.ops.convert_to_numpy(out)
        self.slots[epoch] = momentum_of_kernels(self.model)


def momentum_of_kernels(model):
    """Adam's first moment of each layer's kernel, by layer name."""
    optimizer = model.optimizer
    if not optimizer.built:
        return {}
    index = {id(v): i for i, v in enumerate(optimizer._trainable_variables)}
    kernels = {}
    for layer in model.layers:
        owner = getattr(layer, "cell", layer)  # a recurrent layer's cell
        kernel = getattr(owner, "kernel", None)
        if kernel is not None and id(kernel) in index:
            kernels[layer.name] = keras.ops.convert_to_numpy(
                optimizer._momentums[index[id(kernel)]]
            )
    return kernels


@pytest.mark.parametrize(
    "name, growth",
    [
        ("recurrent", [kn.Widen("lstm", 10), kn.Widen("gru", 9), kn.Deepen("gru")]),
        ("decoder", [kn.Widen("up1", 9), kn.Widen("up3", 7), kn.Deepen("up2")]),
        ("generator_stem", [kn.Widen("stem", 4 * 4 * 10), kn.Deepen("up")]),
    ],
)
def test_growmodel_with_adam_through_recurrent_and_transposed_layers(name, growth):
    model = BUILDERS[name]()
    model.compile(keras.optimizers.Adam(0.01), "mse")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, *model.inputs[0].shape[1:])).astype("float32")
    y = rng.normal(size=(16, *model.outputs[0].shape[1:])).astype("float32")
    params = model.count_params()
    before, after = OutputProbe(x[:4]), OutputProbe(x[:4])
    grow = kn.GrowModel({1: growth})
    history = model.fit(
        x, y, epochs=3, batch_size=8, verbose=0, callbacks=[before, grow, after]
    )
    b, a = before.out[1], after.out[1]
    assert np.abs(a - b).max() <= TOL * np.abs(b).max()  # exact at the growth
    assert model.count_params() > params and len(grow.records) == 1
    assert np.all(np.isfinite(history.history["loss"]))
    assert int(model.optimizer.iterations) == 6
    assert len(model.optimizer._trainable_variables) == len(model.trainable_variables)
    # Adam's first moments of the widened layer's kernel were carried through
    # the growth (not restarted at zero), at the new shape.
    name = growth[0].layer
    slot, old = after.slots[1][name], before.slots[1][name]
    assert slot.shape != old.shape and np.any(slot)
    kept = tuple(slice(0, n) for n in old.shape)
    np.testing.assert_allclose(slot[kept][..., :1], old[..., :1], atol=1e-6)


def test_growmodel_with_adam_through_bidirectional_layers():
    model = BUILDERS["bidirectional"]()
    model.compile(keras.optimizers.Adam(0.01), "mse")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 6, 5)).astype("float32")
    y = rng.normal(size=(16, 3)).astype("float32")
    before, after = OutputProbe(x[:4]), OutputProbe(x[:4])
    growth = [kn.Widen("bi_lstm", 16), kn.Widen("bi_gru", 8), kn.Deepen("bi_rnn")]
    grow = kn.GrowModel({1: growth})
    history = model.fit(
        x, y, epochs=2, batch_size=8, verbose=0, callbacks=[before, grow, after]
    )
    b, a = before.out[1], after.out[1]
    assert np.abs(a - b).max() <= TOL * np.abs(b).max()  # exact at the growth
    assert np.all(np.isfinite(history.history["loss"]))
    layer = model.get_layer("bi_lstm")
    assert layer.forward_layer.units == layer.backward_layer.units == 8
    assert model.get_layer("bi_gru").forward_layer.units == 8
    assert int(model.optimizer.iterations) == 4


def test_bidirectional_slots_follow_each_directions_mapping():
    model = BUILDERS["bidirectional"]()
    model.compile(keras.optimizers.Adam(0.01), "mse")
    rng = np.random.default_rng(0)
    model.train_on_batch(rng.normal(size=(8, 6, 5)), rng.normal(size=(8, 3)))

    def moment(layer):
        kernel = layer.backward_layer.cell.kernel
        optimizer = model.optimizer
        index = {id(v): i for i, v in enumerate(optimizer._trainable_variables)}
        return keras.ops.convert_to_numpy(optimizer._momentums[index[id(kernel)]])

    old = moment(model.get_layer("bi_lstm"))  # (8 inputs, 4 gates x 4 units)
    kn.grow_in_place(model, kn.Widen("bi_lstm", 16))
    new = moment(model.get_layer("bi_lstm"))  # (8, 4 gates x 8 units)
    assert old.shape == (8, 16) and new.shape == (8, 32)
    for gate in range(4):
        old_columns = old[:, 4 * gate : 4 * gate + 4].T
        new_columns = new[:, 8 * gate : 8 * gate + 8].T
        # every new unit's moments copy an old unit's of the same gate
        for column in new_columns:
            assert np.min(np.abs(old_columns - column).max(1)) <= 1e-7
        assert np.allclose(new_columns[:4], old_columns)  # old units stay first


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
