"""`GrowthTuner`: a KerasTuner tuner whose trials may grow an earlier trial."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import keras
import keras_tuner

from keras_net2net.growth import grow_in_place
from keras_net2net.requests import Deepen
from keras_net2net.requests import Widen
from keras_net2net.surgery import apply_requests
from keras_net2net.surgery.handlers import handler_for
from keras_net2net.tuner.oracle import OPERATIONS
from keras_net2net.tuner.oracle import PARENT
from keras_net2net.tuner.oracle import RUNG
from keras_net2net.tuner.oracle import GrowthOracle
from keras_net2net.tuner.space import WIDEN
from keras_net2net.tuner.space import GrowthSpace
from keras_net2net.tuner.space import Operation
from keras_net2net.tuner.space import grown_architecture

MODEL_FILE = "model.keras"


class GrowthTuner(keras_tuner.Tuner):
    """Search architectures by growing them: each trial may start from a parent.

    Net2Net's "fast exploration": instead of training every candidate from
    scratch, a promoted candidate's trained model is grown (wider layers,
    inserted identity layers; the function is preserved) and trains on. The
    search is successive halving (`GrowthOracle`): ``initial_trials`` fresh
    models from ``hypermodel``, then rounds in which the best ``1/eta`` of the
    last round are each grown in ``children`` ways. Every trial trains for the
    ``epochs`` given to `search` and saves its whole model (weights and
    optimizer state: a grown model cannot be rebuilt from hyperparameters);
    a grown trial loads its parent's, grows it in place (the optimizer state
    carried) and continues. Trial values record the lineage:
    ``growth/parent`` (a trial id, empty for a fresh model),
    ``growth/operations`` (JSON) and ``growth/rung``.

    Everything else is KerasTuner's: ``search(x, y, epochs=..,
    validation_data=..)`` takes `fit`'s arguments; `get_best_models`,
    `get_best_hyperparameters`, `results_summary`, ``overwrite=False`` to
    resume. Distributed tuning (several tuner processes) is not supported.

    Args:
        hypermodel: a function ``build(hp) -> compiled model`` or a
            `keras_tuner.HyperModel`: the starting models.
        space: a `GrowthSpace` (which layers may grow, how far, the budget).
        objective: the metric to optimise. Defaults to ``"val_loss"``.
        max_trials: trials in all, fresh and grown. Defaults to 10.
        initial_trials: fresh models in the first round. Defaults to 3.
        eta: the best ``1/eta`` of a round are grown. Defaults to 2.
        children: growth steps per promoted model. Defaults to 2.
        noise: Net2WiderNet noise on the new copies (relative to the weights'
            std) to break their symmetry; 0 keeps the function exactly.
            Defaults to 1e-3.
        seed: random seed of the search (hyperparameters, proposals, noise).
        hyperparameters: as for the KerasTuner oracles.
        tune_new_entries: as for the KerasTuner oracles.
        allow_new_entries: as for the KerasTuner oracles.
        max_retries_per_trial: as for the KerasTuner oracles.
        max_consecutive_failed_trials: as for the KerasTuner oracles.
        **kwargs: `keras_tuner.Tuner` arguments (``directory``,
            ``project_name``, ``overwrite``, ...).

    Example:

    ```python
    tuner = GrowthTuner(
        build_small_cnn,
        GrowthSpace(widen={"conv1": 128, "fc1": 256}, deepen=["fc1"]),
        objective="val_accuracy", max_trials=12, directory="search",
    )
    tuner.search(x, y, epochs=2, validation_data=(x_val, y_val))
    best = tuner.get_best_models(1)[0]
    tuner.lineage(tuner.oracle.get_best_trials(1)[0].trial_id)
    ```
    """

    def __init__(
        self,
        hypermodel: Any,
        space: GrowthSpace,
        objective: Any = "val_loss",
        max_trials: int = 10,
        initial_trials: int = 3,
        eta: int = 2,
        children: int = 2,
        noise: float = 1e-3,
        seed: int | None = None,
        hyperparameters: Any = None,
        tune_new_entries: bool = True,
        allow_new_entries: bool = True,
        max_retries_per_trial: int = 0,
        max_consecutive_failed_trials: int = 3,
        **kwargs: Any,
    ) -> None:
        if isinstance(noise, bool) or not isinstance(noise, (int, float)) or noise < 0:
            raise ValueError(
                f"GrowthTuner: `noise` must be a number >= 0; received {noise!r}."
            )
        self.noise = float(noise)
        oracle = GrowthOracle(
            space,
            objective=objective,
            max_trials=max_trials,
            initial_trials=initial_trials,
            eta=eta,
            children=children,
            seed=seed,
            hyperparameters=hyperparameters,
            tune_new_entries=tune_new_entries,
            allow_new_entries=allow_new_entries,
            max_retries_per_trial=max_retries_per_trial,
            max_consecutive_failed_trials=max_consecutive_failed_trials,
        )
        self._measured: tuple[str, Any] | None = None
        self._space_checked = False
        super().__init__(oracle=oracle, hypermodel=hypermodel, **kwargs)
        oracle.measure = self._measure

    # -- models of trials -----------------------------------------------------------

    def _model_path(self, trial_id: str) -> Path:
        return Path(self.get_trial_dir(trial_id)) / MODEL_FILE

    def save_model(self, trial_id: str, model: Any, step: int = 0) -> None:
        """Save the trial's whole model (weights and optimizer state)."""
        model.save(self._model_path(trial_id))

    def load_model(self, trial: Any) -> Any:
        """The trial's trained model, as it ended (with its optimizer state)."""
        path = self._model_path(trial.trial_id)
        if not path.is_file():
            raise FileNotFoundError(
                f"GrowthTuner: trial {trial.trial_id} has no saved model ({path}); "
                "it did not complete."
            )
        return keras.saving.load_model(path)

    def _requests(self, trial_id: str, operations: list[Operation]) -> list[Any]:
        seed = (int(trial_id) + 1000 * int(self.oracle.seed or 0)) % 2**31
        requests: list[Any] = []
        for index, operation in enumerate(operations):
            if operation["op"] == WIDEN:
                requests.append(
                    Widen(
                        operation["layer"],
                        operation["width"],
                        noise=self.noise,
                        seed=seed + index,
                    )
                )
            else:
                requests.append(Deepen(after=operation["after"], seed=seed + index))
        return requests

    def _measure(self, parent: str, operations: list[Operation]) -> int:
        """Parameters of ``parent``'s model grown by ``operations`` (no training).

        Raises ValueError/TypeError if keras-net2net refuses the growth; a
        parent that cannot be loaded is a `keras_tuner.errors.FatalError`.
        """
        if self._measured is None or self._measured[0] != parent:
            # The previous parent's model is dropped here and collected by
            # the next trial's `clear_session` (no heap-wide collection per
            # proposal).
            self._measured = None
            try:
                model = self.load_model(self.oracle.trials[parent])
            except Exception as error:
                raise keras_tuner.errors.FatalError(
                    f"GrowthTuner: could not load the model of trial {parent} to "
                    f"grow it: {type(error).__name__}: {error}"
                ) from error
            self._measured = (parent, model)
        model = self._measured[1]
        result = apply_requests(
            model, self._requests("0", operations), name_failures=True, compile=False
        )
        return int(result.model.count_params())

    def _check_space(self, model: Any) -> None:
        """Every layer of the space exists and grows in ``model`` (a dry run).

        Raises `keras_tuner.errors.FatalValueError` (which ends the search)
        naming the layer and the reason, so that no proposal can name a layer
        that cannot grow.
        """
        space = self.oracle.space
        moves: list[tuple[str, Any]] = []
        for name in space.widen:
            try:
                layer = model.get_layer(name)
                width = int(handler_for(layer).width(layer))
            except (ValueError, AttributeError, NotImplementedError) as error:
                # AttributeError: a pass-through layer (a norm) has no width.
                raise keras_tuner.errors.FatalValueError(
                    f"GrowthTuner: GrowthSpace(widen=...) names layer '{name}', "
                    f"which cannot be widened in model '{model.name}': {error}"
                ) from error
            moves.append((f"widen={{'{name}': ...}}", Widen(name, width + 1)))
        moves += [(f"deepen=['{name}']", Deepen(after=name)) for name in space.deepen]
        for argument, request in moves:
            try:
                apply_requests(model, [request], name_failures=True, compile=False)
            except (ValueError, TypeError) as error:
                raise keras_tuner.errors.FatalValueError(
                    f"GrowthTuner: GrowthSpace({argument}) cannot grow model "
                    f"'{model.name}': {error}"
                ) from error

    def _architecture(self, model: Any, parent: str, operations: list[Operation]):
        space = self.oracle.space
        widths = {}
        for name in space.widen:
            layer = model.get_layer(name)
            widths[name] = int(handler_for(layer).width(layer))
        inserted = (
            grown_architecture(self.oracle.architectures[parent], operations)[
                "inserted"
            ]
            if parent
            else {}
        )
        return {
            "widths": widths,
            "inserted": inserted,
            "params": int(model.count_params()),
        }

    def on_search_end(self) -> None:
        self._measured = None  # the last parent loaded to check proposals
        super().on_search_end()

    # -- one trial --------------------------------------------------------------

    def run_trial(self, trial: Any, *args: Any, **kwargs: Any) -> dict[str, float]:
        hp = trial.hyperparameters
        parent = hp.values.get(PARENT, "")
        operations = json.loads(hp.values.get(OPERATIONS, "[]"))
        self._measured = None
        if parent:
            # As KerasTuner does before building a trial's model:
            # `clear_session` also runs Python's garbage collector (once).
            keras.backend.clear_session()
            model = self.load_model(self.oracle.trials[parent])
            grow_in_place(model, self._requests(trial.trial_id, operations))
        else:
            model = self._try_build(hp)
            if not self._space_checked:
                self._check_space(model)
                self._space_checked = True
        self.oracle.record_architecture(
            trial.trial_id, self._architecture(model, parent, operations)
        )
        initial = _evaluate_validation(model, kwargs)
        if initial is not None:
            self.oracle.record_initial_metrics(trial.trial_id, initial)
        kwargs["callbacks"] = self._deepcopy_callbacks(kwargs.get("callbacks", []))
        results = self.hypermodel.fit(hp, model, *args, **kwargs)
        self.save_model(trial.trial_id, model)
        if not isinstance(results, keras.callbacks.History):
            return results  # a HyperModel.fit returning a float or a dict
        # The trial's score describes the saved model, which its children grow
        # from: its final validation metrics (which are the last epoch's unless
        # a callback such as EarlyStopping(restore_best_weights=True) changed
        # the weights after it).
        metrics = {k: float(v[-1]) for k, v in results.history.items() if v}
        final = _evaluate_validation(model, kwargs)
        if final is not None:
            metrics.update({f"val_{k}": v for k, v in final.items()})
        return metrics

    # -- lineage -------------------------------------------------------------------

    def lineage(self, trial_id: str) -> list[dict[str, Any]]:
        """The chain of trials that led to ``trial_id``, from its fresh root.

        Each entry: ``trial_id``, ``parent``, ``rung``, ``operations``,
        ``params``, ``score``, ``initial_metrics`` (validation metrics before
        it trained: a grown trial's equal its parent's final ones) and
        ``status``.
        """
        chain = []
        current = trial_id
        while current:
            trial = self.oracle.get_trial(current)
            values = trial.hyperparameters.values
            architecture = self.oracle.architectures.get(current, {})
            chain.append(
                {
                    "trial_id": current,
                    "parent": values.get(PARENT) or None,
                    "rung": values.get(RUNG),
                    "operations": json.loads(values.get(OPERATIONS, "[]")),
                    "params": architecture.get("params"),
                    "widths": architecture.get("widths"),
                    "score": trial.score,
                    "initial_metrics": self.oracle.initial_metrics.get(current),
                    "status": trial.status,
                }
            )
            current = values.get(PARENT) or ""
        return chain[::-1]

    def save_lineage(self, path: str | Path, trial_id: str | None = None) -> Path:
        """Write the best trial's (or ``trial_id``'s) lineage as JSON."""
        if trial_id is None:
            trial_id = self.oracle.get_best_trials(1)[0].trial_id
        path = Path(path)
        path.write_text(json.dumps(self.lineage(trial_id), indent=2))
        return path

    def lineage_summary(self, trial_id: str | None = None) -> str:
        """A readable account of how the best (or given) trial was grown."""
        if trial_id is None:
            trial_id = self.oracle.get_best_trials(1)[0].trial_id
        lines = []
        for step in self.lineage(trial_id):
            what = (
                "fresh model"
                if step["parent"] is None
                else f"grown from trial {step['parent']}: "
                + ", ".join(_describe(o) for o in step["operations"])
            )
            score = "-" if step["score"] is None else f"{step['score']:.4f}"
            params = "?" if step["params"] is None else f"{step['params']:,}"
            lines.append(
                f"trial {step['trial_id']} (rung {step['rung']}): {what}; "
                f"{params} parameters; {self.oracle.objective.name} {score} "
                f"({step['status']})"
            )
        return "\n".join(lines)


def _evaluate_validation(model: Any, fit_kwargs: dict[str, Any]):
    """``model``'s metrics on ``fit``'s ``validation_data`` (None without it)."""
    data = fit_kwargs.get("validation_data")
    if data is None:
        return None
    batch_size = fit_kwargs.get("validation_batch_size") or fit_kwargs.get("batch_size")
    if isinstance(data, (tuple, list)):
        results = model.evaluate(
            *data, batch_size=batch_size, verbose=0, return_dict=True
        )
    else:  # a dataset, a PyDataset or a generator: it sets its own batches
        results = model.evaluate(data, verbose=0, return_dict=True)
    return {name: float(value) for name, value in results.items()}


def _describe(operation: Operation) -> str:
    if operation["op"] == WIDEN:
        return f"widen {operation['layer']} to {operation['width']}"
    return f"deepen after {operation['after']}"
