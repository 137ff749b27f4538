"""Sparse upcycling of a dense KerasHub language model, against continuing it dense
and against training the mixture of experts from scratch.

A byte-level ``LlamaCausalLM`` (KerasHub, built from a config: no download)
trains on real English text for ``--dense-steps`` steps under a warm-up/stable
learning rate (the checkpoint is taken in the stable phase, as a warm-up/
stable/decay run allows). From that checkpoint, with the same batches:

* dense:     the dense model goes on, its AdamW state carried, for as many
             steps as give it the upcycled path's extra training compute
             (``--moe-steps`` x the MoE's active FLOPs / the dense model's),
             the rate decayed to zero over them;
* upcycled:  ``grow_in_place(lm, Upcycle(--experts, --top-k))`` turns it into a
             ``MixtralCausalLM`` (every expert a copy of the dense feed-forward
             network: the same function; AdamW's state carried into every
             expert), then ``--moe-steps`` steps, the rate decayed to zero;
* moe_scratch: the same ``MixtralCausalLM`` from a random initialisation for
             ``--dense-steps + --moe-steps`` steps, the same warm-up, stable
             phase and decay.

Compute is training FLOPs of the *active* parameters: 6 x (the matmul
parameters a token passes through: attention, ``top_k`` experts and the
router, the output projection) per token, plus attention (12 x layers x
context x width). Wall time is training time (validation excluded). KerasHub
0.32's Mixtral computes every expert for every token and weights them (its
experts are one batched einsum), so its wall time per step grows with
``--experts``, not ``--top-k``: the wall-time columns say what this
implementation costs, the compute columns what a sparse one would.

    python benchmarks/lm_upcycle.py --quick                       # seconds
    python benchmarks/lm_upcycle.py --data ../shared/data/kjv.txt.gz --seeds 0 1 2
    python benchmarks/lm_upcycle.py --report benchmarks/results/lm_upcycle.json

``--data`` as in lm_growth.py (the last 10% of the lines validate). Each seed
writes ``lm_upcycle_seed<N>.json`` beside ``--out``; the summary is rebuilt
from every seed file of the same configuration.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).parent))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from lm_growth import VOCAB  # noqa: E402
from lm_growth import batch_starts  # noqa: E402
from lm_growth import environment  # noqa: E402
from lm_growth import load_text  # noqa: E402
from lm_growth import stats  # noqa: E402
from lm_growth import validation_loss as byte_loss  # noqa: E402
from lm_growth import validation_windows  # noqa: E402

import keras_net2net as kn  # noqa: E402

PATHS = ("dense", "upcycled", "moe_scratch")
RESULTS = Path(__file__).parent / "results"
GUIDE = "docs/guides/transformers.md (results: benchmarks/README.md)"


# --- models -----------------------------------------------------------------


def llama_config(args):
    return dict(
        vocabulary_size=VOCAB,
        num_layers=args.layers,
        num_query_heads=args.heads,
        num_key_value_heads=args.kv_heads,
        hidden_dim=args.width,
        intermediate_dim=args.ffn,
        layer_norm_epsilon=1e-5,
    )


def dense_lm(args, seed):
    import keras_hub

    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.LlamaBackbone(**llama_config(args))
    return keras_hub.models.LlamaCausalLM(backbone=backbone, preprocessor=None)


def moe_lm(args, seed):
    import keras_hub

    keras.utils.set_random_seed(seed)
    config = dict(llama_config(args), num_experts=args.experts, top_k=args.top_k)
    backbone = keras_hub.models.MixtralBackbone(**config, sliding_window=None)
    return keras_hub.models.MixtralCausalLM(backbone=backbone, preprocessor=None)


def flops_per_token(args, moe):
    """Training FLOPs per token of the active parameters (see the module)."""
    width, ffn, layers = args.width, args.ffn, args.layers
    head = width // args.heads
    attention = 2 * width * width + 2 * width * args.kv_heads * head
    experts = args.top_k if moe else 1
    feedforward = experts * 3 * width * ffn + (width * args.experts if moe else 0)
    matmul = layers * (attention + feedforward) + width * VOCAB
    return 6 * matmul + 12 * layers * args.context * width


def schedule(args, decay_steps):
    """Warm-up, stable through the dense phase, then a linear decay to zero."""
    return kn.WarmupStableDecay(
        args.learning_rate,
        warmup_steps=args.warmup,
        stable_steps=args.dense_steps - args.warmup,
        decay_steps=decay_steps,
    )


def compile_lm(model, lr):
    model.compile(
        optimizer=keras.optimizers.AdamW(
            lr, weight_decay=0.1, beta_2=0.99, clipnorm=1.0
        ),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        weighted_metrics=[],
    )
    return model


def copy_state(source, target):
    """``target`` (the same architecture, compiled) takes ``source``'s weights
    and AdamW state (moments, step count): the checkpoint, continued."""
    target.set_weights(source.get_weights())
    target.optimizer.build(target.trainable_variables)
    for mine, theirs in zip(target.optimizer.variables, source.optimizer.variables):
        mine.assign(theirs)


# --- data and evaluation ----------------------------------------------------


def windows(data, starts, context):
    """The batches of ({token_ids, padding_mask}, next bytes), in order.

    A ``tf.data.Dataset`` (on every backend), which KerasHub's task ``fit``
    takes, built from the windows' starts (fixed per seed).
    """
    import tensorflow as tf

    rows = data[starts.reshape(-1)[:, None] + np.arange(context + 1)]
    rows = rows.astype("int32")
    x = rows[:, :-1]
    inputs = {"token_ids": x, "padding_mask": np.ones_like(x)}
    batch = starts.shape[1]
    return tf.data.Dataset.from_tensor_slices((inputs, rows[:, 1:])).batch(batch)


def validation_loss(model, windows, batch_size=64):
    """lm_growth's validation loss (nats per byte), the model given token ids
    with a full padding mask."""
    return byte_loss(
        lambda ids: model({"token_ids": ids, "padding_mask": np.ones_like(ids)}),
        windows,
        batch_size,
    )


class Log(keras.callbacks.Callback):
    """Compute, training wall time and validation loss every ``every`` steps."""

    def __init__(self, val, args, state, per_token, last_step):
        super().__init__()
        self.val, self.args, self.state = val, args, state
        self.per_step = per_token * args.batch_size * args.context
        self.last_step = last_step

    def evaluate(self):
        s = self.state
        began = time.perf_counter()
        loss = validation_loss(self.model, self.val)
        s["clock"] += time.perf_counter() - began
        s["points"].append(
            dict(step=s["step"], flops=s["flops"], wall=s["wall"], val_loss=loss)
        )
        return loss

    def on_train_begin(self, logs=None):
        self.state["clock"] = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        s = self.state
        now = time.perf_counter()
        s["wall"] += now - s["clock"]
        s["clock"] = now
        s["step"] += 1
        s["flops"] += self.per_step
        if s["step"] % self.args.eval_every == 0 or s["step"] == self.last_step:
            self.evaluate()


def new_state(start=None):
    state = dict(points=[], step=0, flops=0, wall=0.0, clock=time.perf_counter())
    if start is not None:
        state.update(step=start["step"], flops=start["flops"], wall=start["wall"])
        state["points"] = [dict(start["points"][-1])]
    return state


def train(model, args, data, starts, val, state, per_token, last_step):
    log = Log(val, args, state, per_token, last_step)
    if not state["points"]:
        log.set_model(model)
        log.evaluate()
    began = time.perf_counter()
    model.fit(
        windows(data, starts, args.context),
        epochs=1,
        verbose=0,
        shuffle=False,
        callbacks=[log],
    )
    return time.perf_counter() - began


# --- one seed ---------------------------------------------------------------


def continued_steps(args):
    """Steps of the dense continuation: the upcycled path's extra compute."""
    ratio = flops_per_token(args, True) / flops_per_token(args, False)
    return int(round(args.moe_steps * ratio))


