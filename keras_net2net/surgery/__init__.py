"""Graph surgery on Sequential and Functional models."""

from keras_net2net.surgery.graph import LayerGraph
from keras_net2net.surgery.handlers import Handler
from keras_net2net.surgery.handlers import PassThroughHandler
from keras_net2net.surgery.handlers import UnitsHandler
from keras_net2net.surgery.handlers import get_handler
from keras_net2net.surgery.handlers import register_handler
from keras_net2net.surgery.operations import Deepen
from keras_net2net.surgery.operations import Widen
from keras_net2net.surgery.operations import apply_operations
from keras_net2net.surgery.operations import deepen
from keras_net2net.surgery.operations import max_output_difference
from keras_net2net.surgery.operations import widen

__all__ = [
    "Deepen",
    "Handler",
    "LayerGraph",
    "PassThroughHandler",
    "UnitsHandler",
    "Widen",
    "apply_operations",
    "deepen",
    "get_handler",
    "max_output_difference",
    "register_handler",
    "widen",
]
