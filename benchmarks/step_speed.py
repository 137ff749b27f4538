"""Training speed after growth, and GrowModel's cost when nothing grows.

Two A/B comparisons, interleaved in one process (``--pairs`` rounds of A then
B, so that drifts in machine speed hit both sides alike); each prints the
median ratio and its spread over the rounds:

1. **Grown vs fresh.** A model grown in place (`grow_in_place`: the MNIST
   teacher's conv1 and fc1 widened to 128 and fc1 deepened), against a freshly
   built and compiled model of the same architecture: time per training step
   (``train_on_batch``, batch 128, Adam), ``--steps`` steps per round. Target
   ratio <= 1.02.
2. **GrowModel overhead.** ``fit`` for one epoch of ``--steps`` steps with a
   `GrowModel` whose only event never fires, against the same ``fit`` without
   it, on the same model: time per step from the first batch to the end of
   the epoch (every callback's batch hooks included). Target ratio <= 1.01. The time
   from the start of ``fit`` to its first step (where GrowModel checks its
   pending events, once per call) is reported apart.
3. **Fixed costs on a tiny model** (``Dense(16) -> Dense(2)``, Adam, trained
   one step so that its optimizer state exists): whole ``fit`` calls of
   ``--fit-steps`` steps with a never-firing `GrowModel` against the same
   calls without it (its fit-start check included; target ratio <= 1.1); one
   growth event, ``grow_in_place(model, [Widen("a", n + 1)])``, against
   ``widen(model, "a", n + 1)`` on the same model (target <= 1.5); and the
   same event while ``--heap`` million extra Python objects are alive,
   against the event without them (no cost that grows with the Python heap:
   target ~1.0).

Usage::

    python benchmarks/step_speed.py            # full
    python benchmarks/step_speed.py --quick    # seconds; run by the tests
    python benchmarks/step_speed.py --fixed-only  # only the fixed costs (3.)

Prints a markdown table and writes JSON (``--out``).
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import keras_net2net as kn  # noqa: E402

BATCH = 128


def teacher(size=28, conv=64, fc=64):
    L = keras.layers
    model = keras.Sequential(
        [
            keras.Input((size, size, 1)),
            L.Conv2D(conv, 5, padding="same", activation="relu", name="conv1"),
            L.MaxPooling2D(2),
            L.Conv2D(64, 5, padding="same", activation="relu", name="conv2"),
            L.MaxPooling2D(2),
            L.Flatten(),
            L.Dense(fc, activation="relu", name="fc1"),
            L.Dense(10, name="out"),
        ]
    )
    compile_(model)
    return model


def compile_(model):
    model.compile(
        keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )


def data(size, steps):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(BATCH * steps, size, size, 1)).astype("float32")
    return x, rng.integers(0, 10, BATCH * steps)


def time_steps(model, x, y, steps):
    t = time.perf_counter()
    for i in range(steps):
        model.train_on_batch(
            x[i * BATCH : (i + 1) * BATCH], y[i * BATCH : (i + 1) * BATCH]
        )
    return (time.perf_counter() - t) / steps


class _Steps(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.begin, self.times = None, []

    def on_train_begin(self, logs=None):
        self.begin = time.perf_counter()

    def on_train_batch_begin(self, batch, logs=None):
        self.times.append(time.perf_counter())

    def on_epoch_end(self, epoch, logs=None):
        # After the epoch's state sync: on JAX (and with asynchronous batch
        # callbacks) the steps are only dispatched at batch begin.
        self.end = time.perf_counter()


def time_fit(model, x, y, callbacks):
    """``(seconds per step, seconds from fit start to the first step)``.

    Steps are timed from the first batch's start to the end of the epoch
    (all callbacks' batch hooks included, and the work an asynchronous backend
    still had queued); what happens once when ``fit`` starts is reported
    apart.
    """
    clock = _Steps()
    model.fit(
        x, y, batch_size=BATCH, epochs=1, verbose=0, callbacks=[clock, *callbacks]
    )
    times = clock.times
    return (clock.end - times[0]) / len(times), times[0] - clock.begin


def summary(ratios):
    q = np.percentile(ratios, [25, 75])
    return {
        "median": statistics.median(ratios),
        "q25": float(q[0]),
        "q75": float(q[1]),
        "min": min(ratios),
        "max": max(ratios),
        "pairs": len(ratios),
    }


def grown_vs_fresh(size, steps, pairs):
    x, y = data(size, steps)
    grown = teacher(size)
    grown.train_on_batch(x[:BATCH], y[:BATCH])
    kn.grow_in_place(
        grown,
        [kn.Widen("conv1", 128), kn.Widen("fc1", 128), kn.Deepen(after="fc1")],
    )
    fresh = keras.Sequential.from_config(grown.get_config())
    compile_(fresh)
    for model in (grown, fresh):  # warm up: trace and compile
        time_steps(model, x, y, 2)
    ratios, a_times, b_times = [], [], []
    for _ in range(pairs):
        a = time_steps(grown, x, y, steps)
        b = time_steps(fresh, x, y, steps)
        a_times.append(a)
        b_times.append(b)
        ratios.append(a / b)
    return {
        "grown_step_s": statistics.median(a_times),
        "fresh_step_s": statistics.median(b_times),
        "ratio": summary(ratios),
        "params": grown.count_params(),
    }


def growmodel_overhead(size, steps, pairs):
    x, y = data(size, steps)
    model = teacher(size)
    never = kn.GrowModel({kn.AtEpoch(10**6): kn.Widen("fc1", 128)})
    time_fit(model, x, y, [])  # warm up
    time_fit(model, x, y, [never])
    ratios, a_times, b_times, a_starts, b_starts = [], [], [], [], []
    for _ in range(pairs):
        a, a_start = time_fit(model, x, y, [never])
        b, b_start = time_fit(model, x, y, [])
        a_times.append(a)
        b_times.append(b)
        a_starts.append(a_start)
        b_starts.append(b_start)
        ratios.append(a / b)
    return {
        "with_step_s": statistics.median(a_times),
        "without_step_s": statistics.median(b_times),
        "ratio": summary(ratios),
        # GrowModel checks its pending events once when fit starts.
        "fit_start_with_s": statistics.median(a_starts),
        "fit_start_without_s": statistics.median(b_starts),
    }


def tiny():
    model = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(16, activation="relu", name="a"),
            keras.layers.Dense(2, name="b"),
        ]
    )
    model.compile(keras.optimizers.Adam(1e-3), "mse")
    return model


def _seconds(function):
    t = time.perf_counter()
    function()
    return time.perf_counter() - t


def _ab(pairs, a, b):
    """Median seconds of ``a`` and ``b`` over interleaved rounds, and A/B."""
    a_times, b_times = [], []
    for _ in range(pairs):
        a_times.append(_seconds(a))
        b_times.append(_seconds(b))
    return _ab_result(a_times, b_times)


def _ab_result(a_times, b_times):
    return {
        "a_s": statistics.median(a_times),
        "b_s": statistics.median(b_times),
        "ratio": summary([a / b for a, b in zip(a_times, b_times)]),
    }


def fixed_costs(pairs, fit_steps, heap_millions):
    """A never-firing GrowModel's cost per fit call, and one event's cost."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16 * fit_steps, 8)).astype("float32")
    y = rng.normal(size=(16 * fit_steps, 2)).astype("float32")
    model = tiny()
    model.fit(x[:16], y[:16], verbose=0)  # the optimizer state exists
    never = kn.GrowModel({kn.AtEpoch(10**6): kn.Widen("a", 4096)})

    def fit(callbacks):
        return lambda: model.fit(
            x, y, batch_size=16, epochs=1, verbose=0, callbacks=callbacks
        )

    def event():
        kn.grow_in_place(model, [kn.Widen("a", model.get_layer("a").units + 1)])

    def copy():
        kn.widen(model, "a", model.get_layer("a").units + 1)

    for _ in range(2):  # warm up: trace, compile, first growths
        fit([])()
        fit([never])()
        event()
        copy()
    result = {
        "fit_steps": fit_steps,
        "fit": _ab(pairs, fit([never]), fit([])),
        "event_vs_widen": _ab(pairs, event, copy),
    }
    quiet = [_seconds(event) for _ in range(pairs)]
    heap = [object() for _ in range(int(heap_millions * 1e6))]
    busy = [_seconds(event) for _ in range(pairs)]
    del heap
    result["event_with_heap"] = _ab_result(busy, quiet)
    result["event_with_heap"]["extra_objects"] = int(heap_millions * 1e6)
    return result


