"""`widen` and `deepen` (keras_net2net/surgery/api.py) on chains, branches and
nested models: the function is kept, noise and random padding behave as
documented, names stay unique, a compiled model gives a compiled copy."""

import keras
import numpy as np
import pytest
from conftest import TOL
from conftest import assert_unchanged
from conftest import build
from conftest import mnist_teacher
from conftest import randomize_weights
from conftest import snapshot

import keras_net2net as kn

L = keras.layers


class Doubler(L.Layer):
    """A subclassed layer that keras-net2net knows nothing about."""

    def call(self, x):
        return 2 * x


# (name, layer factory, input shape, layers to widen)
CHAINS = {
    "dense-dense": (
        lambda: [L.Dense(5, activation="relu", name="a"), L.Dense(3, name="b")],
        (4,),
        ["a"],
    ),
    "dense-bn-relu-dropout-dense": (
        lambda: [
            L.Dense(5, name="a"),
            L.BatchNormalization(),
            L.ReLU(),
            L.Dropout(0.5),
            L.Dense(3, name="b"),
        ],
        (4,),
        ["a"],
    ),
    "dense-activation-dense-dense": (
        lambda: [
            L.Dense(5, name="a"),
            L.Activation("tanh"),
            L.Dense(6, activation="relu", name="b"),
            L.Dense(2, name="c"),
        ],
        (4,),
        ["a", "b"],
    ),
    "conv2d-conv2d-gap-dense": (
        lambda: [
            L.Conv2D(4, 3, padding="same", activation="relu", name="a"),
            L.Conv2D(5, 3, activation="relu", name="b"),
            L.GlobalAveragePooling2D(),
            L.Dense(3, name="c"),
        ],
        (8, 8, 2),
        ["a", "b"],
    ),
    "conv2d-bn-relu-maxpool-flatten-dense": (
        lambda: [
            L.Conv2D(4, 3, padding="same", name="a"),
            L.BatchNormalization(),
            L.Activation("relu"),
            L.MaxPooling2D(2),
            L.Flatten(),
            L.Dense(3, name="b"),
        ],
        (8, 6, 2),
        ["a"],
    ),
    "conv2d-avgpool-globalmax-dense": (
        lambda: [
            L.Conv2D(4, 3, padding="same", name="a"),
            L.AveragePooling2D(2),
            L.GlobalMaxPooling2D(),
            L.Dense(3, name="b"),
        ],
        (8, 8, 1),
        ["a"],
    ),
    "conv1d-conv1d-flatten-dense": (
        lambda: [
            L.Conv1D(4, 3, activation="relu", name="a"),
            L.Conv1D(3, 5, padding="same", name="b"),
            L.Flatten(),
            L.Dense(2, name="c"),
        ],
        (10, 3),
        ["a", "b"],
    ),
    "conv3d-conv3d-gap-dense": (
        lambda: [
            L.Conv3D(3, 3, padding="same", activation="relu", name="a"),
            L.Conv3D(4, 1, name="b"),
            L.GlobalAveragePooling3D(),
            L.Dense(2, name="c"),
        ],
        (5, 5, 5, 2),
        ["a", "b"],
    ),
}


def chain_model(chain, kind, seed=0):
    factory, shape, _ = CHAINS[chain]
    return randomize_weights(build(factory(), shape, kind), seed), shape


def inputs(shape, n=6, seed=0):
    return np.random.default_rng(seed).normal(size=(n,) + shape).astype("float32")


def widen_cases():
    return [(c, t) for c, (_, _, targets) in CHAINS.items() for t in targets]


@pytest.mark.parametrize("chain,target", widen_cases())
def test_widen_preserves_function(chain, target, kind):
    model, shape = chain_model(chain, kind)
    before = snapshot(model)
    old = model.get_layer(target)
    width_key = "units" if isinstance(old, L.Dense) else "filters"
    new_width = old.get_config()[width_key] + 3
    wider = kn.widen(model, target, new_width, seed=0)
    assert type(wider) is type(model)
    assert wider.get_layer(target).get_config()[width_key] == new_width
    assert kn.max_output_difference(model, wider, inputs(shape)) <= TOL
    assert_unchanged(model, before)
    assert wider.count_params() > model.count_params()


