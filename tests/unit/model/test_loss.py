"""AdaCLIP's training loss: against the authors' loss and gradients, hand-computed values and batch invariants."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch

from anomalib_adaclip import AdaCLIPModel
from anomalib_adaclip.model.loss import adaclip_loss, dice_loss, focal_loss
from tests.conftest import MICRO_BACKBONE, REFERENCE_FILE, VARIANT_FILES, load_reference, reference_model

LOSS_RTOL = 1e-4
GRAD_RTOL = 1e-3


def _loss_and_grads(
    model: AdaCLIPModel,
    data: dict[str, Any],
    index: int,
    hsf_labels: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor | None]]:
    model.zero_grad(set_to_none=True)
    loss = model.loss(
        data["images"][index : index + 1],
        data["classes"][index : index + 1],
        data["masks"][index : index + 1],
        data["labels"][index : index + 1],
        hsf_labels=hsf_labels,
    )
    loss.backward()
    return loss.detach(), {name: parameter.grad for name, parameter in model.named_parameters()}


def _relative(value: torch.Tensor, reference: torch.Tensor) -> float:
    return float((value - reference).norm() / reference.norm())


@pytest.mark.parametrize("name", [REFERENCE_FILE, *VARIANT_FILES])
def test_loss_and_gradients_match_reference(name: str) -> None:
    """End to end (our k-means, no injected clusters): each image's loss and every trainable tensor's gradient."""
    data = load_reference(name)
    model = reference_model(data).train()
    outputs = data["outputs"]
    for index in range(len(data["classes"])):
        loss, grads = _loss_and_grads(model, data, index)
        reference_loss = outputs["loss"][index]
        assert abs(float(loss) - float(reference_loss)) <= LOSS_RTOL * abs(float(reference_loss)), (index, loss)
        reference_grads = outputs["grads"][index]
        for key, reference_grad in reference_grads.items():
            assert grads[key] is not None, f"{key} got no gradient"
            assert _relative(grads[key], reference_grad) <= GRAD_RTOL, (index, key)
        # Everything else gets no gradient: the frozen CLIP and the text prompt of block 0 (never used).
        without = {key for key, grad in grads.items() if grad is None}
        assert without == set(grads) - set(reference_grads)
        assert all(key.startswith("clip.") or key == "text_prompter.static_prompts.0" for key in without)
        if model.text_prompter is not None:
            assert "text_prompter.static_prompts.0" in without


def test_loss_with_the_reference_clusters() -> None:
    """With the reference's k-means labels injected, the loss is the reference's too (HSF enters the image loss)."""
    data = load_reference(REFERENCE_FILE)
    model = reference_model(data).train()
    for index in (1, 2):
        labels = data["outputs"]["hsf_labels"][index].unsqueeze(0)
        loss, grads = _loss_and_grads(model, data, index, hsf_labels=labels)
        reference_loss = float(data["outputs"]["loss"][index])
        assert abs(float(loss) - reference_loss) <= LOSS_RTOL * reference_loss
        grad = grads["cls_token_layer.head.0.weight"]
        assert _relative(grad, data["outputs"]["grads"][index]["cls_token_layer.head.0.weight"]) <= GRAD_RTOL


def test_batch_loss_is_the_mean_of_single_image_losses() -> None:
    data = load_reference(REFERENCE_FILE)
    model = reference_model(data).train()
    images, classes, masks, labels = data["images"], data["classes"], data["masks"], data["labels"]
    singles, single_grads = [], []
    for index in range(len(classes)):
        loss, grads = _loss_and_grads(model, data, index)
        singles.append(loss)
        single_grads.append(grads["patch_token_layer.head.0.weight"].clone())
    model.zero_grad(set_to_none=True)
    batch_loss = model.loss(images, classes, masks, labels)
    batch_loss.backward()
    batch_loss = batch_loss.detach()
    assert abs(float(batch_loss) - float(torch.stack(singles).mean())) <= 1e-5 * float(batch_loss)
    mean_grad = torch.stack(single_grads).mean(0)
    assert _relative(model.patch_token_layer.head[0].weight.grad, mean_grad) <= 1e-4


def test_focal_loss_hand_computed() -> None:
    probabilities = torch.tensor([[0.9, 0.1], [0.3, 0.7], [0.5, 0.5]])
    targets = torch.tensor([0, 0, 1])
    # Target one-hot clamped to [1e-5, 1 - 1e-5]; p_t = sum(one_hot * p) + 1e-5; loss = -(1 - p_t)^2 * log(p_t).
    expected = []
    for (p_normal, p_abnormal), target in zip(probabilities.tolist(), targets.tolist(), strict=True):
        weight_normal, weight_abnormal = (1 - 1e-5, 1e-5) if target == 0 else (1e-5, 1 - 1e-5)
        p_t = weight_normal * p_normal + weight_abnormal * p_abnormal + 1e-5
        expected.append(-((1 - p_t) ** 2) * math.log(p_t))
    torch.testing.assert_close(focal_loss(probabilities, targets), torch.tensor(expected), rtol=1e-6, atol=0)
    # A map is averaged over its pixels: a [1, 2, 1, 3] map is the mean of three image-level losses.
    pixel_map = probabilities.T.reshape(1, 2, 1, 3)
    torch.testing.assert_close(
        focal_loss(pixel_map, targets.reshape(1, 1, 3)), torch.tensor([sum(expected) / 3]), rtol=1e-6, atol=0
    )
    # A confident, correct prediction costs (almost) nothing.
    assert float(focal_loss(torch.tensor([[1.0, 0.0]]), torch.tensor([0]))) < 1e-9


def test_dice_loss_hand_computed() -> None:
    ones, zeros = torch.ones(1, 4, 4), torch.zeros(1, 4, 4)
    assert float(dice_loss(ones, ones)) == pytest.approx(0.0)
    assert float(dice_loss(zeros, zeros)) == pytest.approx(0.0)  # (0 + 1) / (0 + 0 + 1)
    assert float(dice_loss(ones, zeros)) == pytest.approx(1 - 1 / 17)
    half = torch.zeros(1, 4, 4)
    half[:, :2] = 1
    # sum(p * g) = 0.5 * 8, sum(p) = 8, sum(g) = 8
    assert float(dice_loss(torch.full((1, 4, 4), 0.5), half)) == pytest.approx(1 - 9 / 17)
    # Per image: the second image does not change the first one's loss.
    batch = dice_loss(torch.stack([ones[0], zeros[0]]), torch.stack([ones[0], ones[0]]))
    torch.testing.assert_close(batch, torch.tensor([0.0, 1 - 1 / 17]))


def test_adaclip_loss_sums_the_terms() -> None:
    generator = torch.Generator().manual_seed(0)
    maps = torch.rand(2, 3, 2, 8, 8, generator=generator).softmax(dim=2)
    probabilities = torch.rand(2, 2, generator=generator).softmax(dim=1)
    masks = torch.rand(2, 8, 8, generator=generator) > 0.7
    labels = torch.tensor([1, 0])
    expected = focal_loss(probabilities, labels)
    for layer in range(3):
        layer_map = maps[:, layer]
        expected = expected + focal_loss(layer_map, masks.long()) + dice_loss(layer_map[:, 1], masks.float())
        expected = expected + dice_loss(layer_map[:, 0], 1 - masks.float())
    torch.testing.assert_close(adaclip_loss(maps, probabilities, masks, labels), expected)


@pytest.fixture(scope="module")
def tiny_model() -> AdaCLIPModel:
    torch.manual_seed(0)
    return AdaCLIPModel(
        backbone=MICRO_BACKBONE, backbone_weights=None, image_size=112, feature_layers=[2, 4], k_clusters=4
    ).train()


def _inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(2, 3, 112, 112, generator=generator)
    masks = torch.zeros(2, 112, 112)
    masks[0, 25:60, 30:50] = 1.0
    return images, masks, torch.tensor([1, 0])


def test_mask_and_label_formats_give_the_same_loss(tiny_model: AdaCLIPModel) -> None:
    images, masks, labels = _inputs()
    with torch.no_grad():
        expected = tiny_model.loss(images, "bottle", masks, labels)
        variants = [
            (masks.bool(), labels.bool()),
            (masks.unsqueeze(1), labels.float()),
            (masks.unsqueeze(1).to(torch.uint8), labels.reshape(2, 1)),
            (masks * 0.6 + (1 - masks) * 0.4, labels.float() * 0.9),  # thresholded at 0.5
        ]
        for variant_masks, variant_labels in variants:
            assert float(tiny_model.loss(images, ["bottle", "bottle"], variant_masks, variant_labels)) == float(
                expected
            )


@pytest.mark.parametrize(
    ("masks", "labels", "error", "message"),
    [
        (torch.zeros(2, 56, 56), torch.zeros(2), ValueError, r"gt_masks.*H = W = 112"),
        (torch.zeros(3, 112, 112), torch.zeros(2), ValueError, r"B = 2 images"),
        (torch.zeros(2, 2, 112, 112), torch.zeros(2), ValueError, r"\[B, H, W\] or \[B, 1, H, W\]"),
        (torch.zeros(2, 112, 112), torch.zeros(3), ValueError, r"one label per image \(2\)"),
        ([[0]], torch.zeros(2), TypeError, r"gt_masks.*torch.Tensor"),
    ],
)
def test_bad_targets_are_clear_errors(
    tiny_model: AdaCLIPModel, masks: Any, labels: torch.Tensor, error: type, message: str
) -> None:
    images, _, _ = _inputs()
    with pytest.raises(error, match=message):
        tiny_model.loss(images, "bottle", masks, labels)


def test_loss_under_bf16_autocast_is_float32_and_close(tiny_model: AdaCLIPModel) -> None:
    images, masks, labels = _inputs()
    with torch.no_grad():
        full = tiny_model.loss(images, "bottle", masks, labels)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = tiny_model.loss(images, "bottle", masks, labels)
    assert mixed.dtype == torch.float32 and torch.isfinite(mixed)
    assert abs(float(mixed) - float(full)) <= 0.05 * float(full)


def test_only_trainable_tensors_get_gradients(make_model: Callable) -> None:
    model = make_model(prompting_depth=2, prompting_length=3).train()
    generator = torch.Generator().manual_seed(1)
    images, masks = torch.randn(2, 3, 224, 224, generator=generator), torch.zeros(2, 224, 224)
    masks[0, 50:120, 60:100] = 1.0
    labels = torch.tensor([1, 0])
    model.loss(images, ["bottle", "screw"], masks, labels).backward()
    with_grad = {name for name, parameter in model.named_parameters() if parameter.grad is not None}
    assert with_grad == set(model.trainable_state_dict()) - {"text_prompter.static_prompts.0"}


def test_fp16_autocast_with_gradient_scaling_trains(tiny_model: AdaCLIPModel) -> None:
    """What Lightning's precision="16-mixed" does on a GPU, here on the CPU: fp16 autocast plus a GradScaler."""
    images, masks, labels = _inputs()
    before = {name: value.clone() for name, value in tiny_model.trainable_state_dict().items()}
    optimizer = torch.optim.AdamW([p for p in tiny_model.parameters() if p.requires_grad], lr=1e-3)
    # A lower initial scale than the default 2**16 (which the scaler backs off from within a few skipped steps).
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    for _ in range(2):
        optimizer.zero_grad()
        with torch.autocast("cpu", dtype=torch.float16):
            loss = tiny_model.loss(images, "bottle", masks, labels)
        assert loss.dtype == torch.float32 and torch.isfinite(loss)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        assert scaler.get_scale() >= 2.0**10  # no overflow, so no step was skipped
    after = tiny_model.trainable_state_dict()
    assert all(torch.isfinite(value).all() for value in after.values())
    assert not torch.equal(after["patch_token_layer.head.0.weight"], before["patch_token_layer.head.0.weight"])
    tiny_model.load_state_dict(before, strict=False)  # the module-scoped model stays as it was
