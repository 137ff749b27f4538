"""Run GrowModel under a distribution; executed in a subprocess by test_distributed.

Usage: python distributed_worker.py MODE OUT_DIR [WORKER_INDEX TF_CONFIG_JSON]

MODE is tf-mirrored, jax-data-parallel, jax-model-parallel,
jax-llama-model-parallel (a KerasHub LlamaCausalLM under its own
get_layout_map) or tf-multiworker (one process per worker, with its index and
TF_CONFIG). Prints one JSON line
with what it measured.
"""

import json
import os
import sys

MODE, OUT = sys.argv[1], sys.argv[2]
if MODE == "tf-multiworker":
    os.environ["KERAS_BACKEND"] = "tensorflow"
    os.environ["TF_CONFIG"] = sys.argv[4]
    import tensorflow as tf
elif MODE == "tf-mirrored":
    os.environ["KERAS_BACKEND"] = "tensorflow"
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )
else:
    os.environ["KERAS_BACKEND"] = "jax"
    count = 8 if MODE.endswith("model-parallel") else 2
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={count}"

sys.path.insert(0, os.path.dirname(__file__))
import keras  # noqa: E402
import numpy as np  # noqa: E402
from growth_helpers import LossProbe  # noqa: E402
from growth_helpers import StepProbe  # noqa: E402
from growth_helpers import data  # noqa: E402
from growth_helpers import mnist_model  # noqa: E402
from growth_helpers import tiny_llama  # noqa: E402

import keras_net2net as kn  # noqa: E402


def replicas(variable):
    value = variable.value
    if MODE == "tf-mirrored":
        return len(getattr(value, "values", [value]))
    return len(value.sharding.device_set)


def model_parallel():
    """ModelParallel on 8 devices (2 x 4 mesh): fc1 and conv1 sharded."""
    import jax

    mesh = keras.distribution.DeviceMesh(
        (2, 4), ["batch", "model"], devices=jax.devices()
    )
    layout = keras.distribution.LayoutMap(mesh)
    layout[".*fc1.*kernel"] = (None, "model")
    layout[".*fc1.*bias"] = ("model",)
    layout[".*conv1.*kernel"] = (None, None, None, "model")
    layout[".*conv1.*bias"] = ("model",)
    keras.distribution.set_distribution(
        keras.distribution.ModelParallel(layout_map=layout, batch_dim_name="batch")
    )
    x, y = data(64, size=12)
    model = mnist_model("functional", keras.optimizers.Adam(1e-3), size=12)
    before, after = LossProbe(x[:16], y[:16], "b"), LossProbe(x[:16], y[:16], "a")
    grow = kn.GrowModel(
        {1: [kn.Widen("fc1", 80), kn.Widen("conv1", 96), kn.Deepen(after="conv2")]}
    )
    history = model.fit(
        x, y, epochs=3, batch_size=16, verbose=0, callbacks=[before, grow, after]
    )

    def spec(variable):
        return str(variable.value.sharding.spec)

    layers = ("conv1", "fc1", "conv2_deeper")
    path = os.path.join(OUT, "grown.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    result = {
        "devices": len(jax.devices()),
        "loss_difference": abs(before.at_epoch[1][0] - after.at_epoch[1][0]),
        "params": [before.at_epoch[1][1], after.at_epoch[1][1]],
        "shapes": {
            v.path: list(v.shape) for n in layers for v in model.get_layer(n).weights
        },
        "specs": {v.path: spec(v) for n in layers for v in model.get_layer(n).weights},
        "slot_specs": {
            v.path: spec(v)
            for v in model.optimizer.variables
            if "fc1" in v.path or "conv1" in v.path
        },
        "losses": history.history["loss"],
        "load_difference": float(
            np.max(
                np.abs(
                    model.predict(x[:8], verbose=0) - loaded.predict(x[:8], verbose=0)
                )
            )
        ),
    }
    print("RESULT " + json.dumps(result))


