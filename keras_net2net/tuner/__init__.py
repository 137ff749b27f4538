"""Architecture search by growth: KerasTuner trials that start from a parent.

Needs KerasTuner: ``pip install "keras-net2net[tuner]"``. Importing
``keras_net2net`` itself never imports this subpackage.
"""

try:
    import keras_tuner  # noqa: F401
except ImportError as error:  # pragma: no cover - depends on the install
    raise ImportError(
        "keras_net2net.tuner needs KerasTuner: pip install 'keras-net2net[tuner]' "
        f"(could not import keras_tuner: {error})"
    ) from error

from keras_net2net.tuner.oracle import GrowthOracle
from keras_net2net.tuner.space import GrowthSpace
from keras_net2net.tuner.tuner import GrowthTuner

__all__ = ["GrowthOracle", "GrowthSpace", "GrowthTuner"]
