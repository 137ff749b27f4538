"""Graph surgery on Sequential and Functional models.

* `graph`: a read-only, tensor-level view of a model's graph (`LayerGraph`).
* `handlers`: per-operation-type handlers, the one place to add a layer type.
* `coupling`: coupling groups, every operation that shares a channel axis.
* `plan`: turning `widen`/`deepen` requests into changes, all validated.
* `apply`: building the grown model of a graph plan.
* `dispatch`: the one growth path, from requests to a grown model.
* `api`: the public functions (`widen`, `deepen`, `describe_growth`, ...).
"""

from keras_net2net.requests import Deepen
from keras_net2net.requests import Stack
from keras_net2net.requests import Widen
from keras_net2net.surgery.api import coupled_layers
from keras_net2net.surgery.api import deepen
from keras_net2net.surgery.api import describe_growth
from keras_net2net.surgery.api import max_output_difference
from keras_net2net.surgery.api import trace_layers
from keras_net2net.surgery.api import upcycle
from keras_net2net.surgery.api import widen
from keras_net2net.surgery.coupling import ChannelGroup
from keras_net2net.surgery.dispatch import GrowthResult
from keras_net2net.surgery.dispatch import apply_requests
from keras_net2net.surgery.dispatch import check_request
from keras_net2net.surgery.graph import LayerGraph
from keras_net2net.surgery.handlers import Handler
from keras_net2net.surgery.handlers import LayerChange
from keras_net2net.surgery.handlers import LayoutHandler
from keras_net2net.surgery.handlers import PassThroughHandler
from keras_net2net.surgery.handlers import UnitsHandler
from keras_net2net.surgery.handlers import copy_transform
from keras_net2net.surgery.handlers import divide_transform
from keras_net2net.surgery.handlers import get_handler
from keras_net2net.surgery.handlers import register_handler

__all__ = [
    "ChannelGroup",
    "Deepen",
    "Stack",
    "GrowthResult",
    "Handler",
    "LayerChange",
    "LayerGraph",
    "LayoutHandler",
    "PassThroughHandler",
    "UnitsHandler",
    "Widen",
    "apply_requests",
    "check_request",
    "copy_transform",
    "coupled_layers",
    "deepen",
    "describe_growth",
    "divide_transform",
    "get_handler",
    "max_output_difference",
    "register_handler",
    "trace_layers",
    "upcycle",
    "widen",
]
