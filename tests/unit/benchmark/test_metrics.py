"""Which metrics a test set cannot have: decided from its labels and masks, counted by hand (nothing runs)."""

from __future__ import annotations

import pytest
import torch
from anomalib.data import ImageBatch

from anomalib_adaclip.benchmark.metrics import (
    BENCHMARK_METRICS,
    IMAGE_METRICS,
    PIXEL_METRICS,
    EvaluatedCounts,
    not_applicable_reasons,
)


def batch(labels: list[int], masks: torch.Tensor | None = None) -> ImageBatch:
    count = len(labels)
    return ImageBatch(image=torch.zeros(count, 3, 4, 4), gt_label=torch.tensor(labels), gt_mask=masks)


def content(*batches: ImageBatch) -> EvaluatedCounts:
    counted = EvaluatedCounts()
    for item in batches:
        counted.add(item)
    return counted


def test_counts_by_hand() -> None:
    masks = torch.zeros(3, 4, 4, dtype=torch.bool)
    masks[1, :2, :] = True  # 8 anomalous pixels
    counted = content(batch([0, 1, 1], masks), batch([0]))
    assert counted == EvaluatedCounts(
        normal_images=2, anomalous_images=2, images_with_mask=3, anomalous_pixels=8, normal_pixels=40
    )


def test_a_full_test_set_has_every_metric() -> None:
    masks = torch.zeros(2, 4, 4, dtype=torch.bool)
    masks[1, 0, 0] = True
    assert not_applicable_reasons(content(batch([0, 1], masks))) == {}


def test_no_masks_makes_the_pixel_metrics_not_applicable() -> None:  # HeadCT, BrainMRI, Br35H
    reasons = not_applicable_reasons(content(batch([0, 1, 1]), batch([0])))
    assert set(reasons) == set(PIXEL_METRICS)
    assert all("no masks" in reason for reason in reasons.values())


def test_empty_masks_make_the_pixel_metrics_not_applicable() -> None:  # a data module that fills in empty masks
    reasons = not_applicable_reasons(content(batch([0, 1], torch.zeros(2, 4, 4, dtype=torch.bool))))
    assert set(reasons) == set(PIXEL_METRICS)
    assert all("no anomalous pixel" in reason for reason in reasons.values())


@pytest.mark.parametrize(("labels", "words"), [([1, 1, 1], "no normal images"), ([0, 0], "no anomalous images")])
def test_one_label_class_makes_the_image_metrics_not_applicable(labels: list[int], words: str) -> None:
    masks = torch.zeros(len(labels), 4, 4, dtype=torch.bool)
    masks[0, 1:3, 1:3] = True
    reasons = not_applicable_reasons(content(batch(labels, masks)))  # ISIC, ColonDB, ClinicDB, TN3K: all anomalous
    assert set(reasons) == set(IMAGE_METRICS)  # the masks hold both pixel classes: the pixel metrics apply
    assert all(words in reason for reason in reasons.values())


def test_the_metric_groups_cover_the_benchmark_metrics() -> None:
    assert set(IMAGE_METRICS) | set(PIXEL_METRICS) == set(BENCHMARK_METRICS)
    assert not set(IMAGE_METRICS) & set(PIXEL_METRICS)
