"""Reproduce the Net2Net MNIST experiments on Keras 3, plus growth inside fit.

A teacher CNN is trained, then wider and deeper students start from it
(Net2WiderNet / Net2DeeperNet) or from random-padded / randomly initialised
layers (the baselines) and train at 1/10 of the teacher's learning rate. A
sixth run does the same widening with one `GrowModel` callback inside a single
`model.fit` call.

    python examples/mnist_net2net.py --quick                 # bundled subset, < 1 min
    python examples/mnist_net2net.py --data ../shared/data/mnist.npz

Outputs (in --out): results.json, results.md, results.csv and
val_loss.png (if matplotlib is installed).
"""

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_net2net as kn  # noqa: E402

QUICK_DATA = Path(__file__).resolve().parent / "data" / "mnist_quick.npz"
TEACHER_LR = 0.01
STUDENT_LR = 0.001  # 1/10 of the teacher's, as in the paper
MOMENTUM = 0.9
# Symmetry-breaking noise of the net2wider students, relative to each kernel's
# std, on the new copies' incoming weights. The paper gives no scale for MNIST;
# 1e-3 makes the copies differ while the function stays within ~1e-4.
NOISE = 1e-3

# Validation loss after student epochs 1-3 reported by Chen et al. (2016).
PAPER = {
    "teacher": [0.075, 0.041, 0.041],
    "wider-random-pad": [0.036, 0.034, 0.032],
    "net2wider": [0.032, 0.030, 0.030],
    "deeper-random-init": [0.061, 0.043, 0.041],
    "net2deeper": [0.032, 0.031, 0.029],
}
LABELS = {
    "teacher": "1. teacher",
    "wider-random-pad": "2. wider, random pad",
    "net2wider": "3. wider, Net2WiderNet",
    "deeper-random-init": "4. deeper, random init",
    "net2deeper": "5. deeper, Net2DeeperNet",
    "growmodel-net2wider": "6. Net2WiderNet via GrowModel (one fit)",
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="an .npz in the layout of keras.datasets.mnist "
        "(x_train, y_train, x_test, y_test); default: download",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="bundled 2000/1000-digit subset, 1 epoch each, "
        "batch size 32 (under a minute on 2 CPU cores)",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="epochs for the teacher and for each student "
        "(default 3, or 1 with --quick)",
    )
    parser.add_argument(
        "--batch-size", type=int, default=None, help="default 128, or 32 with --quick"
    )
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--out", type=Path, default=Path("net2net_results"))
    parser.add_argument(
        "--verbose",
        type=int,
        default=2,
        help="Keras fit verbosity (0 silent, 1 bar, 2 one line per epoch); default 2",
    )
    args = parser.parse_args(argv)
    if args.epochs is None:
        args.epochs = 1 if args.quick else 3
    if args.batch_size is None:
        args.batch_size = 32 if args.quick else 128
    if args.epochs < 1 or args.batch_size < 1:
        parser.error("--epochs and --batch-size must be >= 1")
    return args


def load_data(args):
    """MNIST as (x_train, y_train), (x_test, y_test): float32 in [0, 1], (28, 28, 1)."""
    path = QUICK_DATA if args.quick and args.data is None else args.data
    if path is not None:
        if not Path(path).is_file():
            sys.exit(f"error: --data {path}: no such file")
        with np.load(path) as data:
            arrays = [data[k] for k in ("x_train", "y_train", "x_test", "y_test")]
    else:
        try:
            (xa, ya), (xb, yb) = keras.datasets.mnist.load_data()
        except Exception as error:  # no network, proxy, certificate, ...
            sys.exit(
                f"error: could not download MNIST ({type(error).__name__}: {error}).\n"
                "Pass --data PATH to an .npz with x_train/y_train/x_test/y_test "
                "(the layout of keras.datasets.mnist), or --quick to use the small "
                "subset bundled with this example."
            )
        arrays = [xa, ya, xb, yb]
    x_train, y_train, x_test, y_test = arrays

    def prepare(x):
        return (x.astype("float32") / 255.0)[..., None]

    return (prepare(x_train), y_train.astype("int32")), (
        prepare(x_test),
        y_test.astype("int32"),
    )


