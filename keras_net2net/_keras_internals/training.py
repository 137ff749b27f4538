"""Training state: backend fit loops, compiled functions, optimizers, callbacks.

Private Keras attributes that in-place growth needs while `fit` runs.
"""

import contextlib
import sys
import types

import keras

from keras_net2net._keras_internals.inplace import _replace_contents


def reset_compiled_functions(model):
    """Make `fit` trace a new train step for the new variables."""
    model.make_train_function(force=True)
    model.test_function = None
    model.predict_function = None


def sync_training_state(model):
    """Write the values a backend's fit loop holds back into the variables.

    JAX's fit loop keeps the variables' values in its own state tuple (and
    purges the variables) while it trains; reading or replacing variables in
    between steps needs them synced first. A no-op on other backends.
    """
    sync = getattr(model, "jax_state_sync", None)
    if sync is not None:
        sync()


def after_variables_changed(model):
    """Tell the backend's fit loop that the model has new variables.

    * JAX: drop the loop's stale state and make it re-read the variables
      before the next step.
    * torch: re-track the model's parameters (a ParameterDict keyed by
      variable path), so `zero_grad` and `parameters()` see the new ones and
      no longer hold the replaced ones.
    """
    if hasattr(model, "_jax_state_synced"):
        model._jax_state = None
        model._jax_state_synced = True
    for obj in (model, getattr(model, "_functional", None)):
        if obj is not None and hasattr(obj, "_torch_params"):
            obj._track_variables()


# --------------------------------------------------------------------------
# Optimizer state.


def optimizer_trainable_variables(optimizer):
    return list(optimizer._trainable_variables)


def slot_key(variable, slot):
    """The key under which `rebuild_optimizer` finds ``slot`` of ``variable``.

    Keras names a slot ``f"{variable.path with '_' for '/'}_{kind}"``
    (``add_variable_from_reference``); the key is ``(id(variable), name)``.
    """
    return (id(variable), slot.name)


def _reference_key(reference_variable, name):
    name = name or "var"
    if hasattr(reference_variable, "path"):
        name = f"{reference_variable.path.replace('/', '_')}_{name}"
    return (id(reference_variable), name)


def rebuild_optimizer(optimizer, variables, slots=None):
    """Rebuild ``optimizer``'s per-variable state for ``variables`` in place.

    The iteration counter and the learning rate (variable or schedule) are kept;
    every other optimizer variable is dropped and `build` creates the slots:
    ``slots`` (``{slot_key: value}``) gives, per slot, either an existing slot
    variable to keep (an unchanged variable's) or an initializer to create it
    with (a changed variable's carried state); other slots start at zero. The
    rebuild then costs time and memory only for the changed variables. A
    LossScaleOptimizer keeps its loss-scale variables and rebuilds its inner
    optimizer. Returns a function that undoes the rebuild.
    """
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        undo_inner = rebuild_optimizer(optimizer.inner_optimizer, variables, slots)
        saved = (optimizer._trainable_variables_indices, optimizer._trainable_variables)

        def undo_outer():
            (optimizer._trainable_variables_indices, optimizer._trainable_variables) = (
                saved
            )
            undo_inner()

        optimizer._trainable_variables_indices = {}
        try:
            # The base build only records the variables (no new optimizer state).
            keras.optimizers.Optimizer.build(optimizer, variables)
        except BaseException:
            undo_outer()
            raise
        return undo_outer
    keep = {id(optimizer._iterations), id(getattr(optimizer, "_learning_rate", None))}
    saved_dict = dict(optimizer.__dict__)
    saved_vars = list(optimizer._variables)
    saved_ids = {k: set(v) for k, v in optimizer._tracker.stored_ids.items()}
    for variable in saved_vars:
        if id(variable) not in keep:
            optimizer._tracker.untrack(variable)
    optimizer._trainable_variables_indices = {}
    optimizer.built = False

    def undo():
        optimizer.__dict__.update(saved_dict)
        _replace_contents(optimizer._variables, saved_vars)
        optimizer._tracker.stored_ids = saved_ids

    slots = slots or {}
    create = optimizer.add_variable_from_reference

    def add_variable_from_reference(reference_variable, name=None, initializer="zeros"):
        slot = slots.get(_reference_key(reference_variable, name))
        if slot is None:
            return create(reference_variable, name=name, initializer=initializer)
        if not isinstance(slot, keras.Variable):  # an initializer
            return create(reference_variable, name=name, initializer=slot)
        optimizer._track_variable(slot)
        return slot

    optimizer.add_variable_from_reference = add_variable_from_reference
    try:
        optimizer.build(variables)
    except BaseException:
        undo()
        raise
    finally:
        del optimizer.add_variable_from_reference  # the class's method again
    _forget_snapshot(optimizer._variables)
    return undo


