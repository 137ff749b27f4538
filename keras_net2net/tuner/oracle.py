"""`GrowthOracle`: successive halving whose promoted candidates are grown."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from typing import Any

import keras_tuner

from keras_net2net.tuner.space import GrowthSpace
from keras_net2net.tuner.space import Operation

# Trial values that are not hyperparameters of the search space (as
# Hyperband's ``tuner/...`` values): where a trial comes from.
PARENT = "growth/parent"
OPERATIONS = "growth/operations"
RUNG = "growth/rung"
GROWTH_KEYS = (PARENT, OPERATIONS, RUNG)

_STATUS = keras_tuner.engine.trial.TrialStatus
_ENDED = (_STATUS.COMPLETED, _STATUS.FAILED, _STATUS.INVALID)


def _positive_int(value: Any, argument: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"GrowthOracle: `{argument}` must be a positive int; received {value!r}."
        )
    return value


class GrowthOracle(keras_tuner.Oracle):
    """Successive halving in which promoted candidates are grown, not retrained.

    Rung 0 holds ``initial_trials`` fresh models built by the hypermodel
    (random values of its hyperparameters). When every trial of a rung has
    ended, the best ``ceil(n / eta)`` of them are promoted: each becomes the
    parent of up to ``children`` trials of the next rung, each one a growth
    step sampled from ``space`` and applied to the parent's trained model
    (Net2Net, function-preserving), then trained for the trial's epochs.
    Before a proposal becomes a trial it is applied to the parent's model
    (without training): a growth the library refuses, or one over the
    parameter budget, never becomes a trial. The search ends after
    ``max_trials`` trials or when no promoted model can grow any further.

    Used by `GrowthTuner`, which reads each trial's architecture and checks
    proposals; on its own it cannot check them.

    Args:
        space: a `GrowthSpace`: which layers may grow, how far, the budget.
        objective: as for any KerasTuner oracle (e.g. ``"val_loss"``).
        max_trials: the number of trials, fresh and grown together.
        initial_trials: fresh models in rung 0. Defaults to 3.
        eta: the best ``1/eta`` of a rung are promoted. Defaults to 2.
        children: growth steps proposed per promoted model. Defaults to 2.
        seed: the random seed (hyperparameters and proposals).
        **kwargs: other `keras_tuner.Oracle` arguments.
    """

    def __init__(
        self,
        space: GrowthSpace,
        objective: Any = None,
        max_trials: int = 10,
        initial_trials: int = 3,
        eta: int = 2,
        children: int = 2,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(space, GrowthSpace):
            raise TypeError(
                "GrowthOracle: `space` must be a GrowthSpace; received "
                f"{space!r} (type {type(space).__name__})."
            )
        super().__init__(
            objective=objective,
            max_trials=_positive_int(max_trials, "max_trials"),
            seed=seed,
            **kwargs,
        )
        self.space = space
        self.initial_trials = _positive_int(initial_trials, "initial_trials")
        self.eta = _positive_int(eta, "eta")
        self.children = _positive_int(children, "children")
        self.rungs: list[list[str]] = []
        self.queue: list[dict[str, Any]] = []
        self.architectures: dict[str, dict[str, Any]] = {}
        self.initial_metrics: dict[str, dict[str, float]] = {}
        self.rejected: list[dict[str, Any]] = []
        # Set by GrowthTuner: (parent trial id, operations) -> parameters of
        # the grown model; raises ValueError/TypeError if the growth is refused.
        self.measure: Callable[[str, list[Operation]], int] | None = None

    # -- what the tuner reports -------------------------------------------------

    def record_architecture(self, trial_id: str, architecture: dict[str, Any]) -> None:
        """Record the architecture of a trial's model (before it trains)."""
        self.architectures[trial_id] = architecture

    def record_initial_metrics(self, trial_id: str, metrics: dict[str, float]) -> None:
        """Record a trial's validation metrics before it trains."""
        self.initial_metrics[trial_id] = metrics

    # -- proposals ----------------------------------------------------------------

    def populate_space(self, trial_id: str) -> dict[str, Any]:
        if not self.rungs:
            self.rungs.append([])
        if len(self.rungs[0]) < self.initial_trials and len(self.rungs) == 1:
            values = self._random_values() if self.hyperparameters.space else {}
            if values is not None:
                self.rungs[0].append(trial_id)
                return {
                    "status": _STATUS.RUNNING,
                    "values": {**values, PARENT: "", OPERATIONS: "[]", RUNG: 0},
                }
        if not self.queue:
            rung = self.rungs[-1]
            running = [t for t in rung if t in self.trials]
            if any(self.trials[t].status not in _ENDED for t in running):
                return {"status": _STATUS.IDLE}
            queue, rejected = self._promote(len(self.rungs) - 1)
            # Committed together: an interruption above leaves no trace.
            self.rejected += rejected
            if not queue:
                return {"status": _STATUS.STOPPED}
            self.queue = queue
            self.rungs.append([])
        proposal = self.queue.pop(0)
        parent = self.trials[proposal["parent"]]
        values = dict(parent.hyperparameters.values)
        for key in GROWTH_KEYS:
            values.pop(key, None)
        self.rungs[-1].append(trial_id)
        return {
            "status": _STATUS.RUNNING,
            "values": {
                **values,
                PARENT: proposal["parent"],
                OPERATIONS: json.dumps(proposal["operations"]),
                RUNG: len(self.rungs) - 1,
            },
        }

    def _compute_values_hash(self, values: dict[str, Any]) -> str:
        # Where a trial comes from is not a hyperparameter value: fresh
        # trials are told apart by their hyperparameters alone.
        values = {k: v for k, v in values.items() if k not in GROWTH_KEYS}
        return super()._compute_values_hash(values)

    def _ranked(self, trial_ids: list[str]) -> list[str]:
        done = [
            t
            for t in trial_ids
            if t in self.trials
            and self.trials[t].status == _STATUS.COMPLETED
            and self.trials[t].score is not None
        ]
        return sorted(
            done,
            key=lambda t: self.trials[t].score,
            reverse=self.objective.direction == "max",
        )

    def _promote(self, rung: int) -> tuple[list[dict], list[dict]]:
        """The growth steps of the best of ``rung``, checked on the parents.

        Returns the accepted proposals and the rejected ones (with reasons).
        """
        if self.measure is None:
            raise RuntimeError(
                "GrowthOracle: no way to check growth proposals; use it through "
                "GrowthTuner (which sets `measure`)."
            )
        ranked = self._ranked(self.rungs[rung])
        promoted = ranked[: math.ceil(len(ranked) / self.eta)]
        queue: list[dict[str, Any]] = []
        rejected: list[dict[str, Any]] = []
        for parent in promoted:
            rng = random.Random(f"{self.seed}/{rung}/{parent}")
            accepted = 0
            for operations in self.space.sample(
                self.architectures[parent], rng, 4 * self.children
            ):
                if accepted == self.children:
                    break
                reason, params = self._check(parent, operations)
                if reason:
                    rejected.append(
                        {"parent": parent, "operations": operations, "reason": reason}
                    )
                    continue
                accepted += 1
                queue.append(
                    {"parent": parent, "operations": operations, "params": params}
                )
        return queue, rejected

    def _check(self, parent: str, operations: list[Operation]) -> tuple[str, int]:
        assert self.measure is not None
        try:
            params = int(self.measure(parent, operations))
        except (ValueError, TypeError) as error:
            return f"refused: {error}", 0
        if not self.space.within_budget(params):
            return (
                f"over the budget: {params:,} parameters > max_params "
                f"{self.space.max_params:,}",
                params,
            )
        return "", params

    # -- state (saved in oracle.json; reloaded with overwrite=False) -----------

    def get_state(self) -> dict[str, Any]:
        state = super().get_state()
        state["growth"] = {
            "space": self.space.get_config(),
            "initial_trials": self.initial_trials,
            "eta": self.eta,
            "children": self.children,
            "rungs": self.rungs,
            "queue": self.queue,
            "architectures": self.architectures,
            "initial_metrics": self.initial_metrics,
            "rejected": self.rejected,
        }
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        growth = state["growth"]
        saved = {k: growth[k] for k in ("space", "initial_trials", "eta", "children")}
        now = {
            "space": self.space.get_config(),
            "initial_trials": self.initial_trials,
            "eta": self.eta,
            "children": self.children,
        }
        if json.loads(json.dumps(now)) != saved:
            changed = [k for k in now if json.loads(json.dumps(now[k])) != saved[k]]
            raise ValueError(
                "GrowthOracle: cannot resume this search with a different "
                f"{', '.join(changed)}: it was {saved}, received {now}. Use the "
                "same arguments, or overwrite=True (or another project_name) to "
                "start a new search."
            )
        self.rungs = growth["rungs"]
        self.queue = growth["queue"]
        self.architectures = growth["architectures"]
        self.initial_metrics = growth["initial_metrics"]
        self.rejected = growth["rejected"]
