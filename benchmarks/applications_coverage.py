"""How much of keras.applications can keras-net2net grow, exactly?

Builds ResNet50, MobileNetV2, DenseNet121, EfficientNetB0 and ConvNeXtTiny
(``weights=None``, ``classifier_activation=None``, 64x64 inputs) with random,
non-trivial weights (kernels, biases, BatchNormalization statistics,
LayerNormalization and LayerScale parameters), then tries

* to widen every Conv/Dense layer (so every coupling group) by about 25%
  (rounded up to a multiple of the width where a LayerNormalization in the
  group needs equal copies), and
* to deepen after every Conv/Dense layer (``deepen`` inserts an identity
  layer, or on its own a zero-initialised residual branch where the layer's
  activation is not ReLU/linear) and after every residual Add (a zero copy
  of the block),

and prints one table per model: tried, exact (max |diff| / max |output| <=
1e-5 in float32), refused (with the reason), errors (anything else, which
would be a bug). Writes the tables as JSON.

    python benchmarks/applications_coverage.py [--quick] [--out coverage.json]
    python benchmarks/applications_coverage.py --more --size 96 --sample 24

``--quick`` checks a sample of the layers of a small MobileNetV2 (seconds).
"""

import argparse
import collections
import json
import math
import os
import platform
import re
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_net2net as kn  # noqa: E402

TOLERANCE = 1e-5
A = keras.applications
COMMON = dict(weights=None, classifier_activation=None)
MODELS = {
    "ResNet50": lambda shape: A.ResNet50(input_shape=shape, **COMMON),
    "MobileNetV2": lambda shape: A.MobileNetV2(input_shape=shape, **COMMON),
    "DenseNet121": lambda shape: A.DenseNet121(input_shape=shape, **COMMON),
    "EfficientNetB0": lambda shape: A.EfficientNetB0(input_shape=shape, **COMMON),
    "ConvNeXtTiny": lambda shape: A.ConvNeXtTiny(input_shape=shape, **COMMON),
}
# Nine more, outside the sweep above (issue: the models Keras users write).
MORE = {
    "VGG16": lambda shape: A.VGG16(input_shape=shape, **COMMON),
    "Xception": lambda shape: A.Xception(input_shape=shape, **COMMON),
    "InceptionV3": lambda shape: A.InceptionV3(input_shape=shape, **COMMON),
    "InceptionResNetV2": lambda shape: A.InceptionResNetV2(input_shape=shape, **COMMON),
    "NASNetMobile": lambda shape: A.NASNetMobile(input_shape=shape, **COMMON),
    "MobileNetV3Small": lambda shape: A.MobileNetV3Small(input_shape=shape, **COMMON),
    "MobileNetV3Large": lambda shape: A.MobileNetV3Large(input_shape=shape, **COMMON),
    "EfficientNetV2B0": lambda shape: A.EfficientNetV2B0(input_shape=shape, **COMMON),
    "ResNet50V2": lambda shape: A.ResNet50V2(input_shape=shape, **COMMON),
}
QUICK = {
    "MobileNetV2 (alpha 0.35)": lambda shape: A.MobileNetV2(
        input_shape=shape, alpha=0.35, **COMMON
    ),
}
WIDENABLE = (
    keras.layers.Dense,
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
    keras.layers.DepthwiseConv2D,
    keras.layers.SeparableConv2D,
)


def randomize(model, seed=0):
    """Random, non-trivial values for every variable (output scale kept sane)."""
    rng = np.random.default_rng(seed)
    for layer in model._flatten_layers(include_self=False, recursive=True):
        depthwise = isinstance(layer, keras.layers.DepthwiseConv2D)
        for variable in layer._trainable_variables + layer._non_trainable_variables:
            shape = tuple(variable.shape)
            name = variable.path.split("/")[-1]
            if isinstance(layer, keras.layers.Normalization):
                continue  # input preprocessing statistics stay as built
            if "variance" in name:
                value = rng.uniform(0.5, 2.0, shape)
            elif name in ("gamma", "scale") or "moving_mean" in name:
                value = (
                    rng.uniform(0.5, 1.5, shape)
                    if name != "moving_mean"
                    else (rng.normal(0.0, 0.1, shape))
                )
            elif len(shape) >= 2:
                fan_in = np.prod(shape[:-2]) * (1 if depthwise else shape[-2])
                value = rng.normal(0.0, 1.0 / np.sqrt(max(fan_in, 1)), shape)
            else:
                value = rng.normal(0.0, 0.1, shape)
            variable.assign(value.astype(variable.dtype))
    return model


