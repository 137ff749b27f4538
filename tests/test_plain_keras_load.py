"""Grown models load with plain Keras, in a process that never imports keras_net2net."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
from conftest import build
from conftest import mnist_layers
from conftest import randomize_weights
from growth_helpers import small_data
from growth_helpers import small_model

import keras_net2net as kn

L = keras.layers

LOADER = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import keras
    folder = sys.argv[1]
    cases = json.load(open(folder + "/cases.json"))
    worst = {}
    for name in cases:
        model = keras.models.load_model(f"{folder}/{name}.keras")
        data = np.load(f"{folder}/{name}.npz")
        out = keras.ops.convert_to_numpy(model(data["x"], training=False))
        worst[name] = float(np.max(np.abs(out - data["y"])))
    assert "keras_net2net" not in sys.modules, "keras_net2net was imported"
    print(json.dumps(worst))
    """
)


def residual_model():
    inputs = keras.Input((6, 6, 2))
    x = L.Conv2D(4, 3, padding="same", name="stem")(inputs)
    h = L.Conv2D(4, 3, padding="same", activation="relu", name="c1")(x)
    h = L.BatchNormalization(name="bn")(h)
    x = L.Add(name="add")([x, h])
    x = L.LayerNormalization(name="ln")(x)
    x = L.GlobalAveragePooling2D()(x)
    return randomize_weights(keras.Model(inputs, L.Dense(3, name="out")(x)))


def check_plain_load(models, folder):
    """Save ``models`` and load them in a process that never imports keras_net2net."""
    for name, (model, inputs) in models.items():
        assert "keras_net2net" not in json.dumps(model.get_config())
        model.save(str(folder / f"{name}.keras"))
        out = keras.ops.convert_to_numpy(model(inputs, training=False))
        np.savez(folder / f"{name}.npz", x=inputs, y=out)
    (folder / "cases.json").write_text(json.dumps(list(models)))
    result = subprocess.run(
        [sys.executable, "-c", LOADER, str(folder)],
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ),
        cwd=str(folder),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    worst = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(worst) == set(models)
    assert max(worst.values()) <= 1e-5, worst


def test_grown_models_load_without_keras_net2net(tmp_path):
    x, y = small_data()
    fitted = small_model("functional")
    fitted.fit(
        x,
        y,
        epochs=3,
        batch_size=8,
        verbose=0,
        callbacks=[
            kn.GrowModel({1: kn.Widen("fc1", 9, noise=0.01), 2: kn.Deepen(after="fc2")})
        ],
    )
    in_place = small_model("sequential")
    kn.grow_in_place(in_place, [kn.Widen("fc1", 10), kn.Deepen(after="fc1")])
    conv = build(mnist_layers(), (12, 12, 1), "functional")
    xc = np.random.default_rng(0).random((2, 12, 12, 1)).astype("float32")
    models = {
        "growmodel": (fitted, x),
        "grow_in_place": (in_place, x),
        "widen": (kn.widen(conv, "conv1", 80), xc),
        "deepen": (kn.deepen(conv, after="conv2"), xc),
    }
    check_plain_load(models, tmp_path)


def test_coupled_growth_loads_without_keras_net2net(tmp_path):
    base = residual_model()
    xi = np.random.default_rng(0).normal(size=(3, 6, 6, 2)).astype("float32")
    models = {
        "widen_group": (kn.widen(base, "stem", 8), xi),
        "deepen_residual": (kn.deepen(base, after="c1", residual=True), xi),
        "deepen_block": (kn.deepen(base, after="add"), xi),
    }
    check_plain_load(models, tmp_path)
