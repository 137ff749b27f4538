"""When to grow: triggers, and the schedule that pairs them with requests."""

import dataclasses
import numbers
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any
from typing import Union

import numpy as np

from keras_net2net._validation import check_choice
from keras_net2net._validation import check_int
from keras_net2net._validation import check_name
from keras_net2net._validation import check_real
from keras_net2net.requests import Request
from keras_net2net.requests import Requests

_MAX_WORDS = ("acc", "auc", "precision", "recall", "f1", "iou")


@dataclasses.dataclass(frozen=True)
class AtEpoch:
    """Grow at the start of epoch ``epoch`` (0-based, like ``on_epoch_begin``).

    ``AtEpoch(2)`` grows after two epochs have been trained. A plain integer key
    in a `GrowModel` schedule means the same.

    Example:

    ```python
    GrowModel({AtEpoch(2): Widen("fc1", 128)})  # same as {2: Widen("fc1", 128)}
    ```

    Args:
        epoch: the epoch index (>= 0).
    """

    epoch: int

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "epoch", check_int(self.epoch, "epoch", owner="AtEpoch")
        )

    @property
    def moment(self) -> int:
        return self.epoch

    def describe(self) -> str:
        return f"epoch {self.epoch}"


@dataclasses.dataclass(frozen=True)
class AtStep:
    """Grow before training step ``step`` (0-based, counted across epochs).

    ``AtStep(100)`` grows after 100 batches have been trained. Steps continue
    from ``optimizer.iterations`` when `fit` is called again. With
    ``steps_per_execution > 1`` growth happens at the next execution boundary.

    Example:

    ```python
    GrowModel({AtStep(900): Deepen(after="fc1")})
    ```

    Args:
        step: the global step index (>= 0).
    """

    step: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "step", check_int(self.step, "step", owner="AtStep"))

    @property
    def moment(self) -> int:
        return self.step

    def describe(self) -> str:
        return f"step {self.step}"


@dataclasses.dataclass(frozen=True)
class OnPlateau:
    """Grow when a monitored metric has stopped improving.

    Works like `keras.callbacks.EarlyStopping`: at the end of each epoch the
    monitored value is compared with the best so far; after ``patience``
    epochs without an improvement larger than ``min_delta`` the trigger fires
    and the model grows at the start of the next epoch. Each trigger fires
    once.

    Example:

    ```python
    GrowModel({OnPlateau("val_loss", patience=1): Widen("fc1", 256)})
    ```

    Args:
        monitor: metric name in the epoch logs. Defaults to ``"val_loss"``.
        patience: epochs without improvement before growing. Defaults to 0.
        min_delta: smallest change that counts as an improvement.
            Defaults to 0.
        mode: ``"min"``, ``"max"`` or ``"auto"`` (``"max"`` for accuracy-like
            names, else ``"min"``). Defaults to ``"auto"``.
    """

    monitor: str = "val_loss"
    patience: int = 0
    min_delta: float = 0.0
    mode: str = "auto"

    def __post_init__(self) -> None:
        owner = "OnPlateau"
        check_name(self.monitor, "monitor", owner=owner, allow_none=False)
        object.__setattr__(
            self, "patience", check_int(self.patience, "patience", owner=owner)
        )
        object.__setattr__(
            self,
            "min_delta",
            check_real(self.min_delta, "min_delta", minimum=0.0, owner=owner),
        )
        check_choice(self.mode, ("auto", "min", "max"), "mode", owner=owner)

    @property
    def maximize(self) -> bool:
        if self.mode != "auto":
            return self.mode == "max"
        name = self.monitor.removeprefix("val_")
        return any(word in name for word in _MAX_WORDS)

    def improved(self, value: float, best: float | None) -> bool:
        if best is None:
            return True
        if self.maximize:
            return value > best + self.min_delta
        return value < best - self.min_delta

    def describe(self) -> str:
        return f"plateau of {self.monitor} (patience {self.patience})"


Trigger = Union[int, AtEpoch, AtStep, OnPlateau]  # noqa: UP007
Schedule = Union[  # noqa: UP007
    Mapping[Trigger, Requests], Sequence[tuple[Trigger, Requests]]
]


@dataclasses.dataclass(frozen=True)
class Event:
    """One scheduled growth event: a trigger and the requests it applies."""

    trigger: AtEpoch | AtStep | OnPlateau
    requests: tuple[Request, ...]


def parse_schedule(schedule: Schedule) -> list[Event]:
    """Normalise a schedule into a list of `Event`.

    Args:
        schedule: a dict ``{trigger: requests}`` or a list of
            ``(trigger, requests)`` pairs. A trigger is an `AtEpoch`,
            `AtStep`, `OnPlateau` or an int (an epoch); requests are a
            `Widen`/`Deepen` or a list of them.

    Returns:
        A list of `Event`, in schedule order.
    """
    source: Any = schedule.items() if isinstance(schedule, dict) else schedule
    try:
        items = list(source)
    except TypeError:
        items = []
    if not items:
        raise ValueError(
            "`schedule` must be a non-empty dict {trigger: requests} or list "
            f"of (trigger, requests) pairs. Received: schedule={schedule!r}"
        )
    events = []
    for item in items:
        if not (isinstance(item, (tuple, list)) and len(item) == 2):
            raise ValueError(
                "Each `schedule` entry must be a (trigger, requests) pair. "
                f"Received: {item!r}"
            )
        trigger, given = item
        if isinstance(trigger, numbers.Integral) and not isinstance(
            trigger, (bool, np.bool_)
        ):
            trigger = AtEpoch(int(trigger))
        if not isinstance(trigger, (AtEpoch, AtStep, OnPlateau)):
            raise TypeError(
                "A `schedule` trigger must be an int (epoch), AtEpoch, AtStep or "
                f"OnPlateau. Received: {trigger!r} of type {type(trigger).__name__}"
            )
        requests = [given] if isinstance(given, Request) else given
        requests = tuple(requests) if isinstance(requests, (list, tuple)) else ()
        if not requests or not all(isinstance(r, Request) for r in requests):
            raise TypeError(
                f"The `schedule` requests for {trigger.describe()} must be a "
                "growth request (Widen, Deepen, Stack) or a non-empty list of "
                "them. "
                f"Received: {given!r}"
            )
        events.append(Event(trigger, requests))
    return events