def make_teacher():
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            layers.Conv2D(64, 3, padding="same", activation="relu", name="conv1"),
            layers.MaxPooling2D(2),
            layers.Conv2D(64, 3, padding="same", activation="relu", name="conv2"),
            layers.MaxPooling2D(2),
            layers.Flatten(),
            layers.Dense(64, activation="relu", name="fc1"),
            layers.Dense(10, activation="softmax", name="fc2"),
        ],
        name="teacher",
    )


def compile_model(model, learning_rate):
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate, momentum=MOMENTUM),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def evaluate(model, test, batch_size):
    loss, accuracy = model.evaluate(*test, batch_size=batch_size, verbose=0)
    return float(loss), float(accuracy)


def train(name, model, learning_rate, train_data, test, args):
    """Evaluate (epoch 0), then train with validation after every epoch."""
    print(f"\n== {LABELS[name]}: {model.count_params():,} parameters", flush=True)
    compile_model(model, learning_rate)
    start = time.perf_counter()
    loss0, acc0 = evaluate(model, test, args.batch_size)
    history = model.fit(
        *train_data,
        validation_data=test,
        epochs=args.epochs,
        batch_size=args.batch_size,
        verbose=args.verbose,
    )
    return {
        "name": name,
        "label": LABELS[name],
        "params": int(model.count_params()),
        "val_loss": [loss0] + [float(v) for v in history.history["val_loss"]],
        "val_accuracy": [acc0] + [float(v) for v in history.history["val_accuracy"]],
        "seconds": time.perf_counter() - start,
    }


def wider(teacher, method, seed):
    noise = NOISE if method == "net2wider" else 0.0
    model = kn.widen(teacher, "conv1", 128, method=method, noise=noise, seed=seed)
    return kn.widen(model, "fc1", 128, method=method, noise=noise, seed=seed + 1)


def deeper(teacher, method, seed):
    model = kn.deepen(teacher, after="conv2", method=method, seed=seed)
    return kn.deepen(model, after="fc1", method=method, seed=seed + 1)


class EvaluateAfterGrowth(keras.callbacks.Callback):
    """Evaluates the model right after GrowModel grew it (the student's epoch 0)."""

    def __init__(self, grow, test, batch_size):
        super().__init__()
        self.grow, self.test, self.batch_size = grow, test, batch_size
        self.result = None

    def on_epoch_begin(self, epoch, logs=None):
        if self.grow.records and self.result is None:
            self.result = evaluate(self.model, self.test, self.batch_size)


def grow_in_fit(train_data, test, args):
    """Teacher epochs, growth, student epochs: one model.fit call."""
    name = "growmodel-net2wider"
    keras.utils.set_random_seed(args.seed)  # the same initial teacher as row 1
    model = compile_model(make_teacher(), TEACHER_LR)
    print(
        f"\n== {LABELS[name]}: {model.count_params():,} parameters at start", flush=True
    )
    grow = kn.GrowModel(
        {
            args.epochs: [
                kn.Widen("conv1", 128, noise=NOISE, seed=args.seed),
                kn.Widen("fc1", 128, noise=NOISE, seed=args.seed + 1),
            ]
        },
        lr_scale=STUDENT_LR / TEACHER_LR,
        verbose=1,
    )
    after = EvaluateAfterGrowth(grow, test, args.batch_size)
    start = time.perf_counter()
    history = model.fit(
        *train_data,
        validation_data=test,
        epochs=2 * args.epochs,
        batch_size=args.batch_size,
        verbose=args.verbose,
        callbacks=[grow, after],
    )
    student = slice(args.epochs, None)
    return {
        "name": name,
        "label": LABELS[name],
        "params": int(model.count_params()),
        "val_loss": [after.result[0]]
        + [float(v) for v in history.history["val_loss"][student]],
        "val_accuracy": [after.result[1]]
        + [float(v) for v in history.history["val_accuracy"][student]],
        "teacher_val_loss": [
            float(v) for v in history.history["val_loss"][: args.epochs]
        ],
        "growth": [r.describe() for r in grow.records],
        "seconds": time.perf_counter() - start,
    }


