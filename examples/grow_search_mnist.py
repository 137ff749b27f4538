"""Architecture search by growth on MNIST: GrowthTuner vs RandomSearch, Hyperband.

One family of architectures, a CNN like the one of `mnist_net2net.py`
(conv1, pool, conv2 of 32 filters, pool, fc1, softmax) with conv1 of 16 to
128 filters, fc1 of 32 to 256 units, and optionally one more conv layer
after conv2 and one more dense layer after fc1. Three searches:

* grow-search (`keras_net2net.tuner.GrowthTuner`): fresh models of the
  smallest member, then successive halving in which the best are grown
  (Net2Net) rather than retrained;
* KerasTuner's RandomSearch and Hyperband over the same family, every
  candidate built from scratch (Hyperband continues its promoted candidates
  from their own checkpoints).

Grow-search's widths are the parents' times 1.5 or 2 within the same
bounds, so it also reaches widths between the family's choices.

Compute is counted as training examples x parameters over every epoch of
every trial, and wall time beside it. Examples x parameters is in
proportion to a dense layer's multiply-adds but counts a convolution's only
once per output position (conv1's weights are used 784 times per image,
fc1's once); wall time is the cost on the machine at hand, the searches'
own work (saving, loading, growing, evaluating) included.

Every search gets the same compute budget (`--budget`): once a search has
spent it, its running trial stops at the end of the epoch and no new trial
starts. The report gives, per seed and as mean +- std over seeds, the best
validation accuracy each search reached within the budget, the compute and
wall time it needed to reach the best accuracy RandomSearch found within
it, and the best accuracy each search had when the quickest search of the
seed ended (equal wall time).

    python examples/grow_search_mnist.py --quick          # bundled subset, < 1 min
    python examples/grow_search_mnist.py --data ../shared/data/mnist.npz --seeds 3

Outputs (in --out): results.json, results.md, lineage.json and
best_vs_compute.png (if matplotlib is installed); `--report results.json`
renders the tables and plot of a saved run again.
"""

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import keras_tuner as kt  # noqa: E402
import numpy as np  # noqa: E402

from keras_net2net.tuner import GrowthSpace  # noqa: E402
from keras_net2net.tuner import GrowthTuner  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mnist_net2net import load_data  # noqa: E402

SEARCHES = ("grow-search", "random-search", "hyperband")
CONV1 = [16, 24, 32, 48, 64, 96, 128]
FC1 = [32, 48, 64, 96, 128, 192, 256]
L = keras.layers


