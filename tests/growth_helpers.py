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


def logits_loss(model, x, y):
    """Mean sparse cross-entropy of a logits model on a fixed batch."""
    p = keras.ops.convert_to_numpy(model(x, training=False)).astype("float64")
    p = np.exp(p - p.max(-1, keepdims=True))
    p = p / p.sum(-1, keepdims=True)
    return float(-np.mean(np.log(p[np.arange(len(y)), y])))


class StepProbe(keras.callbacks.Callback):
    """Records ``(measure(model), parameter count)`` as each step begins.

    Keyed ``(tag, optimizer step)`` in ``seen``; the first record of a step
    wins; ``at`` (a set of steps) limits the records. Placed before and
    after a `GrowModel` with two tags, it shows what the growth at a step
    changed.
    """

    def __init__(self, tag, seen, measure, at=None):
        super().__init__()
        self.tag, self.seen, self.measure, self.at = tag, seen, measure, at

    def on_train_batch_begin(self, batch, logs=None):
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        if self.at is not None and step not in self.at:
            return
        if (self.tag, step) not in self.seen:
            self.seen[(self.tag, step)] = (
                self.measure(self.model),
                self.model.count_params(),
            )


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
    from keras_net2net.surgery import apply as building

    built = []
    apply_plan = building.apply_plan
    monkeypatch.setattr(
        building,
        "apply_plan",
        lambda *a, **k: built.append(a[1]) or apply_plan(*a, **k),
    )
    return built


def tiny_llama(vocabulary_size=50, learning_rate=1e-3, samples=64, seed=0):
    """A tiny KerasHub LlamaCausalLM compiled with AdamW, and a token batch.

    Returns ``(model, x, y)``: ``samples`` sequences of 8 tokens and their
    next tokens.
    """
    import keras_hub

    backbone = keras_hub.models.LlamaBackbone(
        vocabulary_size=vocabulary_size,
        num_layers=2,
        num_query_heads=4,
        num_key_value_heads=2,
        hidden_dim=16,
        intermediate_dim=32,
    )
    model = keras_hub.models.LlamaCausalLM(backbone=backbone, preprocessor=None)
    model.compile(
        optimizer=keras.optimizers.AdamW(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, vocabulary_size, (samples, 9)).astype("int32")
    x = {"token_ids": ids[:, :-1], "padding_mask": np.ones((samples, 8), "int32")}
    return model, x, ids[:, 1:]


def optimizer_snapshot(optimizer):
    return [np.array(keras.ops.convert_to_numpy(v)) for v in optimizer.variables]


def trained_small(kind):
    model = small_model(kind)
    x, y = small_data()
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    return model, x, y
