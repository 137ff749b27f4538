"""`GrowModel`: grow a model in place while `model.fit` runs."""

import dataclasses
import math
import threading
import warnings
from typing import Any

import keras

from keras_net2net import _keras_internals as internals
from keras_net2net import families
from keras_net2net._types import Logs
from keras_net2net._types import Model
from keras_net2net._validation import check_bool
from keras_net2net._validation import check_choice
from keras_net2net._validation import check_int
from keras_net2net._validation import check_real
from keras_net2net.growth import learning_rate
from keras_net2net.growth import optimizer_state
from keras_net2net.growth.backup import GrowthLog
from keras_net2net.growth.backup import signature
from keras_net2net.growth.inplace import check_family_result
from keras_net2net.growth.inplace import check_growable_in_place
from keras_net2net.growth.inplace import grow_in_place
from keras_net2net.growth.optimizer_state import CARRY
from keras_net2net.growth.optimizer_state import OPTIMIZER_STATES
from keras_net2net.growth.record import GrowthRecord
from keras_net2net.growth.schedule import AtEpoch
from keras_net2net.growth.schedule import AtStep
from keras_net2net.growth.schedule import OnPlateau
from keras_net2net.growth.schedule import Schedule
from keras_net2net.growth.schedule import parse_schedule
from keras_net2net.growth.weight_lists import WeightListConverter
from keras_net2net.surgery import apply_requests
from keras_net2net.surgery import check_request