def _forget_snapshot(tracked_list):
    """Drop TensorFlow's snapshot of a tracked list's previous contents.

    On the TensorFlow backend the optimizer's variable list is a TF
    ``ListWrapper``, which keeps a copy of its last checkpointed contents: it
    would keep the replaced slot variables (and their memory) alive.
    """
    if hasattr(tracked_list, "_last_wrapped_list_snapshot"):
        tracked_list._last_wrapped_list_snapshot = list(tracked_list)


# --------------------------------------------------------------------------
# Variables created without a value.

_PENDING = "uninitialized_variables"  # Keras's global list of deferred variables


@contextlib.contextmanager
def deferred_variables():
    """Context in which new variables get no value until `initialize_variables`.

    A model built in it draws no random initial values (a KerasHub backbone
    of 1e8 parameters: over a second) for variables that growth then sets.
    Yields a list that holds, after the block, every variable created in it
    (weights, and state such as a dropout's seed). If the block fails, those
    variables leave Keras's list of variables still to initialize.
    """
    from keras.src.backend.common import global_state

    before = {id(v) for v in global_state.get_global_attribute(_PENDING) or []}
    created: list = []
    failed = False
    try:
        with keras.StatelessScope(initialize_variables=False):
            yield created
    except BaseException:
        failed = True
        raise
    finally:
        pending = global_state.get_global_attribute(_PENDING) or []
        created.extend(v for v in pending if id(v) not in before)
        if failed:
            discard_deferred(created)


def initialize_variables(created, values):
    """Give the variables of `deferred_variables` their first values.

    ``values`` maps ``id(variable)`` to an array, or to a function that
    returns one (called when that variable is created, so only one computed
    value need exist at a time); the other variables get their own
    initializer's value. All of them leave Keras's list of
    variables still to initialize.
    """
    try:
        for variable in created:
            if id(variable) in values:
                variable._initializer = _Constant(values.pop(id(variable)))
            variable._deferred_initialize()
    finally:
        discard_deferred(created)


def discard_deferred(variables):
    """Drop ``variables`` from Keras's list of variables still to initialize."""
    from keras.src.backend.common import global_state

    ids = {id(v) for v in variables}
    pending = global_state.get_global_attribute(_PENDING) or []
    global_state.set_global_attribute(
        _PENDING, [v for v in pending if id(v) not in ids]
    )


class _Constant:
    """An initializer that returns one array, or a function's (released once used)."""

    def __init__(self, value):
        self.value = value

    def __call__(self, shape, dtype=None):
        value, self.value = self.value, None
        if callable(value):
            value = value()
        if tuple(value.shape) != tuple(shape):
            raise ValueError(
                f"A value of shape {tuple(value.shape)} cannot initialize a "
                f"variable of shape {tuple(shape)}."
            )
        return value if dtype is None else value.astype(dtype, copy=False)


def check_deferred(require):
    """Check the attributes `initialize_variables` uses on this Keras."""
    from keras.src.backend.common import global_state

    with deferred_variables() as created:
        variable = keras.Variable(keras.initializers.Zeros(), shape=(2,))
    for attr in ("_initializer", "_deferred_initialize"):
        require(variable, attr, "a Variable created in a StatelessScope")
    if not any(v is variable for v in created):
        # Not an attribute: `require` reports it missing.
        require(global_state, _PENDING, "Keras's global list of deferred variables")
    discard_deferred(created)


def learning_rate_object(optimizer):
    """The optimizer's learning-rate variable, schedule or callable."""
    return optimizer._learning_rate


def distribution_scope(model):
    """Context in which new variables are created like the model's own."""
    strategy = getattr(model, "distribute_strategy", None)
    if strategy is not None and hasattr(strategy, "scope"):
        return strategy.scope()
    return contextlib.nullcontext()


# --------------------------------------------------------------------------
# Callbacks.


def sibling_callbacks(callback, max_depth=6):
    """The other callbacks of the `CallbackList` that is calling ``callback``.

    Keras gives a callback no reference to its siblings; `fit` holds them in
    a ``CallbackList`` that calls each callback's hooks directly. The caller's
    frames are searched for that list. Returns ``[]`` when ``callback`` is
    driven by hand.
    """
    frame: types.FrameType | None = sys._getframe(1)
    callback_list = keras.callbacks.CallbackList
    for _ in range(max_depth):
        if frame is None:
            break
        owner = frame.f_locals.get("self")
        if isinstance(owner, callback_list) and any(
            c is callback for c in owner.callbacks
        ):
            return [c for c in owner.callbacks if c is not callback]
        frame = frame.f_back
    return []


def backup_paths(backup):
    """``(backup_dir, weights path, previous weights path)`` of a BackupAndRestore."""
    return backup.backup_dir, backup._weights_path, backup._prev_weights_path
