import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

L = keras.layers
TOL = 1e-5


def randomize_weights(model, seed=0):
    """Give every variable random non-zero values (BN variances positive)."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        shape = tuple(variable.shape)
        if variable.name == "moving_variance":
            value = rng.uniform(0.5, 2.0, shape)
        elif len(shape) >= 2:  # kernels: fan-in scaling keeps outputs unsaturated
            value = rng.normal(0.0, 1.5 / np.sqrt(np.prod(shape[:-1])), shape)
        else:
            value = rng.normal(0.0, 0.3, shape)
        variable.assign(value.astype(variable.dtype))
    return model


def mnist_layers():
    return [
        L.Conv2D(64, 3, padding="same", activation="relu", name="conv1"),
        L.MaxPooling2D(2),
        L.Conv2D(64, 3, padding="same", activation="relu", name="conv2"),
        L.MaxPooling2D(2),
        L.Flatten(),
        L.Dense(64, activation="relu", name="fc1"),
        L.Dense(10, activation="softmax", name="fc2"),
    ]


def build(layers, input_shape, kind):
    """A Sequential or Functional model over ``layers`` (a chain)."""
    if kind == "sequential":
        return keras.Sequential([keras.Input(input_shape)] + layers)
    inputs = keras.Input(input_shape)
    x = inputs
    for layer in layers:
        x = layer(x)
    return keras.Model(inputs, x)


def mnist_teacher(kind="functional", size=28):
    return randomize_weights(build(mnist_layers(), (size, size, 1), kind), seed=1)


def snapshot(model):
    """Everything that must stay bitwise unchanged after a failed request."""
    return (
        [np.array(v.numpy(), copy=True) for v in model.weights],
        [v.path for v in model.weights],
        model.to_json(),
    )


def assert_unchanged(model, before):
    weights, paths, config = snapshot(model)
    assert paths == before[1]
    assert config == before[2]
    for a, b in zip(weights, before[0]):
        np.testing.assert_array_equal(a, b)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(params=["sequential", "functional"])
def kind(request):
    return request.param
