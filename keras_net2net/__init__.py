"""keras-net2net: grow Keras 3 models while they train (Net2Net)."""

from keras_net2net import transforms
from keras_net2net._version import __version__
from keras_net2net.growth import AtEpoch
from keras_net2net.growth import AtStep
from keras_net2net.growth import GrowModel
from keras_net2net.growth import GrowthRecord
from keras_net2net.growth import OnPlateau
from keras_net2net.growth import Rewarmed
from keras_net2net.growth import ScaledSchedule
from keras_net2net.growth import WarmupStableDecay
from keras_net2net.growth import grow_in_place
from keras_net2net.growth import transformer_config
from keras_net2net.growth import transformer_requests
from keras_net2net.growth import transformer_schedule
from keras_net2net.initializers import IdentityConvInit
from keras_net2net.initializers import Net2WiderInit
from keras_net2net.requests import Deepen
from keras_net2net.requests import Stack
from keras_net2net.requests import Upcycle
from keras_net2net.requests import Widen
from keras_net2net.surgery import coupled_layers
from keras_net2net.surgery import deepen
from keras_net2net.surgery import describe_growth
from keras_net2net.surgery import max_output_difference
from keras_net2net.surgery import register_handler
from keras_net2net.surgery import trace_layers
from keras_net2net.surgery import upcycle
from keras_net2net.surgery import widen

__all__ = [
    "__version__",
    "AtEpoch",
    "AtStep",
    "GrowModel",
    "GrowthRecord",
    "OnPlateau",
    "Rewarmed",
    "ScaledSchedule",
    "WarmupStableDecay",
    "grow_in_place",
    "Deepen",
    "Stack",
    "Upcycle",
    "IdentityConvInit",
    "Net2WiderInit",
    "Widen",
    "coupled_layers",
    "deepen",
    "describe_growth",
    "max_output_difference",
    "register_handler",
    "trace_layers",
    "transformer_config",
    "transformer_requests",
    "transformer_schedule",
    "transforms",
    "upcycle",
    "widen",
]
