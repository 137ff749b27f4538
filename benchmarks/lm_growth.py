"""Progressive growth of a byte-level language model against training it from scratch.

A GPT-style causal Transformer (pre-LN, written with the Functional API) learns
to predict the next byte of real English text. Every path sees the same batches
in the same order, with the same AdamW warm-up + cosine schedule over the same
number of steps (the same token budget):

* scratch:  the target architecture from a random initialisation;
* grown:    a smaller model (half the width, half the depth by default) grown
            to the target inside the same ``fit`` by ``GrowModel`` at the stage
            fractions ``--stages`` (function-preserving, AdamW state carried);
* random:   the same growth with new units and blocks random (``random-pad``
            widening, blocks copied with fresh weights and no zeroed projection:
            not function-preserving);
* restart:  the same growth, but a fresh AdamW at each growth (one ``fit`` per
            stage, the schedule continued with a new warm-up), as G_stack and
            HyperCloning train.
* stack:    depth stacking (G_stack): the target width with ``--stack-from``
            blocks (default 1), its whole stack repeated to the target depth
            at ``--stack-at`` (default 0.1) by `Stack` (``--copies``, default
            ``kept``: the trained blocks as they are), AdamW's state
            ``--stack-state`` (default ``reset``) and the rate re-warmed over
            ``--rewarm`` steps (default 150), the cosine continued: all inside
            one ``fit`` (`GrowModel`).
* stack_wsd: the same growth under the warm-up/stable/decay schedule below.
* late_stack: the same growth late (``--late-at``, default 0.6) under a
            warm-up/stable/decay schedule whose decay (the last
            ``--decay-fraction``, default 0.2) comes after it (Deep
            Progressive Training's recipe).
* scratch_wsd: the target from scratch under that WSD schedule (the fair
            baseline for late_stack).
* scratch@F: the target from scratch with ``F`` x the steps (``--frontier``),
            each with its own fully decayed cosine: the scratch frontier.

Two accountings (benchmarks/README.md): progressive (the small model's
training counted: compute and wall time from step 0) and warm start (a trained
smaller model given: only the compute after growth counted). The target loss
is the best final loss of the full-budget scratch runs (cosine, and WSD where
run); "at equal loss" reads the compute the scratch frontier needs for a
path's final loss.

Compute is training FLOPs: 6 x (matmul parameters) per token plus attention
(12 x layers x context x width per token: QK^T and AV, forward and backward, the
causal half not subtracted); examples x parameters is recorded too. Wall time is
training time only (validation excluded), growth events included. The headline:
compute and wall time each path needs to reach the scratch run's final
validation loss, as ratios to what scratch needs.

    python benchmarks/lm_growth.py --quick                       # seconds
    python benchmarks/lm_growth.py --data ../shared/data/kjv.txt.gz --seeds 0 1 2
    python benchmarks/lm_growth.py --report benchmarks/results/lm_growth.json

``--data`` is a text file (``.gz`` read as gzip). The last 10% of its lines are
the validation text (for kjv.txt.gz: Romans 3:1 to the end, the split its README
suggests). Without ``--data`` (``--quick``) the model trains on this script's
own source. Each seed writes ``lm_growth_seed<N>.json`` beside ``--out``; the
summary (``--out``) is rebuilt from every seed file of the same configuration,
so seeds can run in separate processes.
"""

import argparse
import gzip
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_net2net as kn  # noqa: E402

L = keras.layers
VOCAB = 256  # bytes
PATHS = ("scratch", "grown", "random", "restart", "stack", "stack_wsd")
PATHS += ("late_stack", "scratch_wsd")
FULL_SCRATCH = ("scratch", "scratch_wsd")  # full-budget baselines
RESULTS = Path(__file__).parent / "results"


# --- data -------------------------------------------------------------------


def load_text(path):
    """(train, validation) byte arrays: the last 10% of the lines validate."""
    if path is None:
        text = Path(__file__).read_text()
    elif str(path).endswith(".gz"):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            text = f.read()
    else:
        text = Path(path).read_text(encoding="utf-8")
    lines = text.splitlines()
    cut = int(round(len(lines) * 0.9))
    train = "\n".join(lines[:cut]) + "\n"
    val = "\n".join(lines[cut:]) + "\n"
    as_bytes = lambda s: np.frombuffer(s.encode("utf-8"), dtype=np.uint8)  # noqa: E731
    return as_bytes(train), as_bytes(val)


