"""The one growth path (`keras_net2net.surgery.dispatch`): graph and family
plans behind one interface, the family question asked once per growth, and
the request passed down as data."""

import keras
import numpy as np
import pytest
from conftest import TOL
from conftest import randomize_weights
from growth_helpers import small_data
from growth_helpers import small_model

import keras_net2net as kn
from keras_net2net import families
from keras_net2net.growth_plan import GrowthPlan
from keras_net2net.growth_plan import Origins
from keras_net2net.surgery import dispatch

L = keras.layers


def mlp():
    inputs = keras.Input((6,))
    h = L.Dense(8, activation="relu", name="fc1")(inputs)
    h = L.Dense(8, activation="relu", name="fc2")(h)
    model = keras.Model(inputs, L.Dense(3, name="out")(h))
    randomize_weights(model, seed=3)
    return model


def x_batch():
    return np.random.default_rng(0).normal(size=(5, 6)).astype("float32")


def test_a_graph_plan_is_a_growth_plan_and_builds_with_origins():
    model = mlp()
    plan = dispatch.plan_request(model, kn.Widen("fc1", 12))
    assert isinstance(plan, GrowthPlan)
    assert plan.description.startswith("widen 'fc1' 8 -> 12")
    assert any("fc2" in line for line in plan.describe())
    grown, origins = plan.build(model)
    assert kn.max_output_difference(model, grown, x_batch()) < TOL
    kernel = grown.get_layer("fc1").kernel
    source, transforms = origins.weights[id(kernel)]
    assert source is model.get_layer("fc1").kernel
    assert [t.side for t in transforms] == ["copy"]
    # fc2's kernel reads the widened channels: copied and divided.
    source, transforms = origins.weights[id(grown.get_layer("fc2").kernel)]
    assert source is model.get_layer("fc2").kernel
    assert [t.side for t in transforms] == ["divide"]
    # Unchanged layers are copied, nothing transformed.
    source, transforms = origins.weights[id(grown.get_layer("out").kernel)]
    assert source is model.get_layer("out").kernel and transforms == []
    assert origins.state == origins.weights  # no copied layer here


def test_origins_compose_through_two_growths():
    model = mlp()
    first = Origins.unchanged(model)
    result = kn.surgery.apply_requests(
        model, [kn.Widen("fc1", 12), kn.Widen("fc1", 16)], compile=False
    )
    kernel = result.model.get_layer("fc1").kernel
    source, transforms = result.origins[id(kernel)]
    assert source is model.get_layer("fc1").kernel
    assert [t.mapping.new_width for t in transforms] == [12, 16]
    assert len(first.weights) == len(model.weights)
    # A new variable has no origin, and composing keeps it so.
    new = Origins.same({7: (None, [])}).after(first)
    assert new.weights[7] == (None, []) and new.state[7] == (None, [])


def test_a_copied_block_takes_its_optimizer_state_from_the_copied_layers():
    inputs = keras.Input((6,))
    h = L.Dense(6, name="stem")(inputs)
    branch = L.Dense(6, activation="relu", name="f1")(h)
    branch = L.Dense(6, name="f2")(branch)
    h = L.Add(name="add")([h, branch])
    model = keras.Model(inputs, L.Dense(2, name="out")(h))
    randomize_weights(model, seed=1)
    plan = dispatch.plan_request(model, kn.Deepen(after="add"))
    grown, origins = plan.build(model)
    assert kn.max_output_difference(model, grown, x_batch()) < TOL
    copied = [
        v
        for v in grown.weights
        if origins.weights[id(v)][0] is None and origins.state[id(v)][0] is not None
    ]
    assert copied, "a copied block's variables start from the copied state"
    olds = {id(v) for v in model.weights}
    assert all(id(origins.state[id(v)][0]) in olds for v in copied)


def test_the_family_question_is_asked_once_per_in_place_growth(monkeypatch):
    asked = []
    real = families.find

    def counting(model):
        asked.append(model.name)
        return real(model)

    monkeypatch.setattr(families, "find", counting)
    model = mlp()
    model.compile(optimizer="adam", loss="mse")
    model.fit(x_batch(), np.zeros((5, 3)), verbose=0)
    kn.grow_in_place(model, [kn.Widen("fc1", 12), kn.Deepen(after="fc1")])
    assert asked == [model.name]
    asked.clear()
    grow = kn.GrowModel({kn.AtStep(1): kn.Widen("fc2", 12)})
    model.fit(x_batch(), np.zeros((5, 3)), batch_size=2, verbose=0, callbacks=[grow])
    assert model.get_layer("fc2").units == 12
    # Once when fit starts (every pending event checked), once at the growth.
    assert asked == [model.name, model.name]


