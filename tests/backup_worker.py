"""A training script killed after a growth event and started again (see
test_backup_resume.py).

    python backup_worker.py BACKUP_DIR OUT_DIR ORDER [kill] [llama]

The same script runs twice: with ``kill`` it dies by SIGKILL at the end of
epoch 2 (after the growth at epoch 1 and after BackupAndRestore saved),
writing the state that the backup holds; without it, it resumes and records
the state it resumes from and the growth events it applies. ``llama``: a
tiny KerasHub LlamaCausalLM grown in its config vocabulary instead of the
small Sequential model.
"""

import json
import os
import signal
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from growth_helpers import tiny_llama  # noqa: E402

import keras_net2net as kn  # noqa: E402

LLAMA = "llama" in sys.argv[4:]


def width(model):
    return model.backbone.hidden_dim if LLAMA else model.get_layer("fc1").units


def layer_names(model):
    return [layer.name for layer in (model.backbone if LLAMA else model).layers]


def state(model):
    optimizer = model.optimizer
    return {
        "weights": [np.array(keras.ops.convert_to_numpy(v)) for v in model.weights],
        "slots": [np.array(keras.ops.convert_to_numpy(v)) for v in optimizer.variables],
        "iterations": int(keras.ops.convert_to_numpy(optimizer.iterations)),
        "width": width(model),
        "layers": layer_names(model),
        "class": type(model).__name__,
    }


def save_state(path, data):
    arrays = {f"w{i}": w for i, w in enumerate(data["weights"])}
    arrays.update({f"s{i}": s for i, s in enumerate(data["slots"])})
    np.savez(path, **arrays)
    meta = {k: data[k] for k in ("iterations", "width", "layers", "class")}
    meta["n_weights"], meta["n_slots"] = len(data["weights"]), len(data["slots"])
    with open(path + ".json", "w") as f:
        json.dump(meta, f)


class KillAfterBackup(keras.callbacks.Callback):
    def __init__(self, out_dir):
        super().__init__()
        self.out_dir = out_dir

    def on_epoch_end(self, epoch, logs=None):
        if epoch == 2:
            save_state(os.path.join(self.out_dir, "backed_up"), state(self.model))
            os.kill(os.getpid(), signal.SIGKILL)


class RecordResume(keras.callbacks.Callback):
    def __init__(self, out_dir):
        super().__init__()
        self.out_dir = out_dir
        self.done = False

    def on_train_batch_begin(self, batch, logs=None):
        if not self.done:
            self.done = True
            save_state(os.path.join(self.out_dir, "resumed"), state(self.model))


def small_model():
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(6, activation="relu", name="fc1"),
            keras.layers.Dense(5, activation="relu", name="fc2"),
            keras.layers.Dense(3, activation="softmax", name="out"),
        ]
    )
    model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = rng.integers(0, 3, 64)
    return model, x, y, {1: kn.Widen("fc1", 10), 4: kn.Deepen(after="fc1")}


def llama_model():
    model, x, y = tiny_llama(learning_rate=0.01)
    schedule = {
        1: kn.Widen("hidden_dim", 32),
        4: kn.Deepen(after="transformer_layer_1"),
    }
    return model, x, y, schedule


def main():
    backup_dir, out_dir, order = sys.argv[1:4]
    kill = "kill" in sys.argv[4:]
    keras.utils.set_random_seed(0)
    model, x, y, schedule = llama_model() if LLAMA else small_model()
    backup = keras.callbacks.BackupAndRestore(backup_dir)
    grow = kn.GrowModel(schedule, lr_scale=0.5)
    callbacks = [backup, grow] if order == "backup_first" else [grow, backup]
    callbacks.append(KillAfterBackup(out_dir) if kill else RecordResume(out_dir))
    model.fit(x, y, epochs=6, batch_size=16, verbose=0, callbacks=callbacks)
    with open(os.path.join(out_dir, "final.json"), "w") as f:
        json.dump(
            {
                "records": [r.trigger for r in grow.records],
                "history": [h["trigger"] for h in model.growth_history],
                "width": width(model),
                "layers": layer_names(model),
                "class": type(model).__name__,
                "learning_rate": float(
                    keras.ops.convert_to_numpy(model.optimizer.learning_rate)
                ),
            },
            f,
        )


if __name__ == "__main__":
    main()
