"""Growing a compiled model in place, atomically."""

from keras_net2net import _keras_internals as internals
from keras_net2net.growth import optimizer_state
from keras_net2net.surgery import apply_operations


def grow_in_place(model, operations):
    """Apply ``operations`` to ``model`` itself, carrying optimizer state over.

    The model object (and its compiled optimizer) stay the same Python objects:
    changed layers are replaced, unchanged layers and their variables are kept,
    the optimizer is rebuilt in place for the new variables (see
    `keras_net2net.growth.optimizer_state`), and the compiled train/test/predict
    functions are reset. If anything fails, the model and optimizer are
    restored to exactly their previous state before the error propagates.

    Args:
        model: a built, usually compiled, Sequential or Functional model.
        operations: list of `Widen`/`Deepen`.

    Returns:
        The `GrowthResult` (its ``model`` is the temporary model whose graph
        ``model`` adopted).
    """
    internals.sync_training_state(model)
    optimizer = getattr(model, "optimizer", None)
    carry_state = optimizer is not None and optimizer.built
    if carry_state:
        optimizer_state.slot_kinds(optimizer)
    state = internals.ModelState(model)
    undo_optimizer = None
    try:
        with internals.distribution_scope(model):
            result = apply_operations(
                model, operations, reuse_layers=True, name_failures=True
            )
            planned = None
            if carry_state:
                planned = optimizer_state.plan_state(
                    optimizer, result.model.trainable_variables, result.origins
                )
            internals.adopt_graph(model, result.model)
            if carry_state:
                undo_optimizer = internals.rebuild_optimizer(
                    optimizer, model.trainable_variables
                )
                optimizer_state.assign_state(optimizer, planned)
    except BaseException:
        if undo_optimizer is not None:
            undo_optimizer()
        state.restore()
        raise
    internals.after_variables_changed(model)
    if getattr(model, "compiled", False):
        internals.reset_compiled_functions(model)
    return result
