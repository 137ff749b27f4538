"""Grow a small Transformer into a bigger one while it trains.

A synthetic sequence task (do the first half's tokens, read as numbers, sum
to more than the second half's? The model has to relate every token to its
position and add up) is learned twice for the same compute:

* grown: a small Transformer (d_model 16, 2 heads, feed-forward 32, 1 block)
  trains for a while, then one `GrowModel` event inside the same `fit` makes it
  the big architecture: d_model x2 (embeddings, attention, feed-forward,
  LayerNormalization and the head together), heads x2, feed-forward x2, and
  a second block (a zero-initialised copy of the first); AdamW's state is
  carried over and the loss does not move at the growth;
* scratch: the big architecture (d_model 32, 4 heads, feed-forward 64,
  2 blocks) trains from a random initialisation.

Compute is counted as examples x parameters (a Transformer's training FLOPs
are proportional to it), so the scratch run gets fewer steps than the grown
run spends on its small model. Validation loss and accuracy are recorded
against compute.

    python examples/grow_transformer.py --quick            # < 2 min on 2 CPU cores
    python examples/grow_transformer.py --seeds 3

Outputs (in --out): results.json, results.md and loss_vs_compute.png (if
matplotlib is installed).
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_net2net as kn  # noqa: E402

VOCAB, MAXLEN = 24, 16
SMALL = dict(d=16, heads=2, ffn=32, blocks=1)
BIG = dict(d=32, heads=4, ffn=64, blocks=2)
L = keras.layers


def make_data(n, seed):
    """Token sequences; label 1 if the first half's tokens sum to more.

    A token's value is its id. Sequences whose halves tie are dropped, so
    every label is well defined.
    """
    rng = np.random.default_rng(seed)
    x = rng.integers(1, VOCAB, (2 * n, MAXLEN)).astype("int32")
    half = MAXLEN // 2
    first, second = x[:, :half].sum(1), x[:, half:].sum(1)
    keep = first != second
    x, y = x[keep][:n], (first > second)[keep][:n].astype("int32")
    return x, y


def transformer(d, heads, ffn, blocks, seed):
    """A pre-LN Transformer classifier written with the Functional API."""
    keras.utils.set_random_seed(seed)
    tokens = keras.Input((MAXLEN,), dtype="int32", name="tokens")
    positions = keras.ops.cumsum(keras.ops.ones_like(tokens), axis=1) - 1
    x = L.Embedding(VOCAB, d, name="token_embedding")(tokens)
    x = x + L.Embedding(MAXLEN, d, name="position_embedding")(positions)
    for b in range(blocks):
        h = L.LayerNormalization(name=f"ln_attn_{b}")(x)
        h = L.MultiHeadAttention(heads, d // heads, name=f"mha_{b}")(h, h)
        x = L.Add(name=f"add_attn_{b}")([x, h])
        h = L.LayerNormalization(name=f"ln_ffn_{b}")(x)
        h = L.Dense(ffn, activation="gelu", name=f"ffn_in_{b}")(h)
        h = L.Dense(d, name=f"ffn_out_{b}")(h)
        x = L.Add(name=f"add_ffn_{b}")([x, h])
    x = L.LayerNormalization(name="ln_final")(x)
    x = L.GlobalAveragePooling1D(name="pool")(x)
    return keras.Model(tokens, L.Dense(2, name="head")(x), name="transformer")


def compile_model(model, learning_rate, steps):
    """AdamW with a cosine decay of the learning rate over ``steps`` steps."""
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, steps)
    model.compile(
        keras.optimizers.AdamW(schedule, weight_decay=0.01),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def validation_loss(model, val):
    """Mean cross-entropy and accuracy of ``model`` on ``val`` (float64)."""
    x, y = val
    logits = np.asarray(keras.ops.convert_to_numpy(model(x, training=False)), "float64")
    logits = logits - logits.max(-1, keepdims=True)
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    loss = float(-np.mean(log_p[np.arange(len(y)), y]))
    return loss, float(np.mean(logits.argmax(-1) == y))


class AtGrowth(keras.callbacks.Callback):
    """Validation loss at the growth step: placed before and after GrowModel."""

    def __init__(self, val, step):
        super().__init__()
        self.val, self.step, self.loss = val, step, None
        self._seen = 0

    def on_train_batch_begin(self, batch, logs=None):
        if self._seen == self.step:
            self.loss = validation_loss(self.model, self.val)[0]
        self._seen += 1


class ComputeLog(keras.callbacks.Callback):
    """Counts compute (examples x parameters) and evaluates every ``every`` steps."""

    def __init__(self, val, batch_size, every):
        super().__init__()
        self.val, self.batch_size, self.every = val, batch_size, every
        self.compute, self.step, self.points = 0.0, 0, []

    def _evaluate(self):
        loss, accuracy = validation_loss(self.model, self.val)
        self.points.append(
            {
                "step": self.step,
                "compute": self.compute,
                "params": int(self.model.count_params()),
                "val_loss": loss,
                "val_accuracy": accuracy,
            }
        )

    def on_train_begin(self, logs=None):
        self._evaluate()

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        self.compute += self.batch_size * self.model.count_params()
        if self.step % self.every == 0:
            self._evaluate()

    def on_train_end(self, logs=None):
        if self.points[-1]["step"] != self.step:
            self._evaluate()  # the final model, at the final compute


def run_grown(args, data, val, seed):
    model = compile_model(
        transformer(seed=seed, **SMALL), args.learning_rate, args.steps
    )
    growth = [
        kn.Widen("token_embedding", BIG["d"]),
        kn.Widen("mha_0", BIG["heads"]),
        kn.Widen("ffn_in_0", BIG["ffn"]),
        kn.Deepen(after="add_ffn_0", blocks=2),
    ]
    grow = kn.GrowModel({kn.AtStep(args.grow_at): growth})
    log = ComputeLog(val, args.batch_size, args.eval_every)
    before, after = AtGrowth(val, args.grow_at), AtGrowth(val, args.grow_at)
    model.fit(
        *data,
        batch_size=args.batch_size,
        epochs=1,
        steps_per_epoch=args.steps,
        verbose=0,
        callbacks=[before, grow, after, log],
    )
    return model, log, grow, (before.loss, after.loss)


def run_scratch(args, data, val, seed, compute):
    model = transformer(seed=seed + 1000, **BIG)
    steps = max(1, int(round(compute / (args.batch_size * model.count_params()))))
    compile_model(model, args.learning_rate, steps)
    log = ComputeLog(val, args.batch_size, args.eval_every)
    model.fit(
        *data,
        batch_size=args.batch_size,
        epochs=1,
        steps_per_epoch=steps,
        verbose=0,
        callbacks=[log],
    )
    return model, log, steps


GUIDE = "docs/guides/transformers.md (results: docs/guides/results.md)"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog=f"Guide: {GUIDE}"
    )
    parser.add_argument("--quick", action="store_true", help="a short run (< 2 min)")
    parser.add_argument(
        "--steps", type=int, default=None, help="steps of the grown run"
    )
    parser.add_argument("--grow-at", type=int, default=None, help="the growth step")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--learning-rate",
        type=float,
        default=2e-3,
        help="AdamW's initial rate, cosine-decayed over each run",
    )
    parser.add_argument("--eval-every", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("grow_transformer_results"))
    args = parser.parse_args(argv)
    if args.steps is None:
        args.steps = 400 if args.quick else 3000
    if args.grow_at is None:
        args.grow_at = args.steps // 2
    if args.eval_every is None:
        args.eval_every = max(1, args.steps // 20)
    if not 0 < args.grow_at < args.steps:
        parser.error("--grow-at must lie between 0 and --steps")
    return args


def run(args):
    train_size = args.steps * args.batch_size
    runs = []
    started = time.perf_counter()
    for seed in range(args.seed, args.seed + args.seeds):
        data = make_data(train_size, seed)
        val = make_data(1000, seed + 10_000)
        grown, grown_log, grow, at_growth = run_grown(args, data, val, seed)
        scratch, scratch_log, scratch_steps = run_scratch(
            args, data, val, seed, grown_log.compute
        )
        record = grow.records[0]
        runs.append(
            {
                "seed": seed,
                "grown": grown_log.points,
                "scratch": scratch_log.points,
                "scratch_steps": scratch_steps,
                "growth": record.describe(),
                "params": [record.params_before, record.params_after],
                "val_loss_at_growth": {"before": at_growth[0], "after": at_growth[1]},
                "same_architecture": grown.count_params() == scratch.count_params(),
            }
        )
        print(
            f"seed {seed}: grown {grown_log.points[-1]['val_loss']:.4f} "
            f"(acc {grown_log.points[-1]['val_accuracy']:.3f}), scratch "
            f"{scratch_log.points[-1]['val_loss']:.4f} "
            f"(acc {scratch_log.points[-1]['val_accuracy']:.3f}) at equal compute "
            f"{grown_log.compute:.3g}",
            flush=True,
        )
    return {
        "config": {
            "quick": args.quick,
            "steps": args.steps,
            "grow_at": args.grow_at,
            "batch_size": args.batch_size,
            "learning_rate": args.learning_rate,
            "small": SMALL,
            "big": BIG,
            "seeds": list(range(args.seed, args.seed + args.seeds)),
            "backend": keras.backend.backend(),
            "keras": keras.version(),
        },
        "runs": runs,
        "total_seconds": time.perf_counter() - started,
    }


TARGET = 0.1  # validation loss


def compute_to(points, target=TARGET):
    """Compute spent when validation loss first reached ``target`` (None: never)."""
    for point in points:
        if point["val_loss"] <= target:
            return point["compute"]
    return None


def markdown(report):
    lines = [
        "| seed | grown: final val loss | scratch: final val loss | grown: acc | "
        f"scratch: acc | grown: compute to loss {TARGET} | scratch: compute to "
        f"loss {TARGET} | total compute | scratch steps |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    finals = {"grown": [], "scratch": []}

    def fmt(value):
        return "never" if value is None else f"{value:.3g}"

    for run in report["runs"]:
        g, s = run["grown"][-1], run["scratch"][-1]
        finals["grown"].append(g["val_loss"])
        finals["scratch"].append(s["val_loss"])
        lines.append(
            f"| {run['seed']} | {g['val_loss']:.4f} | {s['val_loss']:.4f} | "
            f"{g['val_accuracy']:.3f} | {s['val_accuracy']:.3f} | "
            f"{fmt(compute_to(run['grown']))} | {fmt(compute_to(run['scratch']))} | "
            f"{g['compute']:.3g} | {run['scratch_steps']} |"
        )
    if len(report["runs"]) > 1:
        grown, scratch = np.array(finals["grown"]), np.array(finals["scratch"])
        lines.append(
            f"| mean ± std | {grown.mean():.4f} ± {grown.std():.4f} | "
            f"{scratch.mean():.4f} ± {scratch.std():.4f} | | | | | | |"
        )
    return "\n".join(lines)


def write_outputs(report, out):
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(report, indent=2))
    table = markdown(report)
    (out / "results.md").write_text(
        "Validation loss at equal compute: grown (small -> big in one fit) vs the "
        "big model from scratch.\n\n" + table + "\n"
    )
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return table, None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for index, run in enumerate(report["runs"]):
        for name, style in (("grown", "-"), ("scratch", "--")):
            points = run[name]
            ax.plot(
                [p["compute"] for p in points],
                [p["val_loss"] for p in points],
                style,
                color="C0" if name == "grown" else "C1",
                alpha=0.8,
                label=name if index == 0 else None,
            )
    ax.set_xlabel("compute (examples x parameters)")
    ax.set_ylabel("validation loss")
    ax.set_title("Growing a Transformer vs training the big one from scratch")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "loss_vs_compute.png", dpi=110)
    plt.close(fig)
    return table, out / "loss_vs_compute.png"


def main(argv=None):
    args = parse_args(argv)
    print(f"Guide: {GUIDE}", file=sys.stderr)
    report = run(args)
    table, plot = write_outputs(report, args.out)
    print("\n" + table)
    for record in report["runs"]:
        at = record["val_loss_at_growth"]
        print(
            f"seed {record['seed']}: {record['growth']}\n  validation loss right "
            f"before the growth {at['before']:.6f}, right after {at['after']:.6f}"
        )
    print(
        f"\nwrote {args.out}/results.json, results.md"
        + (f", {plot.name}" if plot else "")
    )
    print(f"total wall time: {report['total_seconds']:.1f} s")
    return report


if __name__ == "__main__":
    main()
