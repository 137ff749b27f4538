"""Smoke test of an installed keras-net2net wheel, run outside the checkout.

    python smoke_test.py path/to/README.md

Checks that the package imports from site-packages (not a checkout), runs the
README quickstart, grows a model inside `fit`, and saves/loads it.
"""

import os
import re
import sys
import tempfile

import keras
import numpy as np

import keras_net2net as kn

here = os.path.dirname(os.path.abspath(__file__))
assert "site-packages" in kn.__file__, kn.__file__
assert os.path.exists(os.path.join(os.path.dirname(kn.__file__), "py.typed"))
print(f"keras_net2net {kn.__version__} from {kn.__file__}")

readme = open(sys.argv[1]).read()
quickstart = readme.split("## Quickstart", 1)[1]
block = re.search(r"```python\n(.*?)```", quickstart, flags=re.S).group(1)
exec(compile(block, "README quickstart", "exec"), {})
print("README quickstart ran")

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