def candidates(model, widenable=WIDENABLE):
    """``(kind, name)`` of every operation to try, in graph order.

    Layers that write a model output are left out: widening one would change
    the model's output shape (refused by design), and the issue's measure is
    the non-output attempts.
    """
    # Layers inside subclassed layers too: growth traces those (trace_layers).
    graph = kn.surgery.LayerGraph(kn.trace_layers(model))
    output_layers = {id(graph.producer(key).op) for key in graph.outputs}
    found = []
    for op in graph.layers:
        if id(op) in output_layers:
            continue
        if isinstance(op, widenable):
            found.append(("widen", op))
            found.append(("deepen", op))
        elif kn.surgery.handlers.merging.is_residual_add(op) and all(
            len(node.inputs) == 2 for node in graph.calls(op)
        ):  # an Add of two tensors (not of a tensor and a constant)
            found.append(("deepen", op))
    return found


def new_width(model, op, multiples=True):
    """About 25% wider: a multiple of the old width where a layer needs equal
    copies (``multiples=False``: 25% there too), of the block size where
    layers copy whole blocks (heads, groups); a Dense split into positions x
    channels by a Reshape grows its channels."""
    group = kn.coupled_layers(model, op)
    width = group.width
    if group.uniform and multiples:
        return 2 * width
    block = math.lcm(*[rule.block for _, rule, _ in group.rules], 1)
    wider = width + max(1, round(0.25 * width))
    wider = -(-wider // block) * block
    if group.splits and getattr(op, "units", width) != width:
        # A Dense whose units a Reshape splits into positions x channels:
        # its units grow with the channels at every position.
        return wider * (op.units // width)
    return wider


def reason(error):
    """A short, stable reason for a refusal (layer names removed)."""
    text = str(error).split(". ")[0]
    text = re.sub(r"'[^']*'", "'…'", text)
    return re.sub(r"\d+", "N", text)[:140]


def check(name, builder, shape, sample=None, seed=0, only=None):
    model = randomize(builder(shape), seed)
    x = np.random.default_rng(seed).normal(size=(2,) + shape).astype("float32")
    return sweep(name, model, x, sample=sample, seed=seed, only=only)


def outputs(model, x):
    """The model's outputs on ``x`` as one flat numpy array."""
    out = keras.tree.flatten(model(x, training=False))
    return np.concatenate([keras.ops.convert_to_numpy(o).reshape(-1) for o in out])


def sweep(
    name,
    model,
    x,
    sample=None,
    seed=0,
    widenable=WIDENABLE,
    only=None,
    width=None,
    found=None,
):
    """Try every candidate growth of ``model`` (see `candidates`) on inputs ``x``.

    ``only`` ("widen" or "deepen") keeps the attempts of that kind only;
    ``width(model, op)`` gives the new width (default `new_width`);
    ``found`` lists the attempts (default `candidates`).

    Returns the row of the tables: tried, exact, refused (by reason), errors
    (anything else, a bug) and not exact (a bug).
    """
    reference = outputs(model, x)
    scale = float(np.max(np.abs(reference)))
    tried = candidates(model, widenable) if found is None else found
    width = width or new_width
    if only is not None:
        tried = [(k, op) for k, op in tried if k == only]
    if sample:
        step = max(1, len(tried) // sample)
        tried = tried[::step][:sample]
    row = {
        "model": name,
        "params": model.count_params(),
        "tried": 0,
        "exact": 0,
        "exact_residual": 0,
        "refused": collections.Counter(),
        "errors": [],
        "not_exact": [],
        "worst": 0.0,
    }
    started = time.perf_counter()
    for kind, op in tried:
        row["tried"] += 1
        residual = False
        try:
            if kind == "widen":
                grown = kn.widen(model, op, width(model, op), seed=seed)
            else:
                # deepen picks a zero residual branch on its own where an
                # identity layer would not be exact (counted apart).
                grown = kn.deepen(model, after=op)
                residual = _new_residual_branch(model, grown)
        except ValueError as error:
            row["refused"][f"{kind}: {reason(error)}"] += 1
            continue
        except Exception as error:  # noqa: BLE001 - recorded as a bug
            row["errors"].append(f"{kind} {op.name}: {type(error).__name__}: {error}")
            continue
        if grown.count_params() <= model.count_params():
            row["errors"].append(f"{kind} {op.name}: nothing was grown")
            continue
        out = outputs(grown, x)
        relative = float(np.max(np.abs(out - reference))) / scale
        row["worst"] = max(row["worst"], relative)
        if relative <= TOLERANCE:
            row["exact"] += 1
            row["exact_residual"] += residual
        else:
            row["not_exact"].append(f"{kind} {op.name}: {relative:.2e}")
    row["seconds"] = round(time.perf_counter() - started, 1)
    row["refused"] = dict(row["refused"])
    return row


def _new_residual_branch(model, grown):
    before = {layer.name for layer in _all_layers(model)}
    return any(
        layer.name.endswith("_residual_add") and layer.name not in before
        for layer in _all_layers(grown)
    )


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


def table(rows):
    lines = [
        "| model | params | tried | exact (of which residual branches) | refused | "
        "errors | worst rel. diff |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        refused = sum(r["refused"].values())
        lines.append(
            f"| {r['model']} | {r['params']:,} | {r['tried']} | {r['exact']} "
            f"({r['exact_residual']}) | {refused} | "
            f"{len(r['errors']) + len(r['not_exact'])} | {r['worst']:.1e} |"
        )
    lines.append("")
    for r in rows:
        for why, count in sorted(r["refused"].items()):
            lines.append(f"- {r['model']}: {count} x {why}")
        for error in r["errors"] + r["not_exact"]:
            lines.append(f"- {r['model']}: ERROR {error}")
    return "\n".join(lines)


GUIDE = "docs/guides/coupling-groups.md (results: docs/guides/results.md)"


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog=f"Guide: {GUIDE}"
    )
    parser.add_argument("--quick", action="store_true", help="a small sample only")
    parser.add_argument("--size", type=int, default=64, help="input height/width")
    parser.add_argument("--out", default=None, help="JSON file for the results")
    parser.add_argument("--models", nargs="*", default=None, help="subset of models")
    parser.add_argument(
        "--more",
        action="store_true",
        help="the nine other keras.applications models (VGG16, Xception, ...)",
    )
    parser.add_argument(
        "--sample", type=int, default=None, help="try N attempts per model, evenly"
    )
    parser.add_argument(
        "--kind", choices=["widen", "deepen"], default=None, help="one kind only"
    )
    args = parser.parse_args(argv)
    print(f"Guide: {GUIDE}", file=sys.stderr)
    models = QUICK if args.quick else (MORE if args.more else MODELS)
    if args.models:
        models = {k: v for k, v in models.items() if k in args.models}
    shape = (32, 32, 3) if args.quick else (args.size, args.size, 3)
    sample = 12 if args.quick else args.sample
    rows = []
    for name, builder in models.items():
        rows.append(check(name, builder, shape, sample=sample, only=args.kind))
        print(f"{name}: {rows[-1]['exact']}/{rows[-1]['tried']} exact", flush=True)
    print(table(rows))
    meta = {
        "keras": keras.version(),
        "backend": keras.backend.backend(),
        "python": platform.python_version(),
        "machine": platform.processor() or platform.machine(),
        "input_shape": shape,
        "tolerance": TOLERANCE,
        "sample": sample,
        "kind": args.kind,
    }
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=2)
    failures = sum(len(r["errors"]) + len(r["not_exact"]) for r in rows)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