@pytest.mark.parametrize("chain,target", widen_cases())
def test_random_pad_changes_function(chain, target, kind):
    model, shape = chain_model(chain, kind)
    old = model.get_layer(target)
    width = (old.units if isinstance(old, L.Dense) else old.filters) + 3
    padded = kn.widen(model, target, width, method="random-pad", seed=0)
    assert kn.max_output_difference(model, padded, inputs(shape)) > 1e-3


def test_noise_breaks_symmetry_but_stays_close(kind):
    model, shape = chain_model("dense-dense", kind)
    noisy = kn.widen(model, "a", 9, noise=0.01, seed=0)
    diff = kn.max_output_difference(model, noisy, inputs(shape))
    assert 0 < diff < 0.1
    kernel = noisy.get_layer("a").kernel.numpy()
    exact = kn.widen(model, "a", 9, seed=0).get_layer("a").kernel.numpy()
    # same seed, same mapping: copies equal their source only without noise
    for j in range(5, 9):
        source = [i for i in range(5) if np.array_equal(exact[:, j], exact[:, i])]
        assert source, "noise-free copy must equal an old unit"
        assert not np.allclose(kernel[:, j], kernel[:, source[0]])


def test_widen_is_reproducible_with_seed(kind):
    model, shape = chain_model("conv2d-conv2d-gap-dense", kind)
    a = kn.widen(model, "a", 9, noise=0.1, seed=5)
    b = kn.widen(model, "a", 9, noise=0.1, seed=5)
    for va, vb in zip(a.weights, b.weights):
        np.testing.assert_array_equal(va.numpy(), vb.numpy())


def test_functional_branches_are_all_adjusted():
    inputs_ = keras.Input((4,))
    a = L.Dense(5, activation="relu", name="a")(inputs_)
    b = L.Dense(3, name="b")(a)
    c = L.Dense(2, name="c")(L.Dropout(0.1)(a))
    model = randomize_weights(keras.Model(inputs_, [b, c]))
    wider = kn.widen(model, "a", 8, seed=1)
    assert wider.get_layer("b").kernel.shape == (8, 3)
    assert wider.get_layer("c").kernel.shape == (8, 2)
    assert kn.max_output_difference(model, wider, inputs((4,))) <= TOL


@pytest.mark.parametrize(
    "layers,shape,after",
    [
        (lambda: [L.Dense(5, activation="relu", name="a"), L.Dense(2)], (3,), "a"),
        (lambda: [L.Dense(5, name="a"), L.Dense(2)], (3,), "a"),
        (
            lambda: [
                L.Conv1D(3, 3, activation="relu", name="a"),
                L.Flatten(),
                L.Dense(2),
            ],
            (7, 2),
            "a",
        ),
        (
            lambda: [
                L.Conv2D(3, 3, name="a"),
                L.BatchNormalization(),
                L.Flatten(),
                L.Dense(2),
            ],
            (6, 6, 2),
            "a",
        ),
        (
            lambda: [
                L.Conv2D(3, (1, 3), activation="relu", name="a"),
                L.GlobalAveragePooling2D(),
                L.Dense(2),
            ],
            (6, 6, 2),
            "a",
        ),
        (
            lambda: [
                L.Conv3D(2, 3, padding="same", activation="relu", name="a"),
                L.GlobalMaxPooling3D(),
                L.Dense(2),
            ],
            (4, 4, 4, 1),
            "a",
        ),
    ],
)
def test_deepen_preserves_function(layers, shape, after, kind):
    model = randomize_weights(build(layers(), shape, kind))
    before = snapshot(model)
    deeper = kn.deepen(model, after=after)
    assert len(deeper.layers) == len(model.layers) + 1
    names = [layer.name for layer in deeper.layers]
    assert names[names.index(after) + 1] == f"{after}_deeper"
    assert kn.max_output_difference(model, deeper, inputs(shape)) <= TOL
    random = kn.deepen(model, after=after, method="random", seed=0)
    assert kn.max_output_difference(model, random, inputs(shape)) > 1e-3
    assert_unchanged(model, before)


