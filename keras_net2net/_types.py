"""Type aliases shared by the public API's annotations."""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence
from typing import TYPE_CHECKING
from typing import Any
from typing import Union

if TYPE_CHECKING:
    from keras_net2net.growth.schedule import AtEpoch
    from keras_net2net.growth.schedule import AtStep
    from keras_net2net.growth.schedule import OnPlateau
    from keras_net2net.surgery.operations import Deepen
    from keras_net2net.surgery.operations import Widen

# Keras ships no type information: its objects are typed as Any here.
Model = Any  # a built keras.Model (Sequential or Functional)
Layer = Any  # a keras.layers.Layer or keras.Operation
Tensor = Any  # a backend tensor or KerasTensor
LayerRef = str | Layer  # a layer's name, or the layer itself
# Union (not |): these aliases name classes defined later, as strings.
Operation = Union["Widen", "Deepen"]  # noqa: UP007
Operations = Union[Operation, Sequence[Operation]]  # noqa: UP007
Trigger = Union[int, "AtEpoch", "AtStep", "OnPlateau"]  # noqa: UP007
Schedule = Union[  # noqa: UP007
    Mapping[Trigger, Operations], Sequence[tuple[Trigger, Operations]]
]
Logs = Union[dict[str, Any], None]  # noqa: UP007
