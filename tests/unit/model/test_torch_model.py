"""AdaCLIPModel on settings the reference fixture does not cover: invariants that must hold for any setting."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from anomalib.data import InferenceBatch
from scipy.ndimage import gaussian_filter
from torch.nn import functional as F  # noqa: N812

from anomalib_adaclip.model.torch_model import AdaCLIPTrainOutput
from tests.conftest import load_reference, random_images, reference_model

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


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: "-".join(f"{k}={v}" for k, v in s.items()))
def test_batch_equals_single_images_and_outputs_are_valid(make_model: Callable, setting: dict) -> None:
    model = make_model(**setting)
    size = model.image_size
    images = random_images(3, size)
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
    output = model(random_images(2, 224), ["bottle", "screw"])
    assert isinstance(output, AdaCLIPTrainOutput)
    n_layers = len(model.feature_layers)
    assert output.layer_maps.shape == (2, n_layers, 2, 224, 224)
    torch.testing.assert_close(output.layer_maps.sum(2), torch.ones(2, n_layers, 224, 224))
    torch.testing.assert_close(output.image_probs.sum(-1), torch.ones(2))
    assert output.layer_maps.requires_grad and output.image_probs.requires_grad


def test_test_map_is_softmax_of_mean_layer_logits(make_model: Callable) -> None:
    """The eval map equals the definition: upsample every layer, average, softmax, abnormal channel, blur."""
    model = make_model()
    images = random_images(2, 224)
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


def test_default_class_name_and_broadcast_name(make_model: Callable) -> None:
    model = make_model(class_name="tire")
    images = random_images(2, 224)
    with torch.no_grad():
        by_default = model(images)
        by_string = model(images, "tire")
        by_list = model(images, ["tire", "tire"])
    torch.testing.assert_close(by_default.pred_score, by_list.pred_score)
    torch.testing.assert_close(by_string.anomaly_map, by_list.anomaly_map)


# Documented in docs/source/explanations/precision.md: bf16 autocast on the CPU vs the reference's fp32 outputs.
BF16_MAP_TOLERANCE = 0.03
BF16_SCORE_TOLERANCE = 0.05


def test_bf16_autocast_on_cpu_stays_close_to_the_reference() -> None:
    data = load_reference()
    model = reference_model(data)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        output = model(data["images"], data["classes"])
    assert output.pred_score.dtype == torch.float32 and output.anomaly_map.dtype == torch.float32
    reference_maps = torch.from_numpy(
        np.stack([gaussian_filter(m.double().numpy(), sigma=4) for m in data["outputs"]["test_map"]])
    ).float()
    reference_scores = torch.stack(data["outputs"]["test_score"])
    assert (output.anomaly_map - reference_maps).abs().max() < BF16_MAP_TOLERANCE
    assert (output.pred_score - reference_scores).abs().max() < BF16_SCORE_TOLERANCE


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
