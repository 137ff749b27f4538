"""What one growth event costs, against the model's size.

For Dense stacks ``input(D) -> fc1(h) -> fc2(h) -> out(10)`` whose size after
growth ranges from ~1e5 to ~1e8 parameters, compiled with Adam and trained for
a few steps, this measures one growth event (``Widen("fc1", 2h)``, and
``Deepen(after="fc1")``) with `grow_in_place` and inside `fit` (`GrowModel`):

* ``event_s``: wall time of the event;
* ``first_step_s`` and ``step_s``: the first training step after growth and the
  median steady step before it;
* ``epoch_fraction``: the event's time over one epoch of the grown model
  (60,000 examples at batch 128: 469 steps of ``step_s``);
* ``peak_extra_mb``: the peak resident memory during the event above the
  resident memory just before it, sampled every 2 ms;
* ``new_mb``: the bytes of the new variables of the changed layers plus their
  optimizer slots (Adam: 2 per variable);
* ``memory_ratio``: ``peak_extra_mb / new_mb``;
* ``validation_s``: the time `GrowModel` spends checking its events when
  ``fit`` starts (it simulates them on graphs that share the unchanged layers).

Each measurement runs in a fresh process (``--quick``: in this one), timed
events ``--repeats`` times (median and range), without the memory sampler;
memory is measured on another run of the same event.

A second table keeps the changed layers small (fc1 64 -> 128) and grows an
unchanged tail: the event's time should not depend on the tail's size.

A third (``--llama``) grows a KerasHub ``LlamaCausalLM`` compiled with AdamW
in place, ``hidden_dim`` x2 (``hidden_dim=512``: ~9.2e7 parameters after;
every variable changes shape, so the new weights are the whole model). Its
backbone is rebuilt from the grown config, so the event holds the old and
the new model at once.

Usage::

    python benchmarks/growth_cost.py            # full: up to 1e8 parameters
    python benchmarks/growth_cost.py --quick    # seconds; run by the tests
    python benchmarks/growth_cost.py --sizes 1e5 --tails none --llama 512

Prints markdown tables and writes JSON (``--out``).
"""

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import keras_net2net as kn  # noqa: E402

D, CLASSES, BATCH = 512, 10, 128
EPOCH_STEPS = 469  # 60,000 examples at batch 128
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


_SAMPLER = """
import os, sys, time
path = f"/proc/{sys.argv[1]}/statm"
page = os.sysconf("SC_PAGE_SIZE")
peak = 0
print("ready", flush=True)
while not os.path.exists(sys.argv[2]):
    with open(path) as f:
        peak = max(peak, int(f.read().split()[1]) * page)
    time.sleep(0.001)
print(peak, flush=True)
"""


class PeakRSS:
    """Peak resident memory of this process during a block, above its start.

    Sampled every millisecond by a separate process (a sampling thread would
    compete with the measured code for the interpreter lock).
    """

    def __enter__(self):
        gc.collect()
        self.start = rss()
        self._stop = f"/tmp/peak_rss_stop_{os.getpid()}_{time.monotonic_ns()}"
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _SAMPLER, str(os.getpid()), self._stop],
            stdout=subprocess.PIPE,
            text=True,
        )
        self._proc.stdout.readline()  # sampling has started
        return self

    def __exit__(self, *exc):
        end = rss()
        Path(self._stop).touch()
        peak = int(self._proc.stdout.readline())
        self._proc.wait()
        Path(self._stop).unlink()
        self.peak = max(peak, end)

    @property
    def extra(self):
        return self.peak - self.start


def hidden_for(params):
    """h such that the model widened to 2h has about ``params`` parameters."""
    # D*2h + 2h + 2h*h + h + h*10 + 10 ~ 2h^2 + (2D + 13)h
    b = 2 * D + 13
    return max(8, int((-b + (b * b + 8 * params) ** 0.5) / 4))


