"""Reproduce the Net2Net MNIST experiments on Keras 3, plus growth inside fit.

A teacher CNN is trained, then wider and deeper students start from it
(Net2WiderNet / Net2DeeperNet) or from random-padded / randomly initialised
layers (the baselines) and train at 1/10 of the teacher's learning rate.

Two protocols (``--protocol``):

* ``original`` (the default): the original Keras example's choices exactly:
  batch 32, conv layers without activation, random padding N(0, 0.1) with
  bias 0.1, Net2WiderNet noise N(0, 5e-2 x std) on the consumers' new input
  rows, random deepening with Keras' default initializers.
* ``keras-net2net``: this library's defaults: batch 128, ReLU conv layers,
  random padding with each kernel's own std and zero bias, Net2WiderNet noise
  1e-3 x std on the new copies' incoming weights (the function stays within
  ~1e-4), and a sixth run that widens with one `GrowModel` callback inside a
  single `model.fit` call.

``--seeds N`` repeats every configuration for N seeds and reports the mean
and standard deviation per epoch and how often the paper's orderings hold.

    python examples/mnist_net2net.py --quick                 # bundled subset, < 1 min
    python examples/mnist_net2net.py --data ../shared/data/mnist.npz --seeds 3

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

# What each protocol decides (see the module docstring).
PROTOCOLS = {
    "original": {
        "batch_size": 32,
        "conv_activation": None,
        "noise": 5e-2,
        "noise_on": "consumers",
        "pad_std": 0.1,
        "pad_bias": 0.1,
        "growmodel": False,
    },
    "keras-net2net": {
        "batch_size": 128,
        "conv_activation": "relu",
        "noise": 1e-3,
        "noise_on": "copies",
        "pad_std": None,
        "pad_bias": 0.0,
        "growmodel": True,
    },
}

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
# The paper's claims, checked per seed and student epoch: (better, worse).
CLAIMS = {
    "net2wider <= random pad": ("net2wider", "wider-random-pad"),
    "net2deeper < random init": ("net2deeper", "deeper-random-init"),
}


GUIDE = "docs/guides/getting-started.md (results: docs/guides/results.md)"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog=f"Guide: {GUIDE}"
    )
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
        "--protocol",
        choices=sorted(PROTOCOLS),
        default="original",
        help="'original': the original example's batch size, baselines and "
        "noise; 'keras-net2net': this library's defaults (see the module "
        "docstring). Default: original",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="epochs for the teacher and for each student "
        "(default 3, or 1 with --quick)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="default: the protocol's (32 original, 128 keras-net2net), "
        "or 32 with --quick",
    )
    parser.add_argument("--seed", type=int, default=1337, help="the first seed")
    parser.add_argument(
        "--seeds",
        type=int,
        default=1,
        help="run every configuration for this many seeds (seed, seed+1, ...) "
        "and report mean and standard deviation. Default: 1",
    )
    parser.add_argument("--out", type=Path, default=Path("net2net_results"))
    parser.add_argument(
        "--verbose",
        type=int,
        default=2,
        help="Keras fit verbosity (0 silent, 1 bar, 2 one line per epoch); default 2",
    )
    args = parser.parse_args(argv)
    protocol = PROTOCOLS[args.protocol]
    if args.epochs is None:
        args.epochs = 1 if args.quick else 3
    if args.batch_size is None:
        args.batch_size = 32 if args.quick else protocol["batch_size"]
    if args.epochs < 1 or args.batch_size < 1 or args.seeds < 1:
        parser.error("--epochs, --batch-size and --seeds must be >= 1")
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


def make_teacher(protocol):
    layers = keras.layers
    activation = protocol["conv_activation"]
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            layers.Conv2D(64, 3, padding="same", activation=activation, name="conv1"),
            layers.MaxPooling2D(2),
            layers.Conv2D(64, 3, padding="same", activation=activation, name="conv2"),
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


def widen_options(protocol, method, noise=True):
    """The keyword arguments of `widen` for a protocol and method."""
    options = dict(method=method, noise_on=protocol["noise_on"])
    if method == "net2wider" and noise:
        options["noise"] = protocol["noise"]
    if method == "random-pad":
        options.update(pad_std=protocol["pad_std"], pad_bias=protocol["pad_bias"])
    return options


def wider(teacher, protocol, method, seed, noise=True):
    options = widen_options(protocol, method, noise)
    model = kn.widen(teacher, "conv1", 128, seed=seed, **options)
    return kn.widen(model, "fc1", 128, seed=seed + 1, **options)


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


def grow_in_fit(train_data, test, args, protocol, seed):
    """Teacher epochs, growth, student epochs: one model.fit call."""
    name = "growmodel-net2wider"
    keras.utils.set_random_seed(seed)  # the same initial teacher as row 1
    model = compile_model(make_teacher(protocol), TEACHER_LR)
    print(
        f"\n== {LABELS[name]}: {model.count_params():,} parameters at start", flush=True
    )
    options = widen_options(protocol, "net2wider")
    grow = kn.GrowModel(
        {
            args.epochs: [
                kn.Widen("conv1", 128, seed=seed, **options),
                kn.Widen("fc1", 128, seed=seed + 1, **options),
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


def run_seed(args, protocol, seed, train_data, test):
    """Every configuration for one seed; also the noise-free students' epoch 0."""
    keras.utils.set_random_seed(seed)
    results = []
    teacher = make_teacher(protocol)
    results.append(train("teacher", teacher, TEACHER_LR, train_data, test, args))
    students = {
        "wider-random-pad": lambda: wider(teacher, protocol, "random-pad", seed),
        "net2wider": lambda: wider(teacher, protocol, "net2wider", seed),
        "deeper-random-init": lambda: deeper(teacher, "random", seed),
        "net2deeper": lambda: deeper(teacher, "identity", seed),
    }
    exact = {
        "net2wider": evaluate(
            compile_model(
                wider(teacher, protocol, "net2wider", seed, False), STUDENT_LR
            ),
            test,
            args.batch_size,
        )[0],
        "net2deeper": None,  # no noise: its epoch 0 below is already noise-free
    }
    for name, build in students.items():
        results.append(train(name, build(), STUDENT_LR, train_data, test, args))
    exact["net2deeper"] = results[-1]["val_loss"][0]
    if protocol["growmodel"]:
        results.append(grow_in_fit(train_data, test, args, protocol, seed))
    for r in results:
        r["seed"] = seed
    return results, {"teacher_final": results[0]["val_loss"][-1], "epoch0": exact}


