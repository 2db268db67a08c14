"""AdaCLIPModel on settings the reference fixture does not cover: invariants that must hold for any setting."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from anomalib.data import InferenceBatch
from torch.nn import functional as F  # noqa: N812

from anomalib_adaclip import AdaCLIPModel
from anomalib_adaclip.torch_model import AdaCLIPTrainOutput, default_feature_layers

SETTINGS = [
    {"prompting_type": "SD", "prompting_branch": "VL"},
    {"prompting_type": "S", "prompting_branch": "L", "use_hsf": False},
    {"prompting_type": "D", "prompting_branch": "L", "k_clusters": 3},
    {"prompting_type": "D", "prompting_branch": "VL", "prompting_depth": 1, "prompting_length": 1},
    {"prompting_type": "SD", "prompting_branch": "V", "prompting_depth": 3, "prompting_length": 8, "k_clusters": 7},
    {"prompting_type": "SD", "prompting_branch": "VL", "feature_layers": [2, 4], "k_clusters": 50},
    {"prompting_type": "S", "prompting_branch": "VL", "image_size": 280, "k_clusters": 10},
    {"prompting_type": "SD", "prompting_branch": "VL", "image_size": 168, "feature_layers": [3]},
]


def _images(count: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(count, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: "-".join(f"{k}={v}" for k, v in s.items()))
def test_batch_equals_single_images_and_outputs_are_valid(make_model: Callable, setting: dict) -> None:
    model = make_model(**setting)
    size = model.image_size
    images = _images(3, size)
    classes = ["bottle", "pcb-board", "metal_nut"]
    with torch.no_grad():
        batch = model(images, classes)
        singles = [model(images[i : i + 1], classes[i : i + 1]) for i in range(3)]
    assert isinstance(batch, InferenceBatch)
    assert batch.pred_score.shape == (3,)
    assert batch.anomaly_map.shape == (3, size, size)
    assert torch.isfinite(batch.anomaly_map).all()
    assert torch.isfinite(batch.pred_score).all()
    assert batch.anomaly_map.min() >= 0 and batch.anomaly_map.max() <= 1
    assert batch.pred_score.min() >= 0 and batch.pred_score.max() <= 1
    for index, single in enumerate(singles):
        torch.testing.assert_close(single.pred_score[0], batch.pred_score[index], atol=1e-5, rtol=0)
        torch.testing.assert_close(single.anomaly_map[0], batch.anomaly_map[index], atol=1e-5, rtol=0)


@pytest.mark.parametrize("setting", SETTINGS[:4], ids=str)
def test_training_forward_shapes_and_probabilities(make_model: Callable, setting: dict) -> None:
    model = make_model(**setting).train()
    output = model(_images(2, 224), ["bottle", "screw"])
    assert isinstance(output, AdaCLIPTrainOutput)
    n_layers = len(model.feature_layers)
    assert output.layer_maps.shape == (2, n_layers, 2, 224, 224)
    torch.testing.assert_close(output.layer_maps.sum(2), torch.ones(2, n_layers, 224, 224))
    torch.testing.assert_close(output.image_probs.sum(-1), torch.ones(2))
    assert output.layer_maps.requires_grad and output.image_probs.requires_grad


def test_test_map_is_softmax_of_mean_layer_logits(make_model: Callable) -> None:
    """The eval map equals the definition: upsample every layer, average, softmax, abnormal channel, blur."""
    model = make_model()
    images = _images(2, 224)
    with torch.no_grad():
        features = model.features(images, ["bottle", "bottle"])
        upsampled = [
            F.interpolate(layer, size=(224, 224), mode="bilinear", align_corners=True)
            for layer in features.layer_logits.unbind(1)
        ]
        expected = torch.stack(upsampled).mean(0).softmax(dim=1)[:, 1]
        torch.testing.assert_close(model.anomaly_map(features, blur=False), expected, atol=1e-5, rtol=0)
        torch.testing.assert_close(model(images, "bottle").anomaly_map, model.blur(expected), atol=1e-5, rtol=0)


def test_clip_is_frozen_and_stays_in_eval_mode(make_model: Callable) -> None:
    model = make_model()
    model.train()
    assert not model.clip.training
    assert all(not module.training for module in model.clip.modules())
    assert all(not parameter.requires_grad for parameter in model.clip.parameters())
    trainable = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
    assert trainable == set(model.trainable_state_dict())
    assert all(not name.startswith("clip.") for name in trainable)


def test_trainable_parameter_names_follow_the_released_layout(make_model: Callable) -> None:
    model = make_model(prompting_depth=2, prompting_length=3)
    names = set(model.trainable_state_dict())
    assert "text_prompter.static_prompts.0" in names and "visual_prompter.static_prompts.1" in names
    assert {f"dynamic_visual_prompt_generator.head.{i}.weight" for i in range(3)} <= names
    assert {f"patch_token_layer.head.{i}.bias" for i in range(4)} <= names
    assert "cls_token_layer.head.0.weight" in names
    assert not any(name.startswith("clip.") for name in names)


def test_unprompted_branch_has_no_generator(make_model: Callable) -> None:
    vision_only = make_model(prompting_type="SD", prompting_branch="V")
    assert vision_only.text_prompter is None and vision_only.dynamic_text_prompt_generator is None
    text_only = make_model(prompting_type="D", prompting_branch="L")
    assert text_only.visual_prompter is None and text_only.dynamic_visual_prompt_generator is None
    assert text_only.text_prompter is None and text_only.dynamic_text_prompt_generator is not None


def test_dynamic_text_prompts_are_shared_by_the_sentences_of_an_image(make_model: Callable) -> None:
    """With dynamic text prompts, different images of one class get different text features (the reference's D+L
    crash is fixed by broadcasting one image's prompts over its 48 sentences)."""
    model = make_model(prompting_type="D", prompting_branch="L")
    with torch.no_grad():
        features = model.features(_images(2, 224), ["bottle", "bottle"])
    assert not torch.allclose(features.text_features[0], features.text_features[1])


def test_static_text_features_do_not_depend_on_the_image(make_model: Callable) -> None:
    model = make_model(prompting_type="S", prompting_branch="VL")
    with torch.no_grad():
        features = model.features(_images(3, 224), ["bottle", "screw", "bottle"])
    torch.testing.assert_close(features.text_features[0], features.text_features[2])
    assert not torch.allclose(features.text_features[0], features.text_features[1])


def test_default_class_name_and_broadcast_name(make_model: Callable) -> None:
    model = make_model(class_name="tire")
    images = _images(2, 224)
    with torch.no_grad():
        by_default = model(images)
        by_string = model(images, "tire")
        by_list = model(images, ["tire", "tire"])
    torch.testing.assert_close(by_default.pred_score, by_list.pred_score)
    torch.testing.assert_close(by_string.anomaly_map, by_list.anomaly_map)


def test_class_name_dashes_become_spaces(make_model: Callable) -> None:
    model = make_model()
    with torch.no_grad():
        dashed = model.text_features(["pcb-board"])
        spaced = model.text_features(["pcb board"])
        underscored = model.text_features(["pcb_board"])
    torch.testing.assert_close(dashed, spaced)
    assert not torch.allclose(dashed, underscored)


def test_trimmed_text_context_equals_full_context(make_model: Callable) -> None:
    """The causal text tower makes the cut to the longest sentence exact."""
    model = make_model()
    names = ["bottle", "a much longer class name with several words"]
    with torch.no_grad():
        tokens = torch.stack([model._tokens(name)[0] for name in names])
        static = model._block_prompts(model.text_prompter, None)
        full = model._encode_text(tokens, static)
        cut = int(tokens.argmax(-1).max()) + 1
        trimmed = model._encode_text(tokens[..., :cut], static)
    assert cut < tokens.shape[-1]
    torch.testing.assert_close(trimmed, full, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("argument", "value", "message"),
    [
        ("prompting_type", "X", "prompting_type"),
        ("prompting_branch", "LV", "prompting_branch"),
        ("prompting_depth", 0, "prompting_depth"),
        ("prompting_depth", 5, "prompting_depth"),
        ("prompting_length", 0, "prompting_length"),
        ("feature_layers", [0, 4], "feature_layers"),
        ("feature_layers", [2, 2], "feature_layers"),
        ("k_clusters", 0, "k_clusters"),
        ("image_size", 230, "multiple of the backbone's patch size 14"),
        ("normal_states", ["no placeholder"], "normal_states"),
    ],
)
def test_invalid_settings_are_clear_errors(make_model: Callable, argument: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_model(**{argument: value})


@pytest.mark.parametrize(
    ("images", "classes", "error", "message"),
    [
        (torch.randn(3, 224, 224), None, ValueError, r"\[B, 3, H, W\]"),
        (torch.randn(1, 1, 224, 224), None, ValueError, r"\[B, 3, H, W\]"),
        (torch.zeros(1, 3, 224, 224, dtype=torch.uint8), None, TypeError, "floating-point"),
        (torch.randn(1, 3, 200, 200), None, ValueError, "224x224"),
        (torch.randn(2, 3, 224, 224), ["one"], ValueError, "2 images"),
        ("not a tensor", None, TypeError, "torch.Tensor"),
    ],
)
def test_invalid_inputs_are_clear_errors(
    make_model: Callable,
    images: object,
    classes: list[str] | None,
    error: type[Exception],
    message: str,
) -> None:
    model = make_model()
    with pytest.raises(error, match=message):
        model(images, classes)


def test_default_feature_layers() -> None:
    assert default_feature_layers(24) == [6, 12, 18, 24]
    assert default_feature_layers(12) == [3, 6, 9, 12]
    assert default_feature_layers(4) == [1, 2, 3, 4]
    assert default_feature_layers(2) == [1, 2]


def test_paper_defaults() -> None:
    import inspect

    defaults = {name: p.default for name, p in inspect.signature(AdaCLIPModel).parameters.items()}
    assert defaults["backbone"] == "ViT-L-14-336"
    assert defaults["image_size"] == 518
    assert defaults["prompting_depth"] == 4
    assert defaults["prompting_length"] == 5
    assert defaults["prompting_type"] == "SD"
    assert defaults["prompting_branch"] == "VL"
    assert defaults["use_hsf"] is True
    assert defaults["k_clusters"] == 20
    assert defaults["blur_sigma"] == 4.0