def run_seed(args, data, val, seed):
    """The three paths of one seed; returns ``{path: record}``."""
    dense_more = continued_steps(args)
    total = args.dense_steps + max(args.moe_steps, dense_more)
    starts = batch_starts(len(data), args.context, args.batch_size, total, seed)
    head = starts[: args.dense_steps]
    dense_flops, moe_flops = flops_per_token(args, False), flops_per_token(args, True)
    # The shared dense phase (a warm-up/stable run, checkpointed at its end).
    base = compile_lm(dense_lm(args, seed), schedule(args, 0))
    phase = new_state()
    train(base, args, data, head, val, phase, dense_flops, args.dense_steps)
    runs = {}
    for path in args.paths:
        if path == "moe_scratch":
            model = compile_lm(moe_lm(args, seed), schedule(args, args.moe_steps))
            state = new_state()
            steps = args.dense_steps + args.moe_steps
            seconds = train(
                model, args, data, starts[:steps], val, state, moe_flops, steps
            )
            events = []
        else:
            more = dense_more if path == "dense" else args.moe_steps
            model = compile_lm(dense_lm(args, seed), schedule(args, more))
            copy_state(base, model)
            state = new_state(phase)
            events = []
            began = time.perf_counter()
            if path == "upcycled":
                request = kn.Upcycle(
                    args.experts, args.top_k, noise=args.expert_noise, seed=seed
                )
                result = kn.grow_in_place(model, request)
                events = list(result.details)
                state["wall"] += time.perf_counter() - began
                state["points"].append(
                    dict(state["points"][-1], val_loss=validation_loss(model, val))
                )
            per_token = moe_flops if path == "upcycled" else dense_flops
            window = starts[args.dense_steps : args.dense_steps + more]
            seconds = train(
                model,
                args,
                data,
                window,
                val,
                state,
                per_token,
                args.dense_steps + more,
            )
        runs[path] = {
            "points": state["points"],
            "events": events,
            "class": type(model).__name__,
            "params": int(model.count_params()),
            "train_seconds": state["wall"],
            "fit_seconds": seconds,
        }
    return {"dense_phase": {"points": phase["points"], "wall": phase["wall"]}, **runs}


