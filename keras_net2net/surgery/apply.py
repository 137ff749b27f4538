"""Building the grown model of a graph `Plan` (`Plan.build` calls `apply_plan`).

Changed operations are rebuilt from their config, their transformed weights
created by initializers that carry them (which are then replaced by the
layer's original initializers, so the grown model's config holds ordinary
Keras initializers only); inserted operations are called after the ones they
follow; every other operation is either cloned with its weights
(``reuse_layers=False``: the input model stays independent) or reused as is
(``reuse_layers=True``: in-place growth). When reusing, calls whose operation
and inputs are unchanged keep their original graph node, so the part of the
graph upstream of every change is left exactly as it was.

Nested Sequential/Functional models are rebuilt recursively when something
inside them changes.
"""

import inspect

import keras
import numpy as np

from keras_net2net import _keras_internals as internals
from keras_net2net._arrays import apply_on_device
from keras_net2net._arrays import host_copy
from keras_net2net._arrays import host_view
from keras_net2net.surgery import handlers as H
from keras_net2net.surgery.plan.data import OUT
from keras_net2net.transforms import Chain


class _Carried:
    """Initializer giving a rebuilt layer's variable its carried value.

    Used while a rebuilt layer is built (its original initializer is put back
    afterwards): the old variable through its transform chain, computed with
    backend ops where it lives when the chain is exact (no copy through the
    host), else on the host (noise, random fill).
    """

    def __init__(self, source, chain):
        self.source, self.chain = source, chain

    def __call__(self, shape, dtype=None):
        if self.chain.exact():
            value = apply_on_device(self.source, self.chain)
        else:
            value = self.chain.apply(host_view(self.source))
        if tuple(value.shape) != tuple(shape):
            raise ValueError(
                f"The widened weight has shape {tuple(value.shape)}, but the "
                f"layer asked for shape {tuple(shape)}."
            )
        return keras.ops.cast(value, dtype or self.source.dtype)


