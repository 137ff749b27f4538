"""Shared pieces of the GrowModel tests."""

import keras
import numpy as np
from conftest import build
from conftest import mnist_layers

L = keras.layers

MNIST_SCHEDULE = None  # filled lazily to keep imports light


def data(n=32, size=28, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, size, size, 1)).astype("float32")
    y = rng.integers(0, 10, n)
    return x, y


def mnist_model(kind, optimizer=None, size=28):
    model = build(mnist_layers(), (size, size, 1), kind)
    model.compile(
        optimizer or keras.optimizers.SGD(0.01, momentum=0.9),
        "sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def small_model(kind, optimizer=None):
    """A tiny Dense model for quick optimizer tests."""
    model = build(
        [
            L.Dense(6, activation="relu", name="fc1"),
            L.BatchNormalization(name="bn"),
            L.Dense(5, activation="relu", name="fc2"),
            L.Dense(3, activation="softmax", name="out"),
        ],
        (4,),
        kind,
    )
    model.compile(
        optimizer or keras.optimizers.SGD(0.05, momentum=0.9),
        "sparse_categorical_crossentropy",
    )
    return model


def small_data(n=32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 4)).astype("float32"), rng.integers(0, 3, n)


def batch_loss(model, x, y):
    """Mean sparse cross-entropy of ``model`` on a fixed batch (inference mode)."""
    p = keras.ops.convert_to_numpy(model(x, training=False)).astype("float64")
    return float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], 1e-12, None))))


class LossProbe(keras.callbacks.Callback):
    """Records the loss on a fixed batch at epoch and batch begin."""

    def __init__(self, x, y, tag):
        super().__init__()
        self.x, self.y, self.tag = x, y, tag
        self.at_epoch = {}
        self.at_step = {}
        self._step = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.at_epoch[epoch] = (
            batch_loss(self.model, self.x, self.y),
            self.model.count_params(),
        )

    def on_train_batch_begin(self, batch, logs=None):
        self.at_step[self._step] = (
            batch_loss(self.model, self.x, self.y),
            self.model.count_params(),
        )
        self._step += 1


class StepCounter(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.steps = 0

    def on_train_batch_begin(self, batch, logs=None):
        self.steps += 1


def numpy_weights(layer):
    return {v.name: np.array(keras.ops.convert_to_numpy(v)) for v in layer.weights}


def record_builds(monkeypatch):
    """A list that records the plan of every grown model built from now on."""
    from keras_net2net.surgery import operations

    built = []
    apply_plan = operations.apply_plan
    monkeypatch.setattr(
        operations,
        "apply_plan",
        lambda *a, **k: built.append(a[1]) or apply_plan(*a, **k),
    )
    return built
