"""Carrying a stored weight list (``model.get_weights()``) through a growth.

Callbacks such as `keras.callbacks.EarlyStopping(restore_best_weights=True)`
keep a copy of the model's weights and set it back later. After a growth
that list no longer fits the model. The same transforms that grew the model
turn it into a list that fits the grown model and computes the function the
stored weights computed: transformed variables get their transforms applied
to the stored value; new variables (inserted layers) keep their current,
function-preserving value.
"""

import keras
import numpy as np

from keras_net2net.transforms import Chain


class WeightListConverter:
    """Turns a weight list of the model before a growth into one after it.

    Args:
        old_weights: ``model.weights`` before the growth (their order is the
            order of ``model.get_weights()``).
        new_weights: ``model.weights`` after the growth.
        origins: the growth's origins, ``id(new variable) -> (old variable or
            None, transforms)``.
    """

    def __init__(self, old_weights, new_weights, origins):
        self._position = {id(v): i for i, v in enumerate(old_weights)}
        self._count = len(old_weights)
        self._shapes = [tuple(v.shape) for v in old_weights]
        self._new = list(new_weights)
        self._origins = origins

    def fits(self, values):
        """True if ``values`` is a weight list of the model before the growth."""
        return (
            isinstance(values, (list, tuple))
            and len(values) == self._count
            and all(tuple(np.shape(v)) == s for v, s in zip(values, self._shapes))
        )

    def _part(self, values):
        """A `Join` step's old variable -> its stored array in ``values``."""
        return lambda variable: values[self._position[id(variable)]]

    def __call__(self, values):
        out = []
        for variable in self._new:
            source, chain = self._origins.get(id(variable), (None, []))
            position = self._position.get(id(source)) if source is not None else None
            if position is None:
                out.append(np.array(keras.ops.convert_to_numpy(variable)))
                continue
            # An unchanged weight keeps its stored array (no copy).
            out.append(Chain(chain).apply(values[position], parts=self._part(values)))
        return out