class _Builder:
    def __init__(self, plan, reuse, replacements=None):
        self.plan = plan
        self.reuse = reuse
        self.new_of = dict(replacements or {})  # id(old op) -> new op
        self.replaced = set(self.new_of)
        self.pairs = {}  # id(new leaf op) -> (new, old or None)
        self.assign = []  # (layer, {variable name: array or callable})
        self.restore = []  # (new layer, old layer, [initializer attribute])
        self._touched = {}

    # -- which nested models change -----------------------------------------

    def touched(self, model):
        """True if ``model`` (a nested model) contains a change or insertion."""
        if id(model) not in self._touched:
            found = False
            for node in internals.graph_calls(model):
                op = internals.node_operation(node)
                if id(op) in self.plan.changes or id(op) in self.plan.insertions:
                    found = True
                elif id(op) in self.replaced:
                    found = True
                elif internals.has_graph(op) and self.touched(op):
                    found = True
            self._touched[id(model)] = found
        return self._touched[id(model)]

    # -- operations -----------------------------------------------------------

    def op(self, old):
        if id(old) in self.new_of:
            return self.new_of[id(old)]
        if id(old) in self.plan.changes:
            new = self._rebuild(old, self.plan.changes[id(old)][1])
        elif internals.has_graph(old):
            rebuild = self.touched(old) or not self.reuse
            new = self.model(old, nested=True) if rebuild else old
        elif self.reuse:
            new = old
        else:
            new = _carried(old)
        self.new_of[id(old)] = new
        if not internals.has_graph(new):
            self.pairs[id(new)] = (new, old)
        return new

    def _rebuild(self, old, change):
        handler = H.get_handler(old)
        config = old.get_config()
        config.update(change.full_config())
        weights = list(getattr(old, "weights", []))
        transforms, values = self.plan.positions(old)
        values, keys = dict(values), []  # values: {position in weights: array}
        for position, steps in transforms.items():
            variable = weights[position]
            chain = Chain(steps)
            key = None
            if handler is not None and variable.name in change.transforms:
                key = handler.init_key(old, variable.name)
            if key is not None and key in config:
                config[key] = _Carried(variable, chain)
                keys.append(key)
            else:
                values[position] = chain.apply(host_view(variable))
        new = type(old).from_config(config)
        if values:
            self.assign.append((new, values))
        if keys:
            self.restore.append((new, old, keys))
        return new

    # -- graphs ---------------------------------------------------------------

    def model(self, model, inputs=None, nested=False):
        """Rebuild ``model``; a nested one on ``inputs`` (the new outer tensors).

        A nested model's inputs take the shapes of the tensors it is now
        called on (they may be wider); a nested Sequential without known
        inputs is left to build when called.
        """
        if isinstance(model, keras.Sequential):
            return self._sequential(model, inputs, nested)
        return self._functional(model, inputs)

    def _inserted(self, op):
        insertions = self.plan.insertions.get(id(op), [])
        for insertion in insertions:
            for layer, values in insertion.layers:
                self.pairs[id(layer)] = (layer, None)
                if values is not None:
                    self.assign.append((layer, values))
        return insertions

    def _sequential(self, model, inputs, nested):
        source = internals.graph_inputs(model)[0]
        shape = None  # the running output shape, where the input's is known
        if inputs is not None:
            shape = tuple(inputs[0].shape)
        elif not nested:
            shape = tuple(source.shape)
        layers = []
        for layer in model.layers:
            if shape is not None:
                self._nested_on(layer, shape, source.dtype)
            layers.append(self.op(layer))
            inserted = [
                new
                for insertion in self._inserted(layer)
                for new in insertion.sequential
            ]
            layers.extend(inserted)
            for new in [layers[-1 - len(inserted)], *inserted]:
                shape = _output_shape(new, shape)
        if inputs is not None:
            first = [keras.Input(batch_shape=inputs[0].shape, dtype=source.dtype)]
        elif nested:
            first = []  # built when the outer model calls it
        elif self.reuse:
            first = [source]  # keep the model's own InputLayer
        else:
            first = [
                keras.Input(
                    batch_shape=source.shape, dtype=source.dtype, name=source.name
                )
            ]
        return keras.Sequential(
            first + layers, name=model.name, trainable=model.trainable
        )

    def _nested_on(self, layer, shape, dtype):
        """Rebuild a nested Functional ``layer`` of a Sequential on ``shape``.

        A Sequential calls it on its previous layer's output, which a growth
        may have widened: its inputs take that shape.
        """
        if not internals.has_graph(layer) or isinstance(layer, keras.Sequential):
            return
        if id(layer) in self.new_of or not (self.touched(layer) or not self.reuse):
            return
        inputs = [keras.KerasTensor(shape, dtype=dtype)]
        self.new_of[id(layer)] = self.model(layer, inputs, nested=True)

    def _functional(self, model, inputs=None):
        old_inputs = internals.graph_inputs(model)
        if inputs is not None:
            new_inputs = [
                keras.Input(batch_shape=new.shape, dtype=old.dtype, name=old.name)
                for old, new in zip(old_inputs, inputs)
            ]
        elif self.reuse:
            new_inputs = list(old_inputs)
        else:
            new_inputs = [
                keras.Input(batch_shape=t.shape, dtype=t.dtype, name=t.name)
                for t in old_inputs
            ]
        tensors = {id(old): new for old, new in zip(old_inputs, new_inputs)}
        for node in internals.graph_calls(model):
            old_op = internals.node_operation(node)
            inputs = internals.node_inputs(node)
            if internals.has_graph(old_op) and id(old_op) not in self.new_of:
                if self.touched(old_op) or not self.reuse:
                    new_inputs_of = [tensors[id(t)] for t in inputs]
                    self.new_of[id(old_op)] = self.model(old_op, new_inputs_of)
            new_op = self.op(old_op)
            old_outputs = internals.node_outputs(node)
            insertions = self._inserted(old_op)
            unchanged = (
                self.reuse
                and new_op is old_op
                and not insertions
                and all(tensors[id(t)] is t for t in inputs)
            )
            if unchanged:
                outputs = old_outputs
            else:
                args, kwargs = internals.fill_arguments(node, tensors)
                if id(old_op) in self.replaced:
                    kwargs = _accepted(new_op, kwargs)
                result = new_op(*args, **kwargs)
                for insertion in insertions:
                    if insertion.index is None:
                        result = _call_insertion(insertion, result, tensors)
                    else:  # one of several outputs; the others pass on
                        result = list(keras.tree.flatten(result))
                        followed = result[insertion.index]
                        result[insertion.index] = _call_insertion(
                            insertion, followed, tensors
                        )
                outputs = keras.tree.flatten(result)
            for old, new in zip(old_outputs, outputs):
                tensors[id(old)] = new
        outputs = keras.tree.pack_sequence_as(
            internals.outputs_struct(model),
            [tensors[id(t)] for t in internals.graph_outputs(model)],
        )
        inputs = keras.tree.pack_sequence_as(internals.inputs_struct(model), new_inputs)
        return keras.Model(inputs, outputs, name=model.name, trainable=model.trainable)

    # -- after building ---------------------------------------------------------

    def finish(self, model):
        for layer, values in self.assign:
            names = {v.name: i for i, v in enumerate(layer.weights)}
            for key, value in values.items():
                # by position (rebuilt layers) or by name (new layers)
                variable = layer.weights[names[key] if isinstance(key, str) else key]
                dtype = keras.backend.standardize_dtype(variable.dtype)
                if callable(value):  # an initializer, given the built shape
                    value = keras.ops.convert_to_numpy(value(tuple(variable.shape)))
                variable.assign(np.asarray(value).astype(dtype))
        for new, old, keys in self.restore:
            for key in keys:
                if hasattr(new, key):
                    setattr(new, key, getattr(old, key))
        self._copy_kept_weights()

    def _copy_kept_weights(self):
        """Copy the weights that the plan does not set from the old layers."""
        for new, old in self.pairs.values():
            if old is None or new is old:
                continue
            transforms, values = self.plan.positions(old)
            set_by_plan = set(transforms) | set(values)
            # Rebuilt layers create their variables in the same order.
            old_weights = list(getattr(old, "weights", []))
            pairs = zip(getattr(new, "weights", []), old_weights)
            for position, (variable, source) in enumerate(pairs):
                if position not in set_by_plan:
                    # A host copy: never alias the old variable's device buffer
                    # (JAX may donate and delete it).
                    variable.assign(host_copy(source))


