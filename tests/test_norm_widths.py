"""LayerNormalization and RMSNormalization at any larger width: the new
channels of the stream hold the mean of the old ones (zero for RMS), the
normalisations' gains and epsilon compensate (LEMON, arXiv 2310.07999);
refused by name where a writer or a post-norm block cannot keep them there."""

import keras
import numpy as np
import pytest
from conftest import TOL
from conftest import randomize_weights

import keras_net2net as kn

L = keras.layers
VOCAB, LENGTH, WIDTH = 30, 6, 16
RMS = getattr(L, "RMSNormalization", None)


def _norm(kind, name):
    if kind == "rms":
        return RMS(epsilon=1e-4, name=name)
    return L.LayerNormalization(epsilon=1e-3, name=name)


def pre_norm(kind="layer", writer_activation=None):
    """A pre-norm Transformer on token ids: every writer of the stream linear."""
    tokens = keras.Input((LENGTH,), dtype="int32")
    x = L.Embedding(VOCAB, WIDTH, name="emb")(tokens)
    for i in range(2):
        h = _norm(kind, f"ln_a{i}")(x)
        h = L.MultiHeadAttention(2, 8, name=f"mha{i}")(h, h)
        x = L.Add(name=f"add_a{i}")([x, h])
        h = _norm(kind, f"ln_f{i}")(x)
        h = L.Dense(32, activation="gelu", name=f"up{i}")(h)
        h = L.Dense(WIDTH, activation=writer_activation, name=f"down{i}")(h)
        x = L.Add(name=f"add_f{i}")([x, L.Dropout(0.1)(h)])
    x = _norm(kind, "ln_out")(x)
    return randomize_weights(keras.Model(tokens, L.Dense(VOCAB, name="head")(x)))


def post_norm():
    """keras.io's Transformer block, functional: normalised after each Add."""
    tokens = keras.Input((LENGTH,), dtype="int32")
    x = L.Embedding(VOCAB, WIDTH, name="emb")(tokens)
    h = L.MultiHeadAttention(2, 8, name="mha")(x, x)
    x = L.LayerNormalization(name="ln1")(L.Add()([x, h]))
    h = L.Dense(WIDTH, name="ffn")(L.Dense(32, activation="relu")(x))
    x = L.LayerNormalization(name="ln2")(L.Add()([x, h]))
    return randomize_weights(keras.Model(tokens, L.Dense(2, name="head")(x)))


def _tokens(n=4, seed=0):
    return np.random.default_rng(seed).integers(0, VOCAB, (n, LENGTH))


def _relative(model, grown, x):
    before = keras.ops.convert_to_numpy(model(x))
    after = keras.ops.convert_to_numpy(grown(x))
    return float(np.max(np.abs(after - before)) / np.max(np.abs(before)))


KINDS = ["layer"] + (["rms"] if RMS is not None else [])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("units", [20, 24, 40])  # 1.25x, 1.5x, 2.5x
def test_any_width_is_exact(kind, units, tmp_path):
    model, x = pre_norm(kind), _tokens()
    grown = kn.widen(model, "emb", units, seed=0)
    gain = grown.get_layer("ln_out").weights[0]
    assert tuple(gain.shape) == (units,)
    assert _relative(model, grown, x) < TOL
    path = str(tmp_path / "grown.keras")
    grown.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(x)),
        keras.ops.convert_to_numpy(grown(x)),
        atol=1e-6,
    )


def test_norm_gains_and_epsilon_compensate():
    model = pre_norm()
    grown = kn.widen(model, "emb", 20)
    old, new = model.get_layer("ln_a0"), grown.get_layer("ln_a0")
    gamma = keras.ops.convert_to_numpy(old.gamma)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(new.gamma)[:16], gamma * np.sqrt(16 / 20), rtol=1e-6
    )
    np.testing.assert_allclose(new.epsilon, old.epsilon * 16 / 20)
    # The new channels start at zero beta and the mean gain, and the writers'
    # new columns at the mean of their old ones.
    np.testing.assert_allclose(keras.ops.convert_to_numpy(new.beta)[16:], 0.0)
    kernel = keras.ops.convert_to_numpy(grown.get_layer("down0").kernel)
    np.testing.assert_allclose(
        kernel[:, 16:],
        np.repeat(kernel[:, :16].mean(1, keepdims=True), 4, 1),
        rtol=1e-5,
    )


