"""Property: widening or deepening any layer of a random chain keeps the function."""

import keras
import numpy as np
from conftest import TOL
from conftest import build
from conftest import randomize_weights
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

import keras_net2net as kn

L = keras.layers

CONV = {1: L.Conv1D, 2: L.Conv2D}
POOL = {1: L.MaxPooling1D, 2: L.MaxPooling2D}
GLOBAL = {1: L.GlobalAveragePooling1D, 2: L.GlobalMaxPooling2D}


@st.composite
def chains(draw):
    """A random chain as layer specs (layers are built in the test)."""
    rank = draw(st.sampled_from([0, 1, 2]))  # 0: Dense only
    specs, names, spatial = [], [], 8
    for i in range(draw(st.integers(1, 3))):
        width = draw(st.integers(1, 5))
        activation = draw(st.sampled_from(["relu", None, "tanh"]))
        kernel = draw(st.sampled_from([1, 3]))
        specs.append(("units", f"u{i}", width, activation, kernel))
        names.append((f"u{i}", activation))
        extras = ["bn", "dropout", "relu", "tanh"] + (["pool"] if rank else [])
        for extra in draw(st.lists(st.sampled_from(extras), max_size=2)):
            if extra != "pool" or spatial >= 4:
                specs.append((extra,))
                spatial //= 2 if extra == "pool" else 1
    if rank:
        specs.append((draw(st.sampled_from(["flatten", "global"])),))
    shape = (8,) * rank + (2,) if rank else (4,)
    return rank, specs, shape, names


def make_layer(rank, spec):
    kind = spec[0]
    if kind == "units":
        _, name, width, activation, kernel = spec
        if rank:
            return CONV[rank](
                width, kernel, padding="same", activation=activation, name=name
            )
        return L.Dense(width, activation=activation, name=name)
    return {
        "bn": L.BatchNormalization,
        "dropout": lambda: L.Dropout(0.3),
        "relu": lambda: L.Activation("relu"),
        "tanh": lambda: L.Activation("tanh"),
        "pool": lambda: POOL[rank](2),
        "flatten": L.Flatten,
        "global": lambda: GLOBAL[rank](),
    }[kind]()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(), chain=chains(), kind=st.sampled_from(["sequential", "functional"])
)
def test_random_chains_preserve_function(data, chain, kind):
    rank, specs, shape, names = chain
    layers = [make_layer(rank, spec) for spec in specs] + [L.Dense(3, name="head")]
    model = randomize_weights(
        build(layers, shape, kind), seed=data.draw(st.integers(0, 100))
    )
    x = np.random.default_rng(0).normal(size=(4,) + shape).astype("float32")
    name, activation = data.draw(st.sampled_from(names))
    if data.draw(st.booleans()) or activation == "tanh":
        width = (
            model.get_layer(name).get_config().get("units")
            or model.get_layer(name).filters
        )
        grown = kn.widen(
            model,
            name,
            width + data.draw(st.integers(1, 6)),
            seed=data.draw(st.integers(0, 1000)),
        )
    else:
        grown = kn.deepen(model, after=name)
    assert kn.max_output_difference(model, grown, x) <= TOL