def build(h, tail=0, tail_width=0):
    inputs = keras.Input((D,))
    x = keras.layers.Dense(h, activation="relu", name="fc1")(inputs)
    x = keras.layers.Dense(h, activation="relu", name="fc2")(x)
    for i in range(tail):
        x = keras.layers.Dense(tail_width, activation="relu", name=f"tail{i}")(x)
    outputs = keras.layers.Dense(CLASSES, name="out")(x)
    model = keras.Model(inputs, outputs)
    model.compile(
        keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def data(steps=1):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(BATCH * steps, D)).astype("float32")
    y = rng.integers(0, CLASSES, BATCH * steps)
    return x, y


def step_time(model, x, y, repeats=3):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        if isinstance(x, dict):  # already one batch
            model.train_on_batch(x, y)
        else:
            model.train_on_batch(x[:BATCH], y[:BATCH])
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def sync(model):
    """Wait for the device work queued on the model's weights (JAX, CUDA)."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        jax.block_until_ready([v.value for v in model.weights])
    elif backend == "torch":
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()


class PeakDevice:
    """Peak extra accelerator memory during a block (PyTorch on CUDA only)."""

    def __enter__(self):
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        self.start = torch.cuda.memory_allocated()
        return self

    def __exit__(self, *exc):
        import torch

        torch.cuda.synchronize()
        self.extra = torch.cuda.max_memory_allocated() - self.start


def on_cuda():
    if keras.backend.backend() != "torch":
        return False
    import torch

    return torch.cuda.is_available()


def changed_bytes(model, before_ids, slots=2):
    """Bytes of the variables that are new after growth, with optimizer slots."""
    new = [v for v in model.weights if id(v) not in before_ids]
    values = sum(int(np.prod(v.shape)) * 4 for v in new)
    return values * (1 + slots)


def _operation(name, h, tail):
    if name == "deepen":
        return kn.Deepen(after="fc1")
    return kn.Widen("fc1", 128 if tail else 2 * h)


def measure_event(h, op, tail=0, tail_width=0):
    """One timed event with `grow_in_place` (no memory sampler running)."""
    model = build(h, tail, tail_width)
    x, y = data()
    model.train_on_batch(x, y)  # builds the optimizer and the train function
    steady = step_time(model, x, y)
    # Keras imports optional modules (TensorFlow, if installed: seconds) the
    # first time a config is serialised in a process; not a cost of growth.
    model.get_config()
    gc.collect()
    sync(model)
    t = time.perf_counter()
    kn.grow_in_place(model, _operation(op, h, tail))
    sync(model)  # asynchronous dispatch (JAX, CUDA): count the queued work too
    event = time.perf_counter() - t
    first = step_time(model, x, y, repeats=1)
    return {
        "event_s": event,
        "first_step_s": first,
        "step_s": step_time(model, x, y),
        "step_before_s": steady,
    }


def measure_memory(h, op, tail=0, tail_width=0):
    """Peak extra memory of one event; then a fresh model's first step."""
    model = build(h, tail, tail_width)
    x, y = data()
    model.train_on_batch(x, y)
    model.get_config()
    before_ids = {id(v) for v in model.weights}
    device = None
    if on_cuda():
        with PeakDevice() as device:
            kn.grow_in_place(model, _operation(op, h, tail))
        memory = device
    else:
        with PeakRSS() as memory:
            kn.grow_in_place(model, _operation(op, h, tail))
    new = changed_bytes(model, before_ids)
    config = model.get_config()
    del model
    gc.collect()
    fresh = keras.Model.from_config(config)  # the same architecture, new
    fresh.compile(
        keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return {
        "params": fresh.count_params(),
        "fresh_first_step_s": step_time(fresh, x, y, repeats=1),
        "peak_extra_mb": memory.extra / 2**20,
        "new_mb": new / 2**20,
        "memory_ratio": memory.extra / new if new else float("nan"),
        # On CUDA (PyTorch): accelerator memory, not the host's resident set.
        "memory_kind": "cuda" if device is not None else "rss",
    }


class Clock(keras.callbacks.Callback):
    """Records perf_counter at train and batch begin (placed around GrowModel)."""

    def __init__(self):
        super().__init__()
        self.times = []
        self.start = None

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()

    def on_train_batch_begin(self, batch, logs=None):
        sync(self.model)
        self.times.append(time.perf_counter())


def measure_fit(h, op, tail=0, tail_width=0, grow_at=3):
    """One event inside `fit` (`GrowModel`), and its check at fit start."""
    model = build(h, tail, tail_width)
    x, y = data(grow_at + 2)
    before, after = Clock(), Clock()
    grow = kn.GrowModel({kn.AtStep(grow_at): _operation(op, h, tail)})
    model.fit(
        x, y, batch_size=BATCH, epochs=1, verbose=0, callbacks=[before, grow, after]
    )
    return {
        "event_in_fit_s": after.times[grow_at] - before.times[grow_at],
        # GrowModel checks its events at the start of fit (a simulation that
        # shares the unchanged layers).
        "validation_s": after.start - before.start,
    }


def build_llama(h):
    """A KerasHub LlamaCausalLM (``hidden_dim=h``) compiled with AdamW.

    ``h // 64`` heads of 64 (at least 2), as many key/value heads,
    ``intermediate_dim = 4h``, 8 blocks (2 for ``h < 256``), vocabulary 8192
    (256): after ``hidden_dim`` x2 (heads x2, key/value heads kept) a block has
    ``9 (2h)^2`` parameters, so ``h=512`` gives ~9.2e7 in all.
    """
    import keras_hub

    heads = max(2, h // 64)
    big = h >= 256
    backbone = keras_hub.models.LlamaBackbone(
        vocabulary_size=8192 if big else 256,
        num_layers=8 if big else 2,
        num_query_heads=heads,
        num_key_value_heads=heads,
        hidden_dim=h,
        intermediate_dim=4 * h,
    )
    lm = keras_hub.models.LlamaCausalLM(backbone=backbone, preprocessor=None)
    lm.compile(
        optimizer=keras.optimizers.AdamW(1e-4),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return lm


def llama_data(lm):
    rng = np.random.default_rng(0)
    ids = rng.integers(1, lm.backbone.vocabulary_size, (2, 17)).astype("int32")
    x = {"token_ids": ids[:, :-1], "padding_mask": np.ones((2, 16), "int32")}
    return x, ids[:, 1:]


def measure_llama_event(h):
    """`grow_in_place(llama_causal_lm, Widen("hidden_dim", 2h))`, timed."""
    model = build_llama(h)
    x, y = llama_data(model)
    model.train_on_batch(x, y)  # AdamW's slots exist
    steady = step_time(model, x, y)
    model.get_config()
    gc.collect()
    sync(model)
    t = time.perf_counter()
    kn.grow_in_place(model, kn.Widen("hidden_dim", 2 * h))
    sync(model)
    event = time.perf_counter() - t
    first = step_time(model, x, y, repeats=1)
    return {
        "event_s": event,
        "first_step_s": first,
        "step_s": step_time(model, x, y),
        "step_before_s": steady,
    }


def measure_llama_memory(h):
    """Peak extra memory of the same event (its own process)."""
    model = build_llama(h)
    x, y = llama_data(model)
    model.train_on_batch(x, y)
    model.get_config()
    before_ids = {id(v) for v in model.weights}
    with PeakRSS() as memory:
        kn.grow_in_place(model, kn.Widen("hidden_dim", 2 * h))
    new = changed_bytes(model, before_ids)
    return {
        "params": model.count_params(),
        "peak_extra_mb": memory.extra / 2**20,
        "new_mb": new / 2**20,
        "memory_ratio": memory.extra / new if new else float("nan"),
        "memory_kind": "rss",
    }


def llama_row(h, repeats, isolate):
    """The KerasHub Llama row: events in fresh processes, then memory."""
    events = [
        measure({"what": "llama_event", "args": {"h": h}}, isolate)
        for _ in range(repeats)
    ]
    result = {"h": h, "operation": "LlamaCausalLM hidden_dim x2 (in place)"}
    result.update({k: statistics.median(e[k] for e in events) for k in events[0]})
    result["event_range_s"] = [
        min(e["event_s"] for e in events),
        max(e["event_s"] for e in events),
    ]
    result.update(measure({"what": "llama_memory", "args": {"h": h}}, isolate))
    return result


MEASURES = {
    "event": measure_event,
    "memory": measure_memory,
    "fit": measure_fit,
    "llama_event": measure_llama_event,
    "llama_memory": measure_llama_memory,
}


def measure(task, isolate):
    """Run one measurement, in a fresh process if ``isolate``.

    Large allocations get slower and resident memory grows in a long-lived
    process that has built and freed big models before (allocator state), so
    the full benchmark measures every event in a process of its own, the way
    a training run grows its model.
    """
    if not isolate:
        return MEASURES[task["what"]](**task["args"])
    proc = subprocess.run(
        [sys.executable, __file__, "--task", json.dumps(task)],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=1800,
    )
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"task {task} failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def row(args, repeats, isolate, in_fit=False):
    events = [measure({"what": "event", "args": args}, isolate) for _ in range(repeats)]
    result = {k: statistics.median(e[k] for e in events) for k in events[0]}
    result["event_range_s"] = [min(e["event_s"] for e in events)] + [
        max(e["event_s"] for e in events)
    ]
    result.update(measure({"what": "memory", "args": args}, isolate))
    result["epoch_fraction"] = result["event_s"] / (EPOCH_STEPS * result["step_s"])
    if in_fit:
        fits = [measure({"what": "fit", "args": args}, isolate) for _ in range(repeats)]
        result["event_in_fit_s"] = statistics.median(f["event_in_fit_s"] for f in fits)
        result["event_in_fit_range_s"] = [
            min(f["event_in_fit_s"] for f in fits),
            max(f["event_in_fit_s"] for f in fits),
        ]
        result["validation_s"] = statistics.median(f["validation_s"] for f in fits)
    return result


def run(sizes, tails, repeats=1, isolate=False, log=print):
    rows = []
    for target in sizes:
        h = hidden_for(target)
        for name, op in (
            ("widen fc1 h -> 2h", "widen"),
            ("deepen after fc1", "deepen"),
        ):
            result = {"target": target, "h": h, "operation": name}
            args = {"h": h, "op": op}
            result.update(row(args, repeats, isolate, in_fit=op == "widen"))
            rows.append(result)
            log(json.dumps(result))
    tail_rows = []
    for tail_params in tails:
        width = max(8, int(tail_params**0.5))  # two tail layers: ~width^2
        result = {"tail_params": tail_params, "tail_width": width}
        args = {"h": 64, "op": "widen", "tail": 2, "tail_width": width}
        result.update(row(args, repeats, isolate))
        tail_rows.append(result)
        log(json.dumps(result))
    return rows, tail_rows


def table(rows, tail_rows):
    lines = [
        "| operation | params after | event (s, median (range)) | in fit (s) | "
        "check at fit start (s) | first step after (s) | "
        "fresh model's first step (s) | "
        "step (s) | event / epoch | peak extra (MB) | new weights + slots (MB) "
        "| ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        in_fit = "-"
        if "event_in_fit_s" in r:
            low, high = r["event_in_fit_range_s"]
            in_fit = f"{r['event_in_fit_s']:.3f} ({low:.2f}-{high:.2f})"
        check = f"{r['validation_s']:.3f}" if "validation_s" in r else "-"
        lines.append(
            f"| {r['operation']} (h={r['h']}) | {r['params']:.3g} | "
            f"{r['event_s']:.3f} ({r['event_range_s'][0]:.2f}-"
            f"{r['event_range_s'][1]:.2f}) | {in_fit} | {check} | "
            f"{r['first_step_s']:.3f} | "
            f"{r['fresh_first_step_s']:.3f} | "
            f"{r['step_s']:.4f} | {100 * r['epoch_fraction']:.3f}% | "
            f"{r['peak_extra_mb']:.1f} | {r['new_mb']:.1f} | "
            f"{r['memory_ratio']:.2f} |"
        )
    lines += [
        "",
        "| unchanged tail (params) | model params | event (s) | peak extra (MB) |",
        "|---|---|---|---|",
    ]
    for r in tail_rows:
        lines.append(
            f"| {r['tail_params']:.3g} | {r['params']:.3g} | {r['event_s']:.3f} | "
            f"{r['peak_extra_mb']:.1f} |"
        )
    return "\n".join(lines)


def llama_table(rows):
    lines = [
        "| KerasHub model | params after | event (s, median (range)) | "
        "first step after (s) | step before (s) | peak extra (MB) | "
        "new weights + AdamW slots (MB) | ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        low, high = r["event_range_s"]
        lines.append(
            f"| {r['operation']} (h={r['h']}) | {r['params']:.3g} | "
            f"{r['event_s']:.3f} ({low:.2f}-{high:.2f}) | {r['first_step_s']:.3f} | "
            f"{r['step_before_s']:.3f} | {r['peak_extra_mb']:.1f} | "
            f"{r['new_mb']:.1f} | {r['memory_ratio']:.2f} |"
        )
    return "\n".join(lines)


def environment():
    return {
        "backend": keras.backend.backend(),
        "keras": keras.__version__,
        "python": platform.python_version(),
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
    }


GUIDE = "docs/guides/backends-and-distribution.md (results: benchmarks/README.md)"


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], epilog=f"Guide: {GUIDE}"
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes only")
    parser.add_argument(
        "--repeats", type=int, default=None, help="timed events per row (median)"
    )
    parser.add_argument(
        "--out", default=str(ROOT / "benchmarks/results/growth_cost.json")
    )
    parser.add_argument(
        "--sizes", help="comma-separated parameter counts (default 1e5,1e6,1e7,1e8)"
    )
    parser.add_argument(
        "--tails", help="comma-separated tail sizes, or 'none' (default 1e4..1e8)"
    )
    parser.add_argument(
        "--llama",
        help="comma-separated hidden_dim values of KerasHub LlamaCausalLM rows "
        "(grown to 2x; 512 gives ~9.2e7 parameters after; needs keras-hub), "
        "or 'none' (default: 512 where keras-hub is installed, none with --quick)",
    )
    parser.add_argument("--task", help=argparse.SUPPRESS)  # one isolated measure
    args = parser.parse_args(argv)
    if not args.task:  # not in the isolated measuring subprocess
        print(f"Guide: {GUIDE}", file=sys.stderr)
    if args.task:
        task = json.loads(args.task)
        print("RESULT " + json.dumps(MEASURES[task["what"]](**task["args"])))
        return 0
    if args.quick:
        sizes, tails = [1e5], [1e4, 1e5]
    else:
        sizes, tails = [1e5, 1e6, 1e7, 1e8], [1e4, 1e6, 1e7, 1e8]
    if args.sizes:
        sizes = [float(v) for v in args.sizes.split(",")]
    if args.tails:
        tails = (
            [] if args.tails == "none" else [float(v) for v in args.tails.split(",")]
        )
    import importlib.util

    hub = importlib.util.find_spec("keras_hub") is not None
    llamas = [512] if hub and not args.quick else []
    if args.llama:
        llamas = [] if args.llama == "none" else [int(v) for v in args.llama.split(",")]
    repeats = args.repeats or (1 if args.quick else 3)
    rows, tail_rows = run(sizes, tails, repeats, isolate=not args.quick)
    llama_rows = []
    for h in llamas:
        llama_rows.append(llama_row(h, repeats, isolate=not args.quick))
        print(json.dumps(llama_rows[-1]))
    print(table(rows, tail_rows))
    if llama_rows:
        print()
        print(llama_table(llama_rows))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    result = {"environment": environment(), "rows": rows, "tail_rows": tail_rows}
    result["llama_rows"] = llama_rows
    Path(args.out).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
