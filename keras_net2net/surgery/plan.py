"""Plan -> check -> apply: how widen and deepen requests become a new model.

Planning reads the model's graph and decides every change (new widths,
initializers, inserted layers) without touching the model; all validation
happens while planning. Applying builds the new model: changed layers are
rebuilt from their config with `Net2WiderInit` initializers, inserted layers
are built with identity initializers, and every other layer is either cloned
with its weights (``reuse_layers=False``: the input model stays independent)
or reused as is (``reuse_layers=True``: used by in-place growth).
"""

import dataclasses

import keras
import numpy as np

from keras_net2net.surgery import handlers as H
from keras_net2net.surgery.graph import LayerGraph
from keras_net2net.transforms import padding_mapping
from keras_net2net.transforms import random_mapping


@dataclasses.dataclass
class Plan:
    """Every change of one growth operation.

    Attributes:
        description: one line saying what the operation does.
        changes: layer name -> `LayerChange` for layers that are rebuilt.
        insertions: layer name -> list of new layers to call after it.
    """

    description: str
    changes: dict = dataclasses.field(default_factory=dict)
    insertions: dict = dataclasses.field(default_factory=dict)


def _seed_stream(seed):
    rng = np.random.default_rng(seed)
    while True:
        yield int(rng.integers(0, 2**31 - 1))


def _check_choice(value, choices, argument):
    if value not in choices:
        raise ValueError(
            f"`{argument}` must be one of {choices}. Received: {argument}={value!r}"
        )


def plan_widen(model, layer, units, *, method=H.NET2WIDER, noise=0.0, seed=None):
    """Plan `widen` (see there); raises before anything is built."""
    _check_choice(method, H.WIDEN_METHODS, "method")
    if not isinstance(noise, (int, float)) or noise < 0:
        raise ValueError(f"`noise` must be a number >= 0. Received: noise={noise!r}")
    graph = LayerGraph(model)
    target = graph.get(layer)
    handler = H.get_handler(target)
    if not isinstance(handler, H.UnitsHandler):
        raise H.unsupported(
            target, "cannot be widened: only Dense and Conv1D/2D/3D layers can."
        )
    handler.check(target)
    if graph.calls(target) > 1:
        raise H.unsupported(
            target,
            "is shared (called more than once); shared layers cannot be widened.",
        )
    old_width = handler.width(target)
    if (
        isinstance(units, bool)
        or not isinstance(units, (int, np.integer))
        or units <= old_width
    ):
        raise ValueError(
            f"`units` for layer '{target.name}' must be an integer larger than "
            f"its current width {old_width}. Received: units={units!r}"
        )
    seeds = _seed_stream(seed)
    if method == H.NET2WIDER:
        mapping = random_mapping(old_width, int(units), seed=next(seeds))
    else:
        mapping = padding_mapping(old_width, int(units))
    options = H.WidenOptions(method=method, noise=float(noise))
    plan = Plan(f"widen '{target.name}' {old_width} -> {int(units)} ({method})")
    plan.changes[target.name] = handler.widen_out(target, mapping, options, seeds)
    _plan_consumers(graph, target, mapping, options, seeds, plan)
    return plan


def _plan_consumers(graph, source, mapping, options, seeds, plan):
    """Walk from ``source`` to every layer that consumes its channels."""
    pending = [(source, mapping)]
    while pending:
        layer, mapping = pending.pop()
        if graph.is_output(layer):
            raise H.unsupported(
                layer,
                "is a model output, so widening "
                f"'{source.name}' would change the model's output shape. "
                "Widen a layer whose units are consumed by a Dense or Conv layer.",
            )
        consumers = graph.consumers(layer)
        if not consumers:
            raise H.unsupported(
                layer,
                "has no consumer layer that could absorb "
                f"the new units of '{source.name}'.",
            )
        for consumer in consumers:
            if consumer.name in plan.changes:
                raise H.unsupported(
                    consumer,
                    "is reached twice from "
                    f"'{source.name}'; merging paths are not supported.",
                )
            handler = H.get_handler(consumer)
            if handler is None:
                raise H.unsupported(
                    consumer,
                    f"consumes the output of '{source.name}', but "
                    f"{type(consumer).__name__} layers are not supported by "
                    "keras-net2net; register a handler with "
                    "keras_net2net.surgery.register_handler.",
                )
            handler.check(consumer)
            if graph.calls(consumer) > 1:
                raise H.unsupported(
                    consumer,
                    "is shared (called more than once) "
                    f"and consumes the output of '{source.name}'.",
                )
            if isinstance(handler, H.UnitsHandler):
                plan.changes[consumer.name] = handler.widen_in(
                    consumer, mapping, options, seeds
                )
                continue
            new_mapping, change = handler.propagate(
                consumer, mapping, graph.input_shape(consumer), options, seeds
            )
            if change is not None:
                plan.changes[consumer.name] = change
            pending.append((consumer, new_mapping))