# --- analysis ---------------------------------------------------------------


def final(run, key="val_loss"):
    return run["points"][-1][key]


def summarise(record):
    paths = record["paths"]
    start = record["paths"]["dense_phase"]["points"][-1]
    out = {"checkpoint_loss": start["val_loss"]}
    for name in PATHS:
        if name not in paths:
            continue
        run = paths[name]
        continued = name != "moe_scratch"  # from the checkpoint: extra is after it
        out[name] = {
            "final_loss": final(run),
            "flops": final(run, "flops"),
            "extra_flops": final(run, "flops") - start["flops"] if continued else None,
            "wall": final(run, "wall"),
            "extra_wall": final(run, "wall") - start["wall"] if continued else None,
        }
    if "dense" in out and "upcycled" in out:
        out["upcycled_minus_dense"] = (
            out["upcycled"]["final_loss"] - out["dense"]["final_loss"]
        )
    if "upcycled" in paths:
        points = paths["upcycled"]["points"]
        out["upcycle_jump"] = points[1]["val_loss"] - points[0]["val_loss"]
    return out


def combine(records):
    summaries = [summarise(r) for r in records]
    report = {"seeds": [r["seed"] for r in records], "config": records[0]["config"]}
    report["environment"] = records[0]["environment"]
    for name in PATHS:
        rows = [s[name] for s in summaries if name in s]
        if rows:
            report[name] = {k: stats([r[k] for r in rows]) for k in rows[0]}
    for key in ("checkpoint_loss", "upcycled_minus_dense", "upcycle_jump"):
        values = [s[key] for s in summaries if key in s]
        if values:
            report[key] = stats(values)
    report["runs"] = records
    return report


def fmt(s, digits=4):
    if s is None:
        return "-"
    if s.get("std") is None:
        return f"{s['mean']:.{digits}f}"
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}"


def markdown(report):
    seeds = len(report["seeds"])
    lines = [
        f"seeds: {report['seeds']}; checkpoint (dense, after the dense phase): "
        f"{fmt(report.get('checkpoint_loss'))} nats/byte",
        "",
        "| path | final val loss | extra compute (TFLOPs, active) | "
        "extra wall (s) | total compute | total wall (s) |",
        "|---|---|---|---|---|---|",
    ]
    for name in PATHS:
        if name not in report:
            continue
        r = report[name]

        def tera(s):
            return "-" if s["mean"] is None else f"{s['mean'] / 1e12:.2f}"

        def seconds(s):
            return "-" if s["mean"] is None else f"{s['mean']:.0f}"

        lines.append(
            f"| {name} | {fmt(r['final_loss'])} | {tera(r['extra_flops'])} | "
            f"{seconds(r['extra_wall'])} | {tera(r['flops'])} | "
            f"{seconds(r['wall'])} |"
        )
    if "upcycled_minus_dense" in report:
        lines.append("")
        lines.append(
            f"upcycled - dense at equal extra compute: "
            f"{fmt(report['upcycled_minus_dense'])} nats/byte ({seeds} seeds; "
            "negative: upcycling ahead); loss jump at upcycling: "
            f"{fmt(report.get('upcycle_jump'), 7)}"
        )
    return "\n".join(lines)