def run(args):
    keras.utils.set_random_seed(args.seed)
    train_data, test = load_data(args)
    print(
        f"MNIST: {len(train_data[0])} training / {len(test[0])} validation digits; "
        f"backend {keras.backend.backend()}, Keras {keras.version()}",
        flush=True,
    )
    total = time.perf_counter()
    results = []
    teacher = make_teacher()
    results.append(train("teacher", teacher, TEACHER_LR, train_data, test, args))
    students = {
        "wider-random-pad": lambda: wider(teacher, "random-pad", args.seed),
        "net2wider": lambda: wider(teacher, "net2wider", args.seed),
        "deeper-random-init": lambda: deeper(teacher, "random", args.seed),
        "net2deeper": lambda: deeper(teacher, "identity", args.seed),
    }
    for name, build in students.items():
        results.append(train(name, build(), STUDENT_LR, train_data, test, args))
    results.append(grow_in_fit(train_data, test, args))
    return {
        "config": {
            "quick": args.quick,
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "seed": args.seed,
            "teacher_lr": TEACHER_LR,
            "student_lr": STUDENT_LR,
            "momentum": MOMENTUM,
            "noise": NOISE,
            "train_size": int(len(train_data[0])),
            "val_size": int(len(test[0])),
            "backend": keras.backend.backend(),
            "keras": keras.version(),
        },
        "results": results,
        "paper_val_loss": PAPER,
        "total_seconds": time.perf_counter() - total,
    }


def markdown_table(report):
    epochs = report["config"]["epochs"]
    head = (
        ["configuration", "params"]
        + [f"val loss ep {e}" for e in range(epochs + 1)]
        + ["val acc (last)", "paper ep 1-3", "time (s)"]
    )
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in report["results"]:
        paper = " ".join(f"{v:.3f}" for v in PAPER.get(r["name"], [])) or "-"
        cells = (
            [r["label"], f"{r['params']:,}"]
            + [f"{v:.4f}" for v in r["val_loss"]]
            + [f"{r['val_accuracy'][-1]:.4f}", paper, f"{r['seconds']:.0f}"]
        )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_outputs(report, out):
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(report, indent=2))
    table = markdown_table(report)
    (out / "results.md").write_text(
        "Validation loss per epoch (epoch 0: before any training of that row).\n\n"
        + table
        + "\n"
    )
    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["configuration", "epoch", "val_loss", "val_accuracy"])
        for r in report["results"]:
            for epoch, (loss, acc) in enumerate(zip(r["val_loss"], r["val_accuracy"])):
                writer.writerow([r["name"], epoch, loss, acc])
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(
            "matplotlib is not installed: skipping the plot "
            "(pip install 'keras-net2net[examples]')"
        )
        return table, None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in report["results"]:
        style = "--" if r["name"].startswith("growmodel") else "-"
        ax.plot(
            range(len(r["val_loss"])),
            r["val_loss"],
            style,
            marker="o",
            label=r["label"],
        )
    ax.set_xlabel("epoch (0 = before training)")
    ax.set_ylabel("validation loss")
    ax.set_yscale("log")
    ax.set_title(f"Net2Net on MNIST ({report['config']['train_size']} training digits)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "val_loss.png", dpi=110)
    plt.close(fig)
    return table, out / "val_loss.png"


def main(argv=None):
    args = parse_args(argv)
    report = run(args)
    table, plot = write_outputs(report, args.out)
    print("\n" + table)
    print(
        f"\nwrote {args.out}/results.json, results.md, results.csv"
        + (f", {plot.name}" if plot else "")
    )
    print(f"total wall time: {report['total_seconds']:.1f} s")
    return report


if __name__ == "__main__":
    main()
