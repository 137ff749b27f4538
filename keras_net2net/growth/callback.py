"""`GrowModel`: grow a model in place while `model.fit` runs."""

import dataclasses
import math
import numbers
import warnings

import keras

from keras_net2net import _keras_internals as internals
from keras_net2net.growth import learning_rate
from keras_net2net.growth import optimizer_state
from keras_net2net.growth.inplace import grow_in_place
from keras_net2net.growth.schedule import AtEpoch
from keras_net2net.growth.schedule import AtStep
from keras_net2net.growth.schedule import OnPlateau
from keras_net2net.growth.schedule import parse_schedule
from keras_net2net.surgery import apply_operations


@dataclasses.dataclass(frozen=True)
class GrowthRecord:
    """What one growth event did.

    Attributes:
        epoch: epoch index (0-based) at whose start or during which it happened.
        step: global training step (0-based) before which it happened.
        trigger: why (e.g. ``"epoch 2"``, ``"plateau of val_loss (patience 1)"``).
        operations: one description per operation.
        params_before: ``model.count_params()`` before.
        params_after: ``model.count_params()`` after.
    """

    epoch: int
    step: int
    trigger: str
    operations: tuple
    params_before: int
    params_after: int

    def describe(self):
        ops = "; ".join(self.operations)
        return (
            f"GrowModel: epoch {self.epoch}, step {self.step} ({self.trigger}): "
            f"{ops}; params {self.params_before:,} -> {self.params_after:,}"
        )