def multiworker():
    """One of 2 MultiWorkerMirroredStrategy workers (localhost).

    Keras 3's ``fit`` fails under this strategy even without keras-net2net
    (keras-team/keras#20585), so the workers train with a custom loop
    (``strategy.run``) and grow with `grow_in_place` at the same step.
    """
    index = int(sys.argv[3])
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    x, y = data(64, size=12)
    with strategy.scope():
        model = mnist_model("functional", size=12)
        loss_fn = keras.losses.SparseCategoricalCrossentropy(reduction="sum")

    def replica_step(xb, yb):
        with tf.GradientTape() as tape:
            loss = loss_fn(yb, model(xb, training=True)) / 16.0
        grads = tape.gradient(loss, model.trainable_variables)
        model.optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    def train(steps, start):
        step = tf.function(lambda a, b: strategy.run(replica_step, args=(a, b)))
        for i in range(start, start + steps):
            batch = slice(8 * i, 8 * (i + 1))  # 8 per worker: global batch 16
            step(tf.constant(x[batch]), tf.constant(y[batch]))

    train(3, 0)
    probe = x[:16]
    before = keras.ops.convert_to_numpy(model(probe))
    params = [model.count_params()]
    kn.grow_in_place(model, [kn.Widen("fc1", 80), kn.Deepen(after="conv2")])
    after = keras.ops.convert_to_numpy(model(probe))
    params.append(model.count_params())
    train(3, 3)  # the retraced step trains the grown variables
    np.savez(
        os.path.join(OUT, f"worker{index}.npz"),
        *[keras.ops.convert_to_numpy(v) for v in model.weights],
    )
    new_variables = (
        model.get_layer("fc1").weights + model.get_layer("conv2_deeper").weights
    )
    result = {
        "workers": strategy.cluster_resolver.cluster_spec().num_tasks("worker"),
        "index": index,
        "output_difference": float(np.max(np.abs(before - after))),
        "output_scale": float(np.max(np.abs(before))),
        "params": params,
        "mirrored": sorted({type(v.value).__name__ for v in new_variables}),
        "iterations": int(keras.ops.convert_to_numpy(model.optimizer.iterations)),
        "shapes": [list(v.shape) for v in model.weights],
    }
    print("RESULT " + json.dumps(result))


def llama_model_parallel():
    """A LlamaCausalLM sharded by LlamaBackbone.get_layout_map on a 2 x 4 mesh."""
    import jax
    import keras_hub

    mesh = keras.distribution.DeviceMesh(
        (2, 4), ["batch", "model"], devices=jax.devices()
    )
    layout = keras_hub.models.LlamaBackbone.get_layout_map(mesh)
    keras.distribution.set_distribution(
        keras.distribution.ModelParallel(layout_map=layout, batch_dim_name="batch")
    )
    model, x, y = tiny_llama(vocabulary_size=64, samples=32)
    fixed = {k: v[:8] for k, v in x.items()}
    seen = {}

    def probe(tag):
        output = lambda m: keras.ops.convert_to_numpy(m(fixed))  # noqa: E731
        return StepProbe(tag, seen, output, at={2})

    grow = kn.GrowModel(
        {
            kn.AtStep(2): [
                kn.Widen("hidden_dim", 32),
                kn.Widen("intermediate_dim", 64),
                kn.Deepen(after="transformer_layer_1"),
            ]
        }
    )
    history = model.fit(
        x,
        y,
        batch_size=8,
        epochs=2,
        verbose=0,
        callbacks=[probe("b"), grow, probe("a")],
    )

    def expected(path):
        found = layout[path]
        return jax.sharding.PartitionSpec(*(found.axes if found else ()))

    def mismatches(variables):
        return [
            f"{v.path}: {v.value.sharding.spec} != {expected(v.path)}"
            for v in variables
            if layout[v.path] is not None and v.value.sharding.spec != expected(v.path)
        ]

    sharded = [v for v in model.weights if layout[v.path] is not None]
    # An AdamW slot is named after its variable's path; it should be sharded
    # like the variable (as Keras shards the slots of a fresh model).
    by_name = {v.path.replace("/", "_"): v for v in sharded}
    slots, slot_mismatches = 0, []
    for slot in model.optimizer.variables:
        name = slot.path.split("/", 1)[-1].rsplit("_", 1)[0]
        if name in by_name:
            slots += 1
            want = by_name[name].value.sharding.spec
            if slot.value.sharding.spec != want:
                slot_mismatches.append(f"{slot.path}: {slot.value.sharding.spec}")
    before, after = seen[("b", 2)], seen[("a", 2)]  # the growth step
    result = {
        "devices": len(jax.devices()),
        "class": type(model).__name__,
        "config": {
            k: model.backbone.get_config()[k]
            for k in ("hidden_dim", "intermediate_dim", "num_layers")
        },
        "relative_difference": float(
            np.max(np.abs(after[0] - before[0])) / np.max(np.abs(before[0]))
        ),
        "params": [before[1], after[1]],
        "sharded": sorted(v.path for v in sharded),
        "sharded_slots": slots,
        "mismatches": mismatches(model.weights) + slot_mismatches,
        "losses": history.history["loss"],
    }
    print("RESULT " + json.dumps(result))


def main():
    if MODE == "jax-model-parallel":
        return model_parallel()
    if MODE == "jax-llama-model-parallel":
        return llama_model_parallel()
    if MODE == "tf-multiworker":
        return multiworker()
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
