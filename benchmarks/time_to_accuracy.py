"""Time to accuracy: growing with Net2Net against training the big model from scratch.

Net2Net exists to reach a given accuracy sooner than training the big model
from scratch. This script measures the training wall time (and epochs) until
a model of the big architecture first reaches a target validation accuracy.

MNIST (``--task mnist``; full MNIST with ``--data``), SGD(0.01, momentum 0.9),
batch 128, the example's ReLU CNN (``examples/mnist_net2net.py``):

* *scratch*: the wide student (conv1 128, fc1 128) or the deep student (an
  extra conv after conv2 and an extra dense after fc1), randomly initialised;
* *two-stage*: the teacher (conv1 64, fc1 64) trains ``--teacher-epochs``,
  `widen`/`deepen` build the student (Net2WiderNet / Net2DeeperNet, or the
  random-pad / random-init baselines), which trains at 1/10 of the rate
  (``--student-lr-scale``);
* *GrowModel*: the same in one ``fit`` call (the optimizer state carried,
  ``lr_scale`` = ``--student-lr-scale``).

``--arch deep`` (or ``wide``) runs one student architecture only;
``--skip-random`` leaves out the random-init baselines.

A grown path's time counts everything: the teacher's training, the growth
and the student's training. Only models of the student architecture count as
reaching a target (the teacher's own accuracy is reported beside).

Transformer (``--task transformer``): the example's small pre-LN Transformer
grown inside one ``fit`` (d_model, heads, feed-forward x2 and a second block)
at ``--grow-at``, against the big one from scratch, AdamW with the same
cosine schedule.

The clock runs only while a model trains: the validation passes that look
for the target (every quarter epoch; every 1/20 of the run for the
Transformer) are off the clock, and so is building the scratch model. Each
run stops once its last target is reached, or at its budget.

Usage::

    python benchmarks/time_to_accuracy.py --data ../shared/data/mnist.npz --seeds 3
    python benchmarks/time_to_accuracy.py --task transformer --seeds 3
    python benchmarks/time_to_accuracy.py --quick   # both tasks, tiny (the tests)

Prints a markdown table and writes JSON (``--out``).
"""

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "examples"))

import grow_transformer as tx  # noqa: E402
import mnist_net2net as mx  # noqa: E402

import keras_net2net as kn  # noqa: E402

# The example's rates: SGD(0.01, momentum 0.9); students at 1/10 (the paper).
LR, STUDENT_LR = mx.TEACHER_LR, mx.STUDENT_LR
TX_LR = 2e-3  # the Transformer example's AdamW rate (cosine-decayed over the run)
PROTOCOL = mx.PROTOCOLS["keras-net2net"]  # ReLU convs; the library's defaults
TARGETS = {"mnist": (0.98, 0.985), "transformer": (0.95, 0.97)}
PRIMARY = {"mnist": 0.985, "transformer": 0.97}
# --quick trains for seconds on the bundled 2,000-digit subset: low targets.
QUICK_TARGETS = {"mnist": (0.5, 0.7), "transformer": (0.55, 0.6)}


class Clock(keras.callbacks.Callback):
    """Training time to validation-accuracy targets; validation off the clock.

    Args:
        accuracy: function of the model returning its validation accuracy.
        every: validate every this many steps (and when training starts and
            ends).
        targets: the accuracies to time.
        steps_per_epoch: to report epochs.
        offset: seconds and steps spent before this ``fit`` (a teacher).
        counts: whether the model in training counts (is the student
            architecture); a function of no arguments.
        stop: stop training once every target is reached by a counting model.
    """

    def __init__(
        self,
        accuracy,
        every,
        targets,
        steps_per_epoch,
        offset=(0.0, 0),
        counts=lambda: True,
        stop=True,
    ):
        super().__init__()
        self.accuracy, self.every, self.targets = accuracy, every, targets
        self.steps_per_epoch, self.counts, self.stop = steps_per_epoch, counts, stop
        self.seconds, self.step = offset
        self.points, self.reached = [], {}
        self._started = None
        self._counted_before = False

    def _check(self):
        elapsed = time.perf_counter() - self._started
        self.seconds += elapsed
        accuracy = float(self.accuracy(self.model))
        counts = bool(self.counts())
        self.points.append(
            {
                "seconds": self.seconds,
                "step": self.step,
                "epochs": self.step / self.steps_per_epoch,
                "val_accuracy": accuracy,
                "counts": counts,
            }
        )
        for target in self.targets:
            if counts and accuracy >= target and target not in self.reached:
                self.reached[target] = self.points[-1]
        if self.stop and len(self.reached) == len(self.targets):
            self.model.stop_training = True
        self._started = time.perf_counter()

    def on_train_begin(self, logs=None):
        self._started = time.perf_counter()
        self._check()

    def on_train_batch_begin(self, batch, logs=None):
        # The first step after a growth event (a callback before this one
        # grew the model): validate the grown model before it trains.
        if self.counts() and not self._counted_before:
            self._counted_before = True
            if not self.points[-1]["counts"]:
                self._check()

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        if self.step % self.every == 0:
            self._check()

    def on_train_end(self, logs=None):
        if self.points[-1]["step"] != self.step:
            self._check()
        else:
            self.seconds += time.perf_counter() - self._started


