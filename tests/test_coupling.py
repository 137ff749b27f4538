"""The coupling walk (`keras_net2net.surgery.coupling`): edges that carry each
layout's mapping, and handlers that play one role each, chosen per call."""

import keras
import numpy as np
import pytest
from conftest import TOL
from conftest import randomize_weights

import keras_net2net as kn
from keras_net2net.surgery import LayerGraph
from keras_net2net.surgery import LayoutHandler
from keras_net2net.surgery import PassThroughHandler
from keras_net2net.surgery import UnitsHandler
from keras_net2net.surgery import coupling
from keras_net2net.surgery import handlers as H
from keras_net2net.surgery.coupling.group import DERIVE
from keras_net2net.surgery.coupling.group import SAME
from keras_net2net.surgery.coupling.group import SPLIT
from keras_net2net.transforms import WidthMapping

L = keras.layers
BASES = (UnitsHandler, PassThroughHandler, LayoutHandler)


def _roles(handler):
    return [base for base in BASES if isinstance(handler, base)]


def _node(graph, name):
    return graph.calls(graph.get(name))[0]


def test_every_registered_handler_plays_exactly_one_role():
    H.get_handler(keras.layers.Dense(1))  # the built-in registry
    handlers = list(H._REGISTRY.values())
    assert len(handlers) > 40
    for handler in handlers:
        assert len(_roles(handler)) == 1, type(handler).__name__
        role = {UnitsHandler: H.UNITS, PassThroughHandler: H.PASS_THROUGH}.get(
            _roles(handler)[0], H.LAYOUT
        )
        assert handler.role == role


def _model_with_every_switch():
    inputs = keras.Input((4, 4, 3))
    a = L.Conv2D(6, 1, name="a")(inputs)
    b = L.Conv2D(6, 1, name="b")(inputs)
    along = L.Concatenate(name="along")([a, b])  # the channel axis
    across = L.Concatenate(axis=1, name="across")([a, b])  # rows
    grouped = L.Conv2D(12, 3, groups=12, padding="same", name="grouped")(along)
    depthwise = L.DepthwiseConv2D(3, depth_multiplier=2, name="mult")(grouped)
    flat = L.Reshape((-1,), name="flat")(depthwise)
    kept = L.Reshape((32, 6), name="kept")(across)
    outputs = [L.Dense(2, name="h1")(flat), L.Dense(2, name="h2")(kept)]
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize(
    "layer, axis, expected",
    [
        ("along", -1, "ConcatenateHandler"),
        ("across", -1, "MergeHandler"),
        ("grouped", None, "GroupedDepthwiseHandler"),
        ("mult", None, "DepthwiseMultiplierHandler"),
        ("flat", None, "ReshapeLayoutHandler"),
        ("kept", None, "ReshapeHandler"),
        ("a", None, "ConvHandler"),
    ],
)
def test_the_handler_of_a_call_is_chosen_once_with_one_role(layer, axis, expected):
    graph = LayerGraph(_model_with_every_switch())
    handler = H.handler_at(_node(graph, layer), graph, axis)
    assert type(handler).__name__ == expected
    assert len(_roles(handler)) == 1


def test_a_layout_follow_with_the_old_signature_is_refused_at_registration():
    class OldLayout(LayoutHandler):
        def derive(self, layer, node, graph, mappings):
            return mappings[0]

        def follow(self, layer, node, graph, mappings, options, seeds):
            return None

    class Layer(L.Layer):
        def call(self, x):
            return x

    with pytest.raises(TypeError, match=r"OldLayout\.follow takes .*\(layer, mapping"):
        kn.register_handler(Layer, OldLayout())
    assert H.get_handler(Layer()) is None  # nothing registered


def test_each_derived_tensor_keeps_the_edge_that_reached_it():
    inputs = keras.Input((3, 3, 2))
    x = L.Conv2D(4, 1, name="conv")(inputs)
    flat = L.Flatten(name="flatten")(x)
    act = L.ReLU(name="relu")(flat)
    model = keras.Model(inputs, L.Dense(2, name="head")(act))
    group = kn.coupled_layers(model, "conv")
    graph = group.graph
    assert {graph.producer(k).op.name for k in group.core} == {"conv"}
    edges = {graph.producer(k).op.name: edge for k, edge in group.edges.items()}
    assert sorted(edges) == ["flatten", "relu"]
    assert edges["flatten"].carry == DERIVE and edges["flatten"].source is None
    assert edges["relu"].carry == SAME
    assert graph.producer(edges["relu"].source).op.name == "flatten"
    # The mapping of every tensor follows from the core's through the edges.
    mapping = WidthMapping(np.array([0, 1, 2, 3, 1, 1]), old_width=4)
    mappings = group.mappings(mapping)
    expanded = mapping.expand(9)
    for key in group.derived:
        np.testing.assert_array_equal(mappings[key].indices, expanded.indices)
    assert group.handler(_node(graph, "flatten")).role == H.LAYOUT


def test_a_split_is_an_edge_crossed_backwards():
    inputs = keras.Input((5,))
    x = L.Dense(2 * 3, name="stem")(inputs)
    x = L.ReLU(name="act")(x)
    x = L.Reshape((2, 3), name="split")(x)
    model = keras.Model(inputs, L.Dense(2, name="head")(x))
    group = kn.coupled_layers(model, "stem")
    graph = group.graph
    assert group.width == 3
    by_node = {edge.node.op.name: edge for edge in group.edges.values()}
    assert by_node["split"].carry == SPLIT and by_node["act"].carry == SAME
    mapping = WidthMapping(np.array([0, 1, 2, 0]), old_width=3)
    mappings = group.mappings(mapping)
    stem_out = _node(graph, "stem").outputs[0]
    np.testing.assert_array_equal(
        mappings[stem_out].indices, mapping.repeat(1).expand(2).indices
    )
    grown = kn.widen(model, "stem", 2 * 4, seed=0)
    assert grown.get_layer("split").target_shape == (2, 4)


def test_the_walk_is_one_package_with_its_group():
    assert coupling.find_group.__module__ == "keras_net2net.surgery.coupling.walk"
    assert coupling.ChannelGroup.__module__ == "keras_net2net.surgery.coupling.group"


@pytest.mark.parametrize("shared", ["dense", "norm"])
def test_a_shared_layer_after_a_layout_at_the_top_level_grows(shared):
    # Each call of the shared layer reaches the other call's input before its
    # own Flatten does: the Flatten's edge still carries the mapping there.
    a, b = keras.Input((4, 4, 2)), keras.Input((4, 4, 2))
    conv = L.Conv2D(4, 3, name="conv")
    after = L.Dense(6, name="dense") if shared == "dense" else L.BatchNormalization()
    ea = after(L.Flatten()(conv(a)))
    eb = after(L.Flatten()(conv(b)))
    head = L.Dense(1, name="head")(L.Concatenate()([ea, eb]))
    model = randomize_weights(keras.Model([a, b], head))
    rng = np.random.default_rng(0)
    x = [rng.normal(size=(2, 4, 4, 2)).astype("float32") for _ in range(2)]
    group = kn.coupled_layers(model, "conv")
    assert all(key in group.edges for key in group.derived if key not in group.core)
    grown = kn.widen(model, "conv", 7)
    assert kn.max_output_difference(model, grown, x) <= TOL