def summarize(runs, epochs):
    """Mean and standard deviation per configuration and epoch, and claims."""
    names = [r["name"] for r in runs[0]["results"]]
    rows = []
    for name in names:
        per_seed = [
            next(r for r in run["results"] if r["name"] == name) for run in runs
        ]
        losses = np.array([r["val_loss"] for r in per_seed])
        accuracy = np.array([r["val_accuracy"][-1] for r in per_seed])
        rows.append(
            {
                "name": name,
                "label": LABELS[name],
                "params": per_seed[0]["params"],
                "mean": losses.mean(axis=0).tolist(),
                "std": losses.std(axis=0).tolist(),
                "val_accuracy_mean": float(accuracy.mean()),
                "seconds_mean": float(np.mean([r["seconds"] for r in per_seed])),
            }
        )
    claims = {}
    for claim, (better, worse) in CLAIMS.items():
        held = total = 0
        for run in runs:
            by_name = {r["name"]: r["val_loss"] for r in run["results"]}
            for epoch in range(1, epochs + 1):
                total += 1
                a, b = by_name[better][epoch], by_name[worse][epoch]
                held += bool(a <= b if "<=" in claim else a < b)
        claims[claim] = {"held": held, "of": total}
    exact = {"held": 0, "of": 0, "worst": 0.0}
    for run in runs:
        for loss in run["checks"]["epoch0"].values():
            difference = abs(loss - run["checks"]["teacher_final"])
            exact["of"] += 1
            exact["held"] += bool(difference <= 1e-4)
            exact["worst"] = max(exact["worst"], difference)
    claims["students at epoch 0 = teacher's final loss (noise off, 1e-4)"] = exact
    return rows, claims