class GrowModel(keras.callbacks.Callback):
    """Grow the model (wider and/or deeper) in the middle of `model.fit`.

    At each scheduled moment the model is grown *in place* with the
    function-preserving Net2Net operations (`Widen`, `Deepen`): the user's
    model object becomes the grown model (summary, save, evaluate and predict
    see the new architecture), the compiled optimizer carries its state over
    (iterations, learning rate, and the slots of every variable, transformed
    like the weights), and training continues in the same `fit` call.
    Growth happens only between steps: at the start of an epoch or before a
    training batch.

    The whole schedule is checked against the model at `on_train_begin`
    (unknown layers, widths, unsupported layers or optimizers), so a bad
    schedule fails before the first step. A growth event that still fails
    leaves the model and optimizer exactly as they were.

    Example:

    ```python
    model.fit(
        x, y, epochs=6,
        callbacks=[GrowModel({
            2: [Widen("conv1", 128), Widen("fc1", 128)],
            AtStep(900): Deepen(after="fc1"),
            OnPlateau("val_loss", patience=1): Widen("fc1", 256),
        }, lr_scale=0.1, verbose=1)],
    )
    model.growth_history  # one dict per growth event
    ```

    Args:
        schedule: dict ``{trigger: operations}`` or list of
            ``(trigger, operations)`` pairs. A trigger is an int (epoch, 0-based:
            ``2`` grows after two epochs), `AtEpoch`, `AtStep` or `OnPlateau`;
            operations are a `Widen`, a `Deepen` or a list of them, applied
            together as one growth event. Events that come due at the same
            moment are applied together too. An epoch/step trigger fires at
            the first epoch/step at or after its value; every trigger fires
            once per callback instance.
        lr_scale: multiply the learning rate at each growth event (the paper
            uses 0.1 for students). A schedule is wrapped in `ScaledSchedule`.
            Defaults to None (unchanged).
        verbose: 1 prints one line per growth event. Defaults to 0.
        log_growth: add ``growth_events`` (events so far) and ``num_params`` to
            the epoch logs, so `History` shows when the model grew.
            Defaults to True.

    Attributes:
        records: list of `GrowthRecord`, one per event applied so far.
    """

    def __init__(self, schedule, *, lr_scale=None, verbose=0, log_growth=True):
        super().__init__()
        self.events = parse_schedule(schedule)
        if lr_scale is not None and (
            not isinstance(lr_scale, numbers.Real) or not lr_scale > 0
        ):
            raise ValueError(
                f"`lr_scale` must be a number > 0 or None. Received: {lr_scale!r}"
            )
        self.lr_scale = lr_scale
        self.verbose = verbose
        self.log_growth = log_growth
        self.records = []
        self._fired = set()
        self._epoch = 0
        self._step = 0
        self._epoch_first_step = 0
        self._steps_in_epoch = 0
        self._plateau = {}
        self._pending = []

    # -- validation ---------------------------------------------------------

    def _timeline(self):
        """Events not yet fired, in the order they are expected to fire."""
        steps = (self.params or {}).get("steps")

        def when(index):
            trigger = self.events[index].trigger
            if isinstance(trigger, AtEpoch):
                return (0, trigger.epoch * steps if steps else trigger.epoch)
            if isinstance(trigger, AtStep):
                return (0, trigger.step if steps else math.inf)
            return (1, index)

        pending = [i for i in range(len(self.events)) if i not in self._fired]
        return sorted(pending, key=when)

    def _validate(self):
        model = self.model
        optimizer = getattr(model, "optimizer", None)
        if optimizer is not None:
            optimizer_state.slot_kinds(optimizer)
            if self.lr_scale is not None:
                learning_rate.check_scalable(optimizer)
        simulated = model
        for index in self._timeline():
            event = self.events[index]
            try:
                simulated = apply_operations(
                    simulated, event.operations, name_failures=True
                ).model
            except (ValueError, TypeError) as error:
                raise type(error)(
                    f"GrowModel: the growth event at {event.trigger.describe()} "
                    f"is invalid for model '{model.name}' as it will be then: "
                    f"{error}"
                ) from error

    # -- callback hooks -----------------------------------------------------

    def on_train_begin(self, logs=None):
        self._plateau = {
            i: {"best": None, "wait": 0}
            for i, e in enumerate(self.events)
            if isinstance(e.trigger, OnPlateau)
        }
        self._pending = []
        optimizer = getattr(self.model, "optimizer", None)
        iterations = getattr(optimizer, "iterations", None)
        self._epoch_first_step = (
            int(keras.ops.convert_to_numpy(iterations)) if iterations is not None else 0
        )
        self._step = self._epoch_first_step
        self._validate()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._steps_in_epoch = 0
        due = self._due(AtEpoch, epoch)
        due += [i for i in self._pending if i not in due]
        self._pending = []
        self._grow(due)

    def on_train_batch_begin(self, batch, logs=None):
        self._step = self._epoch_first_step + batch
        self._grow(self._due(AtStep, self._step))

    def on_train_batch_end(self, batch, logs=None):
        self._steps_in_epoch = batch + 1

    def on_epoch_end(self, epoch, logs=None):
        self._epoch_first_step += self._steps_in_epoch
        self._step = self._epoch_first_step
        logs = logs if logs is not None else {}
        for index, state in self._plateau.items():
            if index in self._fired or index in self._pending:
                continue
            trigger = self.events[index].trigger
            value = logs.get(trigger.monitor)
            if value is None:
                warnings.warn(
                    f"GrowModel's plateau trigger monitors `{trigger.monitor}`, "
                    "which is not available. Available metrics are: "
                    f"{','.join(logs.keys())}",
                    stacklevel=2,
                )
                continue
            value = float(value)
            if trigger.improved(value, state["best"]):
                state["best"], state["wait"] = value, 0
                continue
            state["wait"] += 1
            if state["wait"] > trigger.patience:
                self._pending.append(index)
        if self.log_growth:
            logs["growth_events"] = float(len(self.records))
            logs["num_params"] = float(self.model.count_params())

    # -- growth -------------------------------------------------------------

    def _due(self, trigger_type, now):
        """Unfired events of ``trigger_type`` whose epoch/step ``now`` has reached."""
        return [
            i
            for i, e in enumerate(self.events)
            if i not in self._fired
            and isinstance(e.trigger, trigger_type)
            and now >= e.trigger.moment
        ]

    def _grow(self, due):
        if not due:
            return
        model = self.model
        events = [self.events[i] for i in due]
        operations = [op for event in events for op in event.operations]
        before = model.count_params()
        result = grow_in_place(model, operations)
        self._fired.update(due)
        if self.lr_scale is not None and getattr(model, "optimizer", None):
            learning_rate.scale_learning_rate(model.optimizer, self.lr_scale)
        for state in self._plateau.values():
            state["wait"] = 0
        record = GrowthRecord(
            epoch=self._epoch,
            step=self._step,
            trigger=", ".join(e.trigger.describe() for e in events),
            operations=tuple(result.descriptions),
            params_before=before,
            params_after=model.count_params(),
        )
        self.records.append(record)
        history = list(getattr(model, "growth_history", []))
        history.append(dataclasses.asdict(record))
        internals.set_untracked_attribute(model, "growth_history", history)
        if self.verbose:
            print("\n" + record.describe(), flush=True)