def cnn(conv1, fc1, deep_conv, deep_fc, learning_rate=0.01):
    layers = [
        keras.Input((28, 28, 1)),
        L.Conv2D(conv1, 3, padding="same", activation="relu", name="conv1"),
        L.MaxPooling2D(2),
        L.Conv2D(32, 3, padding="same", activation="relu", name="conv2"),
    ]
    if deep_conv:
        layers.append(L.Conv2D(32, 3, padding="same", activation="relu"))
    layers += [
        L.MaxPooling2D(2),
        L.Flatten(),
        L.Dense(fc1, activation="relu", name="fc1"),
    ]
    if deep_fc:
        layers.append(L.Dense(fc1, activation="relu"))
    layers.append(L.Dense(10, activation="softmax", name="out"))
    model = keras.Sequential(layers)
    model.compile(
        keras.optimizers.SGD(learning_rate, momentum=0.9),
        "sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def family(hp):
    """The whole family, for the from-scratch searches."""
    return cnn(
        hp.Choice("conv1", CONV1),
        hp.Choice("fc1", FC1),
        hp.Boolean("deep_conv"),
        hp.Boolean("deep_fc"),
    )


def smallest(hp):
    """Grow-search's starting point: the smallest member."""
    return cnn(CONV1[0], FC1[0], False, False)


class Meter(keras.callbacks.Callback):
    """Compute spent so far (examples x parameters), wall time and validation
    accuracy, at the end of every epoch.

    Ends the search once it has spent `budget`: the running trial stops at
    the end of its epoch and the oracle starts no new trial. The tuner
    deep-copies callbacks for every trial: the state is shared by all
    copies through class attributes (one search at a time).
    """

    log: list = []
    examples = 0
    started = 0.0
    budget = float("inf")
    tuner = None

    @classmethod
    def start(cls, tuner, examples, budget):
        cls.log, cls.examples = [], examples
        cls.tuner, cls.budget, cls.started = tuner, budget, time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        spent = Meter.log[-1]["compute"] if Meter.log else 0.0
        spent += self.model.count_params() * Meter.examples
        Meter.log.append(
            {
                "compute": spent,
                "seconds": time.perf_counter() - Meter.started,
                "val_accuracy": float((logs or {}).get("val_accuracy", 0.0)),
            }
        )
        if spent >= Meter.budget:
            self.model.stop_training = True
            oracle = Meter.tuner.oracle
            oracle.max_trials = len(oracle.trials)  # no new trial after this one


def run_search(name, args, seed, train, test):
    directory = args.out / "searches" / f"seed{seed}"
    keras.utils.set_random_seed(seed)
    common = dict(
        objective="val_accuracy",
        seed=seed + 1,  # KerasTuner draws a random seed for a falsy one
        directory=str(directory),
        project_name=name,
        overwrite=True,
    )
    if name == "grow-search":
        tuner = GrowthTuner(
            smallest,
            GrowthSpace(
                widen={"conv1": CONV1[-1], "fc1": FC1[-1]},
                deepen=["conv2", "fc1"],
                max_inserted=1,
            ),
            max_trials=args.trials,
            initial_trials=args.initial_trials,
            eta=2,
            children=2,
            **common,
        )
        epochs = args.epochs
    elif name == "random-search":
        tuner = kt.RandomSearch(family, max_trials=args.trials, **common)
        epochs = args.epochs
    else:
        tuner = kt.Hyperband(
            family,
            max_epochs=args.hyperband_epochs,
            factor=3,
            # Hyperband's brackets repeat until the budget is spent.
            hyperband_iterations=1000,
            **common,
        )
        epochs = args.hyperband_epochs
    Meter.start(tuner, len(train[0]), args.budget)
    tuner.search(
        *train,
        epochs=epochs,
        batch_size=args.batch_size,
        validation_data=test,
        callbacks=[Meter()],
        verbose=0,
    )
    curve, best = [], 0.0
    for point in Meter.log:
        best = max(best, point["val_accuracy"])
        curve.append({**point, "best_val_accuracy": best})
    total = curve[-1]["compute"] if curve else 0.0
    result = {
        "trials": len(tuner.oracle.trials),
        "epochs": len(curve),
        "curve": curve,
        "best_val_accuracy": best,
        "compute": total,
        "seconds": curve[-1]["seconds"] if curve else 0.0,
    }
    if name == "grow-search":
        result["lineage"] = tuner.lineage(tuner.oracle.get_best_trials(1)[0].trial_id)
        print(tuner.lineage_summary(), flush=True)
    if not args.keep_searches:
        shutil.rmtree(directory / name, ignore_errors=True)
    return result


def within(curve, budget):
    """The epochs that ended within the compute budget."""
    return [p for p in curve if p["compute"] <= budget]


def compute_to(curve, accuracy):
    for point in curve:
        if point["best_val_accuracy"] >= accuracy:
            return point["compute"], point["seconds"]
    return None, None


def best_of(curve):
    return max((p["val_accuracy"] for p in curve), default=0.0)


def summarize(runs, budget):
    """One row per seed and search, at the common budget."""
    rows = []
    for run in runs:
        target = best_of(within(run["random-search"]["curve"], budget))
        # Equal wall time: what each search had by the time the quickest ended.
        shortest = min(run[name]["seconds"] for name in SEARCHES)
        for name in SEARCHES:
            result = run[name]
            curve = within(result["curve"], budget)
            compute, seconds = compute_to(curve, target)
            by_time = [p for p in result["curve"] if p["seconds"] <= shortest]
            rows.append(
                {
                    "seed": run["seed"],
                    "search": name,
                    "trials": result["trials"],
                    "epochs": result["epochs"],
                    "compute": result["compute"],
                    "seconds": result["seconds"],
                    "best_val_accuracy": best_of(curve),
                    "shortest_seconds": shortest,
                    "best_val_accuracy_by_shortest": best_of(by_time),
                    "target": target,
                    "compute_to_target": compute,
                    "seconds_to_target": seconds,
                }
            )
    return rows


def aggregate(rows, budget):
    """Mean and spread over seeds, per search."""
    summary = []
    for name in SEARCHES:
        mine = [r for r in rows if r["search"] == name]
        reached = [r for r in mine if r["compute_to_target"] is not None]
        entry = {"search": name, "seeds": len(mine), "reached_target": len(reached)}
        entry.update(spread("best_val_accuracy", mine))
        entry.update(spread("best_val_accuracy_by_shortest", mine))
        if reached:
            entry.update(spread("compute_to_target", reached, scale=1 / budget))
            entry.update(spread("seconds_to_target", reached))
        summary.append(entry)
    return summary


def spread(key, rows, scale=1.0):
    """``{key}_mean``, ``_std`` (over seeds, ddof=0), ``_min``, ``_max`` of ``rows``."""
    values = np.array([r[key] for r in rows]) * scale
    return {
        f"{key}_{stat}": float(getattr(values, stat)())
        for stat in ("mean", "std", "min", "max")
    }


def spread_text(entry, key, digits):
    """``mean ± std (min-max)`` of an `aggregate` entry, or "-" without one."""
    if f"{key}_mean" not in entry:
        return "-"
    mean, std, low, high = (
        entry[f"{key}_{stat}"] for stat in ("mean", "std", "min", "max")
    )
    return f"{mean:{digits}} ± {std:{digits}} ({low:{digits}}-{high:{digits}})"


def markdown(rows, summary, budget):
    lines = [
        f"Budget: {budget:.3g} examples x parameters per search.",
        "",
        "| search | seeds | best val accuracy within the budget, mean ± std (range) "
        "| reached RandomSearch's best "
        "| compute to it (of the budget), mean ± std (range) "
        "| seconds to it, mean ± std (range) "
        "| best val accuracy by the quickest search's wall time, "
        "mean ± std (range) |",
        "|---|---|---|---|---|---|---|",
    ]
    for e in summary:
        lines.append(
            f"| {e['search']} | {e['seeds']} | "
            f"{spread_text(e, 'best_val_accuracy', '.4f')} | "
            f"{e['reached_target']} of {e['seeds']} | "
            f"{spread_text(e, 'compute_to_target', '.3g')} | "
            f"{spread_text(e, 'seconds_to_target', '.0f')} | "
            f"{spread_text(e, 'best_val_accuracy_by_shortest', '.4f')} |"
        )
    lines += [
        "",
        "| seed | search | trials | epochs | compute spent | seconds | "
        "best val accuracy within the budget | RandomSearch's best | compute to it "
        "| seconds to it | best val accuracy by the quickest search's end |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        compute, seconds = r["compute_to_target"], r["seconds_to_target"]
        to = "never" if compute is None else f"{compute:.3g}"
        secs = "-" if seconds is None else f"{seconds:.0f}"
        lines.append(
            f"| {r['seed']} | {r['search']} | {r['trials']} | {r['epochs']} | "
            f"{r['compute']:.3g} | {r['seconds']:.0f} | "
            f"{r['best_val_accuracy']:.4f} | {r['target']:.4f} | {to} | {secs} | "
            f"{r['best_val_accuracy_by_shortest']:.4f} "
            f"({r['shortest_seconds']:.0f} s) |"
        )
    return "\n".join(lines)


def plot(runs, out, budget):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for index, run in enumerate(runs):
        for color, name in enumerate(SEARCHES):
            curve = run[name]["curve"]
            ax.step(
                [p["compute"] for p in curve],
                [p["best_val_accuracy"] for p in curve],
                where="post",
                color=f"C{color}",
                alpha=0.8,
                label=name if index == 0 else None,
            )
    ax.axvline(budget, color="grey", linestyle=":", label="budget")
    ax.set_xlabel("compute spent (examples x parameters)")
    ax.set_ylabel("best validation accuracy so far")
    ax.set_xscale("log")
    ax.legend()
    fig.tight_layout()
    path = out / "best_vs_compute.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


GUIDE = "docs/guides/search.md (results: docs/guides/results.md)"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog=f"Guide: {GUIDE}"
    )
    parser.add_argument("--data", type=Path, default=None, help="MNIST .npz")
    parser.add_argument("--quick", action="store_true", help="bundled subset, tiny")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--budget",
        type=float,
        default=None,
        help="compute per search, examples x parameters (default 2e11, "
        "or 1.5e9 with --quick)",
    )
    parser.add_argument(
        "--trials",
        type=int,
        default=None,
        help="most grow/random trials (default 100, or 5 with --quick)",
    )
    parser.add_argument("--initial-trials", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None, help="epochs per trial")
    parser.add_argument("--hyperband-epochs", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--keep-searches", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("grow_search_results"))
    parser.add_argument(
        "--report",
        type=Path,
        default=None,
        help="re-render the tables and plot of a saved results.json (no training)",
    )
    args = parser.parse_args(argv)
    if args.budget is None:
        args.budget = 1.5e9 if args.quick else 2e11
    if args.budget <= 0:
        parser.error(f"--budget must be positive; received {args.budget}")
    args.trials = args.trials or (5 if args.quick else 100)
    args.initial_trials = args.initial_trials or (2 if args.quick else 4)
    args.epochs = args.epochs or 1
    args.hyperband_epochs = args.hyperband_epochs or (2 if args.quick else 4)
    if not args.quick and args.data is None and args.report is None:
        parser.error("give --data (an .npz in keras.datasets.mnist layout) or --quick")
    return args


def main(argv=None):
    args = parse_args(argv)
    print(f"Guide: {GUIDE}", file=sys.stderr)
    if args.report is not None:  # re-render the tables of a finished run
        saved = json.loads(args.report.read_text())
        write_report(
            args.report.parent,
            saved["config"],
            saved["environment"],
            saved["runs"],
            float(saved["config"]["budget"]),
        )
        print((args.report.parent / "results.md").read_text())
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    train, test = load_data(argparse.Namespace(quick=args.quick, data=args.data))
    config = {k: str(v) for k, v in vars(args).items()}
    environment = {
        "backend": keras.backend.backend(),
        "keras": keras.__version__,
        "keras_tuner": kt.__version__,
        "cpus": os.cpu_count(),
    }
    runs = []
    for seed in range(args.seed, args.seed + args.seeds):
        run = {"seed": seed}
        for name in SEARCHES:
            print(f"== seed {seed}: {name}", flush=True)
            run[name] = run_search(name, args, seed, train, test)
            print(
                f"   {run[name]['trials']} trials, {run[name]['epochs']} epochs, "
                f"compute {run[name]['compute']:.3g}, "
                f"best {run[name]['best_val_accuracy']:.4f}, "
                f"{run[name]['seconds']:.0f} s",
                flush=True,
            )
        runs.append(run)
        # After every seed: a long run keeps what it has.
        write_report(args.out, config, environment, runs, args.budget)
    print((args.out / "results.md").read_text())
    return 0


def write_report(out, config, environment, runs, budget):
    rows = summarize(runs, budget)
    summary = aggregate(rows, budget)
    table = markdown(rows, summary, budget)
    report = {
        "config": config,
        "environment": environment,
        "runs": runs,
        "rows": rows,
        "summary": summary,
    }
    (out / "results.json").write_text(json.dumps(report, indent=2))
    (out / "results.md").write_text(table + "\n")
    (out / "lineage.json").write_text(
        json.dumps([run["grow-search"]["lineage"] for run in runs], indent=2)
    )
    plot(runs, out, budget)


if __name__ == "__main__":
    sys.exit(main())
