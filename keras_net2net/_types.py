"""Type aliases shared by the public API's annotations.

The bottom floor of the package: it imports nothing of keras-net2net. The
aliases of growth requests live beside them (`keras_net2net.requests`), those
of schedules in `keras_net2net.growth.schedule`.
"""

from typing import Any
from typing import Union

# Keras ships no type information: its objects are typed as Any here.
Model = Any  # a built keras.Model (Sequential or Functional)
Layer = Any  # a keras.layers.Layer or keras.Operation
Tensor = Any  # a backend tensor or KerasTensor
LayerRef = str | Layer  # a layer's name, or the layer itself
Logs = Union[dict[str, Any], None]  # noqa: UP007