def test_new_channels_learn():
    model = pre_norm()
    grown = kn.widen(model, "emb", 20)
    grown.compile(keras.optimizers.Adam(1e-2), "mse")
    x = _tokens(16)
    y = np.random.default_rng(1).normal(size=(16, LENGTH, VOCAB)).astype("float32")
    before = keras.ops.convert_to_numpy(grown.get_layer("emb").embeddings)[:, 16:]
    grown.fit(x, y, epochs=2, batch_size=8, verbose=0)
    after = keras.ops.convert_to_numpy(grown.get_layer("emb").embeddings)[:, 16:]
    assert not np.allclose(before, after)


def test_in_place_carries_adam_state():
    model = pre_norm()
    model.compile(keras.optimizers.Adam(1e-3), "mse")
    x = _tokens(8)
    y = np.random.default_rng(1).normal(size=(8, LENGTH, VOCAB)).astype("float32")
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    reference = keras.ops.convert_to_numpy(model(x))
    optimizer = model.optimizer
    kn.grow_in_place(model, kn.Widen("emb", 20, seed=0))
    after = keras.ops.convert_to_numpy(model(x))
    assert np.max(np.abs(after - reference)) / np.max(np.abs(reference)) < TOL
    assert model.optimizer is optimizer
    assert model.get_layer("ln_f1").gamma.shape == (20,)
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)  # trains on


def test_non_linear_writer_refused_with_valid_widths():
    model = pre_norm(writer_activation="gelu")
    with pytest.raises(ValueError) as error:
        kn.widen(model, "emb", 20)
    message = str(error.value)
    assert "'down0' (Dense) writes them through activation 'gelu'" in message
    assert "multiple of 16 (e.g. 32)" in message and "Received: new width 20" in message
    assert kn.widen(model, "emb", 32).count_params() > model.count_params()


def test_post_norm_refused_by_name():
    model = post_norm()
    with pytest.raises(ValueError, match="post-norm") as error:
        kn.widen(model, "emb", 20)
    assert "'ln2' (LayerNormalization)" in str(error.value)
    grown = kn.widen(model, "emb", 32)
    assert _relative(model, grown, _tokens()) < TOL


def test_a_number_divided_by_the_stream_is_refused():
    tokens = keras.Input((LENGTH,), dtype="int32")
    x = L.Embedding(VOCAB, WIDTH, name="emb")(tokens)
    x = keras.ops.divide(2.0, x + 10.0)  # 2 / mean is not the mean of 2 / x
    model = keras.Model(tokens, L.Dense(3)(L.LayerNormalization(name="ln")(x)))
    with pytest.raises(ValueError, match=r"divides a number by them"):
        kn.widen(model, "emb", 20)


@pytest.mark.skipif(RMS is None, reason="RMSNormalization needs Keras >= 3.9")
def test_rms_stream_takes_a_relu_writer():
    # Zero is what RMS needs, and relu(0) = 0: a relu writer keeps it.
    tokens = keras.Input((LENGTH,), dtype="int32")
    x = L.Embedding(VOCAB, WIDTH, name="emb")(tokens)
    h = L.Dense(WIDTH, activation="relu")(RMS(name="rms_a")(x))
    x = L.Add()([x, h])
    model = randomize_weights(keras.Model(tokens, L.Dense(3)(RMS(name="rms")(x))))
    grown = kn.widen(model, "emb", 20)
    assert _relative(model, grown, _tokens()) < TOL


def test_random_pad_is_unchanged_by_any_width():
    # The random-pad baseline never keeps the function: fresh channels as before.
    model = pre_norm()
    grown = kn.widen(model, "emb", 20, method="random-pad", seed=0)
    assert grown.get_layer("ln_a0").epsilon == model.get_layer("ln_a0").epsilon
