"""Run GrowModel under a distribution; executed in a subprocess by test_distributed.

Usage: python distributed_worker.py {tf-mirrored,jax-data-parallel} OUT_DIR
Prints one JSON line with what it measured.
"""

import json
import os
import sys

MODE, OUT = sys.argv[1], sys.argv[2]
if MODE == "tf-mirrored":
    os.environ["KERAS_BACKEND"] = "tensorflow"
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )
else:
    os.environ["KERAS_BACKEND"] = "jax"
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"

sys.path.insert(0, os.path.dirname(__file__))
import keras  # noqa: E402
import numpy as np  # noqa: E402
from growth_helpers import LossProbe  # noqa: E402
from growth_helpers import data  # noqa: E402
from growth_helpers import mnist_model  # noqa: E402

import keras_net2net as kn  # noqa: E402


def replicas(variable):
    value = variable.value
    if MODE == "tf-mirrored":
        return len(getattr(value, "values", [value]))
    return len(value.sharding.device_set)


def main():
    x, y = data(64, size=12)
    if MODE == "tf-mirrored":
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        devices = strategy.num_replicas_in_sync
        with strategy.scope():
            model = mnist_model("functional", size=12)
    else:
        import jax

        devices = len(jax.devices())
        keras.distribution.set_distribution(
            keras.distribution.DataParallel(devices=jax.devices())
        )
        model = mnist_model("functional", size=12)
    before, after = LossProbe(x[:16], y[:16], "b"), LossProbe(x[:16], y[:16], "a")
    grow = kn.GrowModel(
        {1: [kn.Widen("fc1", 80), kn.Widen("conv1", 96), kn.Deepen(after="conv2")]}
    )
    history = model.fit(
        x, y, epochs=3, batch_size=16, verbose=0, callbacks=[before, grow, after]
    )
    new_variables = (
        model.get_layer("fc1").weights + model.get_layer("conv2_deeper").weights
    )
    slots = model.optimizer.momentums
    path = os.path.join(OUT, "grown.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    # outside any strategy scope: plain predictions of both models
    load_difference = float(
        np.max(
            np.abs(model.predict(x[:8], verbose=0) - loaded.predict(x[:8], verbose=0))
        )
    )
    more = model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    result = {
        "devices": devices,
        "loss_difference": abs(before.at_epoch[1][0] - after.at_epoch[1][0]),
        "params": [before.at_epoch[1][1], after.at_epoch[1][1]],
        "new_variable_replicas": [replicas(v) for v in new_variables],
        "slot_replicas": sorted({replicas(s) for s in slots}),
        "losses": history.history["loss"] + more.history["loss"],
        "iterations": int(keras.ops.convert_to_numpy(model.optimizer.iterations)),
        "load_difference": load_difference,
        "loaded_fc1_units": loaded.get_layer("fc1").units,
    }
    print("RESULT " + json.dumps(result))


main()
