"""Backend-side weight transforms and host views agree with the numpy math."""

import keras
import numpy as np
import pytest

from keras_net2net._arrays import apply_on_device
from keras_net2net._arrays import host_copy
from keras_net2net._arrays import host_view
from keras_net2net._arrays import maps_on_device
from keras_net2net.transforms import Chain
from keras_net2net.transforms import WidthTransform
from keras_net2net.transforms import padding_mapping
from keras_net2net.transforms import random_mapping


@pytest.mark.parametrize("kind", ["weight", "linear", "squared"])
@pytest.mark.parametrize("scale", [1.0, 1.5])
def test_apply_on_device_matches_numpy(kind, scale):
    rng = np.random.default_rng(0)
    value = rng.normal(size=(5, 3, 4)).astype("float32")
    chain = Chain(
        [
            WidthTransform(random_mapping(5, 8, seed=1), "in", axis=0),
            WidthTransform(random_mapping(4, 7, seed=2), "out", axis=-1, scale=scale),
            WidthTransform(random_mapping(3, 6, seed=3), "in", axis=1),
        ]
    )
    assert chain.exact(kind)
    expected = value
    for transform in chain:
        expected = transform.apply(expected, kind=kind)
    variable = keras.Variable(value)
    result = keras.ops.convert_to_numpy(apply_on_device(variable, chain, kind))
    assert result.shape == (8, 6, 7)
    np.testing.assert_allclose(result, expected, rtol=1e-6, atol=1e-7)


def test_noise_and_fresh_units_stay_in_numpy():
    noisy = Chain([WidthTransform(random_mapping(4, 6, seed=0), noise=0.1)])
    fresh = Chain([WidthTransform(padding_mapping(4, 6))])
    assert not noisy.exact("weight")
    assert noisy.exact("linear")  # slots never get noise
    assert not fresh.exact("linear")
    with pytest.raises(ValueError, match="exact chain"):
        apply_on_device(keras.Variable(np.ones(4, "float32")), fresh, "linear")


def test_host_view_reads_without_changing_and_host_copy_is_independent():
    variable = keras.Variable(np.arange(6, dtype="float32").reshape(2, 3))
    view = host_view(variable)
    np.testing.assert_array_equal(view, np.arange(6).reshape(2, 3))
    copy = host_copy(variable)
    copy[0, 0] = 100.0
    assert copy.flags.writeable
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(variable), np.arange(6).reshape(2, 3)
    )


def test_maps_on_device_except_jax_on_the_cpu():
    variable = keras.Variable(np.ones((3, 2), "float32"))
    on_cpu_jax = keras.backend.backend() == "jax" and all(
        device.platform == "cpu" for device in variable.value.devices()
    )
    assert maps_on_device(variable) is not on_cpu_jax