def environment():
    return {
        "backend": keras.backend.backend(),
        "keras": keras.__version__,
        "python": platform.python_version(),
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
    }


def table(result):
    rows = [
        "| comparison | A (s) | B (s) | median A/B | IQR | min-max | pairs | target |",
        "|---|---|---|---|---|---|---|---|",
    ]
    comparisons = []
    g, o = result.get("grown_vs_fresh"), result.get("growmodel_overhead")
    if g and o:
        comparisons += [
            (
                "grown (A) vs fresh (B), per step",
                g["grown_step_s"],
                g["fresh_step_s"],
                g["ratio"],
                "<= 1.02",
            ),
            (
                "fit with a never-firing GrowModel (A) vs without (B), per step",
                o["with_step_s"],
                o["without_step_s"],
                o["ratio"],
                "<= 1.01",
            ),
        ]
    f = result.get("fixed_costs")
    if f:
        heap = f["event_with_heap"]
        for name, r, target in (
            (
                f"tiny model: whole fit call ({f['fit_steps']} steps) with a "
                "never-firing GrowModel (A) vs without (B)",
                f["fit"],
                "<= 1.1",
            ),
            (
                "tiny model: grow_in_place (A) vs widen (B), same request",
                f["event_vs_widen"],
                "<= 1.5",
            ),
            (
                f"tiny model: grow_in_place with {heap['extra_objects']:,} extra "
                "Python objects alive (A) vs without (B)",
                heap,
                "~1.0",
            ),
        ):
            comparisons.append((name, r["a_s"], r["b_s"], r["ratio"], target))
    for name, a, b, r, target in comparisons:
        rows.append(
            f"| {name} | {a:.4f} | {b:.4f} | {r['median']:.3f} | "
            f"{r['q25']:.3f}-{r['q75']:.3f} | {r['min']:.3f}-{r['max']:.3f} | "
            f"{r['pairs']} | {target} |"
        )
    if o:
        rows.append("")
        rows.append(
            f"Once per `fit` call, from its start to the first step: "
            f"{o['fit_start_with_s']:.3f} s with the GrowModel, "
            f"{o['fit_start_without_s']:.3f} s without (it checks its pending "
            "events)."
        )
    return "\n".join(rows)


