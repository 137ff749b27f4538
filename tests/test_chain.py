"""One transform executor: every path applies a chain of width transforms alike.

A chain is applied by rebuilt layers' initializers (on the host and with
backend ops), to optimizer slots and to stored weight lists. A `scale` on the
last step (attention's ``1/sqrt(key_dim)`` rescaling) must reach every path:
`Net2WiderInit.chained` used to drop it.
"""

import keras
import numpy as np
import pytest

import keras_net2net as kn
from keras_net2net._arrays import apply_on_device
from keras_net2net.growth.optimizer_state import SlotValue
from keras_net2net.growth.weight_lists import WeightListConverter
from keras_net2net.transforms import Chain
from keras_net2net.transforms import WidthTransform
from keras_net2net.transforms import random_mapping


def chain(noise=0.0):
    g_in = random_mapping(4, 6, seed=1)
    g_out = random_mapping(3, 5, seed=2)
    return Chain(
        [
            WidthTransform(g_in, side="divide"),
            WidthTransform(g_out, side="copy", scale=0.5, noise=noise, seed=3),
        ]
    )


def reference(value, kind="weight"):
    """The chain of `chain()` written out by hand (noise-free)."""
    g_in = random_mapping(4, 6, seed=1)
    g_out = random_mapping(3, 5, seed=2)
    power = 2 if kind == "squared" else 1
    rows = value[g_in.indices] / g_in.counts[g_in.indices][:, None] ** power
    return rows[:, g_out.indices] * (0.5**power)


@pytest.fixture
def kernel():
    return np.random.default_rng(0).normal(size=(4, 3)).astype("float32")


@pytest.mark.parametrize("kind", ["weight", "linear", "squared"])
def test_host_chain(kernel, kind):
    np.testing.assert_allclose(
        chain().apply(kernel, kind=kind), reference(kernel, kind), rtol=1e-6
    )


@pytest.mark.parametrize("kind", ["weight", "linear", "squared"])
def test_device_chain(kernel, kind):
    assert chain().exact(kind)
    value = apply_on_device(keras.Variable(kernel), chain(), kind)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(value), reference(kernel, kind), rtol=1e-6
    )


def test_chained_initializer_keeps_the_scale(kernel):
    with pytest.warns(DeprecationWarning, match=r"Net2WiderInit.chained"):
        init = kn.Net2WiderInit.chained(kernel, list(chain()))
    value = keras.ops.convert_to_numpy(init((6, 5)))
    np.testing.assert_allclose(value, reference(kernel), rtol=1e-6)
    # Saved and restored (without its source) it keeps the scale in its config.
    assert type(init).from_config(init.get_config()).scale == 0.5


@pytest.mark.parametrize("kind", ["linear", "squared"])
def test_slots_keep_the_scale(kernel, kind):
    slot = keras.Variable(kernel)
    for noisy in (False, True):  # the device path, and the host one
        value = SlotValue(slot, chain(noise=0.1 if noisy else 0.0), kind)((6, 5))
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(value), reference(kernel, kind), rtol=1e-6
        )


def test_stored_weight_lists_keep_the_scale(kernel):
    old, new = keras.Variable(kernel), keras.Variable(np.zeros((6, 5), "float32"))
    convert = WeightListConverter([old], [new], {id(new): (old, list(chain()))})
    np.testing.assert_allclose(convert([kernel])[0], reference(kernel), rtol=1e-6)


def test_a_chain_holds_transforms_only():
    with pytest.raises(TypeError, match="Join and Transpose steps only"):
        Chain([np.arange(3)])
    assert len(Chain()) == 0 and Chain().exact()
    stored = np.ones(2)
    assert Chain().apply(stored) is stored  # nothing to change: no copy


def test_the_old_side_names_are_accepted():
    g = kn.transforms.random_mapping(4, 6, seed=0)
    assert WidthTransform(g, side="out").side == kn.transforms.COPY == "copy"
    assert WidthTransform(g, side="in").side == kn.transforms.DIVIDE == "divide"
    assert WidthTransform(g, side="in").axis == -2
    assert kn.Net2WiderInit(side="in").side == "divide"
    with pytest.raises(ValueError, match=r"`side`.*'sideways'"):
        WidthTransform(g, side="sideways")


def test_expert_steps_replicate_join_and_transpose():
    gate, up = np.arange(6.0).reshape(2, 3), -np.arange(6.0).reshape(2, 3)
    parts = {id(up): up}
    bank = Chain([kn.transforms.Replicate(4)]).apply(gate)
    assert bank.shape == (4, 2, 3) and all((bank[e] == gate).all() for e in range(4))
    fused = Chain([kn.transforms.Join(up), kn.transforms.Replicate(2)])
    value = fused.apply(gate, parts=lambda v: parts[id(v)])
    np.testing.assert_array_equal(value[1], np.concatenate([gate, up], -1))
    assert not fused.exact()  # upcycling steps run in numpy
    with pytest.raises(ValueError, match="parts"):
        fused.apply(gate)
    noisy = kn.transforms.Replicate(3, noise=0.5, seed=0).apply(gate)
    assert (noisy[0] == gate).all() and not (noisy[1] == gate).all()
    quiet = kn.transforms.Replicate(3, noise=0.5, seed=0).apply(gate, kind="linear")
    assert all((quiet[e] == gate).all() for e in range(3))  # no noise on state
    np.testing.assert_array_equal(
        Chain([kn.transforms.Transpose()]).apply(gate), gate.T
    )