def plot(report, out):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, (by_flops, by_wall) = plt.subplots(1, 2, figsize=(11, 4))
    colors = {"dense": "C0", "upcycled": "C1", "moe_scratch": "C2", "dense_phase": "k"}
    for index, run in enumerate(report["runs"]):
        for name, path in run["paths"].items():
            points = path["points"]
            label = name if index == 0 else None
            for axis, key, scale in ((by_flops, "flops", 1e12), (by_wall, "wall", 1)):
                axis.plot(
                    [p[key] / scale for p in points],
                    [p["val_loss"] for p in points],
                    color=colors.get(name, "C3"),
                    label=label,
                    alpha=0.8,
                )
    by_flops.set_xlabel("training compute, active parameters (TFLOPs)")
    by_wall.set_xlabel("training wall time (s)")
    for axis in (by_flops, by_wall):
        axis.set_ylabel("validation loss (nats/byte)")
        axis.legend()
    points = [
        p["val_loss"] for r in report["runs"] for p in r["paths"]["dense"]["points"]
    ]
    if points:
        low = min(points)
        for axis in (by_flops, by_wall):
            axis.set_ylim(low - 0.05, low + 0.5)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


# --- command line -----------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog=f"Guide: {GUIDE}"
    )
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--quick", action="store_true", help="a few seconds")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--paths", nargs="+", default=list(PATHS), choices=PATHS)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--kv-heads", type=int, default=2)
    parser.add_argument("--ffn", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--experts", type=int, default=4)
    parser.add_argument("--top-k", type=int, default=2)
    parser.add_argument(
        "--expert-noise",
        type=float,
        default=0.0,
        help="noise on the experts' copies (Upcycle(noise=...)): not exact",
    )
    parser.add_argument("--context", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--dense-steps", type=int, default=1000)
    parser.add_argument("--moe-steps", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--eval-every", type=int, default=200)
    parser.add_argument("--val-windows", type=int, default=256)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--report", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.width, args.heads, args.kv_heads, args.ffn = 32, 2, 1, 64
        args.layers, args.context, args.batch_size = 2, 32, 8
        args.dense_steps, args.moe_steps, args.warmup = 12, 8, 2
        args.eval_every, args.val_windows = 4, 8
    if args.out is None:
        name = "lm_upcycle_quick.json" if args.quick else "lm_upcycle.json"
        args.out = RESULTS / name
    return args


def config_of(args):
    keys = ("quick", "width", "heads", "kv_heads", "ffn", "layers", "experts")
    keys += ("top_k", "context", "batch_size", "dense_steps", "moe_steps")
    keys += ("warmup", "learning_rate", "eval_every", "val_windows")
    config = {k: getattr(args, k) for k in keys}
    config["data"] = None if args.data is None else args.data.name
    if args.expert_noise:
        config["expert_noise"] = args.expert_noise
    return config


def main(argv=None):
    args = parse_args(argv)
    if args.report is not None:
        print(markdown(json.loads(args.report.read_text())))
        return 0
    if args.data is None and not args.quick:
        print(
            "a full run needs --data (e.g. ../shared/data/kjv.txt.gz)", file=sys.stderr
        )
        return 2
    data, val_text = load_text(args.data)
    val = validation_windows(val_text, args.context, args.val_windows)
    config = config_of(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        record = {"seed": seed, "config": config, "environment": environment()}
        record["paths"] = run_seed(args, data, val, seed)
        seed_path = args.out.parent / f"{args.out.stem}_seed{seed}.json"
        seed_path.write_text(json.dumps(record, indent=1))
        for name in PATHS:
            run = record["paths"].get(name)
            if run:
                print(
                    f"seed {seed} {name}: final val loss {final(run):.4f} nats/byte, "
                    f"{final(run, 'flops') / 1e12:.2f} TFLOPs, "
                    f"{run['train_seconds']:.0f} s training",
                    flush=True,
                )
    files = sorted(args.out.parent.glob(f"{args.out.stem}_seed*.json"))
    records = [json.loads(p.read_text()) for p in files]
    records = [r for r in records if r["config"] == config]
    report = combine(records)
    args.out.write_text(json.dumps(report, indent=1))
    picture = plot(report, args.out.with_suffix(".png"))
    print(markdown(report))
    print(f"\nwrote {args.out}" + (f" and {picture}" if picture else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