def _accepted(op, kwargs):
    """``kwargs`` without the empty ones ``op``'s call does not take (a
    ``mask=None`` Keras passed to the nested model ``op`` replaces)."""
    try:
        parameters = inspect.signature(op.call).parameters
    except (TypeError, ValueError):
        return kwargs
    if any(p.kind == p.VAR_KEYWORD for p in parameters.values()):
        return kwargs
    return {k: v for k, v in kwargs.items() if k in parameters or v is not None}


def _output_shape(layer, shape):
    """``layer``'s output shape on ``shape`` (None if unknown), without a call."""
    if shape is None:
        return None
    try:
        result = layer.compute_output_shape(shape)
    except Exception:  # noqa: BLE001 - a layer without a shape rule: unknown
        return None
    return tuple(result) if isinstance(result, (tuple, list)) else None


def _carried(layer):
    """``layer`` in the grown model: a copy, or, where it cannot be copied
    and holds no variables (a keras.io ``Patches`` without ``**kwargs``), the
    same object, which shares no state with the input model."""
    try:
        return copy_unchanged(layer)
    except ValueError:
        if getattr(layer, "variables", None):  # (seed generators' state too)
            raise
        return layer


def copy_unchanged(layer, name=None):
    """A new layer like ``layer`` (its weights are copied after building).

    ``name``: the copy's name (None: ``layer``'s).

    From its config; when that does not round-trip (a keras.io layer whose
    ``__init__`` takes no ``**kwargs``, a ``Lambda`` of a Python lambda), from
    the constructor arguments the config names, or the same function.

    Raises:
        ValueError: naming the layer, if it cannot be copied at all.
    """
    config: dict = {}
    try:
        config = layer.get_config()
        if name is not None:
            config = {**config, "name": name}
        return type(layer).from_config(config)
    except Exception as error:  # noqa: BLE001 - any failure of user code
        failure = error
    try:
        if isinstance(layer, keras.layers.Lambda):
            shape = config.get("output_shape")
            clone = keras.layers.Lambda(
                layer.function,
                output_shape=tuple(shape) if isinstance(shape, (list, tuple)) else None,
                arguments=config.get("arguments") or None,
                name=name or layer.name,
                dtype=layer.dtype_policy,
            )
        else:
            accepted = inspect.signature(type(layer).__init__).parameters
            clone = type(layer)(**{k: v for k, v in config.items() if k in accepted})
            clone.name = name or layer.name
            if "dtype" not in accepted:
                clone.dtype_policy = layer.dtype_policy
        clone.trainable = layer.trainable
        return clone
    except Exception:  # noqa: BLE001 - reported with the first failure
        pass
    raise H.NoHandler(
        f"{H.describe(layer)} is not changed by this growth, but widen/deepen "
        "build the grown model from copies of every layer, and this one cannot "
        f"be copied from its config ({type(failure).__name__}: {failure}) nor "
        "traced into its layers. Make its get_config round-trip (accept "
        "**kwargs in __init__), or grow the model in place (grow_in_place "
        "reuses the layers it does not change).",
        layer,
    ) from failure