def _unique_name(base, taken):
    name, counter = base, 1
    while name in taken:
        name = f"{base}_{counter}"
        counter += 1
    taken.add(name)
    return name


def plan_deepen(
    model, after, *, method=H.IDENTITY, kernel_size=None, seed=None, name=None
):
    """Plan `deepen` (see there); raises before anything is changed."""
    _check_choice(method, H.DEEPEN_METHODS, "method")
    graph = LayerGraph(model)
    target = graph.get(after, argument="after")
    handler = H.get_handler(target)
    if not isinstance(handler, H.UnitsHandler):
        raise H.unsupported(
            target,
            "cannot be followed by an identity layer: "
            "deepen() inserts after Dense and Conv1D/2D/3D layers.",
        )
    handler.check(target)
    if graph.calls(target) > 1:
        raise H.unsupported(
            target, "is shared (called more than once); cannot insert a layer after it."
        )
    taken = graph.names()
    if name is not None and name in taken:
        raise ValueError(
            f"`name`: model '{model.name}' already has a layer named '{name}'."
        )
    new_name = _unique_name(name or f"{target.name}_deeper", taken)
    new_layer = handler.deeper_layer(
        target, new_name, method=method, kernel_size=kernel_size, seed=seed
    )
    plan = Plan(
        f"deepen after '{target.name}': insert '{new_name}' "
        f"({type(new_layer).__name__}, {method})"
    )
    plan.insertions[target.name] = [new_layer]
    return plan


# --------------------------------------------------------------------------
# Apply.


def _rebuild_layer(layer, change):
    config = layer.get_config()
    config.update(change.config)
    for variable, initializer in change.initializers.items():
        config[f"{variable}_initializer"] = initializer
    return type(layer).from_config(config)


def _clone_layer(layer):
    return type(layer).from_config(layer.get_config())


def apply_plan(model, plan, *, reuse_layers=False):
    """Build the model that ``plan`` describes.

    Args:
        model: the Sequential or Functional model the plan was made for.
        plan: a `Plan`.
        reuse_layers: reuse unchanged layers (sharing their variables) instead
            of cloning them. Defaults to False.

    Returns:
        ``(new_model, pairs)`` where ``pairs`` maps each new layer to the old
        layer it derives from (None for inserted layers).
    """
    pairs = {}

    def clone_function(layer):
        if layer.name in plan.changes:
            new = _rebuild_layer(layer, plan.changes[layer.name])
        elif reuse_layers:
            new = layer
        else:
            new = _clone_layer(layer)
        pairs[id(new)] = (new, layer)
        return new

    def call_function(layer, *args, **kwargs):
        output = layer(*args, **kwargs)
        for inserted in plan.insertions.get(layer.name, []):
            pairs[id(inserted)] = (inserted, None)
            output = inserted(output)
        return output

    if isinstance(model, keras.Sequential):
        layers = []
        for layer in model.layers:
            layers.append(clone_function(layer))
            for inserted in plan.insertions.get(layer.name, []):
                pairs[id(inserted)] = (inserted, None)
                layers.append(inserted)
        source = model.inputs[0]
        if reuse_layers:
            inputs = source  # keep the model's own InputLayer
        else:
            inputs = keras.Input(batch_shape=source.shape, dtype=source.dtype)
        new_model = keras.Sequential(
            [inputs] + layers, name=model.name, trainable=model.trainable
        )
        if model.compiled and not reuse_layers:
            new_model.compile_from_config(model.get_compile_config())
    else:
        new_model = keras.models.clone_model(
            model, clone_function=clone_function, call_function=call_function
        )
    _copy_kept_weights(pairs.values(), plan)
    return new_model, {id(new): old for new, old in pairs.values()}


def _copy_kept_weights(pairs, plan):
    """Copy the weights that the plan does not transform from old layers."""
    for new, old in pairs:
        if old is None or new is old:
            continue
        change = plan.changes.get(old.name)
        if change is None:
            new.set_weights(old.get_weights())
            continue
        old_by_name = {v.name: v for v in old.weights}
        for variable in new.weights:
            if variable.name not in change.initializers:
                variable.assign(old_by_name[variable.name])