def run(args):
    protocol = PROTOCOLS[args.protocol]
    train_data, test = load_data(args)
    print(
        f"MNIST: {len(train_data[0])} training / {len(test[0])} validation digits; "
        f"backend {keras.backend.backend()}, Keras {keras.version()}; "
        f"protocol {args.protocol}, batch {args.batch_size}, {args.seeds} seed(s)",
        flush=True,
    )
    total = time.perf_counter()
    runs = []
    for seed in range(args.seed, args.seed + args.seeds):
        print(f"\n######## seed {seed}", flush=True)
        results, checks = run_seed(args, protocol, seed, train_data, test)
        runs.append({"seed": seed, "results": results, "checks": checks})
    summary, claims = summarize(runs, args.epochs)
    return {
        "config": {
            "quick": args.quick,
            "protocol": args.protocol,
            **protocol,
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "seeds": list(range(args.seed, args.seed + args.seeds)),
            "teacher_lr": TEACHER_LR,
            "student_lr": STUDENT_LR,
            "momentum": MOMENTUM,
            "train_size": int(len(train_data[0])),
            "val_size": int(len(test[0])),
            "backend": keras.backend.backend(),
            "keras": keras.version(),
        },
        "results": runs[0]["results"],
        "runs": runs,
        "summary": summary,
        "claims": claims,
        "paper_val_loss": PAPER,
        "total_seconds": time.perf_counter() - total,
    }


def markdown_table(report):
    """Mean (and, over several seeds, standard deviation) per epoch, and claims."""
    epochs = report["config"]["epochs"]
    several = len(report["config"]["seeds"]) > 1
    head = (
        ["configuration", "params"]
        + [f"val loss ep {e}" for e in range(epochs + 1)]
        + ["val acc (last)", "paper ep 1-3", "time (s)"]
    )
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in report["summary"]:
        paper = " ".join(f"{v:.3f}" for v in PAPER.get(r["name"], [])) or "-"
        losses = [
            f"{m:.4f} ± {d:.4f}" if several else f"{m:.4f}"
            for m, d in zip(r["mean"], r["std"])
        ]
        cells = (
            [r["label"], f"{r['params']:,}"]
            + losses
            + [f"{r['val_accuracy_mean']:.4f}", paper, f"{r['seconds_mean']:.0f}"]
        )
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for claim, result in report["claims"].items():
        extra = f" (worst {result['worst']:.1e})" if "worst" in result else ""
        lines.append(f"- {claim}: {result['held']}/{result['of']}{extra}")
    return "\n".join(lines)


def write_outputs(report, out):
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(report, indent=2))
    table = markdown_table(report)
    seeds = report["config"]["seeds"]
    (out / "results.md").write_text(
        f"Validation loss per epoch (epoch 0: before any training of that row), "
        f"protocol {report['config']['protocol']}, "
        + (f"mean ± std over seeds {seeds}" if len(seeds) > 1 else f"seed {seeds[0]}")
        + ".\n\n"
        + table
        + "\n"
    )
    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["configuration", "seed", "epoch", "val_loss", "val_accuracy"])
        for run in report["runs"]:
            for r in run["results"]:
                pairs = zip(r["val_loss"], r["val_accuracy"])
                for epoch, (loss, acc) in enumerate(pairs):
                    writer.writerow([r["name"], run["seed"], epoch, loss, acc])
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
    for r in report["summary"]:
        style = "--" if r["name"].startswith("growmodel") else "-"
        epochs = np.arange(len(r["mean"]))
        mean, std = np.array(r["mean"]), np.array(r["std"])
        (line,) = ax.plot(epochs, mean, style, marker="o", label=r["label"])
        if len(seeds) > 1:
            low = np.maximum(mean - std, mean * 0.5)
            ax.fill_between(epochs, low, mean + std, color=line.get_color(), alpha=0.2)
    ax.set_xlabel("epoch (0 = before training)")
    ax.set_ylabel("validation loss" + (" (mean ± std)" if len(seeds) > 1 else ""))
    ax.set_yscale("log")
    ax.set_title(
        f"Net2Net on MNIST ({report['config']['train_size']} training digits, "
        f"protocol {report['config']['protocol']}, {len(seeds)} seed(s))"
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "val_loss.png", dpi=110)
    plt.close(fig)
    return table, out / "val_loss.png"


def main(argv=None):
    args = parse_args(argv)
    print(f"Guide: {GUIDE}", file=sys.stderr)
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