# One lock for all instances (a lock attribute would stop deep copies).
_BATCH_END_LOCK = threading.Lock()


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
    (unknown layers, widths, unsupported layers or optimizers), in the order
    in which it will be applied, so a bad schedule fails before the first
    step. A growth event that still fails leaves the model and optimizer
    exactly as they were.

    Other callbacks of the same `fit`:

    * `keras.callbacks.EarlyStopping(restore_best_weights=True)`: the best
      weights it stored before a growth are carried through the growth (the
      same transforms), so restoring them gives the grown model the best
      function seen.
    * `keras.callbacks.BackupAndRestore`: next to the backup, a growth log
      records the events applied; a restarted script re-applies them before
      the backup is loaded, so training resumes with the grown architecture
      and the remaining events only. Either callback order works.

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
        schedule: dict ``{trigger: requests}`` or list of
            ``(trigger, requests)`` pairs. A trigger is an int (epoch, 0-based:
            ``2`` grows after two epochs), `AtEpoch`, `AtStep` or `OnPlateau`;
            requests are a `Widen`, a `Deepen` or a list of them, applied
            together as one growth event. Events that come due at the same
            moment are applied together as one event too, in this order:
            epoch events, step events, plateau events (each in schedule
            order). An epoch/step trigger fires at the first epoch/step at or
            after its value; every trigger fires once per callback instance.
        lr_scale: multiply the learning rate at each growth event (the paper
            uses 0.1 for students). A schedule is wrapped in `ScaledSchedule`.
            Defaults to None (unchanged).
        optimizer_state: the optimizer's state at each growth, as for
            `grow_in_place`: ``"carry"``, ``"reset_new"`` (zero for inserted
            layers, copies included) or ``"reset"`` (zero everywhere).
            Defaults to ``"carry"``.
        rewarm_steps: re-warm the learning rate linearly over this many steps
            after each growth event, the schedule otherwise continued (the
            learning rate is wrapped in `Rewarmed`). Defaults to None (no
            re-warm).
        verbose: 1 prints one line per growth event. Defaults to 0.
        log_growth: add ``growth_events`` (events so far) and ``num_params`` to
            the epoch logs, so `History` shows when the model grew.
            Defaults to True.

    Attributes:
        records: list of `GrowthRecord`, one per event applied so far.
    """

    # Keras may run ``on_train_batch_end`` in a worker thread when every
    # callback allows it (JAX, PyTorch); without this, a callback with that
    # hook makes ``fit`` wait for each step's logs, which stalls an
    # accelerator's queue. Ours only counts steps, under a lock.
    async_safe = True

    def __init__(
        self,
        schedule: Schedule,
        *,
        lr_scale: float | None = None,
        optimizer_state: str = CARRY,
        rewarm_steps: int | None = None,
        verbose: int = 0,
        log_growth: bool = True,
    ) -> None:
        super().__init__()
        check_choice(
            optimizer_state, OPTIMIZER_STATES, "optimizer_state", owner="GrowModel"
        )
        self.optimizer_state = optimizer_state
        if rewarm_steps is not None:
            rewarm_steps = check_int(
                rewarm_steps, "rewarm_steps", minimum=1, owner="GrowModel"
            )
        self.rewarm_steps = rewarm_steps
        self.events = parse_schedule(schedule)
        if lr_scale is not None:
            lr_scale = check_real(
                lr_scale, "lr_scale", positive=True, owner="GrowModel"
            )
        self.lr_scale = lr_scale
        if isinstance(verbose, bool):
            verbose = int(verbose)
        self.verbose = check_int(verbose, "verbose", owner="GrowModel")
        self.log_growth = check_bool(log_growth, "log_growth", owner="GrowModel")
        self.records: list[GrowthRecord] = []
        self._fired: set[int] = set()
        self._epoch = 0
        self._step = 0
        self._epoch_first_step = 0
        self._steps_in_epoch = 0
        self._steps_known: int | None = None
        self._start_step = 0
        self._first_epoch = 0
        self._fresh_fit = True
        self._plateau: dict[int, dict[str, Any]] = {}
        self._pending: list[int] = []
        self._siblings: list[keras.callbacks.Callback] = []
        self._log: GrowthLog | None = None

    # -- order of application -----------------------------------------------

    def _order(self, indices):
        """Sort event indices in the order they are applied.

        Epoch and step events by their moment in global steps (epoch ``e``
        starts at ``start + (e - first_epoch) * steps``; an epoch event before
        a step event due at the same step), plateau events last; ties in
        schedule order. With an unknown number of steps per epoch, step events
        come after the epoch events. Validation and application use this one
        order.
        """
        steps = self._steps_per_epoch()

        def key(index):
            trigger = self.events[index].trigger
            if isinstance(trigger, AtEpoch):
                epochs = trigger.epoch - self._first_epoch
                moment = self._start_step + epochs * steps if steps else epochs
                return (0, moment, 0, index)
            if isinstance(trigger, AtStep):
                return (0, trigger.step if steps else math.inf, 1, index)
            return (1, 0, 0, index)

        return sorted(indices, key=key)

    def _steps_per_epoch(self):
        return self._steps_known or (self.params or {}).get("steps")

    # -- validation ---------------------------------------------------------

    def _validate(self):
        model = self.model
        optimizer = getattr(model, "optimizer", None)
        if optimizer is not None:
            optimizer_state.slot_kinds(optimizer)
            if self.lr_scale is not None:
                learning_rate.check_scalable(optimizer)
            if self.rewarm_steps is not None:
                learning_rate.check_scalable(optimizer, "rewarm_steps")
                learning_rate.check_no_rate_setter(self._siblings)
        pending = [i for i in range(len(self.events)) if i not in self._fired]
        if not pending:
            return
        found = families.find(model)  # the one time validation asks
        check_growable_in_place(model, found)
        # A KerasHub task grows through new models of its class (see
        # `grow_in_place`): simulated whole, so that every request is checked
        # to keep the class.
        family = found is not None
        # Simulate the events in order on graphs that share the unchanged
        # layers with the model (as growing in place does), so that the cost
        # is that of the changed layers only; then put the model's graph back.
        state = internals.ModelState(model)
        temporaries: list[Any] = []
        simulated = model
        order = self._order(pending)
        try:
            for index in order:
                event = self.events[index]
                requests = list(event.requests)
                # The last request is only planned (planning checks it): no
                # later one needs the model it would build.
                last = None
                if index == order[-1] and requests and not family:
                    last = requests.pop()
                try:
                    result = apply_requests(
                        simulated,
                        requests,
                        reuse_layers=not family,
                        name_failures=True,
                        compile=False,
                        found=found,
                    )
                    if last is not None:
                        check_request(result.model, last, found=None)
                    if family:
                        check_family_result(simulated, result.model, requests)
                except (ValueError, TypeError) as error:
                    raise type(error)(
                        f"GrowModel: the growth event at {event.trigger.describe()} "
                        f"is invalid for model '{model.name}' as it will be then: "
                        f"{error}"
                    ) from error
                if result.model is not simulated:
                    temporaries += [result.model, *result.graphs]
                    simulated = result.model
                    # A family model's growth keeps its class (checked above).
                    found = families.find(simulated) if family else None
        finally:
            state.restore()
            internals.release_graphs(model, temporaries, state.operations)

    # -- callback hooks -----------------------------------------------------

    def set_model(self, model: Model) -> None:
        super().set_model(model)
        siblings = internals.sibling_callbacks(self)
        if siblings:
            self._siblings = siblings
        backups = [
            c for c in self._siblings if isinstance(c, keras.callbacks.BackupAndRestore)
        ]
        if backups and self._log is None:
            self._resume(backups[0])

    def on_train_begin(self, logs: Logs = None) -> None:
        self._plateau = {
            i: {"best": None, "wait": 0}
            for i, e in enumerate(self.events)
            if isinstance(e.trigger, OnPlateau)
        }
        self._pending = []
        self._fresh_fit = True
        self._steps_known = None
        self._start_step, self._first_epoch = self._iterations(), 0
        self._validate()

    def on_epoch_begin(self, epoch: int, logs: Logs = None) -> None:
        if self._fresh_fit:
            self._fresh_fit = False
            self._epoch_first_step = self._iterations()
            if (self._epoch_first_step, epoch) != (self._start_step, 0):
                # A BackupAndRestore callback loaded the iterations (and the
                # initial epoch) after our on_train_begin: validate again in
                # the order now known.
                self._start_step, self._first_epoch = self._epoch_first_step, epoch
                self._validate()
        elif (
            self._steps_known is None
            and not (self.params or {}).get("steps")
            and self._steps_in_epoch
        ):
            # Steps per epoch now known: check the remaining schedule again in
            # the order it will really be applied.
            self._steps_known = self._steps_in_epoch
            self._validate()
        self._epoch = epoch
        self._steps_in_epoch = 0
        self._step = self._epoch_first_step
        due = self._due(AtEpoch, epoch) + self._due(AtStep, self._step)
        due += [i for i in self._pending if i not in due]
        self._pending = []
        self._grow(self._order(due))

    def on_train_batch_begin(self, batch: int, logs: Logs = None) -> None:
        self._step = self._epoch_first_step + batch
        self._grow(self._order(self._due(AtStep, self._step)))

    def on_train_batch_end(self, batch: int, logs: Logs = None) -> None:
        # Possibly in a worker thread, out of order; Keras waits for them all
        # before on_epoch_end.
        with _BATCH_END_LOCK:
            self._steps_in_epoch = max(self._steps_in_epoch, batch + 1)

    def on_epoch_end(self, epoch: int, logs: Logs = None) -> None:
        self._epoch_first_step += self._steps_in_epoch
        self._step = self._epoch_first_step
        logs = logs if logs is not None else {}
        for index, state in self._plateau.items():
            if index in self._fired or index in self._pending:
                continue
            trigger = self.events[index].trigger
            assert isinstance(trigger, OnPlateau)
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

    def _iterations(self):
        optimizer = getattr(self.model, "optimizer", None)
        iterations = getattr(optimizer, "iterations", None)
        if iterations is None:
            return 0
        return int(keras.ops.convert_to_numpy(iterations))

    def _due(self, trigger_type, now):
        """Unfired events of ``trigger_type`` whose epoch/step ``now`` has reached."""
        return [
            i
            for i, e in enumerate(self.events)
            if i not in self._fired
            and isinstance(e.trigger, trigger_type)
            and now >= e.trigger.moment
        ]

    def _grow(self, due, restoring=None):
        """Apply the events ``due``; ``restoring``: the step at which they
        were applied before a restart (`_resume`), else None."""
        if not due:
            return
        model = self.model
        events = [self.events[i] for i in due]
        requests = [r for event in events for r in event.requests]
        before = model.count_params()
        old_weights = list(model.weights)
        result = grow_in_place(model, requests, optimizer_state=self.optimizer_state)
        self._fired.update(due)
        optimizer = getattr(model, "optimizer", None)
        if self.lr_scale is not None and optimizer is not None:
            learning_rate.scale_learning_rate(optimizer, self.lr_scale)
        step = self._iterations() if restoring is None else restoring
        if self.rewarm_steps is not None and optimizer is not None:
            learning_rate.rewarm_learning_rate(optimizer, step, self.rewarm_steps)
        for state in self._plateau.values():
            state["wait"] = 0
        if restoring is not None:
            return
        self._carry_callback_state(old_weights, result)
        if any(isinstance(e.trigger, OnPlateau) for e in events):
            # A plateau event's moment was unknown: check the rest of the
            # schedule again against the model as it now is.
            self._start_step, self._first_epoch = self._step, self._epoch
            self._validate()
        record = GrowthRecord(
            epoch=self._epoch,
            step=self._step,
            trigger=", ".join(e.trigger.describe() for e in events),
            requests=tuple(result.descriptions),
            params_before=before,
            params_after=model.count_params(),
        )
        self._add_record(record)
        if self._log is not None:
            # The optimizer's step too: a resumed run re-warms from it.
            entry = dict(dataclasses.asdict(record), optimizer_step=step)
            self._log.add(due, model, entry)
        if self.verbose:
            print("\n" + record.describe(), flush=True)

    def _add_record(self, record):
        self.records.append(record)
        history = list(getattr(self.model, "growth_history", []))
        history.append(dataclasses.asdict(record))
        internals.set_untracked_attribute(self.model, "growth_history", history)

    def _carry_callback_state(self, old_weights, result):
        """Carry other callbacks' stored weights through the growth."""
        converter = WeightListConverter(old_weights, self.model.weights, result.origins)
        for callback in self._siblings:
            if isinstance(callback, keras.callbacks.EarlyStopping):
                best = getattr(callback, "best_weights", None)
                if best is not None and converter.fits(best):
                    callback.best_weights = converter(best)

    def _resume(self, backup):
        """Re-apply the growth events recorded beside ``backup`` (see `backup`)."""
        backup_dir, weights_path, previous_path = internals.backup_paths(backup)
        if "://" in str(backup_dir):
            raise ValueError(
                "GrowModel keeps its growth log beside the BackupAndRestore backup "
                "and supports local backup directories only. Received: "
                f"backup_dir={backup_dir!r}"
            )
        schedule = [
            f"{e.trigger.describe()}: {', '.join(map(str, e.requests))}"
            for e in self.events
        ]
        log = GrowthLog(backup_dir, schedule)
        if not log.read():
            log.start(self.model)
            self._log = log
            return
        stage = log.stage_for([weights_path, previous_path])
        if stage is None:  # nothing backed up yet: start over
            log.start(self.model)
            self._log = log
            return
        if stage and log.stages[0]["signature"] != signature(self.model):
            raise ValueError(
                f"GrowModel: model '{self.model.name}' does not match the model "
                f"that the growth log in {backup_dir} starts from; resume with "
                "the same model construction, or delete the backup directory."
            )
        for index in range(1, stage + 1):
            # The optimizer's step it happened at (a re-warm starts there).
            record = log.records[index - 1]
            step = int(record.get("optimizer_step", record["step"]))
            self._grow(log.stages[index]["events"], restoring=step)
        for record in log.records[:stage]:
            record = dict(record)
            record.pop("optimizer_step", None)
            if "operations" in record:  # a log written before 0.2.0
                record["requests"] = record.pop("operations")
            record["requests"] = tuple(record["requests"])
            self._add_record(GrowthRecord(**record))
        log.truncate(stage)
        self._log = log
