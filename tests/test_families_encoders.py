"""KerasHub encoder classifiers (BERT, ViT) grown in their config vocabulary
keep their class and their head."""

import numpy as np
import pytest
from conftest import TOL
from family_models import TOKENS
from family_models import randomize
from family_models import relative
from family_models import weights

import keras_net2net as kn

keras_hub = pytest.importorskip("keras_hub")
keras = pytest.importorskip("keras")


def encoder(family, intermediate_dim=None):
    if family == "Bert":
        backbone = keras_hub.models.BertBackbone(
            vocabulary_size=50,
            num_layers=2,
            num_heads=2,
            hidden_dim=16,
            intermediate_dim=32,
            max_sequence_length=12,
        )
        task = keras_hub.models.BertTextClassifier(
            backbone=backbone, num_classes=3, preprocessor=None
        )
        inputs = {
            "token_ids": TOKENS["token_ids"],
            "segment_ids": np.zeros((2, 7), "int32"),
            "padding_mask": TOKENS["padding_mask"],
        }
    else:
        backbone = keras_hub.models.ViTBackbone(
            image_shape=(8, 8, 3),
            patch_size=4,
            num_layers=2,
            num_heads=2,
            hidden_dim=16,
            mlp_dim=32,
        )
        task = keras_hub.models.ViTImageClassifier(
            backbone=backbone,
            num_classes=3,
            preprocessor=None,
            intermediate_dim=intermediate_dim,
        )
        inputs = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype("float32")
    randomize(task)
    return task, inputs


ENCODER_CASES = [
    ("Bert", None, "hidden_dim", 32, {"hidden_dim": 32, "num_heads": 4}),
    ("Bert", None, "num_heads", 6, {"hidden_dim": 48, "num_heads": 6}),
    ("Bert", None, "intermediate_dim", 48, {"intermediate_dim": 48}),
    ("ViT", None, "hidden_dim", 32, {"hidden_dim": 32, "num_heads": 4}),
    ("ViT", 8, "hidden_dim", 32, {"hidden_dim": 32, "num_heads": 4}),
    ("ViT", 8, "num_heads", 4, {"hidden_dim": 32, "num_heads": 4}),
    ("ViT", None, "mlp_dim", 48, {"mlp_dim": 48}),
]


@pytest.mark.parametrize("family, pre_logits, key, units, expected", ENCODER_CASES)
def test_bert_and_vit_classifiers_keep_their_class_and_their_head(
    family, pre_logits, key, units, expected
):
    task, inputs = encoder(family, pre_logits)
    before = keras.ops.convert_to_numpy(task(inputs))
    grown = kn.widen(task, key, units, seed=1)
    assert type(grown) is type(task)
    assert type(grown.backbone) is type(task.backbone)
    config = grown.backbone.get_config()
    assert {name: config[name] for name in expected} == expected
    after = keras.ops.convert_to_numpy(grown(inputs))
    assert relative(before, after) <= TOL


def test_vit_without_a_class_token_and_with_average_pooling():
    backbone = keras_hub.models.ViTBackbone(
        image_shape=(8, 8, 3),
        patch_size=4,
        num_layers=1,
        num_heads=2,
        hidden_dim=16,
        mlp_dim=32,
        use_class_token=False,
    )
    task = keras_hub.models.ViTImageClassifier(
        backbone=backbone, num_classes=3, preprocessor=None, pooling="gap"
    )
    randomize(task)
    images = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype("float32")
    grown = kn.deepen(kn.widen(task, "num_heads", 4), after="transformer_block_1")
    assert type(grown) is type(task) and grown.backbone.hidden_dim == 32
    before = keras.ops.convert_to_numpy(task(images))
    assert relative(before, keras.ops.convert_to_numpy(grown(images))) <= TOL
    with pytest.raises(ValueError, match="transformer_layers"):
        kn.families.train_only(grown, ["transformer_block_2"])


def test_vit_inserts_identity_blocks_and_bert_refuses_them(tmp_path):
    task, inputs = encoder("ViT")
    after = ["transformer_block_1", "transformer_block_2"]
    grown = kn.deepen(kn.widen(task, "hidden_dim", 32), after=after)
    assert type(grown) is type(task) and grown.backbone.num_layers == 4
    assert kn.families.inserted_blocks(task, after) == [
        "transformer_block_2",
        "transformer_block_4",
    ]
    before = keras.ops.convert_to_numpy(task(inputs))
    out = keras.ops.convert_to_numpy(grown(inputs))
    assert relative(before, out) <= TOL
    grown.save(tmp_path / "vit.keras")
    loaded = keras.models.load_model(tmp_path / "vit.keras")
    assert type(loaded) is type(task)
    assert relative(out, keras.ops.convert_to_numpy(loaded(inputs))) <= TOL
    grown.backbone.save_to_preset(str(tmp_path / "preset"))
    backbone = keras_hub.models.ViTBackbone.from_preset(str(tmp_path / "preset"))
    assert backbone.get_config()["hidden_dim"] == 32 and backbone.num_layers == 4

    bert, _ = encoder("Bert")
    with pytest.raises(ValueError, match="post-LN"):
        kn.deepen(bert, after="transformer_layer_0")


@pytest.mark.parametrize("family", ["Bert", "ViT"])
def test_classifiers_grow_in_place_with_their_head(tmp_path, family):
    task, inputs = encoder(family)
    task.compile(
        optimizer=keras.optimizers.AdamW(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    inputs = (
        {k: np.concatenate([v] * 4) for k, v in inputs.items()}
        if isinstance(inputs, dict)
        else np.concatenate([inputs] * 4)
    )
    labels = np.arange(8) % 3
    task.fit(inputs, labels, batch_size=4, epochs=1, verbose=0)
    before, cls = keras.ops.convert_to_numpy(task(inputs)), type(task)
    if family == "Bert":  # through a block's layers: a plain model, refused
        saved = weights(task)
        inner = kn.Widen("transformer_layer_0/feedforward_intermediate_dense", 48)
        with pytest.raises(TypeError, match=r"would make it a Functional"):
            kn.grow_in_place(task, inner)
        for old, new in zip(saved, weights(task)):
            np.testing.assert_array_equal(old, new)
    key = "hidden_dim"
    kn.grow_in_place(task, kn.Widen(key, 32))
    assert type(task) is cls and task.backbone.get_config()[key] == 32
    # The head attribute is the grown layer the model runs, not the old one.
    assert task.output_dense is task.get_layer(task.output_dense.name)
    assert tuple(task.output_dense.kernel.shape) == (32, 3)
    assert relative(before, keras.ops.convert_to_numpy(task(inputs))) <= TOL
    slots = {v.path: v for v in task.optimizer.variables}
    moment = [k for k in slots if "output_dense" in k or "logits" in k]
    moment += [k for k in slots if "predictions" in k]
    assert moment and all(slots[k].shape[0] == 32 for k in moment if "kernel" in k)
    history = task.fit(inputs, labels, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][-1])
    task.save(tmp_path / "grown.keras")
    loaded = keras.models.load_model(tmp_path / "grown.keras")
    assert type(loaded) is cls
    out = keras.ops.convert_to_numpy(task(inputs))
    assert relative(out, keras.ops.convert_to_numpy(loaded(inputs))) <= TOL
