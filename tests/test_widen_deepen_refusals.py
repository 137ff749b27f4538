"""Every bad request raises, names the layer, and leaves the model unchanged."""

import keras
import numpy as np
import pytest
from conftest import TOL
from conftest import assert_unchanged
from conftest import build
from conftest import randomize_weights
from conftest import snapshot
from test_widen_deepen import Doubler

import keras_net2net as kn
from keras_net2net.surgery import apply_requests

L = keras.layers


class Gain(L.Layer):
    """A subclassed layer with a variable of its own (growth cannot trace it)."""

    def build(self, input_shape):
        self.gain = self.add_weight(shape=(input_shape[-1],), initializer="ones")

    def call(self, x):
        return x * self.gain


def dense_chain(middle, kind):
    layers = (
        [L.Dense(4, activation="relu", name="a")] + middle + [L.Dense(2, name="out")]
    )
    return randomize_weights(build(layers, (3,), kind))


CASES = [
    # (description, middle layers (a factory, so every test gets fresh layers),
    #  call, expected regex (layer name included))
    ("unknown layer", lambda: [], lambda m: kn.widen(m, "nope", 8), r"no layer 'nope'"),
    ("same width", lambda: [], lambda m: kn.widen(m, "a", 4), r"'a'.*larger than.*4"),
    ("smaller width", lambda: [], lambda m: kn.widen(m, "a", 2), r"'a'.*larger than"),
    ("float width", lambda: [], lambda m: kn.widen(m, "a", 8.0), r"'a'.*integer"),
    ("bad method", lambda: [], lambda m: kn.widen(m, "a", 8, method="copy"), r"method"),
    ("negative noise", lambda: [], lambda m: kn.widen(m, "a", 8, noise=-1), r"noise"),
    (
        "reshape consumer",
        lambda: [L.Reshape((2, 2), name="r"), L.Reshape((1, 4), name="m"), L.Flatten()],
        lambda m: kn.widen(m, "a", 8),
        r"'m' \(Reshape\).*mixes the channel axis",
    ),
    (
        "split units not a multiple of the positions",
        lambda: [L.Reshape((2, 2), name="r"), L.Flatten()],
        lambda m: kn.widen(m, "a", 7),
        r"'a'.*split by 'r' into 2 positions x 2 channels.*multiple of 2.*units=7",
    ),
    (
        "lambda consumer that mixes channels",
        lambda: [L.Lambda(lambda x: keras.ops.cumsum(x, axis=-1), name="lam")],
        lambda m: kn.widen(m, "a", 8),
        r"Cumsum.*Traced on the way: Lambda 'lam'",
    ),
    (
        "subclassed consumer that does not trace",
        lambda: [Gain(name="gain")],
        lambda m: kn.widen(m, "a", 8),
        r"'gain' \(Gain\) has no handler.*a variable of its own",
    ),
    (
        "softmax activation in between",
        lambda: [L.Activation("softmax", name="sm")],
        lambda m: kn.widen(m, "a", 8),
        r"'sm'.*'softmax'.*mixes channels",
    ),
    (
        "layer norm in between, width not a multiple",
        lambda: [L.LayerNormalization(name="ln")],
        lambda m: kn.widen(m, "a", 6),
        r"'ln'.*multiple of 4",
    ),
    (
        "output layer (no consumer)",
        lambda: [],
        lambda m: kn.widen(m, "out", 8),
        r"'out'.*model output",
    ),
    ("output through dropout", lambda: [], None, None),
    (
        "widen a layout layer",
        lambda: [L.Reshape((2, 2, 1), name="rs"), L.Flatten(name="flat")],
        lambda m: kn.widen(m, "flat", 8),
        r"'flat'.*cannot be widened",
    ),
    (
        "deepen unknown",
        lambda: [],
        lambda m: kn.deepen(m, after="zzz"),
        r"`after`.*no layer 'zzz'",
    ),
    ("deepen after softmax", lambda: [], None, None),
    (
        "deepen bad method",
        lambda: [],
        lambda m: kn.deepen(m, after="a", method="zeros"),
        r"method",
    ),
    (
        "deepen after dropout",
        lambda: [L.Dropout(0.1, name="drop")],
        lambda m: kn.deepen(m, after="drop"),
        r"'drop'.*Dense, Conv",
    ),
    (
        "deepen name taken",
        lambda: [],
        lambda m: kn.deepen(m, after="a", name="out"),
        r"already has a layer named 'out'",
    ),
]