def test_deepen_twice_gets_unique_names(kind):
    model = randomize_weights(
        build([L.Dense(4, activation="relu", name="a"), L.Dense(2)], (3,), kind)
    )
    twice = kn.deepen(kn.deepen(model, after="a"), after="a")
    assert {"a_deeper", "a_deeper_1"} <= {layer.name for layer in twice.layers}
    assert kn.max_output_difference(model, twice, inputs((3,))) <= TOL


def test_deepen_custom_kernel_size():
    model = randomize_weights(
        build(
            [L.Conv2D(3, 2, activation="relu", name="a"), L.Flatten(), L.Dense(2)],
            (5, 5, 1),
            "functional",
        )
    )
    deeper = kn.deepen(model, after="a", kernel_size=5)
    assert deeper.get_layer("a_deeper").kernel.shape == (5, 5, 3, 3)
    assert kn.max_output_difference(model, deeper, inputs((5, 5, 1))) <= TOL


def test_compiled_model_gives_compiled_copy():
    model = randomize_weights(
        build([L.Dense(4, name="a"), L.Dense(2)], (3,), "sequential")
    )
    model.compile(optimizer="adam", loss="mse")
    wider = kn.widen(model, "a", 6)
    assert wider.compiled and wider.optimizer is not model.optimizer
    wider.fit(inputs((3,)), np.zeros((6, 2)), epochs=1, verbose=0)


def test_mnist_teacher_operations_preserve_function(kind, capsys):
    teacher = mnist_teacher(kind)
    x = inputs((28, 28, 1), n=16)
    results = {
        'widen(teacher, "conv1", 128)': kn.widen(teacher, "conv1", 128, seed=0),
        'widen(teacher, "fc1", 128)': kn.widen(teacher, "fc1", 128, seed=0),
        'widen(teacher, "conv2", 96)': kn.widen(teacher, "conv2", 96, seed=0),
        'deepen(teacher, after="conv2")': kn.deepen(teacher, after="conv2"),
        'deepen(teacher, after="fc1")': kn.deepen(teacher, after="fc1"),
    }
    with capsys.disabled():
        print()
        for label, student in results.items():
            diff = kn.max_output_difference(teacher, student, x)
            print(f"  [{kind}] {label}: max |difference| = {diff:.3g}")
            assert diff <= TOL, label


@pytest.mark.parametrize("in_place", [False, True])
def test_nested_functional_in_sequential_takes_the_wider_input(in_place):
    inner_in = keras.Input((6,))
    h = L.Dense(5, activation="relu", name="inner_hidden")(inner_in)
    inner = keras.Model(inner_in, L.Add()([h, L.Dense(5)(inner_in)]), name="inner")
    model = keras.Sequential(
        [keras.Input((4,)), L.Dense(6, name="fc1"), inner, L.Dense(2, name="out")]
    )
    randomize_weights(model)
    x = np.random.default_rng(0).normal(size=(3, 4)).astype("float32")
    before = keras.ops.convert_to_numpy(model(x))
    if in_place:
        kn.grow_in_place(model, [kn.Widen("fc1", 9), kn.Widen("inner_hidden", 7)])
        grown = model
    else:
        grown = kn.widen(kn.widen(model, "fc1", 9), "inner_hidden", 7)
    after = keras.ops.convert_to_numpy(grown(x))
    assert np.max(np.abs(after - before)) <= TOL * np.max(np.abs(before))
    assert grown.get_layer("inner").input.shape[-1] == 9
