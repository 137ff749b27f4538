"""Smoke tests of an installed keras-net2net wheel, run outside the checkout.

    python install_smoke.py MODE [path/to/README.md]

`.ci/install_smoke.sh` installs the built wheel with each documented extra into
fresh virtual environments and runs one mode after each install:

- ``quickstart`` (any backend): the package imports from site-packages, not a
  checkout, and the README's Quickstart block runs (the README path is needed).
- ``fit``: a `GrowModel` growth inside `fit`, then save/load.
- ``tuner``: a small `GrowthTuner` search and a stock `keras_tuner.RandomSearch`
  (KerasTuner imports tensorboard on the TensorFlow backend: the `tuner` extra
  must bring it).
- ``keras-hub``: a tiny `GPT2Backbone` (random weights, no download) grown.

Every mode trains tiny models for a few steps: seconds each.
"""

import os
import re
import sys
import tempfile

import keras
import numpy as np

import keras_net2net as kn


def check_installed():
    assert "site-packages" in kn.__file__, kn.__file__
    assert os.path.exists(os.path.join(os.path.dirname(kn.__file__), "py.typed"))
    print(f"keras_net2net {kn.__version__} from {kn.__file__}")
    print(f"keras {keras.__version__}, backend {keras.backend.backend()}")


def quickstart(readme_path):
    readme = open(readme_path).read()
    section = readme.split("## Quickstart", 1)[1]
    block = re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)
    exec(compile(block, "README quickstart", "exec"), {})
    print("README quickstart: ok")


def grow_in_fit():
    model = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(8, activation="relu", name="fc1"),
            keras.layers.Dense(3, activation="softmax", name="out"),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy")
    x = np.random.default_rng(0).normal(size=(64, 6)).astype("float32")
    y = np.random.default_rng(1).integers(0, 3, 64)
    grow = kn.GrowModel({1: [kn.Widen("fc1", 16), kn.Deepen(after="fc1")]})
    model.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[grow])
    assert model.get_layer("fc1").units == 16 and len(grow.records) == 1
    path = os.path.join(tempfile.mkdtemp(), "grown.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert kn.max_output_difference(model, loaded, x) <= 1e-6
    print("GrowModel fit and save/load: ok")


def build(hp):
    inputs = keras.Input((8,))
    width = hp.Choice("fc1", [4, 8])
    x = keras.layers.Dense(width, activation="relu", name="fc1")(inputs)
    outputs = keras.layers.Dense(3, activation="softmax", name="out")(x)
    model = keras.Model(inputs, outputs)
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def tuner_searches():
    import keras_tuner as kt

    from keras_net2net.tuner import GrowthSpace
    from keras_net2net.tuner import GrowthTuner

    x = np.random.default_rng(0).normal(size=(64, 8)).astype("float32")
    y = x[:, :3].argmax(1)
    fit_args = dict(epochs=1, batch_size=16, validation_split=0.25, verbose=0)

    growth = GrowthTuner(
        build,
        GrowthSpace(widen={"fc1": 32}, deepen=["fc1"]),
        objective="val_accuracy",
        max_trials=2,
        initial_trials=1,
        seed=0,
        directory=tempfile.mkdtemp(),
    )
    growth.search(x, y, **fit_args)
    trials = growth.oracle.trials.values()
    assert len(trials) == 2, len(trials)
    assert any(t.hyperparameters.values.get("growth/parent") for t in trials)
    print(growth.lineage_summary())
    print("GrowthTuner search: ok")

    random = kt.RandomSearch(
        build,
        objective="val_accuracy",
        max_trials=2,
        seed=0,
        directory=tempfile.mkdtemp(),
    )
    random.search(x, y, **fit_args)
    assert random.get_best_models(1)[0] is not None
    print("keras_tuner.RandomSearch search: ok")


def keras_hub_growth():
    import keras_hub

    backbone = keras_hub.models.GPT2Backbone(  # tiny config, random weights
        vocabulary_size=50,
        num_layers=1,
        num_heads=2,
        hidden_dim=8,
        intermediate_dim=16,
        max_sequence_length=6,
    )
    ids = keras.Input((6,), dtype="int32")
    mask = keras.Input((6,), dtype="int32")
    h = backbone({"token_ids": ids, "padding_mask": mask})
    pooled = keras.layers.GlobalAveragePooling1D()(h)
    model = keras.Model([ids, mask], keras.layers.Dense(2)(pooled))
    bigger = kn.widen(model, "token_embedding", 16)
    bigger = kn.deepen(bigger, after="transformer_layer_0")
    x = [np.random.randint(0, 50, (2, 6)).astype("int32"), np.ones((2, 6), "int32")]
    diff = kn.max_output_difference(model, bigger, x)
    assert diff <= 1e-4, diff
    print(f"KerasHub GPT2Backbone widened and deepened: ok ({diff:.1e})")


def main(argv):
    mode = argv[1]
    check_installed()
    if mode == "quickstart":
        quickstart(argv[2])
    elif mode == "fit":
        grow_in_fit()
    elif mode == "tuner":
        tuner_searches()
    elif mode == "keras-hub":
        keras_hub_growth()
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv)
