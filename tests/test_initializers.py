import json

import keras
import numpy as np
import pytest
from conftest import TOL

import keras_net2net as kn
from keras_net2net import transforms as T

L = keras.layers


def test_two_layer_definitions_sharing_a_mapping_preserve_the_function(rng):
    teacher = keras.Sequential(
        [keras.Input((6,)), L.Dense(4, activation="relu"), L.Dense(3)]
    )
    for v in teacher.weights:
        v.assign(rng.normal(size=v.shape))
    (k1, b1), (k2, b2) = teacher.layers[0].weights, teacher.layers[1].weights
    mapping = T.random_mapping(4, 9, seed=0)
    student = keras.Sequential(
        [
            keras.Input((6,)),
            L.Dense(
                9,
                activation="relu",
                kernel_initializer=kn.Net2WiderInit(k1, mapping),
                bias_initializer=kn.Net2WiderInit(b1, mapping),
            ),
            L.Dense(
                3,
                kernel_initializer=kn.Net2WiderInit(k2, mapping, side="divide"),
                bias_initializer=keras.initializers.Constant(0.0),
            ),
        ]
    )
    student.layers[1].bias.assign(b2)
    x = rng.normal(size=(5, 6)).astype("float32")
    assert kn.max_output_difference(teacher, student, x) <= TOL


def test_net2wider_init_reports_wrong_layer_width(rng):
    init = kn.Net2WiderInit(rng.normal(size=(6, 4)), T.random_mapping(4, 8))
    with pytest.raises(ValueError, match=r"asked for shape=\(6, 7\)"):
        L.Dense(7, kernel_initializer=init).build((None, 6))


def test_net2wider_init_validates_arguments(rng):
    with pytest.raises(ValueError, match="side"):
        kn.Net2WiderInit(side="both")
    with pytest.raises(TypeError, match="seed"):
        kn.Net2WiderInit(seed=1.5)
    with pytest.raises(ValueError, match="noise"):
        kn.Net2WiderInit(noise=-1)
    with pytest.raises(ValueError, match="mapping"):
        kn.Net2WiderInit(rng.normal(size=(2, 2)))


def test_net2wider_init_accepts_plain_index_list(rng):
    w = rng.normal(size=(2, 3))
    init = kn.Net2WiderInit(w, [0, 1, 2, 0], side="copy")
    out = keras.ops.convert_to_numpy(init((2, 4)))
    np.testing.assert_allclose(out[:, 3], w[:, 0], rtol=1e-6)


def test_transform_kinds_for_optimizer_state(rng):
    v = rng.uniform(size=(3, 2))
    mapping = T.WidthMapping(np.array([0, 1, 2, 0, -1]), 3)
    init = kn.Net2WiderInit(v, mapping, side="divide", noise=0.5, fill="random", seed=1)
    linear = init.transform(v, kind="linear")
    squared = init.transform(v, kind="squared")
    np.testing.assert_allclose(linear[0], v[0] / 2)
    np.testing.assert_allclose(squared[3], v[0] / 4)
    assert np.all(linear[4] == 0) and np.all(squared[4] == 0)
    weights = init.transform(v)
    np.testing.assert_allclose(weights[0], v[0] / 2)  # the original's row: exact
    assert not np.allclose(weights[3], v[0] / 2)  # noise on the new copy's row


def test_config_has_no_weights_and_roundtrips(rng):
    init = kn.Net2WiderInit(
        rng.normal(size=(64, 32)), T.random_mapping(32, 40), noise=0.1, seed=3
    )
    config = init.get_config()
    assert len(json.dumps(config)) < 400
    restored = kn.Net2WiderInit.from_config(config)
    assert restored.source is None and restored.seed == 3 and restored.noise == 0.1
    value = keras.ops.convert_to_numpy(restored((2, 3)))
    np.testing.assert_array_equal(value, np.zeros((2, 3)))


def test_saved_model_loads_without_custom_objects(tmp_path, rng):
    teacher = keras.Sequential([keras.Input((5,)), L.Dense(3), L.Dense(2)])
    mapping = T.random_mapping(3, 6, seed=0)
    model = keras.Sequential(
        [
            keras.Input((5,)),
            L.Dense(
                6,
                kernel_initializer=kn.Net2WiderInit(teacher.layers[0].kernel, mapping),
            ),
            L.Dense(
                2,
                kernel_initializer=kn.Net2WiderInit(
                    teacher.layers[1].kernel, mapping, side="divide"
                ),
            ),
            L.Reshape((2, 1, 1)),
            L.Conv2D(2, 3, padding="same", kernel_initializer=kn.IdentityConvInit()),
        ]
    )
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    x = rng.normal(size=(4, 5)).astype("float32")
    np.testing.assert_array_equal(
        model.predict(x, verbose=0), loaded.predict(x, verbose=0)
    )
    assert isinstance(loaded.layers[0].kernel_initializer, kn.Net2WiderInit)
    assert isinstance(loaded.layers[-1].kernel_initializer, kn.IdentityConvInit)
    assert path.stat().st_size < 60_000


@pytest.mark.parametrize("kernel", [(3,), (3, 5), (1, 3, 3)])
def test_identity_conv_init_is_identity(kernel, rng):
    conv = {1: L.Conv1D, 2: L.Conv2D, 3: L.Conv3D}[len(kernel)]
    layer = conv(4, kernel, padding="same", kernel_initializer=kn.IdentityConvInit())
    x = rng.normal(size=(2,) + (7,) * len(kernel) + (4,)).astype("float32")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)), x, atol=1e-6)


def test_identity_conv_init_errors_name_the_shape():
    with pytest.raises(ValueError, match=r"rank >= 3.*shape=\(3, 3\)"):
        kn.IdentityConvInit()((3, 3))
    with pytest.raises(ValueError, match="odd kernel sizes"):
        kn.IdentityConvInit()((2, 2, 3, 3))
    assert kn.IdentityConvInit(gain=2.0).get_config() == {"gain": 2.0}
