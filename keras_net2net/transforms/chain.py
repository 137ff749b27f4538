"""A chain of width transforms: the one way a weight is carried through growth.

A growth changes a weight by a sequence of `WidthTransform` steps (a layer that
both reads and writes the widened channels gets one per axis; several growths
compose). `Chain` is that sequence, and ``Chain.apply`` the one host (numpy)
implementation that every path uses: the initializers of rebuilt layers, the
optimizer slots carried through growth, `EarlyStopping`'s stored weights. The
same chain runs with backend ops where the value lives
(`keras_net2net._arrays.apply_on_device`) when it is ``exact``.

Example:

```python
g = random_mapping(4, 6, seed=0)
chain = Chain([WidthTransform(g, side="divide"), WidthTransform(g, side="copy")])
kernel = chain.apply(kernel)  # (4, 4) -> (6, 6)
velocity = chain.apply(velocity, kind="squared")
```
"""

import dataclasses
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from keras_net2net.transforms.experts import EXPERT_STEPS
from keras_net2net.transforms.experts import Join
from keras_net2net.transforms.wider import KINDS
from keras_net2net.transforms.wider import WidthTransform


@dataclasses.dataclass(frozen=True, eq=False, init=False)
class Chain:
    """`WidthTransform` steps applied in order (an empty chain changes nothing).

    Example:

    ```python
    g = random_mapping(4, 6, seed=0)
    both_sides = Chain([WidthTransform(g, side="divide"), WidthTransform(g)])
    kernel = both_sides.apply(kernel)  # (4, 4) -> (6, 6)
    if both_sides.exact():  # the same result with backend ops, on device
        kernel = apply_on_device(variable, both_sides)
    ```

    Args:
        steps: the transforms, first applied first: `WidthTransform`, or the
            upcycling steps `keras_net2net.transforms.Replicate` and
            `keras_net2net.transforms.Join`. Defaults to none.
    """

    steps: tuple[Any, ...]

    def __init__(self, steps: Iterable[WidthTransform] = ()) -> None:
        steps = tuple(steps)
        for step in steps:
            if not isinstance(step, (WidthTransform, *EXPERT_STEPS)):
                raise TypeError(
                    "A Chain holds WidthTransform, Replicate, Join and Transpose "
                    "steps only. Received: "
                    f"{step!r} of type {type(step).__name__}"
                )
        object.__setattr__(self, "steps", steps)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.steps)

    def __len__(self) -> int:
        return len(self.steps)

    def then(self, steps: Iterable[Any]) -> "Chain":
        """This chain followed by ``steps``."""
        return Chain(self.steps + tuple(steps))

    def exact(self, kind: str = "weight") -> bool:
        """True if every step only copies and divides (no fresh unit, no noise).

        Such a chain is the exact Net2Net case: it can run with backend ops
        (`keras_net2net._arrays.apply_on_device`), with the same result.
        """
        for step in self.steps:
            if not isinstance(step, WidthTransform):
                return False  # upcycling steps run in numpy
            if step.mapping.fresh.any():
                return False
            if kind == "weight" and step.noise:
                return False
        return True

    def apply(
        self,
        value: ArrayLike,
        kind: str = "weight",
        parts: Callable[[Any], ArrayLike] | None = None,
    ) -> np.ndarray:
        """Apply every step to ``value`` in numpy; each step writes a new array.

        Args:
            value: an array shaped like the original weight.
            kind: ``"weight"``, ``"linear"`` or ``"squared"`` (see
                `WidthTransform.apply`). Defaults to ``"weight"``.
            parts: for a `Join` step, a function from the old variable it
                names to that variable's array of the same kind (its weights,
                or its optimizer slot). Defaults to None.

        Returns:
            The transformed array; for an empty chain, ``value`` itself as an
            array (no copy).
        """
        if kind not in KINDS:
            raise ValueError(f"`kind` must be one of {KINDS}. Received: {kind!r}")
        if not self.steps:
            return np.asarray(value)
        result = np.asarray(value)
        for step in self.steps:
            if isinstance(step, Join):
                result = step.apply(result, kind=kind, parts=parts)
            else:  # each step writes a new array
                result = step.apply(result, kind=kind)
        return result