# ----------------------------------------------------------------------------
# MNIST


def cnn(conv1=64, fc1=64, deep=False, seed=0):
    """The example's teacher, with its widths and optional extra layers."""
    keras.utils.set_random_seed(seed)
    L = keras.layers
    layers = [
        keras.Input((28, 28, 1)),
        L.Conv2D(conv1, 3, padding="same", activation="relu", name="conv1"),
        L.MaxPooling2D(2),
        L.Conv2D(64, 3, padding="same", activation="relu", name="conv2"),
    ]
    if deep:
        layers.append(
            L.Conv2D(64, 3, padding="same", activation="relu", name="conv2_deeper")
        )
    layers += [
        L.MaxPooling2D(2),
        L.Flatten(),
        L.Dense(fc1, activation="relu", name="fc1"),
    ]
    if deep:
        layers.append(L.Dense(fc1, activation="relu", name="fc1_deeper"))
    layers.append(L.Dense(10, activation="softmax", name="fc2"))
    return keras.Sequential(layers, name="cnn")


def path_record(clock, model, **extra):
    """What one path's run leaves: its targets' points and the whole curve."""
    return {
        "reached": {str(t): p for t, p in clock.reached.items()},
        "points": clock.points,
        "seconds_total": clock.seconds,
        "params": int(model.count_params()),
        **extra,
    }


