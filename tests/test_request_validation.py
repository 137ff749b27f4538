"""Malformed requests: each raises ValueError/TypeError naming the argument or
layer, and leaves the model (weights, layers, config, optimizer) unchanged."""

import math

import keras
import numpy as np
import pytest
from growth_helpers import small_data
from growth_helpers import small_model

import keras_net2net as kn
from keras_net2net import transforms

W, D = kn.Widen, kn.Deepen
NAN, INF = math.nan, math.inf
ok_widen = W("fc1", 9)


def fit_with(schedule, **kwargs):
    def call(model):
        x, y = small_data()
        model.fit(
            x,
            y,
            epochs=2,
            batch_size=8,
            verbose=0,
            callbacks=[kn.GrowModel(schedule, **kwargs)],
        )

    return call


CASES = [
    # --- widen(model, layer, units, method=, noise=, seed=) -----------------
    ("widen unknown layer", lambda m: kn.widen(m, "nope", 9), r"no layer 'nope'"),
    ("widen layer int", lambda m: kn.widen(m, 123, 9), r"`layer`.*123"),
    ("widen layer None", lambda m: kn.widen(m, None, 9), r"`layer`.*None"),
    ("widen layer empty", lambda m: kn.widen(m, "", 9), r"`layer`"),
    ("widen layer list", lambda m: kn.widen(m, ["fc1"], 9), r"`layer`"),
    ("widen same width", lambda m: kn.widen(m, "fc1", 6), r"'fc1'.*larger.*6"),
    ("widen smaller", lambda m: kn.widen(m, "fc1", 3), r"'fc1'.*units=3"),
    ("widen zero", lambda m: kn.widen(m, "fc1", 0), r"'fc1'.*units=0"),
    ("widen negative", lambda m: kn.widen(m, "fc1", -5), r"'fc1'.*units=-5"),
    ("widen float units", lambda m: kn.widen(m, "fc1", 9.0), r"'fc1'.*units=9.0"),
    ("widen str units", lambda m: kn.widen(m, "fc1", "9"), r"'fc1'.*units='9'"),
    ("widen None units", lambda m: kn.widen(m, "fc1", None), r"'fc1'.*units=None"),
    ("widen bool units", lambda m: kn.widen(m, "fc1", True), r"'fc1'.*units=True"),
    ("widen np float", lambda m: kn.widen(m, "fc1", np.float32(9)), r"'fc1'.*units"),
    ("widen list units", lambda m: kn.widen(m, "fc1", [9]), r"'fc1'.*units"),
    ("widen inf units", lambda m: kn.widen(m, "fc1", INF), r"'fc1'.*units=inf"),
    ("widen method", lambda m: kn.widen(m, "fc1", 9, method="copy"), r"`method`"),
    ("widen method None", lambda m: kn.widen(m, "fc1", 9, method=None), r"`method`"),
    ("widen method int", lambda m: kn.widen(m, "fc1", 9, method=3), r"`method`"),
    (
        "widen method case",
        lambda m: kn.widen(m, "fc1", 9, method="NET2WIDER"),
        "method",
    ),
    ("widen noise <0", lambda m: kn.widen(m, "fc1", 9, noise=-1), r"`noise`.*-1"),
    ("widen noise nan", lambda m: kn.widen(m, "fc1", 9, noise=NAN), r"`noise`.*nan"),
    ("widen noise inf", lambda m: kn.widen(m, "fc1", 9, noise=INF), r"`noise`.*inf"),
    ("widen noise -inf", lambda m: kn.widen(m, "fc1", 9, noise=-INF), r"`noise`"),
    ("widen noise str", lambda m: kn.widen(m, "fc1", 9, noise="0.1"), r"`noise`"),
    ("widen noise None", lambda m: kn.widen(m, "fc1", 9, noise=None), r"`noise`"),
    ("widen noise list", lambda m: kn.widen(m, "fc1", 9, noise=[0.1]), r"`noise`"),
    ("widen noise bool", lambda m: kn.widen(m, "fc1", 9, noise=True), r"`noise`"),
    ("widen seed str", lambda m: kn.widen(m, "fc1", 9, seed="abc"), r"`seed`.*abc"),
    ("widen seed float", lambda m: kn.widen(m, "fc1", 9, seed=1.5), r"`seed`.*1.5"),
    ("widen seed -1", lambda m: kn.widen(m, "fc1", 9, seed=-1), r"`seed`.*-1"),
    ("widen seed huge", lambda m: kn.widen(m, "fc1", 9, seed=2**40), r"`seed`"),
    ("widen seed bool", lambda m: kn.widen(m, "fc1", 9, seed=True), r"`seed`"),
    ("widen seed list", lambda m: kn.widen(m, "fc1", 9, seed=[1]), r"`seed`"),
    ("widen model output", lambda m: kn.widen(m, "out", 5), r"'out'.*model output"),
    (
        "widen input layer",
        lambda m: kn.widen(m, m.layers[0], 5),
        r"cannot be widened|no layer",
    ),
    ("widen not a model", lambda m: kn.widen("model", "fc1", 9), r"model"),
    # --- deepen(model, after, method=, kernel_size=, seed=, name=, ...) ------
    ("deepen unknown", lambda m: kn.deepen(m, after="zzz"), r"`after`.*'zzz'"),
    ("deepen after int", lambda m: kn.deepen(m, after=5), r"`after`.*5"),
    ("deepen after None", lambda m: kn.deepen(m, after=None), r"`after`"),
    ("deepen method", lambda m: kn.deepen(m, "fc1", method="zeros"), r"`method`"),
    ("deepen method None", lambda m: kn.deepen(m, "fc1", method=None), r"`method`"),
    (
        "deepen ksize float",
        lambda m: kn.deepen(m, "fc1", kernel_size=3.0),
        "kernel_size",
    ),
    (
        "deepen ksize None in",
        lambda m: kn.deepen(m, "fc1", kernel_size=(3, None)),
        "kernel_size",
    ),
    ("deepen ksize str", lambda m: kn.deepen(m, "fc1", kernel_size="3"), "kernel_size"),
    ("deepen ksize -1", lambda m: kn.deepen(m, "fc1", kernel_size=-1), "kernel_size"),
    ("deepen ksize 0", lambda m: kn.deepen(m, "fc1", kernel_size=0), "kernel_size"),
    (
        "deepen ksize empty",
        lambda m: kn.deepen(m, "fc1", kernel_size=()),
        "kernel_size",
    ),
    ("deepen seed str", lambda m: kn.deepen(m, "fc1", seed="x"), r"`seed`"),
    ("deepen seed -3", lambda m: kn.deepen(m, "fc1", seed=-3), r"`seed`"),
    ("deepen seed float", lambda m: kn.deepen(m, "fc1", seed=1.5), r"`seed`"),
    ("deepen name taken", lambda m: kn.deepen(m, "fc1", name="fc2"), r"`name`.*'fc2'"),
    ("deepen name int", lambda m: kn.deepen(m, "fc1", name=5), r"`name`"),
    ("deepen name empty", lambda m: kn.deepen(m, "fc1", name=""), r"`name`"),
    ("deepen residual str", lambda m: kn.deepen(m, "fc1", residual="yes"), "residual"),
    ("deepen residual int", lambda m: kn.deepen(m, "fc1", residual=1), "residual"),
    ("deepen init", lambda m: kn.deepen(m, "fc1", init="zeros"), r"`init`"),
    ("deepen init None", lambda m: kn.deepen(m, "fc1", init=None), r"`init`"),
    (
        "deepen random residual",
        lambda m: kn.deepen(m, "out", residual=True, method="random"),
        r"`method`.*'out'.*method='random'",
    ),
    ("deepen after bn", lambda m: kn.deepen(m, "bn"), r"'bn'.*cannot be followed"),
    ("deepen residual bn", lambda m: kn.deepen(m, "bn", residual=True), r"'bn'.*resid"),
    # --- Widen(...) / Deepen(...) requests ---------------------------------------
    ("Widen layer None", lambda m: W(None, 9), r"Widen\(`layer`\)"),
    ("Widen layer int", lambda m: W(5, 9), r"Widen\(`layer`\)"),
    ("Widen units 0", lambda m: W("fc1", 0), r"Widen\(`units`\)"),
    ("Widen units -1", lambda m: W("fc1", -1), r"Widen\(`units`\)"),
    ("Widen units float", lambda m: W("fc1", 2.5), r"Widen\(`units`\)"),
    ("Widen units str", lambda m: W("fc1", "4"), r"Widen\(`units`\)"),
    ("Widen units None", lambda m: W("fc1", None), r"Widen\(`units`\)"),
    ("Widen method", lambda m: W("fc1", 9, method="x"), r"Widen\(`method`\)"),
    ("Widen noise nan", lambda m: W("fc1", 9, noise=NAN), r"Widen\(`noise`\)"),
    ("Widen noise inf", lambda m: W("fc1", 9, noise=INF), r"Widen\(`noise`\)"),
    ("Widen noise -1", lambda m: W("fc1", 9, noise=-1), r"Widen\(`noise`\)"),
    ("Widen noise None", lambda m: W("fc1", 9, noise=None), r"Widen\(`noise`\)"),
    ("Widen seed str", lambda m: W("fc1", 9, seed="abc"), r"Widen\(`seed`\)"),
    ("Widen seed float", lambda m: W("fc1", 9, seed=1.5), r"Widen\(`seed`\)"),
    ("Widen seed -1", lambda m: W("fc1", 9, seed=-1), r"Widen\(`seed`\)"),
    ("Widen seed npfloat", lambda m: W("fc1", 9, seed=np.float64(1)), r"`seed`"),
    ("Deepen after None", lambda m: D(None), r"Deepen\(`after`\)"),
    ("Deepen method", lambda m: D("fc1", method="x"), r"Deepen\(`method`\)"),
    ("Deepen ksize float", lambda m: D("fc1", kernel_size=3.0), r"`kernel_size`"),
    ("Deepen ksize tuple", lambda m: D("fc1", kernel_size=(3, None)), "kernel_size"),
    ("Deepen seed str", lambda m: D("fc1", seed="a"), r"Deepen\(`seed`\)"),
    ("Deepen name int", lambda m: D("fc1", name=3), r"Deepen\(`name`\)"),
    ("Deepen residual", lambda m: D("fc1", residual="no"), r"Deepen\(`residual`\)"),
    ("Deepen init", lambda m: D("fc1", init="x"), r"Deepen\(`init`\)"),
    # --- GrowModel(schedule, lr_scale=, verbose=, log_growth=) -------------------
    ("GrowModel None", lambda m: kn.GrowModel(None), r"`schedule`"),
    ("GrowModel empty", lambda m: kn.GrowModel({}), r"`schedule`"),
    ("GrowModel empty list", lambda m: kn.GrowModel([]), r"`schedule`"),
    ("GrowModel str", lambda m: kn.GrowModel("abc"), r"`schedule`"),
    ("GrowModel ops str", lambda m: kn.GrowModel({1: "x"}), r"`schedule`.*epoch 1"),
    ("GrowModel ops empty", lambda m: kn.GrowModel({1: []}), r"`schedule`"),
    ("GrowModel key str", lambda m: kn.GrowModel({"a": ok_widen}), r"`schedule`.*'a'"),
    ("GrowModel key -1", lambda m: kn.GrowModel({-1: ok_widen}), r"`epoch`.*-1"),
    ("GrowModel key float", lambda m: kn.GrowModel({1.5: ok_widen}), r"`schedule`"),
    ("GrowModel mixed ops", lambda m: kn.GrowModel({1: [ok_widen, 5]}), r"`schedule`"),
    ("GrowModel pair", lambda m: kn.GrowModel([(1, ok_widen, 2)]), r"`schedule`"),
    ("lr_scale 0", lambda m: kn.GrowModel({1: ok_widen}, lr_scale=0), r"`lr_scale`"),
    ("lr_scale -1", lambda m: kn.GrowModel({1: ok_widen}, lr_scale=-1), r"`lr_scale`"),
    (
        "lr_scale inf",
        lambda m: kn.GrowModel({1: ok_widen}, lr_scale=INF),
        r"`lr_scale`",
    ),
    (
        "lr_scale nan",
        lambda m: kn.GrowModel({1: ok_widen}, lr_scale=NAN),
        r"`lr_scale`",
    ),
    ("lr_scale str", lambda m: kn.GrowModel({1: ok_widen}, lr_scale="0.1"), "lr_scale"),
    ("verbose -1", lambda m: kn.GrowModel({1: ok_widen}, verbose=-1), r"`verbose`"),
    ("verbose str", lambda m: kn.GrowModel({1: ok_widen}, verbose="1"), r"`verbose`"),
    (
        "log_growth str",
        lambda m: kn.GrowModel({1: ok_widen}, log_growth="y"),
        "log_growth",
    ),
    ("fit unknown layer", fit_with({1: W("nope", 9)}), r"epoch 1.*'nope'"),
    ("fit smaller width", fit_with({1: W("fc1", 4)}), r"'fc1'.*larger"),
    ("fit later conflict", fit_with({0: W("fc1", 9), 1: W("fc1", 8)}), r"epoch 1.*9"),
    ("fit output layer", fit_with({1: W("out", 5)}), r"'out'.*model output"),
    (
        "fit deepen random residual",
        fit_with({1: D("out", residual=True, method="random")}),
        r"`method`.*'out'",
    ),
    # --- triggers ----------------------------------------------------------------
    ("AtEpoch -1", lambda m: kn.AtEpoch(-1), r"AtEpoch\(`epoch`\).*-1"),
    ("AtEpoch float", lambda m: kn.AtEpoch(1.5), r"AtEpoch\(`epoch`\)"),
    ("AtEpoch str", lambda m: kn.AtEpoch("1"), r"AtEpoch\(`epoch`\)"),
    ("AtEpoch None", lambda m: kn.AtEpoch(None), r"AtEpoch\(`epoch`\)"),
    ("AtEpoch bool", lambda m: kn.AtEpoch(True), r"AtEpoch\(`epoch`\)"),
    ("AtStep -1", lambda m: kn.AtStep(-1), r"AtStep\(`step`\)"),
    ("AtStep float", lambda m: kn.AtStep(2.0), r"AtStep\(`step`\)"),
    ("AtStep str", lambda m: kn.AtStep("3"), r"AtStep\(`step`\)"),
    ("OnPlateau monitor int", lambda m: kn.OnPlateau(monitor=123), r"`monitor`.*123"),
    ("OnPlateau monitor ''", lambda m: kn.OnPlateau(monitor=""), r"`monitor`"),
    ("OnPlateau monitor None", lambda m: kn.OnPlateau(monitor=None), r"`monitor`"),
    ("OnPlateau patience -1", lambda m: kn.OnPlateau(patience=-1), r"`patience`"),
    ("OnPlateau patience 1.5", lambda m: kn.OnPlateau(patience=1.5), r"`patience`"),
    ("OnPlateau min_delta nan", lambda m: kn.OnPlateau(min_delta=NAN), r"`min_delta`"),
    ("OnPlateau min_delta <0", lambda m: kn.OnPlateau(min_delta=-0.1), r"`min_delta`"),
    ("OnPlateau min_delta inf", lambda m: kn.OnPlateau(min_delta=INF), r"`min_delta`"),
    ("OnPlateau min_delta str", lambda m: kn.OnPlateau(min_delta="0"), r"`min_delta`"),
    ("OnPlateau mode", lambda m: kn.OnPlateau(mode="up"), r"`mode`.*'up'"),
    ("OnPlateau mode None", lambda m: kn.OnPlateau(mode=None), r"`mode`"),
    # --- grow_in_place(model, operations) --------------------------------------
    ("grow str", lambda m: kn.grow_in_place(m, "Widen"), r"`requests`"),
    ("grow int", lambda m: kn.grow_in_place(m, 5), r"`requests`"),
    ("grow None", lambda m: kn.grow_in_place(m, None), r"`requests`"),
    ("grow dict", lambda m: kn.grow_in_place(m, {"a": 1}), r"`requests`"),
    ("grow mixed list", lambda m: kn.grow_in_place(m, [ok_widen, 5]), r"`requests`"),
    ("grow unknown", lambda m: kn.grow_in_place(m, W("nope", 9)), r"'nope'"),
    ("grow smaller", lambda m: kn.grow_in_place(m, W("fc1", 4)), r"'fc1'.*larger"),
    ("grow second bad", lambda m: kn.grow_in_place(m, [ok_widen, W("fc1", 8)]), "9"),
    ("grow not a model", lambda m: kn.grow_in_place("m", [ok_widen]), r"`model`"),
    # --- Net2WiderInit / IdentityConvInit ------------------------------------
    ("Init side", lambda m: kn.Net2WiderInit(side="both"), r"`side`.*'both'"),
    ("Init noise nan", lambda m: kn.Net2WiderInit(noise=NAN), r"`noise`"),
    ("Init noise inf", lambda m: kn.Net2WiderInit(noise=INF), r"`noise`"),
    ("Init noise -1", lambda m: kn.Net2WiderInit(noise=-1), r"`noise`"),
    ("Init noise None", lambda m: kn.Net2WiderInit(noise=None), r"`noise`"),
    ("Init noise str", lambda m: kn.Net2WiderInit(noise="a"), r"`noise`"),
    ("Init fill None", lambda m: kn.Net2WiderInit(fill=None), r"`fill`"),
    ("Init fill str", lambda m: kn.Net2WiderInit(fill="zeros"), r"`fill`"),
    ("Init fill nan", lambda m: kn.Net2WiderInit(fill=NAN), r"`fill`"),
    ("Init seed str", lambda m: kn.Net2WiderInit(seed="abc"), r"`seed`.*abc"),
    ("Init seed float", lambda m: kn.Net2WiderInit(seed=1.5), r"`seed`"),
    ("Init seed -1", lambda m: kn.Net2WiderInit(seed=-1), r"`seed`"),
    ("Init mapping only", lambda m: kn.Net2WiderInit(mapping=[0, 1]), r"`mapping`"),
    ("Init no mapping", lambda m: kn.Net2WiderInit(np.ones((2, 2))), r"`mapping`"),
    ("Init bad mapping", lambda m: kn.Net2WiderInit(np.ones((2, 2)), [[0]]), "mapping"),
    (
        "Init mapping range",
        lambda m: kn.Net2WiderInit(np.ones((2, 2)), [0, 5]),
        "mapping",
    ),
    (
        "Init mapping width",
        lambda m: kn.Net2WiderInit(np.ones((2, 2)), transforms.random_mapping(3, 4)),
        r"old_width=3",
    ),
    ("Init fallback", lambda m: kn.Net2WiderInit(fallback="nope"), r"`fallback`"),
    ("Init axis", lambda m: kn.Net2WiderInit(np.ones((2, 2)), [0, 1], axis=5), "axis"),
    ("Conv init gain nan", lambda m: kn.IdentityConvInit(gain=NAN), r"`gain`"),
    ("Conv init gain inf", lambda m: kn.IdentityConvInit(gain=INF), r"`gain`"),
    ("Conv init gain str", lambda m: kn.IdentityConvInit(gain="a"), r"`gain`"),
    ("Conv init gain None", lambda m: kn.IdentityConvInit(gain=None), r"`gain`"),
    ("Conv init rank 2", lambda m: kn.IdentityConvInit()((3, 3)), r"rank >= 3"),
]


def test_there_are_at_least_100_cases():
    assert len(CASES) >= 100


@pytest.fixture(scope="module")
def trained():
    model = small_model("functional")
    x, y = small_data()
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    return model


def full_state(model):
    return (
        [np.array(keras.ops.convert_to_numpy(v)) for v in model.weights],
        [v.path for v in model.weights],
        [layer.name for layer in model.layers],
        model.to_json(),
        [np.array(keras.ops.convert_to_numpy(v)) for v in model.optimizer.variables],
        int(keras.ops.convert_to_numpy(model.optimizer.iterations)),
    )


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_malformed_request(case, trained):
    _, call, pattern = case
    before = full_state(trained)
    with pytest.raises((ValueError, TypeError), match=pattern):
        call(trained)
    after = full_state(trained)
    for a, b in zip(after[0], before[0]):
        np.testing.assert_array_equal(a, b)
    assert after[1:4] == before[1:4]
    assert len(after[4]) == len(before[4])
    for a, b in zip(after[4], before[4]):
        np.testing.assert_array_equal(a, b)
    assert after[5] == before[5]
