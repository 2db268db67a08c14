"""What a run decides per image (``components/decisions.py``): the verdict, the applied threshold, the anomalous area.

Every value is worked out by hand.
"""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from anomalib_adaclip.components.decisions import (
    anomalous_area_fraction,
    applied_threshold,
    decision,
    image_file_size,
)
from tests.helpers import write_png


@pytest.mark.parametrize(
    ("label", "verdict"),
    [(None, ""), (True, "NG"), (False, "OK"), (torch.tensor(True), "NG"), (torch.tensor(0), "OK")],
)
def test_decision(label: object, verdict: str) -> None:
    assert decision(label) == verdict


def test_applied_threshold_reads_the_post_processors_normalised_threshold() -> None:
    module = SimpleNamespace(post_processor=SimpleNamespace(normalized_image_threshold=torch.tensor(0.25)))
    assert applied_threshold(module, "image") == 0.25
    assert applied_threshold(module, "pixel") is None  # the post-processor has none for pixels
    assert applied_threshold(SimpleNamespace(), "image") is None  # no post-processor
    nan = SimpleNamespace(post_processor=SimpleNamespace(normalized_pixel_threshold=float("nan")))
    assert applied_threshold(nan, "pixel") is None  # not learned yet


def test_image_file_size_is_height_then_width_and_none_when_unreadable(tmp_path: Path) -> None:
    write_png(tmp_path / "wide.png", np.zeros((3, 5, 3), dtype=np.uint8))
    (tmp_path / "broken.png").write_bytes(b"not an image")
    assert image_file_size(str(tmp_path / "wide.png")) == (3, 5)
    assert image_file_size(str(tmp_path / "broken.png")) is None
    assert image_file_size(str(tmp_path / "missing.png")) is None
    assert image_file_size(None) is None and image_file_size("") is None


def test_the_area_is_the_share_of_pixels_above_the_threshold() -> None:
    anomaly_map = torch.tensor([[0.1, 0.6], [0.7, 0.5]])  # 0.5 is not above 0.5
    assert anomalous_area_fraction(anomaly_map, None, 0.5) == 0.5
    assert anomalous_area_fraction(anomaly_map[None], None, 0.0) == 1.0  # [1, H, W] is read as [H, W]


def test_the_area_is_measured_at_the_original_size() -> None:
    # One hot column of four at 4x4: a quarter of the map; at 4x8 the bilinear map keeps two columns above 0.5
    # (input column 0 at output columns 0 and 1: 1.0 and 0.75; column 2 reads 0.25), still a quarter.
    anomaly_map = torch.zeros(4, 4)
    anomaly_map[:, 0] = 1.0
    assert anomalous_area_fraction(anomaly_map, None, 0.5, original_size=(4, 4)) == 0.25
    assert anomalous_area_fraction(anomaly_map, None, 0.5, original_size=(4, 8)) == 0.25
    assert anomalous_area_fraction(anomaly_map, None, 0.9, original_size=(4, 8)) == 0.125  # only column 0 of 8


def test_without_a_map_or_threshold_the_mask_decides_and_without_both_nan() -> None:
    mask = torch.tensor([[True, False], [False, False]])
    assert anomalous_area_fraction(None, mask, 0.5) == 0.25
    assert anomalous_area_fraction(torch.ones(2, 2), mask, None, original_size=(4, 4)) == 0.25  # nearest: same share
    assert math.isnan(anomalous_area_fraction(None, None, 0.5))