@pytest.mark.parametrize(
    "case", [c for c in CASES if c[2] is not None], ids=lambda c: c[0]
)
def test_bad_request_raises_and_leaves_model_unchanged(case, kind):
    _, middle, call, pattern = case
    model = dense_chain(middle(), kind)
    before = snapshot(model)
    with pytest.raises((ValueError, TypeError), match=pattern):
        call(model)
    assert_unchanged(model, before)


def test_output_reached_through_pass_through(kind):
    model = randomize_weights(
        build(
            [L.Dense(4, name="a"), L.Dense(3, name="b"), L.Dropout(0.1, name="d")],
            (3,),
            kind,
        )
    )
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"'d' \(Dropout\).*model output"):
        kn.widen(model, "b", 6)
    assert_unchanged(model, before)


def test_deepen_after_softmax_is_a_residual_branch_or_says_why(kind):
    model = randomize_weights(
        build([L.Dense(4, activation="softmax", name="sm"), L.Dense(2)], (3,), kind)
    )
    before = snapshot(model)
    if kind == "sequential":  # no room for the Add of a residual branch
        with pytest.raises(
            ValueError, match=r"'sm'.*activation 'softmax'.*ReLU or linear"
        ):
            kn.deepen(model, after="sm")
    else:  # an identity layer is not exact after softmax: a zero branch is
        result = apply_requests(model, kn.Deepen(after="sm"))
        assert "residual branch" in result.descriptions[0]
        assert "not exact after activation 'softmax'" in result.descriptions[0]
        x = np.random.default_rng(0).normal(size=(3, 3)).astype("float32")
        assert kn.max_output_difference(model, result.model, x) <= TOL
    assert_unchanged(model, before)


def test_deepen_even_kernel_is_an_error(kind):
    model = randomize_weights(
        build([L.Conv2D(3, 2, name="c"), L.Flatten(), L.Dense(2)], (5, 5, 1), kind)
    )
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"'c'.*odd kernel sizes"):
        kn.deepen(model, after="c", kernel_size=2)
    assert_unchanged(model, before)
    # by default an even kernel size is rounded up to the next odd one
    deeper = kn.deepen(model, after="c")
    assert deeper.get_layer("c_deeper").kernel_size == (3, 3)
    x = keras.random.normal((2, 5, 5, 1), seed=0)
    assert kn.max_output_difference(model, deeper, x) <= 1e-5


def test_channels_first_and_grouped_conv_are_rejected():
    model = build(
        [L.Conv2D(4, 3, groups=2, name="g"), L.Flatten(), L.Dense(2)],
        (5, 5, 2),
        "functional",
    )
    with pytest.raises(ValueError, match=r"'g'.*groups=2"):
        kn.widen(model, "g", 8)


def test_a_shared_layer_takes_part_with_every_call():
    # shared(shared(a)): the layer reads its own output, so its units and
    # inputs are one group with a's; the second call writes a model output.
    shared = L.Dense(3, name="shared")
    inputs = keras.Input((3,))
    a = L.Dense(3, name="a")(inputs)
    model = keras.Model(inputs, shared(shared(a)))
    with pytest.raises(ValueError, match=r"'shared'.*model output"):
        kn.widen(model, "a", 6)
    model = randomize_weights(keras.Model(inputs, L.Dense(2)(shared(shared(a)))))
    x = np.random.default_rng(0).normal(size=(4, 3)).astype("float32")
    grown = kn.widen(model, "a", 6)
    assert grown.get_layer("shared").kernel.shape == (6, 6)
    ref = keras.ops.convert_to_numpy(model(x))
    diff = np.abs(keras.ops.convert_to_numpy(grown(x)) - ref).max()
    assert diff <= TOL * np.abs(ref).max()


def test_register_handler_validates():
    with pytest.raises(TypeError, match="layer_class"):
        kn.register_handler(object, kn.surgery.PassThroughHandler())
    with pytest.raises(TypeError, match="handler"):
        kn.register_handler(Doubler, object())


def test_registered_handler_makes_layer_supported(kind):
    class Scale(L.Layer):
        def call(self, x):
            return 3 * x

    kn.register_handler(Scale, kn.surgery.PassThroughHandler())
    model = dense_chain([Scale()], kind)
    wider = kn.widen(model, "a", 7)
    x = keras.random.normal((4, 3), seed=0)
    assert kn.max_output_difference(model, wider, x) <= 1e-5


