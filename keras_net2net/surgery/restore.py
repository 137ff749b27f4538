"""A traced subclassed layer given back its class after a growth.

Growing inside a subclassed layer (keras.io's ``TokenAndPositionEmbedding``
widened, a ``TransformerBlock``'s feed-forward width) traces it into a
Functional model of its sublayers (`keras_net2net.surgery.inline`). Where the
growth only changed sizes its constructor takes, the grown model can hold the
user's class again: `restore_classes` rebuilds each traced layer from its
config with the changed sizes (a config entry equal to an old size takes the
new one), gives the new instance the grown weights, and keeps it only if it
computes what the traced graph computes (checked on a random input). A class
whose config does not round-trip (an ``__init__`` without ``**kwargs``) is
not rebuilt: the traced form stays, which saves and loads without it.
"""

import itertools

import keras
import numpy as np

from keras_net2net import _keras_internals as internals
from keras_net2net.surgery.apply import replace_operations
from keras_net2net.surgery.graph import LayerGraph
from keras_net2net.surgery.handlers import is_opaque


def restore_classes(before, grown, origins):
    """Rebuild the traced layers of ``before`` in ``grown`` as their class.

    Args:
        before: the model the growth was planned on (its subclassed layers).
        grown: the grown model, a traced layer a nested Functional model of
            the same name.
        origins: the growth's `keras_net2net.growth_plan.Origins`; the
            rebuilt layers' variables take the origins of the traced ones.

    Returns:
        ``(model, origins, names)``: the model (``grown`` itself if nothing
        was rebuilt), the origins, and the rebuilt layers as
        ``"Class 'name'"``.
    """
    if not internals.has_graph(before):  # a subclassed model: traced whole
        return grown, origins, []
    nested = {op.name: op for op in _nested(grown)}
    replacements, renamed, names = {}, {}, []
    for layer in LayerGraph(before).layers:
        traced = nested.get(getattr(layer, "name", None))
        if traced is None or not is_opaque(layer):
            continue
        rebuilt = _rebuild(layer, traced)
        if rebuilt is None:
            continue
        clone, pairs = rebuilt
        replacements[id(traced)] = clone
        renamed.update(pairs)
        names.append(f"{type(layer).__name__} '{layer.name}'")
    if not replacements:
        return grown, origins, names
    model = replace_operations(grown, replacements)
    if getattr(grown, "compiled", False):
        model.compile_from_config(grown.get_compile_config())
    for table in (origins.weights, origins.state):
        for new, old in renamed.items():
            if old in table:  # (the traced variable is gone with its model)
                table[new] = table.pop(old)
    return model, origins, names


def _nested(model):
    return LayerGraph(model).nested_models()


def _rebuild(layer, traced):
    """``(instance of layer's class, {id(its variable): id(traced one)})`` or None."""
    inputs = internals.graph_inputs(traced)
    if len(inputs) != 1 or len(internals.graph_outputs(traced)) != 1:
        return None
    try:
        config = layer.get_config()
    except Exception:  # noqa: BLE001 - no config: the traced form stays
        return None
    targets = _grown_variables(layer, traced)
    if targets is None:
        return None
    sizes = {
        old: new
        for variable, target in zip(layer.weights, targets)
        for old, new in zip(variable.shape, target.shape)
        if old != new
    }
    for changes in _candidates(config, sizes):
        try:
            # From its config only: the grown model must load wherever the
            # user's class is registered (the traced form loads without it).
            clone = type(layer).from_config({**config, **changes})
            clone(keras.KerasTensor(inputs[0].shape, dtype=inputs[0].dtype))
        except Exception:  # noqa: BLE001 - a candidate that does not build
            continue
        shapes = [(v.name, tuple(v.shape)) for v in clone.weights]
        if shapes != [(v.name, tuple(v.shape)) for v in targets]:
            continue
        for variable, target in zip(clone.weights, targets):
            variable.assign(keras.ops.convert_to_numpy(target))
        if _same_function(clone, traced, inputs[0]):
            return clone, {id(v): id(t) for v, t in zip(clone.weights, targets)}
    return None


def _grown_variables(layer, traced):
    """The traced model's variables in the order of ``layer.weights``.

    Each of ``layer``'s variables belongs to one of its sublayers, which the
    grown traced model holds under the same name (rebuilt or copied).
    """
    grown = {op.name: op for op in LayerGraph(traced).layers}
    owner: dict[int, tuple[str, int]] = {}
    for sublayer in internals.sublayers(layer):
        for position, variable in enumerate(sublayer.weights):
            owner.setdefault(id(variable), (sublayer.name, position))
    found = []
    for variable in layer.weights:
        if id(variable) not in owner:  # a variable of its own: not traced
            return None
        name, position = owner[id(variable)]
        op = grown.get(name)
        if op is None or position >= len(op.weights):
            return None
        found.append(op.weights[position])
    return found


def _candidates(config, sizes):
    """Config changes to try: every entry equal to an old size takes the new
    one; where that is ambiguous, each subset of them."""
    keys = [
        key
        for key, value in config.items()
        if isinstance(value, int) and not isinstance(value, bool) and value in sizes
    ]
    if not sizes:
        yield {}
        return
    for count in range(len(keys), 0, -1):
        for chosen in itertools.combinations(keys[:6], count):
            yield {key: sizes[config[key]] for key in chosen}


def _same_function(clone, traced, spec):
    """Whether ``clone`` computes what ``traced`` does on a random input."""
    shape = [2 if i == 0 else (d or 4) for i, d in enumerate(spec.shape)]
    rng = np.random.default_rng(0)
    dtype = keras.backend.standardize_dtype(spec.dtype)
    if "int" in dtype:  # token ids: 0 and 1 are in any vocabulary of 2
        x = rng.integers(0, 2, shape).astype(dtype)
    else:
        x = rng.normal(size=shape).astype(dtype)
    try:
        a = keras.ops.convert_to_numpy(clone(x, training=False))
        b = keras.ops.convert_to_numpy(traced(x, training=False))
    except Exception:  # noqa: BLE001 - a call that fails: not the same
        return False
    if a.shape != b.shape:
        return False
    scale = max(float(np.max(np.abs(b))), 1e-6)
    return float(np.max(np.abs(a - b))) <= 1e-5 * scale