def mnist_paths(args, seed, train, test):
    """Every MNIST path for one seed: {name: record}."""
    batch = args.batch_size
    steps_per_epoch = math.ceil(len(train[0]) / batch)
    every = max(1, steps_per_epoch // 4)
    targets = args.targets["mnist"]

    def accuracy(model):
        return model.evaluate(*test, batch_size=1000, verbose=0)[1]

    def fit(model, epochs, clock, callbacks=()):
        model.fit(
            *train,
            batch_size=batch,
            epochs=epochs,
            verbose=0,
            callbacks=[*callbacks, clock],
        )
        return clock

    paths = {}
    shapes = {}
    archs = ("wide", "deep") if args.arch == "both" else (args.arch,)
    student_lr = LR * args.student_lr_scale
    for arch, build in (
        ("wide", lambda: cnn(128, 128, seed=seed)),
        ("deep", lambda: cnn(deep=True, seed=seed)),
    ):
        if arch not in archs:
            continue
        model = mx.compile_model(build(), LR)
        shapes[arch] = [tuple(w.shape) for w in model.weights]
        clock = Clock(accuracy, every, targets, steps_per_epoch)
        paths[f"{arch}: scratch"] = path_record(fit(model, args.epochs, clock), model)
        log(f"  {arch}: scratch", paths[f"{arch}: scratch"])

    # The teacher's own times to the targets are kept for reference only.
    teacher = mx.compile_model(cnn(seed=seed), LR)
    clock = Clock(accuracy, every, targets, steps_per_epoch, stop=False)
    fit(teacher, args.teacher_epochs, clock)
    teacher_record = {
        "reached": {str(t): p for t, p in clock.reached.items()},
        "points": clock.points,
        "seconds": clock.seconds,
        "steps": clock.step,
        "val_accuracy": clock.points[-1]["val_accuracy"],
    }
    log("  teacher", {**teacher_record, "seconds_total": clock.seconds})
    growths = {
        "wide: Net2WiderNet": lambda: mx.wider(teacher, PROTOCOL, "net2wider", seed),
        "wide: random pad": lambda: mx.wider(teacher, PROTOCOL, "random-pad", seed),
        "deep: Net2DeeperNet": lambda: mx.deeper(teacher, "identity", seed),
        "deep: random init": lambda: mx.deeper(teacher, "random", seed),
    }
    growths = {
        name: grow
        for name, grow in growths.items()
        if name[:4] in archs and not (args.skip_random and "random" in name)
    }
    student_epochs = args.epochs - args.teacher_epochs
    for name, grow in growths.items():
        start = time.perf_counter()
        student = mx.compile_model(grow(), student_lr)
        growth_s = time.perf_counter() - start
        assert [tuple(w.shape) for w in student.weights] == shapes[name[:4]], name
        clock = Clock(
            accuracy,
            every,
            targets,
            steps_per_epoch,
            offset=(teacher_record["seconds"] + growth_s, teacher_record["steps"]),
        )
        paths[f"{name} (two-stage)"] = path_record(
            fit(student, student_epochs, clock), student, growth_s=growth_s
        )
        log(f"  {name} (two-stage)", paths[f"{name} (two-stage)"])

    options = mx.widen_options(PROTOCOL, "net2wider")
    for name, events in (
        (
            "wide: Net2WiderNet",
            [
                kn.Widen("conv1", 128, seed=seed, **options),
                kn.Widen("fc1", 128, seed=seed + 1, **options),
            ],
        ),
        (
            "deep: Net2DeeperNet",
            [
                kn.Deepen(after="conv2", seed=seed),
                kn.Deepen(after="fc1", seed=seed + 1),
            ],
        ),
    ):
        if name[:4] not in archs:
            continue
        model = mx.compile_model(cnn(seed=seed), LR)  # the same initial teacher
        grow = kn.GrowModel(
            {kn.AtEpoch(args.teacher_epochs): events},
            lr_scale=args.student_lr_scale,
        )
        clock = Clock(
            accuracy,
            every,
            targets,
            steps_per_epoch,
            counts=lambda grow=grow: bool(grow.records),
        )
        fit(model, args.epochs, clock, [grow])
        assert [tuple(w.shape) for w in model.weights] == shapes[name[:4]], name
        paths[f"{name} (GrowModel, one fit)"] = path_record(clock, model)
        log(f"  {name} (GrowModel, one fit)", paths[f"{name} (GrowModel, one fit)"])
    return {"paths": paths, "teacher": teacher_record}


def warm_up(args, train, test):
    """Untimed steps of both students first: the process's first models ran
    slower (one-off start-up costs), which favoured whichever path came later.
    """
    for model in (cnn(128, 128), cnn(deep=True)):
        model = mx.compile_model(model, LR)
        n = 20 * args.batch_size
        model.fit(train[0][:n], train[1][:n], batch_size=args.batch_size, verbose=0)
        model.evaluate(test[0][:1000], test[1][:1000], batch_size=1000, verbose=0)


def load_mnist(args):
    if args.data is None:
        (x, y), (xt, yt) = mx.load_data(argparse.Namespace(quick=True, data=None))
    else:
        (x, y), (xt, yt) = mx.load_data(argparse.Namespace(quick=False, data=args.data))
    return (x, y), (xt, yt)


# ----------------------------------------------------------------------------
# Transformer


def transformer_paths(args, seed):
    targets = args.targets["transformer"]
    data = tx.make_data(args.steps * args.tx_batch, seed)
    val = tx.make_data(1000, seed + 10_000)
    every = max(1, args.steps // 20)

    def accuracy(model):
        return tx.validation_loss(model, val)[1]

    def fit(model, clock, callbacks=()):
        model.fit(
            *data,
            batch_size=args.tx_batch,
            epochs=1,
            steps_per_epoch=args.steps,
            verbose=0,
            callbacks=[*callbacks, clock],
        )
        return clock

    paths = {}
    scratch = tx.compile_model(
        tx.transformer(seed=seed + 1000, **tx.BIG), TX_LR, args.steps
    )
    clock = fit(scratch, Clock(accuracy, every, targets, args.steps))
    paths["big: scratch"] = path_record(clock, scratch)
    log("  big: scratch", paths["big: scratch"])

    model = tx.compile_model(tx.transformer(seed=seed, **tx.SMALL), TX_LR, args.steps)
    grow = kn.GrowModel(
        {
            kn.AtStep(args.grow_at): [
                kn.Widen("token_embedding", tx.BIG["d"]),
                kn.Widen("mha_0", tx.BIG["heads"]),
                kn.Widen("ffn_in_0", tx.BIG["ffn"]),
                kn.Deepen(after="add_ffn_0", blocks=2),
            ]
        }
    )
    clock = fit(
        model,
        Clock(accuracy, every, targets, args.steps, counts=lambda: bool(grow.records)),
        [grow],
    )
    assert model.count_params() == scratch.count_params()
    paths["big: grown from small (GrowModel, one fit)"] = path_record(
        clock,
        model,
        small_val_accuracy_at_growth=next(
            p["val_accuracy"] for p in reversed(clock.points) if not p["counts"]
        ),
    )
    log(
        "  big: grown from small (GrowModel, one fit)",
        paths["big: grown from small (GrowModel, one fit)"],
    )
    return {"paths": paths}


# ----------------------------------------------------------------------------
# Report


def log(name, record):
    reached = ", ".join(
        f"{float(t):.3f}: {p['seconds']:.1f} s" for t, p in record["reached"].items()
    )
    print(
        f"{name}: {record['seconds_total']:.1f} s trained; reached {reached or 'none'}",
        flush=True,
    )


def summarize(task, runs, target):
    """Per path: seconds and epochs to ``target`` over seeds, and ratio to scratch."""
    names = list(runs[0]["paths"])
    rows = []
    for name in names:
        arch = name.split(":")[0]
        scratch_name = f"{arch}: scratch"
        seconds, epochs, ratios, missed = [], [], [], 0
        for run in runs:
            point = run["paths"][name]["reached"].get(str(target))
            base = run["paths"][scratch_name]["reached"].get(str(target))
            if point is None:
                missed += 1
                continue
            seconds.append(point["seconds"])
            epochs.append(point["epochs"])
            if base is not None and name != scratch_name:
                ratios.append(point["seconds"] / base["seconds"])
        rows.append(
            {
                "path": name,
                "reached": f"{len(runs) - missed}/{len(runs)}",
                "seconds": spread(seconds),
                "epochs": spread(epochs),
                "ratio_to_scratch": spread(ratios),
            }
        )
    return rows


def spread(values):
    if not values:
        return None
    return {
        "mean": statistics.fmean(values),
        "std": statistics.pstdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
        "values": values,
    }


def fmt(s, digits=1):
    if s is None:
        return "-"
    if len(s["values"]) == 1:
        return f"{s['mean']:.{digits}f}"
    return (
        f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f} "
        f"({s['min']:.{digits}f}-{s['max']:.{digits}f})"
    )


def table(result):
    lines = []
    for task, report in result["tasks"].items():
        for target in report["targets"]:
            primary = " (primary)" if target == PRIMARY[task] else ""
            lines += [
                f"\n{task}: time to validation accuracy {target}{primary}",
                "",
                "| path | reached | seconds, mean ± std (min-max) | epochs | "
                "time / scratch's |",
                "|---|---|---|---|---|",
            ]
            for row in summarize(task, report["runs"], target):
                lines.append(
                    f"| {row['path']} | {row['reached']} | {fmt(row['seconds'])} | "
                    f"{fmt(row['epochs'], 2)} | {fmt(row['ratio_to_scratch'], 2)} |"
                )
        if task == "mnist":
            runs = report["runs"]
            lines.append(
                "\nThe teacher (small, for reference) at its last epoch: validation "
                "accuracy "
                + ", ".join(f"{r['teacher']['val_accuracy']:.4f}" for r in runs)
                + "; it had reached "
                + "; ".join(
                    ", ".join(
                        f"{float(t)} at {p['seconds']:.1f} s"
                        for t, p in r["teacher"]["reached"].items()
                    )
                    or "no target"
                    for r in runs
                )
                + "."
            )
    return "\n".join(lines)


def environment():
    import keras_net2net

    return {
        "backend": keras.backend.backend(),
        "keras": keras.__version__,
        "keras_net2net": keras_net2net.__version__,
        "python": platform.python_version(),
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
    }


GUIDE = "docs/guides/growing-during-fit.md (results: benchmarks/README.md)"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog=f"Guide: {GUIDE}"
    )
    parser.add_argument(
        "--task",
        choices=("mnist", "transformer", "both"),
        default=None,
        help="default: mnist (both with --quick)",
    )
    parser.add_argument("--data", type=Path, default=None, help="MNIST .npz")
    parser.add_argument("--quick", action="store_true", help="tiny and short")
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=None, help="budget per MNIST run")
    parser.add_argument("--teacher-epochs", type=int, default=None)
    parser.add_argument(
        "--student-lr-scale",
        type=float,
        default=STUDENT_LR / LR,
        help="the students' rate / the teacher's (default 0.1, the paper's)",
    )
    parser.add_argument(
        "--arch", choices=("wide", "deep", "both"), default="both", help="MNIST"
    )
    parser.add_argument(
        "--skip-random", action="store_true", help="no random-init baselines"
    )
    parser.add_argument(
        "--batch-size", type=int, default=128, help="MNIST (32 with --quick)"
    )
    parser.add_argument("--steps", type=int, default=None, help="Transformer budget")
    parser.add_argument("--grow-at", type=int, default=None)
    parser.add_argument("--tx-batch", type=int, default=32)
    parser.add_argument(
        "--out", default=str(ROOT / "benchmarks/results/time_to_accuracy.json")
    )
    parser.add_argument(
        "--report", type=Path, default=None, help="print the tables of a results JSON"
    )
    args = parser.parse_args(argv)
    if args.report is not None:
        return args
    args.task = args.task or ("both" if args.quick else "mnist")
    args.seeds = args.seeds or (1 if args.quick else 3)
    args.epochs = args.epochs or (2 if args.quick else 10)
    args.teacher_epochs = args.teacher_epochs or (1 if args.quick else 3)
    args.steps = args.steps or (40 if args.quick else 3000)
    args.targets = QUICK_TARGETS if args.quick else TARGETS
    if args.quick:
        args.batch_size = 32
    args.grow_at = args.grow_at or args.steps // 2
    if not 0 < args.teacher_epochs < args.epochs:
        parser.error("--teacher-epochs must lie between 0 and --epochs")
    if not 0 < args.grow_at < args.steps:
        parser.error("--grow-at must lie between 0 and --steps")
    if args.task in ("mnist", "both") and not args.quick and args.data is None:
        parser.error("full MNIST needs --data (an .npz in keras.datasets.mnist layout)")
    return args


