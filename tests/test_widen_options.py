"""Options of widen: where the symmetry-breaking noise goes, and the random-pad
distribution (the original Net2Net example's choices)."""

import keras
import numpy as np
import pytest
from conftest import build
from conftest import randomize_weights

import keras_net2net as kn

L = keras.layers


def dense_model(kind="functional"):
    return randomize_weights(
        build(
            [L.Dense(32, activation="relu", name="a"), L.Dense(5, name="b")],
            (20,),
            kind,
        )
    )


def arrays(layer):
    return [keras.ops.convert_to_numpy(v) for v in layer.weights]


def test_noise_on_consumers_matches_the_original_net2net_code(kind):
    model = dense_model(kind)
    wide = kn.widen(model, "a", 48, noise=0.05, noise_on="consumers", seed=3)
    exact = kn.widen(model, "a", 48, seed=3)
    (k_a, b_a), (k_exact, b_exact) = (
        arrays(wide.get_layer("a")),
        arrays(exact.get_layer("a")),
    )
    np.testing.assert_array_equal(k_a, k_exact)  # the copies' incoming: exact
    np.testing.assert_array_equal(b_a, b_exact)
    k_b, k_b_exact = arrays(wide.get_layer("b"))[0], arrays(exact.get_layer("b"))[0]
    # The originals' rows get no noise. (Noise-free transforms may run with
    # backend ops and noisy ones in numpy: equal up to float rounding.)
    np.testing.assert_allclose(k_b[:32], k_b_exact[:32], rtol=1e-6, atol=0)
    new_rows = k_b_exact[32:]
    difference = k_b[32:] - new_rows
    assert np.all(difference != 0)  # every new copy's row is noised
    assert 0.02 < difference.std() / new_rows.std() < 0.1  # ~5e-2 x their std
    x = np.random.default_rng(0).normal(size=(16, 20)).astype("float32")
    scale = np.abs(keras.ops.convert_to_numpy(model(x))).max()
    assert 0 < kn.max_output_difference(model, wide, x) / scale < 0.1


def test_noise_on_copies_is_the_default():
    model = dense_model()
    wide = kn.widen(model, "a", 48, noise=0.05, seed=3)
    exact = kn.widen(model, "a", 48, seed=3)
    np.testing.assert_array_equal(
        arrays(wide.get_layer("b"))[0], arrays(exact.get_layer("b"))[0]
    )
    k, k_exact = arrays(wide.get_layer("a"))[0], arrays(exact.get_layer("a"))[0]
    np.testing.assert_array_equal(k[:, :32], k_exact[:, :32])
    assert np.all(k[:, 32:] != k_exact[:, 32:])


def test_random_pad_distribution():
    model = dense_model()
    wide = kn.widen(model, "a", 288, method="random-pad", pad_std=0.1, pad_bias=0.1)
    kernel, bias = arrays(wide.get_layer("a"))
    consumer = arrays(wide.get_layer("b"))[0]
    np.testing.assert_allclose(bias[32:], 0.1)
    assert abs(kernel[:, 32:].std() - 0.1) < 0.01 and abs(kernel[:, 32:].mean()) < 0.01
    assert abs(consumer[32:].std() - 0.1) < 0.01
    np.testing.assert_array_equal(kernel[:, :32], arrays(model.get_layer("a"))[0])
    default = kn.widen(model, "a", 288, method="random-pad")
    kernel, bias = arrays(default.get_layer("a"))
    np.testing.assert_allclose(bias[32:], 0.0)
    own_std = arrays(model.get_layer("a"))[0].std()
    assert abs(kernel[:, 32:].std() - own_std) < 0.1 * own_std


@pytest.mark.parametrize(
    "kwargs,pattern",
    [
        (dict(noise_on="both"), r"`noise_on`.*paired"),
        (dict(pad_std=0), r"`pad_std`"),
        (dict(pad_std=-1.0), r"`pad_std`"),
        (dict(pad_bias=float("nan")), r"`pad_bias`"),
    ],
)
def test_bad_options(kwargs, pattern):
    model = dense_model()
    with pytest.raises((ValueError, TypeError), match=pattern):
        kn.widen(model, "a", 40, **kwargs)
    with pytest.raises((ValueError, TypeError), match=pattern):
        kn.Widen("a", 40, **kwargs)