def test_widen_and_deepen_go_down_the_same_path_as_requests():
    model = mlp()
    x = x_batch()
    by_function = kn.deepen(kn.widen(model, "fc1", 12, seed=4), after="fc2")
    by_requests = kn.surgery.apply_requests(
        model, [kn.Widen("fc1", 12, seed=4), kn.Deepen(after="fc2")]
    ).model
    for a, b in zip(by_function.weights, by_requests.weights):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b)
        )
    assert kn.max_output_difference(model, by_function, x) < TOL
    # A layer object is found as itself, not only by its name.
    assert kn.widen(model, model.get_layer("fc2"), 10).get_layer("fc2").units == 10


def test_a_list_of_blocks_is_refused_for_a_plain_model_before_anything_changes():
    model = mlp()
    with pytest.raises(ValueError, match=r"list of layers.*KerasHub.*fc1"):
        kn.deepen(model, after=["fc1", "fc2"])
    with pytest.raises(ValueError, match=r"Deepen\(`after`\) names no layer"):
        kn.Deepen(after=[])
    assert kn.Deepen(after=["a", "b"]).after == ("a", "b")
    assert model.get_layer("fc1").units == 8


def test_a_family_plan_builds_the_same_class_and_refuses_to_share_layers():
    keras_hub = pytest.importorskip("keras_hub")
    backbone = keras_hub.models.LlamaBackbone(
        vocabulary_size=30,
        num_layers=1,
        num_query_heads=2,
        num_key_value_heads=1,
        hidden_dim=8,
        intermediate_dim=16,
    )
    lm = keras_hub.models.LlamaCausalLM(backbone=backbone, preprocessor=None)
    plan = dispatch.plan_request(lm, kn.Widen("intermediate_dim", 24))
    assert isinstance(plan, GrowthPlan) and isinstance(plan, families.FamilyPlan)
    grown, origins = plan.build(lm)
    assert type(grown) is type(lm) and grown.backbone.intermediate_dim == 24
    assert origins.weights == origins.state
    assert all(id(v) in origins.weights for v in grown.weights)
    with pytest.raises(TypeError, match=r"cannot share its layers"):
        plan.build(lm, reuse_layers=True)
    with pytest.raises(ValueError, match=r"no config entry or layer 'nope'"):
        dispatch.plan_request(lm, kn.Widen("nope", 24))


def test_a_new_operator_is_a_request_class_and_a_planner(monkeypatch):
    import dataclasses

    from keras_net2net.requests import Request
    from keras_net2net.surgery.plan import plan_widen

    @dataclasses.dataclass(frozen=True)
    class Double(Request):
        layer: str

        def targets(self):
            return (self.layer,)

    def plan_double(model, request, *, layer=None):
        units = (layer or model.get_layer(request.layer)).units * 2
        return plan_widen(model, kn.Widen(request.layer, units), layer=layer)

    with pytest.raises(TypeError, match=r"No planner .* Double"):
        dispatch.plan_request(mlp(), Double("fc1"))
    monkeypatch.setattr(dispatch, "_PLANNERS", dict(dispatch._PLANNERS))
    dispatch.register_planner(Double, plan_double)
    model = mlp()
    model.compile(optimizer="adam", loss="mse")
    before = model.predict(x_batch(), verbose=0)
    result = kn.grow_in_place(model, [Double("fc1"), kn.Deepen(after="fc1")])
    assert model.get_layer("fc1").units == 16
    assert result.descriptions[0].startswith("widen 'fc1' 8 -> 16")
    np.testing.assert_allclose(model.predict(x_batch(), verbose=0), before, atol=TOL)
    grow = kn.GrowModel({kn.AtStep(1): Double("fc2")})
    model.fit(x_batch(), np.zeros((5, 3)), batch_size=2, verbose=0, callbacks=[grow])
    assert model.get_layer("fc2").units == 16
    with pytest.raises(TypeError, match=r"subclass of keras_net2net.requests.Request"):
        dispatch.register_planner(dict, plan_double)


def test_validation_and_dry_runs_do_not_compile():
    model = small_model("functional")
    model.compile("sgd", loss=lambda y, p: keras.ops.mean((y - p) ** 2))
    x, y = small_data()
    y = np.eye(3)[y].astype("float32")
    assert "changes:" in kn.describe_growth(model, kn.Widen("fc1", 9))
    grow = kn.GrowModel({1: kn.Widen("fc1", 9)})
    model.fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=[grow])
    assert model.get_layer("fc1").units == 9
