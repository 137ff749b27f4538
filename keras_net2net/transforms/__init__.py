"""Pure Net2Net weight math: numpy arrays in, numpy arrays out, no Keras."""

from keras_net2net.transforms.chain import Chain
from keras_net2net.transforms.deeper import check_identity_kernel_size
from keras_net2net.transforms.deeper import identity_conv_kernel
from keras_net2net.transforms.deeper import identity_dense_kernel
from keras_net2net.transforms.experts import Join
from keras_net2net.transforms.experts import Replicate
from keras_net2net.transforms.experts import Transpose
from keras_net2net.transforms.mapping import FRESH
from keras_net2net.transforms.mapping import WidthMapping
from keras_net2net.transforms.mapping import concat_mappings
from keras_net2net.transforms.mapping import padding_mapping
from keras_net2net.transforms.mapping import random_mapping
from keras_net2net.transforms.mapping import stream_mapping
from keras_net2net.transforms.mapping import tiled_mapping
from keras_net2net.transforms.rules import MappingRule
from keras_net2net.transforms.rules import choose_mapping
from keras_net2net.transforms.rules import grouped_query_mappings
from keras_net2net.transforms.rules import satisfies
from keras_net2net.transforms.wider import COPY
from keras_net2net.transforms.wider import DIVIDE
from keras_net2net.transforms.wider import MEAN
from keras_net2net.transforms.wider import RANDOM
from keras_net2net.transforms.wider import WidthTransform
from keras_net2net.transforms.wider import wider_in
from keras_net2net.transforms.wider import wider_out

__all__ = [
    "COPY",
    "DIVIDE",
    "Chain",
    "FRESH",
    "Join",
    "MEAN",
    "MappingRule",
    "RANDOM",
    "Replicate",
    "Transpose",
    "WidthMapping",
    "WidthTransform",
    "choose_mapping",
    "concat_mappings",
    "grouped_query_mappings",
    "check_identity_kernel_size",
    "identity_conv_kernel",
    "identity_dense_kernel",
    "padding_mapping",
    "random_mapping",
    "satisfies",
    "stream_mapping",
    "tiled_mapping",
    "wider_in",
    "wider_out",
]
