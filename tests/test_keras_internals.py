"""The private-Keras fence: every private name is checked by check_supported()."""

import importlib.util

import keras
import pytest

from keras_net2net import _keras_internals as internals
from keras_net2net._keras_internals import libraries
from keras_net2net._keras_internals import optimizers


def test_check_supported_passes_on_this_keras():
    internals.check_supported()


def test_a_renamed_optimizer_slot_list_fails_the_check(monkeypatch):
    renamed = [
        (keras.optimizers.Adam, {"_momentums": "linear", "_moments2": "squared"})
    ]
    monkeypatch.setattr(optimizers, "SLOT_ATTRIBUTES", renamed)
    with pytest.raises(
        internals.KerasInternalsError, match="`_moments2` of a built Adam"
    ):
        internals.check_supported()


def test_slot_lists_read_every_registered_slot():
    variables = [keras.Variable([1.0, 2.0])]
    optimizer = keras.optimizers.Adam(amsgrad=True)
    optimizer.build(variables)
    (kinds,) = [
        k for cls, k in internals.SLOT_ATTRIBUTES if cls is keras.optimizers.Adam
    ]
    lists = internals.slot_lists(optimizer, kinds)
    assert set(lists) == set(kinds) and all(len(v) == 1 for v in lists.values())
    # An option that is off leaves its list empty, not an error.
    plain = keras.optimizers.Adam()
    plain.build(variables)
    assert internals.slot_lists(plain, kinds)["_velocity_hats"] == []


@pytest.mark.skipif(
    importlib.util.find_spec("keras_tuner") is None,
    reason="keras-tuner is not installed (the tuner extra)",
)
def test_a_renamed_library_attribute_fails_the_check(monkeypatch):
    monkeypatch.setattr(libraries, "TUNER_METHODS", {"Oracle": ("_no_such_method",)})
    with pytest.raises(
        internals.KerasInternalsError,
        match=r"`_no_such_method` of KerasTuner's Oracle.*Checked on keras-tuner",
    ):
        internals.check_supported()


def pending():
    from keras.src.backend.common import global_state

    return list(global_state.get_global_attribute("uninitialized_variables") or [])


def test_deferred_variables_leave_nothing_pending_after_an_error():
    import numpy as np

    before = pending()
    with pytest.raises(RuntimeError, match="boom"):
        with internals.deferred_variables():
            keras.Variable(keras.initializers.Zeros(), shape=(2,))
            raise RuntimeError("boom")
    assert pending() == before
    with internals.deferred_variables() as created:
        variable = keras.Variable(keras.initializers.Zeros(), shape=(3,))
    assert [v for v in created] == [variable] and len(pending()) == len(before) + 1
    with pytest.raises(ValueError, match=r"shape \(2,\).*shape \(3,\)"):
        internals.initialize_variables(created, {id(variable): np.ones(2, "float32")})
    assert pending() == before
    with internals.deferred_variables() as created:
        variable = keras.Variable(keras.initializers.Zeros(), shape=(3,))
    internals.initialize_variables(created, {id(variable): np.ones(3, "float64")})
    assert keras.ops.convert_to_numpy(variable).tolist() == [1.0, 1.0, 1.0]
    assert variable.dtype == "float32" and pending() == before