def _call_insertion(insertion, output, tensors):
    """Call an insertion's layers (`keras_net2net.surgery.plan.data.Call`).

    ``output`` is the new output of the operation it follows; ``tensors``
    maps ``id(original tensor)`` to the new graph's tensors.
    """
    refs = {OUT: output}
    for call in insertion.calls:
        if call.like is None:
            args = keras.tree.map_structure(refs.__getitem__, call.args)
            result = call.layer(*args)
        else:
            raw = call.like.raw
            fill = {
                id(tensor): refs[call.fill[i]]
                if i in call.fill
                else tensors[id(tensor)]
                for i, tensor in enumerate(internals.node_inputs(raw))
            }
            args, kwargs = internals.fill_arguments(raw, fill)
            result = call.layer(*args, **kwargs)
        refs[call.layer.name] = result
        for i, tensor in enumerate(keras.tree.flatten(result)):
            refs[f"{call.layer.name}/{i}"] = tensor
    return refs[insertion.output]


def replace_operations(model, replacements):
    """A model like ``model`` with some operations replaced, the others reused.

    Args:
        model: a built Sequential or Functional model.
        replacements: ``{id(old operation): new operation}``; a new operation
            is called with the old one's arguments (in nested models too).

    Returns:
        The new model; ``model`` is not changed.
    """
    return _Builder(_NoChanges(), True, replacements).model(model)


class _NoChanges:
    """The plan `replace_operations` builds: nothing changed or inserted."""

    changes: dict = {}
    insertions: dict = {}

    def positions(self, op):
        return {}, {}


def apply_plan(model, plan, *, reuse_layers=False, compile=True):
    """Build the model that ``plan`` describes.

    Args:
        model: the Sequential or Functional model the plan was made for.
        plan: a `keras_net2net.surgery.plan.Plan`.
        reuse_layers: reuse unchanged layers (sharing their variables) instead
            of cloning them. Defaults to False.
        compile: compile a new (not reused) model like ``model``, if it was
            compiled. Defaults to True.

    Returns:
        ``(new_model, pairs)`` where ``pairs`` lists ``(new operation, old
        operation or None)`` for every leaf operation of the new graph (nested
        ones included); None marks an inserted operation.
    """
    builder = _Builder(plan, reuse_layers)
    new_model = builder.model(model)
    builder.finish(new_model)
    if compile and model.compiled and not reuse_layers:
        new_model.compile_from_config(model.get_compile_config())
    return new_model, list(builder.pairs.values())