GUIDE = "docs/guides/backends-and-distribution.md (results: benchmarks/README.md)"


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], epilog=f"Guide: {GUIDE}"
    )
    parser.add_argument("--quick", action="store_true", help="tiny and short")
    parser.add_argument("--pairs", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument(
        "--fixed-only", action="store_true", help="only the tiny-model fixed costs"
    )
    parser.add_argument(
        "--fit-steps", type=int, default=4, help="steps per fit call (fixed costs)"
    )
    parser.add_argument(
        "--heap",
        type=float,
        default=None,
        help="millions of extra Python objects alive (fixed costs; default 5)",
    )
    parser.add_argument(
        "--out", default=str(ROOT / "benchmarks/results/step_speed.json")
    )
    args = parser.parse_args(argv)
    print(f"Guide: {GUIDE}", file=sys.stderr)
    size = 12 if args.quick else 28
    pairs = args.pairs or (3 if args.quick else 30)
    steps = args.steps or (3 if args.quick else 20)
    result = {"environment": environment()}
    if not args.fixed_only:
        result.update(
            size=size,
            steps_per_round=steps,
            grown_vs_fresh=grown_vs_fresh(size, steps, pairs),
            growmodel_overhead=growmodel_overhead(size, steps, pairs),
        )
    heap = args.heap if args.heap is not None else (0.2 if args.quick else 5.0)
    result["fixed_costs"] = fixed_costs(pairs, args.fit_steps, heap)
    print(table(result))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
