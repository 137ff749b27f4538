"""Growing a model in place during `model.fit`."""

from keras_net2net.growth.callback import GrowModel
from keras_net2net.growth.inplace import grow_in_place
from keras_net2net.growth.learning_rate import Rewarmed
from keras_net2net.growth.learning_rate import ScaledSchedule
from keras_net2net.growth.learning_rate import WarmupStableDecay
from keras_net2net.growth.record import GrowthRecord
from keras_net2net.growth.schedule import AtEpoch
from keras_net2net.growth.schedule import AtStep
from keras_net2net.growth.schedule import OnPlateau
from keras_net2net.growth.transformer import transformer_config
from keras_net2net.growth.transformer import transformer_requests
from keras_net2net.growth.transformer import transformer_schedule

__all__ = [
    "AtEpoch",
    "AtStep",
    "GrowModel",
    "GrowthRecord",
    "OnPlateau",
    "Rewarmed",
    "ScaledSchedule",
    "WarmupStableDecay",
    "grow_in_place",
    "transformer_config",
    "transformer_requests",
    "transformer_schedule",
]