def print_report(path):
    result = json.loads(Path(path).read_text())
    for task, runs in result["tasks"].items():
        runs.setdefault("targets", TARGETS[task])
    print(table(result))
    return 0


def main(argv=None):
    args = parse_args(argv)
    print(f"Guide: {GUIDE}", file=sys.stderr)
    if args.report is not None:
        return print_report(args.report)
    tasks = ("mnist", "transformer") if args.task == "both" else (args.task,)
    result = {"environment": environment(), "config": vars(args).copy(), "tasks": {}}
    result["config"]["data"] = str(args.data)
    del result["config"]["targets"]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for task in tasks:
        runs = []
        if task == "mnist":
            train, test = load_mnist(args)
            result["config"]["mnist_sizes"] = [len(train[0]), len(test[0])]
            warm_up(args, train, test)
        for seed in range(args.seed, args.seed + args.seeds):
            print(f"{task}, seed {seed}", flush=True)
            run = (
                mnist_paths(args, seed, train, test)
                if task == "mnist"
                else transformer_paths(args, seed)
            )
            runs.append({"seed": seed, **run})
            result["tasks"][task] = {"targets": args.targets[task], "runs": runs}
            out.write_text(json.dumps(result, indent=2))  # after every seed
    for task, report in result["tasks"].items():
        report["summary"] = {
            str(t): summarize(task, report["runs"], t) for t in report["targets"]
        }
    out.write_text(json.dumps(result, indent=2))
    print(table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