def test_exact_copies_stay_identical_under_adam_and_noise_breaks_them():
    """Why the docs recommend noise when the new units should learn."""
    x = np.random.default_rng(0).normal(size=(64, 20)).astype("float32")
    y = np.random.default_rng(1).normal(size=(64, 5)).astype("float32")
    spread = {}
    for noise in (0.0, 1e-2):
        grown = kn.widen(dense_model(), "a", 40, noise=noise, seed=0)
        grown.compile(keras.optimizers.Adam(1e-2), "mse")
        grown.fit(x, y, epochs=3, batch_size=16, verbose=0)
        kernel = arrays(grown.get_layer("a"))[0]
        # a new unit (32..39) against the old unit it copies
        sources = [
            int(np.argmin(np.abs(kernel[:, :32] - kernel[:, [j]]).sum(0)))
            for j in range(32, 40)
        ]
        spread[noise] = max(
            np.abs(kernel[:, j] - kernel[:, s]).max()
            for j, s in zip(range(32, 40), sources)
        )
    assert spread[0.0] <= 1e-6  # 12 Adam steps later, still exact copies
    assert spread[1e-2] > 1e-4


def test_random_pad_heads_use_the_pad_distribution():
    tokens = keras.Input((5,), dtype="int32")
    x = L.Embedding(10, 8, name="embed")(tokens)
    h = L.MultiHeadAttention(2, 4, name="mha")(x, x)
    model = keras.Model(tokens, L.Dense(2)(L.GlobalAveragePooling1D()(L.Add()([x, h]))))
    wide = kn.widen(model, "mha", 6, method="random-pad", pad_std=0.5, pad_bias=0.25)
    query_kernel, query_bias = [
        keras.ops.convert_to_numpy(v) for v in wide.get_layer("mha").weights[:2]
    ]
    np.testing.assert_allclose(query_bias[2:], 0.25)
    assert abs(query_kernel[:, 2:].std() - 0.5) < 0.15


def test_paired_noise_keeps_the_function_and_its_copies_diverge_under_adam():
    """HyperCloning's symmetry breaking: noise on the consumers' rows of
    every copied unit that sums to zero over the unit's copies."""
    x = np.random.default_rng(0).normal(size=(64, 20)).astype("float32")
    y = np.random.default_rng(1).normal(size=(64, 5)).astype("float32")
    model = dense_model()
    paired = kn.widen(model, "a", 48, noise=0.1, noise_on="paired", seed=3)
    exact = kn.widen(model, "a", 48, seed=3)
    scale = np.abs(keras.ops.convert_to_numpy(model(x))).max()
    assert kn.max_output_difference(model, paired, x) / scale <= 1e-5
    k_paired, k_exact = (
        arrays(paired.get_layer("b"))[0],
        arrays(exact.get_layer("b"))[0],
    )
    source = np.argmin(  # each new unit's source, from the incoming weights
        [
            np.abs(arrays(exact.get_layer("a"))[0][:, :32] - column[:, None]).sum(0)
            for column in arrays(exact.get_layer("a"))[0].T
        ],
        axis=1,
    )
    copied = np.bincount(source, minlength=32) > 1
    for unit in np.flatnonzero(copied):
        rows = source == unit
        np.testing.assert_allclose(
            k_paired[rows].sum(0), k_exact[rows].sum(0), rtol=1e-5, atol=1e-6
        )
        assert np.all(k_paired[rows] != k_exact[rows])  # the original too
    untouched = np.isin(source, np.flatnonzero(~copied))
    np.testing.assert_array_equal(k_paired[untouched], k_exact[untouched])
    spread = {}
    for name, grown in (("exact", exact), ("paired", paired)):
        grown.compile(keras.optimizers.Adam(1e-2), "mse")
        grown.fit(x, y, epochs=3, batch_size=16, verbose=0)
        kernel = arrays(grown.get_layer("a"))[0]
        spread[name] = max(
            np.abs(kernel[:, j] - kernel[:, source[j]]).max() for j in range(32, 48)
        )
    assert spread["exact"] <= 1e-6  # 12 Adam steps later, still exact copies
    assert spread["paired"] > 1e-3
