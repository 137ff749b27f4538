"""GrowthTuner / GrowthOracle / GrowthSpace: architecture search by growth."""

import json
import random

import keras
import numpy as np
import pytest

kt = pytest.importorskip(
    "keras_tuner", reason="the tuner extra: pip install 'keras-net2net[tuner]'"
)

from keras_net2net.tuner import GrowthSpace  # noqa: E402
from keras_net2net.tuner import GrowthTuner  # noqa: E402
from keras_net2net.tuner.space import grown_architecture  # noqa: E402

L = keras.layers


def build(hp):
    inputs = keras.Input((8,))
    x = L.Dense(hp.Choice("fc1_units", [4, 6]), activation="relu", name="fc1")(inputs)
    x = L.Dense(5, activation="relu", name="fc2")(x)
    model = keras.Model(inputs, L.Dense(3, activation="softmax", name="out")(x))
    model.compile(
        keras.optimizers.Adam(0.01),
        "sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def data(n=96, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8)).astype("float32")
    y = (x[:, :3].argmax(1)).astype("int32")
    return x, y


class CountFits(keras.callbacks.Callback):
    """Counts fit calls across the deep copies the tuner makes."""

    fits = 0
    stop_at = None

    def on_train_begin(self, logs=None):
        CountFits.fits += 1
        if CountFits.stop_at is not None and CountFits.fits == CountFits.stop_at:
            raise KeyboardInterrupt("simulated interruption")


@pytest.fixture(autouse=True)
def reset_counter():
    CountFits.fits, CountFits.stop_at = 0, None


def make_tuner(tmp_path, hypermodel=build, **kwargs):
    options = dict(
        space=GrowthSpace(widen={"fc1": 16, "fc2": 12}, deepen=["fc1"], max_inserted=1),
        objective="val_loss",
        max_trials=6,
        initial_trials=2,
        eta=2,
        children=2,
        noise=0.0,
        seed=3,
        directory=str(tmp_path),
        project_name="search",
    )
    options.update(kwargs)
    return GrowthTuner(hypermodel, **options)


def search(tuner, epochs=1):
    x, y = data()
    tuner.search(
        x,
        y,
        epochs=epochs,
        batch_size=16,
        validation_data=data(48, seed=1),
        callbacks=[CountFits()],
        verbose=0,
    )


# -- the space: proposals valid by construction -----------------------------------


def test_space_proposals_only_grow_the_named_layers_within_bounds():
    space = GrowthSpace(
        widen={"a": 20, "b": 9}, deepen=["a", "c"], max_inserted=2, max_operations=2
    )
    rng = random.Random(0)
    for _ in range(200):
        arch = {
            "widths": {"a": rng.randint(1, 20), "b": rng.randint(1, 9)},
            "inserted": {"a": rng.randint(0, 2), "c": rng.randint(0, 2)},
        }
        for step in space.sample(arch, rng, 5):
            assert 1 <= len(step) <= 2
            targets = [o.get("layer", o.get("after")) for o in step]
            assert len(set(targets)) == len(targets)
            for op in step:
                if op["op"] == "widen":
                    assert op["layer"] in ("a", "b")
                    current = arch["widths"][op["layer"]]
                    assert current < op["width"] <= space.widen[op["layer"]]
                else:
                    assert op["after"] in ("a", "c")
                    assert arch["inserted"][op["after"]] < 2
            grown = grown_architecture(arch, step)
            assert all(grown["widths"][k] >= v for k, v in arch["widths"].items())


def test_space_with_nothing_left_proposes_nothing():
    space = GrowthSpace(widen={"a": 8}, deepen=["a"], max_inserted=1)
    arch = {"widths": {"a": 8}, "inserted": {"a": 1}}
    assert space.moves(arch) == []
    assert space.sample(arch, random.Random(0), 3) == []


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(), "nothing may grow"),
        (dict(widen=["fc1"]), r"`widen` must be a dict.*\['fc1'\]"),
        (dict(widen={"fc1": 0}), r"maximum width of 'fc1'.*received 0"),
        (dict(deepen="fc1"), r"`deepen` must be a list of layer names.*'fc1'"),
        (dict(deepen=["fc1", "fc1"]), r"names a layer twice"),
        (dict(widen={"fc1": 8}, factors=(1.0,)), r"`factors` must be numbers > 1"),
        (dict(widen={"fc1": 8}, max_params=-5), r"`max_params`.*received -5"),
        (dict(widen={"fc1": 8}, max_operations=0), r"`max_operations`.*>= 1"),
    ],
)
def test_space_bad_arguments_are_refused_clearly(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        GrowthSpace(**kwargs)


def test_tuner_bad_arguments_are_refused_clearly(tmp_path):
    with pytest.raises(TypeError, match=r"`space` must be a GrowthSpace"):
        GrowthTuner(build, {"widen": {"fc1": 8}}, directory=str(tmp_path))
    with pytest.raises(ValueError, match=r"`children` must be a positive int.*0"):
        make_tuner(tmp_path, children=0)
    with pytest.raises(ValueError, match=r"`noise` must be a number >= 0.*-1"):
        make_tuner(tmp_path, noise=-1)


# -- the search --------------------------------------------------------------------


def test_search_grows_trials_from_parents_function_preserved(tmp_path):
    tuner = make_tuner(tmp_path)
    search(tuner)
    oracle = tuner.oracle
    trials = oracle.trials
    assert len(trials) == 6 and CountFits.fits == 6
    grown = [t for t in trials.values() if t.hyperparameters.values["growth/parent"]]
    assert len(grown) == 4  # 2 fresh, then 2 rounds of 1 promoted x 2 children
    space = oracle.space
    for trial in grown:
        values = trial.hyperparameters.values
        parent = values["growth/parent"]
        operations = json.loads(values["growth/operations"])
        before = oracle.architectures[parent]
        after = oracle.architectures[trial.trial_id]
        # Valid growth only: named layers, never narrower, within the bounds.
        assert operations
        for name, width in after["widths"].items():
            assert before["widths"][name] <= width <= space.widen[name]
        for op in operations:
            if op["op"] == "widen":
                assert after["widths"][op["layer"]] == op["width"]
                assert op["width"] > before["widths"][op["layer"]]
        assert after["inserted"] == grown_architecture(before, operations)["inserted"]
        assert max(after["inserted"].values(), default=0) <= 1
        assert after["params"] > before["params"]
        # It starts where its parent ended: the function is preserved.
        start = oracle.initial_metrics[trial.trial_id]["loss"]
        assert start == pytest.approx(trials[parent].score, rel=1e-5)
        # The child keeps its parent's hyperparameters.
        assert values["fc1_units"] == trials[parent].hyperparameters.values["fc1_units"]
    # The saved model is the grown architecture, with its optimizer state.
    best = oracle.get_best_trials(1)[0]
    model = tuner.get_best_models(1)[0]
    assert model.count_params() == oracle.architectures[best.trial_id]["params"]
    assert (
        model.get_layer("fc1").units
        == oracle.architectures[best.trial_id]["widths"]["fc1"]
    )
    assert model.optimizer.built and int(model.optimizer.iterations) > 0
    loss = model.evaluate(*data(48, seed=1), verbose=0, return_dict=True)["loss"]
    assert loss == pytest.approx(best.score, rel=1e-5)


@pytest.mark.once  # search bookkeeping: CI runs it on TensorFlow only
def test_lineage_is_inspectable_and_saved(tmp_path, capsys):
    tuner = make_tuner(tmp_path)
    search(tuner)
    best = tuner.oracle.get_best_trials(1)[0].trial_id
    chain = tuner.lineage(best)
    assert chain[0]["parent"] is None and chain[0]["operations"] == []
    assert chain[-1]["trial_id"] == best
    for earlier, later in zip(chain, chain[1:]):
        assert later["parent"] == earlier["trial_id"]
        assert later["rung"] == earlier["rung"] + 1
    path = tuner.save_lineage(tmp_path / "lineage.json")
    assert json.loads(path.read_text()) == json.loads(json.dumps(chain))
    summary = tuner.lineage_summary()
    assert f"trial {best}" in summary and "fresh model" in summary
    tuner.results_summary(2)
    assert "growth/parent" in capsys.readouterr().out


@pytest.mark.once  # search bookkeeping: CI runs it on TensorFlow only
def test_budget_rejects_proposals_before_they_become_trials(tmp_path):
    # Fresh models have 4*8+4 + 4*5+5 + 5*3+3 = 79 or 107 parameters; the
    # budget leaves room for small growth steps only.
    tuner = make_tuner(
        tmp_path, space=GrowthSpace(widen={"fc1": 16, "fc2": 12}, max_params=125)
    )
    search(tuner)
    oracle = tuner.oracle
    assert all(a["params"] <= 125 for a in oracle.architectures.values())
    assert oracle.rejected
    assert all("over the budget" in r["reason"] for r in oracle.rejected)
    assert CountFits.fits == len(oracle.trials)


def test_a_layer_that_cannot_grow_stops_the_search_by_name(tmp_path):
    tuner = make_tuner(tmp_path, space=GrowthSpace(widen={"nope": 8}))
    with pytest.raises(Exception, match=r"'nope'"):
        search(tuner)


@pytest.mark.once  # search bookkeeping: CI runs it on TensorFlow only
def test_resume_continues_without_retraining_finished_trials(tmp_path):
    tuner = make_tuner(tmp_path, max_trials=3)
    search(tuner)
    assert CountFits.fits == 3
    finished = {t.trial_id: t.score for t in tuner.oracle.trials.values()}

    # Interrupted in trial 4 (a grown one), the second of this session.
    CountFits.fits, CountFits.stop_at = 0, 2
    tuner = make_tuner(tmp_path, max_trials=6, overwrite=False)
    with pytest.raises(KeyboardInterrupt):
        search(tuner)
    assert CountFits.fits == 2  # trial 3 finished, trial 4 interrupted

    CountFits.fits, CountFits.stop_at = 0, None
    tuner = make_tuner(tmp_path, max_trials=6, overwrite=False)
    search(tuner)
    assert CountFits.fits == 2  # the interrupted trial again, and the last one
    trials = tuner.oracle.trials
    assert len(trials) == 6
    assert all(t.status == "COMPLETED" for t in trials.values())
    for trial_id, score in finished.items():
        assert trials[trial_id].score == score
    for trial in trials.values():
        parent = trial.hyperparameters.values["growth/parent"]
        if parent:
            start = tuner.oracle.initial_metrics[trial.trial_id]["loss"]
            assert start == pytest.approx(trials[parent].score, rel=1e-5)


def test_a_layer_without_width_stops_the_search_by_name(tmp_path):
    def with_norm(hp):
        inputs = keras.Input((8,))
        x = L.Dense(4, activation="relu", name="fc1")(inputs)
        x = L.BatchNormalization(name="norm")(x)
        model = keras.Model(inputs, L.Dense(3, activation="softmax", name="out")(x))
        model.compile("adam", "sparse_categorical_crossentropy")
        return model

    tuner = make_tuner(tmp_path, with_norm, space=GrowthSpace(widen={"norm": 8}))
    with pytest.raises(Exception, match=r"'norm'.*cannot be widened"):
        search(tuner)


@pytest.mark.once  # search bookkeeping: CI runs it on TensorFlow only
def test_resume_with_another_space_is_refused_clearly(tmp_path):
    search(make_tuner(tmp_path, max_trials=2))
    with pytest.raises(
        ValueError, match=r"cannot resume this search with a different space"
    ):
        make_tuner(
            tmp_path, max_trials=4, overwrite=False, space=GrowthSpace(widen={"fc1": 9})
        )
