"""Growing a compiled model in place, atomically."""

from typing import Any

import keras

from keras_net2net import _keras_internals as internals
from keras_net2net import families
from keras_net2net._types import Model
from keras_net2net._validation import check_choice
from keras_net2net.growth import optimizer_state as optimizer_states
from keras_net2net.growth.optimizer_state import CARRY
from keras_net2net.growth.optimizer_state import OPTIMIZER_STATES
from keras_net2net.growth.optimizer_state import state_origins
from keras_net2net.growth_plan import Origins
from keras_net2net.requests import MISSING
from keras_net2net.requests import Requests
from keras_net2net.requests import Upcycle
from keras_net2net.requests import as_requests
from keras_net2net.requests import renamed_requests
from keras_net2net.surgery import GrowthResult
from keras_net2net.surgery import apply_requests


def check_growable_in_place(model: Model, found: Any) -> None:
    """Refuse a model whose class describes its architecture in its own config.

    A subclass of the Functional (or Sequential) model that overrides
    ``get_config`` would keep describing the old architecture after growing in
    place, so it could not be saved and loaded again. KerasHub task models of
    a registered family (a ``LlamaCausalLM``) are the exception: their config
    is their backbone's, and growing in place gives them the grown backbone.
    A bare KerasHub backbone, whose config is ``hidden_dim``, ``num_layers``,
    ..., is refused. ``found`` is ``keras_net2net.families.find(model)``.
    """
    if found is not None:
        _, backbone, task = found
        if task is None:
            raise TypeError(
                f"Model '{model.name}' is a {type(model).__name__}, a KerasHub "
                "backbone, which describes its architecture by its own config "
                "arguments; growing it in place (grow_in_place, GrowModel) is "
                "not supported. Grow the task model that holds it in place "
                f"(e.g. a CausalLM around the {type(backbone).__name__}), or "
                f"use widen/deepen, which return the grown {type(model).__name__}."
            )
        return
    if not internals.has_graph(model):
        raise TypeError(
            f"Model '{model.name}' is a {type(model).__name__}, a subclassed "
            "model (its architecture is its Python call): it cannot be grown "
            "in place (grow_in_place, GrowModel). Use widen/deepen, which trace "
            "its call and return a new plain Functional model, and train that."
        )
    base = keras.Sequential if isinstance(model, keras.Sequential) else None
    if base is None:
        base = internals.functional_class()
    if type(model).get_config is not base.get_config:
        raise TypeError(
            f"Model '{model.name}' is a {type(model).__name__}, a subclass of "
            f"{base.__name__} whose get_config describes the architecture by "
            "its own arguments; growing it in place would leave that config "
            "describing the old architecture (saving and loading would fail). "
            "Grow a plain model that contains it instead, e.g. "
            "keras.Model(inputs, outputs) built around it, or use widen/deepen, "
            "which return a new plain Functional model."
        )


def check_family_result(model: Model, grown: Model, requests: list) -> None:
    """Refuse requests that would turn a KerasHub task into a plain model.

    An `Upcycle` changes the class on purpose (a ``LlamaCausalLM`` becomes a
    ``MixtralCausalLM``): the task then takes the new class in place.
    """
    upcycled = any(isinstance(r, Upcycle) for r in requests)
    if upcycled and families.find(grown) is not None:
        return
    if type(grown) is not type(model) or type(grown.backbone) is not type(
        model.backbone
    ):
        raise TypeError(
            f"Model '{model.name}' is a {type(model).__name__}: in place, it grows "
            "only in its config vocabulary (Widen('hidden_dim', ...), "
            "Widen('intermediate_dim', ...), the family's heads arguments, "
            "Deepen(after='transformer_layer_<i>'), Stack(...), Upcycle(...)), "
            "which keeps it a KerasHub task. "
            f"These requests would make it a {type(grown).__name__}: "
            f"{requests!r}"
        )


