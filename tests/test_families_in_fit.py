"""KerasHub task models grown in place and inside fit keep the object and its
class; noise breaks the copies' symmetry, and only slightly."""

import numpy as np
import pytest
from conftest import TOL
from family_models import block
from family_models import build
from family_models import llama
from family_models import logits
from family_models import relative
from family_models import weights
from growth_helpers import StepProbe

import keras_net2net as kn

keras_hub = pytest.importorskip("keras_hub")
keras = pytest.importorskip("keras")


def lm_batch(n=8, length=7, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, 50, (n, length + 1)).astype("int32")
    x = {"token_ids": ids[:, :-1], "padding_mask": np.ones((n, length), "int32")}
    return x, ids[:, 1:]


@pytest.mark.parametrize(
    "family, width",
    # 24: not a multiple of 16 (new stream channels at zero, norms compensated)
    [("Llama", 32), ("Llama", 24), ("GPT2", 32), ("Gemma", 32), ("Mixtral", 32)],
)
def test_grow_in_place_keeps_the_task_object_and_its_class(family, width):
    model = build(family)
    model.compile(
        optimizer=keras.optimizers.AdamW(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        sampler="greedy",
    )
    x, y = lm_batch()
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)  # AdamW has state
    before, old_backbone, cls = logits(model), model.backbone, type(model)
    prompt = {
        "token_ids": np.array([[3, 4, 5, 0, 0, 0, 0, 0]], "int32"),
        "padding_mask": np.array([[1, 1, 1, 0, 0, 0, 0, 0]], "int32"),
    }
    generated = model.generate(prompt, max_length=8, stop_token_ids=None)
    result = kn.grow_in_place(
        model, [kn.Widen("hidden_dim", width), kn.Deepen(after=block(family, 1))]
    )
    assert result.model is model and type(model) is cls
    assert model.backbone is not old_backbone
    assert type(model.backbone) is type(old_backbone)
    assert model.backbone.hidden_dim == width and model.backbone.num_layers == 3
    assert len(model.backbone.transformer_layers) == 3
    assert model.get_config()["backbone"]["config"]["hidden_dim"] == width
    assert {id(v) for v in model.weights} == {id(v) for v in model.backbone.weights}
    assert relative(before, logits(model)) <= TOL
    again = model.generate(prompt, max_length=8, stop_token_ids=None)
    np.testing.assert_array_equal(generated["token_ids"], again["token_ids"])
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 2
    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][-1])


def test_growmodel_grows_a_llama_causal_lm_inside_fit(tmp_path):
    model = llama()
    model.compile(
        optimizer=keras.optimizers.AdamW(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        sampler="greedy",
    )
    x, y = lm_batch(16)
    fixed = {k: v[:4] for k, v in x.items()}
    seen = {}

    def probe(tag):
        return StepProbe(tag, seen, lambda m: keras.ops.convert_to_numpy(m(fixed)))

    grow = kn.GrowModel(
        {
            kn.AtStep(2): kn.Widen("hidden_dim", 32),
            kn.AtStep(3): [
                kn.Widen("intermediate_dim", 64),
                kn.Deepen(after="transformer_layer_1"),
            ],
        }
    )
    model.fit(
        x,
        y,
        batch_size=4,
        epochs=1,
        verbose=0,
        callbacks=[probe("before"), grow, probe("after")],
    )
    assert len(grow.records) == 2
    for step in (2, 3):
        (before, params_before), (after, params_after) = (
            seen[("before", step)],
            seen[("after", step)],
        )
        assert params_after > params_before
        assert relative(before, after) <= TOL, step
    assert type(model).__name__ == "LlamaCausalLM"
    config = model.backbone.get_config()
    assert (config["hidden_dim"], config["intermediate_dim"]) == (32, 64)
    assert config["num_layers"] == 3
    model.backbone.save_to_preset(str(tmp_path / "preset"))
    backbone = type(model.backbone).from_preset(str(tmp_path / "preset"))
    reloaded = type(model)(backbone=backbone, preprocessor=None)
    assert relative(logits(model), logits(reloaded)) <= TOL
    path = tmp_path / "grown.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded) is type(model)
    assert relative(logits(model), logits(loaded)) <= TOL


def test_growmodel_refuses_a_per_layer_request_on_a_task_before_training():
    model = llama()
    model.compile(
        optimizer=keras.optimizers.AdamW(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    x, y = lm_batch()
    saved = weights(model)
    grow = kn.GrowModel(
        {kn.AtStep(1): kn.Deepen(after="transformer_layer_0", init="random")}
    )
    with pytest.raises(ValueError, match=r"step 1.*config vocabulary"):
        model.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[grow])
    for old, new in zip(saved, weights(model)):
        np.testing.assert_array_equal(old, new)


@pytest.mark.parametrize("family", ["Llama", "GPT2"])
def test_noise_breaks_the_symmetry_of_the_copies_and_only_slightly(family):
    model = build(family)
    before = logits(model)
    key = "hidden_dim"
    exact = kn.widen(model, key, 32, seed=0)
    noisy = kn.widen(model, key, 32, seed=0, noise=0.05)
    again = kn.widen(model, key, 32, seed=0, noise=0.05)
    assert relative(before, logits(exact)) <= TOL
    change = relative(before, logits(noisy))
    assert TOL < change < 0.2, change
    np.testing.assert_array_equal(logits(noisy), logits(again))  # seeded
    # The copied columns of the token embedding differ from their originals
    # in the noisy model, and equal them in the exact one.
    old = keras.ops.convert_to_numpy(model.backbone.token_embedding.embeddings)
    for grown, differs in ((exact, False), (noisy, True)):
        new = keras.ops.convert_to_numpy(grown.backbone.token_embedding.embeddings)
        copies = new[:, 16:]
        matches = [
            any(np.allclose(copies[:, j], old[:, i]) for i in range(16))
            for j in range(16)
        ]
        assert (not any(matches)) if differs else all(matches)
    assert "noise 0.05" in kn.describe_growth(model, [kn.Widen(key, 32, noise=0.05)])
