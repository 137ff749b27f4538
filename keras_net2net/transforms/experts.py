"""The weight math of sparse upcycling: one network's weights, many experts'.

An expert bank holds ``num_experts`` networks in one variable (a new leading
axis); upcycling starts every expert as a copy of a dense network
(`Replicate`). Some banks fuse two of the dense network's kernels in one
(``[gate | up]``): `Join` appends the second one. A tied output embedding
that the MoE class cannot tie is untied as its transpose (`Transpose`). All
three are steps of a `keras_net2net.transforms.Chain`, as `WidthTransform`
is, so the optimizer's state follows the weights through them.

Example:

```python
bank = Chain([Replicate(8)]).apply(dense_kernel)  # (h, i) -> (8, h, i)
fused = Chain([Join(up), Replicate(8)]).apply(gate, parts=values.get)
```
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import ArrayLike


@dataclasses.dataclass(frozen=True, eq=False)
class Replicate:
    """A new leading axis of ``copies`` copies of the array.

    Example:

    ```python
    bank = Replicate(8).apply(dense_kernel)  # (h, i) -> (8, h, i)
    ```

    Args:
        copies: how many copies (experts), an integer >= 1.
        noise: for ``kind="weight"``, normal noise of this standard deviation
            relative to the array's own, on every copy but the first (the
            copies then differ: not function-preserving). Defaults to 0.
        seed: the noise's seed. Defaults to None.
    """

    copies: int
    noise: float = 0.0
    seed: int | None = None

    def apply(self, value: ArrayLike, kind: str = "weight") -> np.ndarray:
        """``value`` repeated on a new axis 0 (optimizer state: no noise)."""
        value = np.asarray(value)
        result = np.repeat(value[None], self.copies, axis=0)
        if kind == "weight" and self.noise and self.copies > 1:
            rng = np.random.default_rng(self.seed)
            scale = float(np.std(value)) or 1.0
            draw = rng.normal(0.0, self.noise * scale, result[1:].shape)
            result[1:] += draw.astype(result.dtype)
        return result


@dataclasses.dataclass(frozen=True, eq=False)
class Join:
    """The array followed, along ``axis``, by another old variable's.

    The other variable's value is looked up where the chain is applied
    (``parts``): its weights when weights are carried, its optimizer slot
    of the same kind when state is.

    Example:

    ```python
    chain = Chain([Join(up_variable), Replicate(8)])  # [gate | up] per expert
    fused = chain.apply(gate_value, parts=lambda v: values[v.path])
    ```

    Args:
        part: the other (old) variable.
        axis: the axis to join on. Defaults to -1.
        steps: transforms (`WidthTransform`) applied to the other variable's
            value first, where it changed in an earlier growth. Defaults to
            none.
    """

    part: Any
    axis: int = -1
    steps: tuple = ()

    def apply(
        self,
        value: ArrayLike,
        kind: str = "weight",
        parts: Callable[[Any], ArrayLike] | None = None,
    ) -> np.ndarray:
        """``concatenate([value, parts(part)], axis)``."""
        if parts is None:
            raise ValueError(
                "Join needs the value of its other variable: apply the chain "
                "with `parts` (a function from an old variable to its array)."
            )
        other = np.asarray(parts(self.part))
        for step in self.steps:
            other = step.apply(other, kind=kind)
        return np.concatenate([np.asarray(value), other], axis=self.axis)


@dataclasses.dataclass(frozen=True, eq=False)
class Transpose:
    """The array's axes reversed (a tied output embedding untied: the
    output projection is the embedding matrix transposed).

    Example:

    ```python
    reverse = Transpose().apply(embeddings)  # (vocab, hidden) -> (hidden, vocab)
    ```
    """

    def apply(self, value: ArrayLike, kind: str = "weight") -> np.ndarray:
        """A transposed copy of ``value``."""
        return np.ascontiguousarray(np.asarray(value).T)


# The steps a Chain holds besides WidthTransform.
EXPERT_STEPS = (Replicate, Join, Transpose)