def test_recurrent_initial_state_of_a_bidirectional_and_stateful_layers_are_refused():
    # An LSTM's initial state from another layer joins its group (see
    # test_coupled); a Bidirectional one is refused by name.
    inputs = keras.Input((4, 3))
    _, h, c = L.LSTM(5, return_state=True, name="encoder")(inputs)
    bi = L.Bidirectional(L.LSTM(5), name="decoder")
    out = bi(inputs, initial_state=[h, c, h, c])
    model = keras.Model(inputs, L.Dense(2)(out))
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"'decoder'"):
        kn.widen(model, "encoder", 8)
    with pytest.raises(ValueError, match=r"'decoder'.*initial state"):
        kn.widen(model, "decoder", 16)
    assert_unchanged(model, before)
    stateful = keras.Sequential(
        [
            keras.Input((4, 3), batch_size=2),
            L.SimpleRNN(4, stateful=True, name="s"),
            L.Dense(2),
        ]
    )
    with pytest.raises(ValueError, match=r"'s'.*stateful"):
        kn.widen(stateful, "s", 6)


class Patches(keras.layers.Layer):
    """keras.io's ViT ``Patches`` layer: its __init__ takes no **kwargs."""

    def __init__(self, patch_size):
        super().__init__()
        self.patch_size = patch_size

    def call(self, images):
        size = self.patch_size
        patches = keras.ops.image.extract_patches(images, size)
        count = (images.shape[1] // size) * (images.shape[2] // size)
        return keras.ops.reshape(patches, (-1, count, patches.shape[-1]))

    def get_config(self):
        config = super().get_config()
        config.update({"patch_size": self.patch_size})
        return config


class Unbuildable(keras.layers.Layer):
    def __init__(self, scale, **kwargs):
        super().__init__(**kwargs)
        self.scale = scale

    def call(self, x):
        return x * self.scale

    def get_config(self):  # names the argument wrongly: cannot be rebuilt
        return {**super().get_config(), "factor": self.scale}


class UnbuildableGain(Unbuildable):
    """The same, with a variable of its own (so it cannot be traced either)."""

    def build(self, input_shape):
        self.gain = self.add_weight(shape=(input_shape[-1],), initializer="ones")

    def call(self, x):
        return x * self.scale * self.gain


def test_unchanged_layers_that_do_not_round_trip_are_copied_or_named():
    inputs = keras.Input((8, 8, 3))
    x = Patches(4)(inputs)
    x = L.Lambda(lambda t: t * 0.5, output_shape=(4, 48), name="halve")(x)
    x = L.Dense(6, name="embed")(x)
    x = L.Dense(5, activation="relu", name="fc")(x)
    model = keras.Model(inputs, L.Dense(2, name="head")(L.Flatten()(x)))
    data = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype("float32")
    for grown in (kn.widen(model, "fc", 9), kn.deepen(model, after="fc")):
        assert kn.max_output_difference(model, grown, data) <= 1e-5
        assert type(grown.layers[1]) is Patches
        assert grown.get_layer("halve").get_config()["output_shape"] == (4, 48)
    # Without variables, the same object is carried: it shares no state.
    stateless = Unbuildable(2.0, name="u")
    model = keras.Model(inputs, L.Dense(2, name="d")(stateless(inputs)))
    grown = kn.deepen(model, after="d", residual=True)
    assert grown.get_layer("u") is stateless
    broken = keras.Model(
        inputs, L.Dense(2, name="d")(UnbuildableGain(2.0, name="g")(inputs))
    )
    with pytest.raises(ValueError, match=r"'g' \(UnbuildableGain\) is not changed"):
        kn.deepen(broken, after="d", residual=True)


def test_branch_ending_in_sigmoid_is_refused_not_changed():
    inputs = keras.Input((4,))
    x = L.Dense(4, name="a")(inputs)
    h = L.Dense(4, activation="sigmoid", name="gate")(x)
    x = L.Add(name="add")([x, h])
    model = randomize_weights(keras.Model(inputs, L.Dense(2)(x)))
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"'gate'.*does not map zeros to zeros"):
        kn.deepen(model, after="add")
    assert_unchanged(model, before)