def grow_in_place(
    model: Model,
    requests: Requests = MISSING,
    *,
    operations: Requests = MISSING,
    optimizer_state: str = CARRY,
) -> GrowthResult:
    """Apply ``requests`` to ``model`` itself, carrying optimizer state over.

    The model object (and its compiled optimizer) stay the same Python objects:
    changed layers are replaced, unchanged layers and their variables are kept,
    the optimizer is rebuilt in place for the new variables (see
    `keras_net2net.growth.optimizer_state`), and the compiled train/test/predict
    functions are reset. Everything happens atomically: if any step fails, the
    model and optimizer are restored to exactly their previous state before the
    error propagates. An empty list changes nothing.

    Example:

    ```python
    keras_net2net.grow_in_place(
        model, [keras_net2net.Widen("fc1", 128), keras_net2net.Deepen(after="fc1")]
    )
    ```

    A KerasHub task model of a registered family (``LlamaCausalLM``, ...)
    grows in its config vocabulary and stays the same object of the same
    class (an `Upcycle` gives it its mixture-of-experts class), with the
    grown backbone (`Widen("hidden_dim", 64)`,
    `Deepen(after="transformer_layer_1")`).

    Args:
        model: a built, usually compiled, Sequential or Functional model, or a
            KerasHub task model of a registered family.
        requests: a `Widen`/`Deepen`/`Stack` or a list of them.
        operations: the old name of ``requests`` (deprecated).
        optimizer_state: what the compiled optimizer's state (momenta,
            second moments) becomes: ``"carry"`` (each variable's state
            transformed as its weights, copies starting from their source's),
            ``"reset_new"`` (carried for the variables grown from old ones,
            zero for every variable of an inserted layer, copies included:
            new parts start as under a fresh optimizer) or ``"reset"`` (zero
            everywhere, as a fresh optimizer's; the step count, which drives
            the learning-rate schedule and Adam's bias correction, goes on).
            Defaults to ``"carry"``.

    Returns:
        The `GrowthResult` (its ``model`` is ``model``).
    """
    requests = as_requests(renamed_requests(requests, operations, "grow_in_place"))
    check_choice(
        optimizer_state, OPTIMIZER_STATES, "optimizer_state", owner="grow_in_place"
    )
    if not isinstance(model, keras.Model):
        raise TypeError(
            "`model` must be a Keras Sequential or Functional model. "
            f"Received: {model!r} of type {type(model).__name__}"
        )
    if not requests:
        origins = Origins.unchanged(model)
        return GrowthResult(model, [], origins.weights, origins.state)
    found = families.find(model)  # the one time this growth asks
    check_growable_in_place(model, found)
    internals.graph_function(model)  # a clear error for subclassed models
    internals.sync_training_state(model)
    optimizer = getattr(model, "optimizer", None)
    carry_state = optimizer is not None and optimizer.built
    if carry_state:
        optimizer_states.slot_kinds(optimizer)
    family = found is not None
    state = internals.ModelState(model)
    undo_optimizer = undo_task = None
    try:
        with internals.distribution_scope(model):
            # A KerasHub task grows through a new model of its class (its
            # backbone is rebuilt from the grown config), whose graph and
            # backbone it then adopts; other models share unchanged layers.
            result = apply_requests(
                model,
                requests,
                reuse_layers=not family,
                name_failures=True,
                compile=not family,
                found=found,
            )
            if family:
                check_family_result(model, result.model, requests)
            slots = leftovers = None
            if carry_state:
                slots, leftovers = optimizer_states.plan_state(
                    optimizer,
                    result.model.trainable_variables,
                    state_origins(result, optimizer_state),
                )
            own_graphs = state.graphs() + [
                internals.graph_attrs(m) for m in result.graphs
            ]
            temporaries = [result.model] + result.graphs
            internals.adopt_graph(model, result.model, own_graphs, state.node_lists())
            if family:
                undo_task = internals.adopt_task_backbone(model, result.model)
            if carry_state:
                undo_optimizer = internals.rebuild_optimizer(
                    optimizer, model.trainable_variables, slots
                )
                optimizer_states.assign_state(optimizer, leftovers)
            internals.after_variables_changed(model)
            if getattr(model, "compiled", False):
                internals.reset_compiled_functions(model)
            # Last, once nothing can fail any more: empty the temporary graphs.
            internals.release_graphs(model, temporaries, state.operations)
            result.model, result.graphs = model, []
    except BaseException:
        if undo_optimizer is not None:
            undo_optimizer()
        if undo_task is not None:
            undo_task()
        state.restore()
        try:
            internals.after_variables_changed(model)
            if getattr(model, "compiled", False):
                internals.reset_compiled_functions(model)
        except Exception:  # noqa: BLE001 - the original error matters more
            pass
        raise
    return result