def batch_starts(size, context, batch_size, steps, seed):
    """The start of every training window, fixed per seed (all paths share it)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, size - context - 1, (steps, batch_size))


class Windows(keras.utils.PyDataset):
    """Batches of (x, y) byte windows; y is x shifted by one."""

    def __init__(self, data, starts, context):
        super().__init__()
        self.data, self.starts, self.context = data, starts, context
        self.offsets = np.arange(context + 1)

    def __len__(self):
        return len(self.starts)

    def __getitem__(self, index):
        rows = self.data[self.starts[index][:, None] + self.offsets].astype("int32")
        return rows[:, :-1], rows[:, 1:]


def validation_windows(val, context, count):
    """``count`` non-overlapping windows of the validation text (evenly spread)."""
    usable = (len(val) - 1) // context
    count = min(count, usable)
    picks = np.linspace(0, usable - 1, count).astype(int) * context
    rows = val[picks[:, None] + np.arange(context + 1)].astype("int32")
    return rows[:, :-1], rows[:, 1:]


def validation_loss(model, windows, batch_size=64):
    """Mean cross-entropy in nats per byte over every position of ``windows``."""
    x, y = windows
    total = 0.0
    for i in range(0, len(x), batch_size):
        logits = keras.ops.convert_to_numpy(model(x[i : i + batch_size]))
        logits = logits.astype("float64")
        logits -= logits.max(-1, keepdims=True)
        log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        picked = np.take_along_axis(log_p, y[i : i + batch_size, :, None], -1)
        total -= picked.sum()
    return float(total / y.size)


# --- model ------------------------------------------------------------------


def gpt(width, heads, ffn, layers, context, seed):
    """A pre-LN causal Transformer over bytes (GPT-2's layout, tied nothing)."""
    keras.utils.set_random_seed(seed)
    tokens = keras.Input((context,), dtype="int32", name="tokens")
    positions = keras.ops.cumsum(keras.ops.ones_like(tokens), axis=1) - 1
    x = L.Embedding(VOCAB, width, name="token_embedding")(tokens)
    x = x + L.Embedding(context, width, name="position_embedding")(positions)
    for b in range(layers):
        h = L.LayerNormalization(epsilon=1e-5, name=f"ln_attn_{b}")(x)
        h = L.MultiHeadAttention(heads, width // heads, name=f"mha_{b}")(
            h, h, use_causal_mask=True
        )
        x = L.Add(name=f"add_attn_{b}")([x, h])
        h = L.LayerNormalization(epsilon=1e-5, name=f"ln_ffn_{b}")(x)
        h = L.Dense(ffn, activation="gelu", name=f"ffn_in_{b}")(h)
        h = L.Dense(width, name=f"ffn_out_{b}")(h)
        x = L.Add(name=f"add_ffn_{b}")([x, h])
    x = L.LayerNormalization(epsilon=1e-5, name="ln_final")(x)
    return keras.Model(tokens, L.Dense(VOCAB, name="head")(x), name="byte_gpt")


def architecture(model):
    """(width, heads, ffn, layers) of a model built by `gpt` (or grown from one)."""
    blocks = [x for x in model.layers if isinstance(x, L.MultiHeadAttention)]
    ffn = [x for x in model.layers if "ffn_in" in x.name]
    width = model.get_layer("token_embedding").output_dim
    return width, blocks[0].num_heads, ffn[0].units, len(blocks)


def flops_per_token(model, context):
    """Training FLOPs per token: 6 x matmul params + 12 x layers x context x width."""
    matmul = sum(
        int(np.prod(w.shape))
        for layer in model.layers
        if isinstance(layer, (L.Dense, L.MultiHeadAttention))
        for w in layer.weights
        if len(w.shape) >= 2
    )
    width, _, _, layers = architecture(model)
    return 6 * matmul + 12 * layers * context * width


def vocabulary(arch):
    """``--target``/``--small`` in `transformer_schedule`'s words."""
    return {
        "hidden_dim": arch["width"],
        "num_heads": arch["heads"],
        "intermediate_dim": arch["ffn"],
        "num_layers": arch["layers"],
    }


def growth_schedule(model, args, seed, random=False):
    """The `GrowModel` schedule: the stage targets at the ``--at`` moments.

    Width (the stream, then each block's heads and feed-forward width) and
    depth (each block followed by copies of itself, interleaved like the
    paper's identity insertion), written by `kn.transformer_schedule`.
    ``--noise`` (relative to each kernel's standard deviation, on the copies'
    incoming weights) breaks the symmetry of copied units: under Adam, exact
    copies receive proportional gradients, so their updates are identical and
    they never diverge. ``random``: the not function-preserving baseline
    (random new units, fresh blocks without a zeroed projection).
    """
    targets = stage_targets(args.small, args.target, args.stages)
    moments = [int(round(f * args.steps)) for f in args.at]
    stages = [(kn.AtStep(m), vocabulary(t)) for m, t in zip(moments, targets)]
    return kn.transformer_schedule(
        model,
        stages,
        method="random" if random else "net2net",
        noise=0.0 if random else args.noise,
        seed=1000 * seed,
    )


def stage_targets(small, target, stages):
    """The architecture after each stage: ``width`` and/or ``depth`` stages."""
    current, out = dict(small), []
    for kind in stages:
        if kind in ("width", "both"):
            current.update(
                width=target["width"], heads=target["heads"], ffn=target["ffn"]
            )
        if kind in ("depth", "both"):
            current.update(layers=target["layers"])
        out.append(dict(current))
    if out[-1] != target:
        raise ValueError(f"--stages {stages} do not reach the target {target}")
    return out


# --- training ---------------------------------------------------------------


def wsd_schedule(args, steps):
    """Warm-up, then ``--learning-rate`` until the last ``--decay-fraction``
    of the steps, then a linear decay to 10% of it (as the cosine's floor)."""
    decay = int(round(args.decay_fraction * steps))
    return kn.WarmupStableDecay(
        args.learning_rate,
        warmup_steps=args.warmup,
        stable_steps=steps - args.warmup - decay,
        decay_steps=decay,
        final=0.1 * args.learning_rate,
    )


def lr_schedule(args, steps, offset=0):
    """Linear warm-up to ``--learning-rate`` then cosine decay to 10% of it."""
    base = keras.optimizers.schedules.CosineDecay(
        0.0,
        decay_steps=steps - args.warmup,
        alpha=0.1,
        warmup_target=args.learning_rate,
        warmup_steps=args.warmup,
    )
    return base if offset == 0 else Continued(base, offset, args.warmup)


class Continued(keras.optimizers.schedules.LearningRateSchedule):
    """``base`` from step ``offset`` on, after a fresh linear warm-up to it."""

    def __init__(self, base, offset, warmup):
        self.base, self.offset, self.warmup = base, offset, warmup

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        ramp = keras.ops.minimum(1.0, (step + 1.0) / float(max(1, self.warmup)))
        return ramp * self.base(step + float(self.offset))


def compile_model(model, lr):
    model.compile(
        # Each variable's gradient clipped to norm 1 (the learning rate was
        # tuned with this; the same on every path).
        keras.optimizers.AdamW(lr, weight_decay=0.1, beta_2=0.99, clipnorm=1.0),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


class Clock(keras.callbacks.Callback):
    """Starts the training clock when ``fit`` starts (place it first).

    The wall time then includes every callback's ``on_train_begin`` (e.g.
    `GrowModel` checking its schedule); evaluations move the clock forward by
    their own duration, so they are left out wherever they happen.
    """

    def __init__(self, state):
        super().__init__()
        self.state = state

    def on_train_begin(self, logs=None):
        self.state["clock"] = time.perf_counter()


def evaluate(model, val, state):
    """Validation loss, its time left out of the training wall time."""
    began = time.perf_counter()
    loss = validation_loss(model, val)
    elapsed = time.perf_counter() - began
    state["clock"] += elapsed
    state["eval_seconds"] += elapsed
    return loss


class Log(keras.callbacks.Callback):
    """Compute, training wall time and validation loss every ``every`` steps."""

    def __init__(self, val, args, state):
        super().__init__()
        self.val, self.args, self.state = val, args, state
        self.params_seen = None
        self.last_step = args.steps  # a frontier run's is shorter

    def _evaluate(self):
        s = self.state
        loss = evaluate(self.model, self.val, s)
        s["points"].append(
            {
                "step": s["step"],
                "flops": s["flops"],
                "examples_x_params": s["ex_params"],
                "wall": s["wall"],
                "params": int(self._model.count_params()),
                "val_loss": loss,
            }
        )

    def on_train_begin(self, logs=None):
        if not self.state["points"]:
            self._evaluate()

    def on_train_batch_begin(self, batch, logs=None):
        # After a growth event (GrowModel runs before this callback). Only
        # shapes are read: `self._model` avoids a JAX state sync every step.
        params = self._model.count_params()
        if params != self.params_seen:
            self.params_seen = params
            tokens = self.args.batch_size * self.args.context
            self.per_step = (
                tokens * flops_per_token(self._model, self.args.context),
                self.args.batch_size * params,
            )

    def on_train_batch_end(self, batch, logs=None):
        s = self.state
        now = time.perf_counter()
        s["wall"] += now - s["clock"]
        s["clock"] = now
        s["step"] += 1
        s["flops"] += self.per_step[0]
        s["ex_params"] += self.per_step[1]
        if s["step"] % self.args.eval_every == 0 or s["step"] == self.last_step:
            self._evaluate()


class AtGrowth(keras.callbacks.Callback):
    """Validation loss at each growth step (one instance before GrowModel, one after).

    Its time is left out of the training wall time.
    """

    def __init__(self, val, state, moments, key):
        super().__init__()
        self.val, self.state, self.moments, self.key = val, state, moments, key

    def on_train_batch_begin(self, batch, logs=None):
        if self.state["step"] not in self.moments:
            return
        loss = evaluate(self.model, self.val, self.state)
        at = self.state["at_growth"].setdefault(str(self.state["step"]), {})
        at[self.key] = loss
        at.update(flops=self.state["flops"], wall=self.state["wall"])


def run_path(path, args, data, starts, val, seed):
    """Train one path; returns its record (points, growth events, seconds)."""
    state = dict(points=[], step=0, flops=0, ex_params=0, wall=0.0, eval_seconds=0.0)
    state.update(at_growth={}, clock=time.perf_counter())
    clock, log = Clock(state), Log(val, args, state)
    fit = dict(epochs=1, verbose=0, shuffle=False)
    began = time.perf_counter()
    events = []
    if path in ("scratch", "scratch_wsd") or path.startswith("scratch@"):
        steps = args.steps
        if path.startswith("scratch@"):
            steps = int(round(float(path[len("scratch@") :]) * args.steps))
            starts = starts[:steps]
        model = gpt(**args.target, context=args.context, seed=seed)
        wsd = path == "scratch_wsd"
        schedule = wsd_schedule(args, steps) if wsd else lr_schedule(args, steps)
        compile_model(model, schedule)
        log.last_step = steps
        model.fit(Windows(data, starts, args.context), callbacks=[clock, log], **fit)
    elif path in ("stack", "stack_wsd", "late_stack"):
        small = dict(args.target, layers=args.stack_from)
        model = gpt(**small, context=args.context, seed=seed)
        late = path == "late_stack"
        if path == "stack":
            schedule = lr_schedule(args, args.steps)
        else:
            schedule = wsd_schedule(args, args.steps)
        compile_model(model, schedule)
        moment = int(round((args.late_at if late else args.stack_at) * args.steps))
        factor = args.target["layers"] // args.stack_from
        request = kn.Stack(factor, order=args.order, copies=args.copies)
        grow = kn.GrowModel(
            {kn.AtStep(moment): request},
            optimizer_state=args.stack_state,
            rewarm_steps=args.rewarm or None,
        )
        before = AtGrowth(val, state, [moment], "before")
        after = AtGrowth(val, state, [moment], "after")
        callbacks = [clock, before, grow, after, log]
        model.fit(Windows(data, starts, args.context), callbacks=callbacks, **fit)
        events = [r.describe() for r in grow.records]
    else:
        model = gpt(**args.small, context=args.context, seed=seed)
        compile_model(model, lr_schedule(args, args.steps))
        schedule = growth_schedule(model, args, seed, random=path == "random")
        moments = [trigger.step for trigger, _ in schedule]
        if path in ("grown", "random"):
            grow = kn.GrowModel(schedule)
            before = AtGrowth(val, state, moments, "before")
            after = AtGrowth(val, state, moments, "after")
            callbacks = [clock, before, grow, after, log]
            model.fit(Windows(data, starts, args.context), callbacks=callbacks, **fit)
            events = [r.describe() for r in grow.records]
        else:  # restart: one fit per stage, a fresh AdamW at each growth
            bounds = [0, *moments, args.steps]
            for stage in range(len(bounds) - 1):
                if stage:
                    at = state["at_growth"].setdefault(str(bounds[stage]), {})
                    at["before"] = evaluate(model, val, state)
                    # Between two fits: the growth and the new optimizer count.
                    state["clock"] = time.perf_counter()
                    requests = schedule[stage - 1][1]
                    kn.grow_in_place(model, requests)
                    lr = lr_schedule(args, args.steps, offset=bounds[stage])
                    compile_model(model, lr)
                    state["wall"] += time.perf_counter() - state["clock"]
                    at["after"] = evaluate(model, val, state)
                    events.append(f"{len(requests)} requests at step {bounds[stage]}")
                window = starts[bounds[stage] : bounds[stage + 1]]
                callbacks = [clock, log]
                model.fit(
                    Windows(data, window, args.context), callbacks=callbacks, **fit
                )
    width, heads, ffn, layers = architecture(model)
    return {
        "points": state["points"],
        "events": events,
        "val_loss_at_growth": state["at_growth"],
        "final": dict(width=width, heads=heads, ffn=ffn, layers=layers),
        "params": int(model.count_params()),
        "train_seconds": state["wall"],
        "eval_seconds": state["eval_seconds"],
        "total_seconds": time.perf_counter() - began,
    }


# --- analysis ---------------------------------------------------------------


def cost_to(points, target, key):
    """``key`` (flops/wall) when validation loss first reaches ``target``.

    Linear interpolation between the two evaluations around the crossing;
    None if never reached.
    """
    previous = None
    for point in points:
        if point["val_loss"] <= target:
            if previous is None:
                return point[key]
            a, b = previous["val_loss"], point["val_loss"]
            t = (a - target) / (a - b) if a != b else 1.0
            return previous[key] + t * (point[key] - previous[key])
        previous = point
    return None


def loss_at(points, flops):
    """Validation loss at ``flops`` (interpolated; None outside the curve)."""
    for a, b in zip(points, points[1:]):
        if a["flops"] <= flops <= b["flops"]:
            t = (flops - a["flops"]) / max(1, b["flops"] - a["flops"])
            return a["val_loss"] + t * (b["val_loss"] - a["val_loss"])
    return None


def frontier_cost(frontier, loss):
    """Compute (or wall) the scratch frontier needs to end at ``loss``.

    ``frontier``: ``(cost, final loss)`` of fully decayed scratch runs of
    several budgets. Interpolated in log cost between the two budgets whose
    final losses bracket ``loss``; None outside the frontier.
    """
    points = sorted(frontier)
    for (c0, l0), (c1, l1) in zip(points, points[1:]):
        if min(l0, l1) <= loss <= max(l0, l1) and l0 != l1:
            t = (l0 - loss) / (l0 - l1)
            return float(np.exp(np.log(c0) + t * (np.log(c1) - np.log(c0))))
    return None


def summarise_seed(record):
    """Ratios of one seed: each path's cost to the target loss / scratch's.

    The target is the best final loss of the full-budget scratch runs (its
    run is the baseline); the frontier holds every fully decayed scratch run.
    """
    paths = record["paths"]
    full = [p for p in FULL_SCRATCH if p in paths]
    baseline = min(full, key=lambda p: paths[p]["points"][-1]["val_loss"])
    scratch = paths[baseline]["points"]
    target = scratch[-1]["val_loss"]
    keys = ("flops", "wall", "examples_x_params")
    base = {k: cost_to(scratch, target, k) for k in keys}
    frontier = {
        key: [
            (run["points"][-1][key], run["points"][-1]["val_loss"])
            for name, run in paths.items()
            if name in FULL_SCRATCH or name.startswith("scratch@")
        ]
        for key in ("flops", "wall")
    }
    out = {"target_val_loss": target, "baseline": baseline}

    def ratio(value, key):
        return None if value is None or not base[key] else value / base[key]

    for path, run in paths.items():
        points = run["points"]
        final = points[-1]
        reach = {k: cost_to(points, target, k) for k in keys}
        grown = [g for g in run.get("val_loss_at_growth", {}).values() if "flops" in g]
        after = None
        if grown and reach["flops"] is not None:
            after = reach["flops"] - grown[0]["flops"]
        out[path] = {
            "final_val_loss": final["val_loss"],
            "flops": final["flops"],
            "wall": final["wall"],
            "compute_ratio_to_target": ratio(reach["flops"], "flops"),
            "wall_ratio_to_target": ratio(reach["wall"], "wall"),
            "examples_x_params_ratio_to_target": ratio(
                reach["examples_x_params"], "examples_x_params"
            ),
            # Warm start: a trained smaller model given, the compute after growth.
            "warm_start_compute_ratio": ratio(after, "flops"),
            "compute_ratio_total": final["flops"] / scratch[-1]["flops"],
            "wall_ratio_total": final["wall"] / scratch[-1]["wall"],
            "scratch_val_loss_at_equal_compute": loss_at(scratch, final["flops"]),
            # The other way round: what scratch spends to reach this path's
            # final loss, over what this path spent (< 1: scratch is cheaper).
            "scratch_compute_to_this_final_loss": _over(
                cost_to(scratch, final["val_loss"], "flops"), final["flops"]
            ),
            "scratch_wall_to_this_final_loss": _over(
                cost_to(scratch, final["val_loss"], "wall"), final["wall"]
            ),
            # This path's compute over the frontier's at its final loss (< 1:
            # cheaper than any fully decayed scratch run; None beyond it).
            "compute_ratio_at_equal_loss": _over(
                final["flops"], frontier_cost(frontier["flops"], final["val_loss"])
            ),
            "wall_ratio_at_equal_loss": _over(
                final["wall"], frontier_cost(frontier["wall"], final["val_loss"])
            ),
        }
    return out


def _over(value, total):
    return None if value is None or not total else value / total


def stats(values):
    known = [v for v in values if v is not None]
    if not known:
        return {"mean": None, "std": None, "per_seed": values}
    return {
        "mean": float(np.mean(known)),
        "std": float(np.std(known, ddof=1)) if len(known) > 1 else 0.0,
        "per_seed": values,
        "reached": f"{len(known)}/{len(values)}",
    }


SUMMARY_KEYS = (
    "compute_ratio_to_target",
    "wall_ratio_to_target",
    "examples_x_params_ratio_to_target",
    "warm_start_compute_ratio",
    "compute_ratio_total",
    "wall_ratio_total",
    "final_val_loss",
    "scratch_val_loss_at_equal_compute",
    "scratch_compute_to_this_final_loss",
    "scratch_wall_to_this_final_loss",
    "compute_ratio_at_equal_loss",
    "wall_ratio_at_equal_loss",
)


def path_order(name):
    """Paths in PATHS order, then the frontier by budget."""
    if name in PATHS:
        return (0, PATHS.index(name), 0.0)
    return (1, 0, float(name.split("@")[1]))


def combine(records):
    """The summary over seeds (the recommended recipe's ratios at the top)."""
    records = sorted(records, key=lambda r: r["seed"])
    per_seed = [summarise_seed(r) for r in records]
    names = set.intersection(*(set(r["paths"]) for r in records))
    paths = sorted(names, key=path_order)
    summary = {
        path: {key: stats([s[path][key] for s in per_seed]) for key in SUMMARY_KEYS}
        for path in paths
    }
    recipe = records[0]["config"].get("recipe", "grown")
    main_path = summary.get(recipe, {})
    return {
        "seeds": [r["seed"] for r in records],
        "quick": records[0]["config"]["quick"],
        "recipe": recipe if recipe in summary else None,
        "progressive": {
            "compute_ratio": main_path.get("compute_ratio_to_target"),
            "wall_ratio": main_path.get("wall_ratio_to_target"),
            "compute_ratio_at_equal_loss": main_path.get("compute_ratio_at_equal_loss"),
        },
        "warm_start": {"compute_ratio": main_path.get("warm_start_compute_ratio")},
        "config": records[0]["config"],
        "environment": records[0]["environment"],
        "compute_ratio_to_target": main_path.get("compute_ratio_to_target"),
        "wall_ratio_to_target": main_path.get("wall_ratio_to_target"),
        "paths": summary,
        "per_seed": per_seed,
        "runs": records,
    }


def fmt(s, digits=3, missing="never"):
    """``mean ± std`` (sample std over seeds), with how many seeds had a value."""
    if s["mean"] is None:
        return missing
    text = f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}"
    count = sum(v is not None for v in s["per_seed"])
    if count < len(s["per_seed"]):
        text += f" ({count}/{len(s['per_seed'])} seeds; else never)"
    return text


def markdown(report):
    lines = [
        "| path | compute to the target loss (x scratch) | wall time to it "
        "(x scratch) | warm start: compute after growth to it (x scratch) | "
        "total compute / wall (x scratch) | final val loss (nats/byte) | "
        "compute at equal loss (x the scratch frontier's) |",
        "|---|---|---|---|---|---|---|",
    ]
    for path, s in report["paths"].items():
        total = (
            f"{s['compute_ratio_total']['mean']:.3f} / "
            f"{s['wall_ratio_total']['mean']:.3f}"
        )
        lines.append(
            f"| {path} | {fmt(s['compute_ratio_to_target'])} | "
            f"{fmt(s['wall_ratio_to_target'])} | "
            f"{fmt(s['warm_start_compute_ratio'], 3, 'n/a')} | {total} | "
            f"{fmt(s['final_val_loss'], 4)} | "
            f"{fmt(s['compute_ratio_at_equal_loss'], 3, 'outside')} |"
        )
    seeds = ", ".join(str(s) for s in report["seeds"])
    baselines = sorted({s["baseline"] for s in report["per_seed"]})
    lines.append(
        f"\nSeeds {seeds}; mean ± sample std over seeds. Target: the best final "
        f"loss of the full-budget scratch runs ({', '.join(baselines)}). "
        f"Recommended recipe: {report.get('recipe')}."
    )
    return "\n".join(lines)


def plot(report, out):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    colours = dict(scratch="black", grown="tab:blue", random="tab:red")
    colours.update(restart="tab:green", stack="tab:purple", late_stack="tab:orange")
    colours["stack_wsd"] = "tab:pink"
    colours["scratch_wsd"] = "tab:grey"
    for run in report["runs"]:
        for path, record in run["paths"].items():
            pts = record["points"][1:]
            label = path if run["seed"] == report["seeds"][0] else None
            for ax, key, scale in ((axes[0], "flops", 1e15), (axes[1], "wall", 60)):
                ax.plot(
                    [p[key] / scale for p in pts],
                    [p["val_loss"] for p in pts],
                    color=colours.get(path, "silver"),
                    alpha=0.8,
                    lw=1,
                    label=label,
                )
    target = np.mean([s["target_val_loss"] for s in report["per_seed"]])
    for ax, name in ((axes[0], "training PFLOPs"), (axes[1], "training minutes")):
        ax.axhline(target, color="grey", ls=":", lw=1)
        ax.set_xlabel(name)
        ax.set_ylabel("validation loss (nats/byte)")
        ax.set_ylim(top=min(3.0, ax.get_ylim()[1]))
        ax.legend()
    fig.suptitle("Byte-level LM: grown vs scratch (silver: the scratch frontier)")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


# --- command line -----------------------------------------------------------


def parse_arch(text):
    keys = ("width", "heads", "ffn", "layers")
    values = [int(v) for v in text.split(",")]
    if len(values) != 4 or min(values) < 1:
        raise argparse.ArgumentTypeError(
            f"expected width,heads,ffn,layers (four positive integers); got {text!r}"
        )
    return dict(zip(keys, values))


GUIDE = "docs/guides/growing-during-fit.md (results: benchmarks/README.md)"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog=f"Guide: {GUIDE}"
    )
    parser.add_argument("--quick", action="store_true", help="a run of seconds")
    parser.add_argument("--data", type=Path, default=None, help="a text file (.gz ok)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument(
        "--out", type=Path, default=None, help="summary JSON (default results/)"
    )
    parser.add_argument(
        "--report", type=Path, default=None, help="print the tables of a summary JSON"
    )
    parser.add_argument(
        "--summarise",
        action="store_true",
        help="only rebuild --out from the seed files of this configuration",
    )
    parser.add_argument("--paths", nargs="+", choices=PATHS, default=list(PATHS))
    parser.add_argument("--target", type=parse_arch, default=None)
    parser.add_argument("--small", type=parse_arch, default=None)
    parser.add_argument(
        "--stages",
        nargs="+",
        choices=("width", "depth", "both"),
        default=None,
        help="what each growth event does (default: both)",
    )
    parser.add_argument(
        "--at", type=float, nargs="+", default=None, help="stage fractions of --steps"
    )
    parser.add_argument("--context", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument(
        "--learning-rate",
        type=float,
        default=4e-3,
        help="AdamW's peak rate (4e-3: the best of 1e-3, 2e-3, 4e-3 for scratch)",
    )
    parser.add_argument(
        "--noise",
        type=float,
        default=None,
        help="symmetry-breaking noise of the widened copies (default 0.05; 0: exact)",
    )
    parser.add_argument(
        "--frontier",
        type=float,
        nargs="*",
        default=None,
        help="budgets (fractions of --steps) of the scratch frontier's extra runs",
    )
    parser.add_argument(
        "--stack-from", type=int, default=1, help="blocks of the stacked paths' start"
    )
    parser.add_argument("--stack-at", type=float, default=0.1, help="stack's growth")
    parser.add_argument(
        "--late-at", type=float, default=0.6, help="late_stack's growth"
    )
    parser.add_argument(
        "--decay-fraction",
        type=float,
        default=0.2,
        help="the WSD schedule's decay: this last fraction of the steps",
    )
    parser.add_argument("--order", choices=("stack", "interleave"), default="stack")
    parser.add_argument("--copies", choices=("kept", "zeroed"), default="kept")
    parser.add_argument(
        "--stack-state", choices=("carry", "reset_new", "reset"), default="reset"
    )
    parser.add_argument(
        "--rewarm", type=int, default=None, help="re-warm steps (0: none)"
    )
    parser.add_argument(
        "--recipe", choices=PATHS, default="stack", help="the recommended path"
    )
    parser.add_argument("--eval-every", type=int, default=None)
    parser.add_argument("--val-windows", type=int, default=None)
    args = parser.parse_args(argv)
    quick = args.quick
    args.target = args.target or parse_arch("32,2,64,2" if quick else "128,4,512,4")
    args.small = args.small or parse_arch("16,1,32,1" if quick else "64,2,256,2")
    args.context = args.context or (32 if quick else 128)
    args.steps = args.steps or (24 if quick else 3000)
    args.warmup = args.warmup if args.warmup is not None else args.steps // 20
    args.stages = args.stages or ["both"]
    args.at = args.at or ([0.5] if quick else [0.25])
    args.eval_every = args.eval_every or (8 if quick else 100)
    args.noise = 0.05 if args.noise is None else args.noise
    args.val_windows = args.val_windows or (8 if quick else 256)
    args.frontier = sorted(
        args.frontier if args.frontier is not None else ([0.5] if quick else [])
    )
    args.rewarm = args.rewarm if args.rewarm is not None else (2 if quick else 150)
    if any(not 0 < f < 1 for f in args.frontier):
        parser.error(f"--frontier budgets must be in (0, 1); got {args.frontier}")
    if args.target["layers"] % args.stack_from:
        parser.error(
            f"--stack-from {args.stack_from} must divide the target's "
            f"{args.target['layers']} blocks (Stack grows by a whole factor)"
        )
    for name in ("stack_at", "late_at", "decay_fraction"):
        if not 0 < getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be in (0, 1)")
    if args.quick:
        args.batch_size = min(args.batch_size, 8)
    if len(args.at) != len(args.stages):
        parser.error("--at needs one fraction per --stages entry")
    if any(not 0 < a < 1 for a in args.at) or args.at != sorted(args.at):
        parser.error(f"--at must be increasing fractions in (0, 1); got {args.at}")
    moments = [int(round(a * args.steps)) for a in args.at]
    if moments[0] < 1 or moments[-1] >= args.steps or len(set(moments)) < len(moments):
        parser.error(
            f"--at {args.at} of --steps {args.steps} gives growth steps {moments}; "
            "they must be distinct and within 1..steps-1"
        )
    for name in ("small", "target"):
        arch = getattr(args, name)
        if arch["width"] % arch["heads"]:
            parser.error(f"--{name}: width must be a multiple of heads; got {arch}")
    head = args.target["width"] // args.target["heads"]
    if args.small["width"] // args.small["heads"] != head:
        parser.error(
            "--small and --target must have the same head size (width / heads): "
            "growth adds heads of the same size"
        )
    if args.out is None:
        args.out = RESULTS / ("lm_growth_quick.json" if quick else "lm_growth.json")
    return args


def environment():
    import platform

    return {
        "backend": keras.backend.backend(),
        "keras": keras.version(),
        "python": platform.python_version(),
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d"),
    }


def config_of(args):
    keys = ("quick", "target", "small", "stages", "at", "context", "batch_size")
    keys += ("steps", "warmup", "learning_rate", "eval_every", "val_windows", "noise")
    keys += ("stack_from", "stack_at", "late_at", "decay_fraction", "order")
    keys += ("copies", "stack_state", "rewarm", "recipe")
    config = {k: getattr(args, k) for k in keys}
    config["data"] = None if args.data is None else args.data.name
    return config


def seed_files(out):
    return sorted(out.parent.glob(f"{out.stem}_seed*.json"))


def warm_up(args, train, val):
    """A few untimed steps first, so no path pays the process's start-up costs."""
    model = gpt(**args.small, context=args.context, seed=0)
    compile_model(model, 1e-4)
    starts = batch_starts(len(train), args.context, args.batch_size, 3, seed=-1 % 997)
    model.fit(Windows(train, starts, args.context), epochs=1, verbose=0)
    validation_loss(model, (val[0][:2], val[1][:2]))


def main(argv=None):
    args = parse_args(argv)
    if args.report is not None:
        report = json.loads(args.report.read_text())
        print(markdown(report))
        return 0
    if args.data is None and not args.quick:
        print(
            "a full run needs --data (e.g. ../shared/data/kjv.txt.gz)", file=sys.stderr
        )
        return 2
    train, val_text = load_text(args.data)
    val = validation_windows(val_text, args.context, args.val_windows)
    config = config_of(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if not args.summarise:
        warm_up(args, train, val)
    for seed in [] if args.summarise else args.seeds:
        starts = batch_starts(
            len(train), args.context, args.batch_size, args.steps, seed
        )
        seed_path = args.out.parent / f"{args.out.stem}_seed{seed}.json"
        record = {"seed": seed, "config": config, "environment": environment()}
        record["paths"] = {}
        if seed_path.exists():  # keep the other paths of the same configuration
            earlier = json.loads(seed_path.read_text())
            if earlier["config"] == config:
                record["paths"] = earlier["paths"]
        frontier = [f"scratch@{f:g}" for f in args.frontier]
        for path in [*args.paths, *frontier]:
            run = run_path(path, args, train, starts, val, seed)
            record["paths"][path] = run
            seed_path.write_text(json.dumps(record, indent=1))
            print(
                f"seed {seed} {path}: final val loss "
                f"{run['points'][-1]['val_loss']:.4f} nats/byte, "
                f"{run['points'][-1]['flops'] / 1e12:.1f} TFLOPs, "
                f"{run['train_seconds']:.0f} s training",
                flush=True,
            )
    records = [json.loads(p.read_text()) for p in seed_files(args.out)]
    records = [r for r in records if r["config"] == config and "scratch" in r["paths"]]
    if not records:
        print("no seed has a scratch run to compare with", file=sys.stderr)
        return 1
    report = combine(records)
    args.out.write_text(json.dumps(report, indent=1))
    picture = plot(report, args.out.with_suffix(".png"))
    print(markdown(report))
    print(f"\nwrote {args.out}" + (f" and {picture}" if picture else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
