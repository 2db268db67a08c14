"""Thresholds from known-good images (``components/calibration.py``): percentiles checked against numpy and by hand.

Nothing runs a Trainer here: the callback is fed post-processed batches directly. The calibration through a predict
run (``AdaCLIP.calibrate``, ``anomalib-adaclip calibrate``) is in ``tests/integration/test_production.py``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from anomalib.data import ImageBatch
from torch.utils.data import DataLoader, TensorDataset

from anomalib_adaclip.components.calibration import (
    CalibrationResult,
    PixelPercentiles,
    ThresholdCalibration,
    calibration_loader,
    check_percentile,
)
from anomalib_adaclip.config import ThresholdConfig
from tests.helpers import write_png


def batch(scores: list[float], labels: list[int] | None = None, maps: torch.Tensor | None = None) -> ImageBatch:
    """A post-processed batch of ``len(scores)`` images with 4x4 maps, paths ``0.png``, ``1.png``, ..."""
    count = len(scores)
    return ImageBatch(
        image=torch.zeros(count, 3, 4, 4),
        gt_label=None if labels is None else torch.tensor(labels),
        pred_score=torch.tensor(scores),
        anomaly_map=torch.zeros(count, 4, 4) if maps is None else maps,
        image_path=[f"{index}.png" for index in range(count)],
    )


def calibrated(
    batches: list[ImageBatch], percentile: float, pixel_percentile: float | None = None
) -> CalibrationResult:
    callback = ThresholdCalibration(percentile, pixel_percentile, source="known-good parts")
    callback.on_predict_start(None, None)
    for index, outputs in enumerate(batches):
        callback.on_predict_batch_end(None, None, outputs, None, index)
    return callback.result()


# ----------------------------------------------------------------------------------------------------------------------
# Percentiles
# ----------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("q", [0, 1, 37.5, 50, 99, 99.9, 100])
def test_pixel_percentiles_match_numpy(q: float) -> None:
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.uniform(size=50_000), rng.beta(20, 2, size=30_000), np.full(5, 0.123456789)])
    counter = PixelPercentiles()
    for chunk in np.array_split(values.astype(np.float32), 7):
        counter.update(torch.from_numpy(chunk))
    assert counter.count == values.size
    expected = np.percentile(values.astype(np.float32).astype(np.float64), q)
    assert counter.percentile(q) == pytest.approx(expected, abs=5e-7)


def test_pixel_percentiles_by_hand_clip_and_refuse_an_empty_count() -> None:
    counter = PixelPercentiles(bins=10)
    # Bin centres 0.05, 0.15, ...: 0.12 and 0.18 share bin 1 (centre 0.15), 0.71 is in bin 7 (centre 0.75).
    counter.update(torch.tensor([[0.12, 0.18], [0.71, 0.71]]))
    assert counter.count == 4 and counter.minimum == pytest.approx(0.12) and counter.maximum == pytest.approx(0.71)
    # The median lies halfway between the 2nd and the 3rd value: bins 1 and 7, so (0.15 + 0.75) / 2.
    assert counter.percentile(50) == pytest.approx(0.45)
    # A bin centre, within half a bin of the true value, and never outside the values seen: 0.15 for the smallest
    # (true 0.12), and bin 7's centre 0.75 held to the largest value seen, 0.71.
    assert counter.percentile(0) == pytest.approx(0.15) and counter.percentile(100) == pytest.approx(0.71)
    counter.update(torch.tensor([-3.0, 7.0]))  # clipped into [0, 1]
    assert counter.minimum == 0.0 and counter.maximum == 1.0 and counter.count == 6
    counter.update(torch.empty(0))
    assert counter.count == 6
    with pytest.raises(ValueError, match="No pixel probabilities were counted"):
        PixelPercentiles(bins=10).percentile(50)


@pytest.mark.parametrize("value", [-0.1, 100.5, True, "99", None])
def test_check_percentile_refuses_what_is_no_percentile_and_names_the_argument(value: object) -> None:
    with pytest.raises(ValueError, match=r"pixel_percentile must be a number in \[0, 100\].*got"):
        check_percentile(value, "pixel_percentile")


def test_check_percentile_accepts_the_ends_as_floats() -> None:
    assert check_percentile(0) == 0.0 and isinstance(check_percentile(100), float)
    with pytest.raises(ValueError, match="percentile"):
        ThresholdCalibration(percentile=101)


# ----------------------------------------------------------------------------------------------------------------------
# The callback and its result
# ----------------------------------------------------------------------------------------------------------------------
def test_anomalous_images_are_left_out_and_the_threshold_is_numpy_percentile(caplog: pytest.LogCaptureFixture) -> None:
    maps = torch.stack([torch.full((4, 4), value) for value in (0.2, 0.9, 0.4, 0.6)])
    with caplog.at_level(logging.WARNING, logger="anomalib_adaclip"):
        result = calibrated(
            [batch([0.1, 0.9, 0.3], labels=[0, 1, 0], maps=maps[:3]), batch([0.2], labels=[0], maps=maps[3:])],
            percentile=50,
            pixel_percentile=100,
        )
    # The known-good scores 0.1, 0.3, 0.2 (the 0.9 is labelled anomalous): the median is 0.2.
    assert result.scores == pytest.approx((0.1, 0.3, 0.2)) and result.paths == ("0.png", "2.png", "0.png")
    assert result.image_threshold == pytest.approx(0.2)
    # Pixels of the known-good maps only: 0.2, 0.4, 0.6 (the anomalous image's 0.9 is not counted).
    assert result.pixel_threshold == pytest.approx(0.6)
    assert "left out 1 image(s) labelled anomalous in known-good parts" in caplog.text


def test_unlabelled_images_all_count_and_no_pixel_threshold_unless_asked() -> None:
    result = calibrated([batch([0.5, 0.1, 0.9, 0.3])], percentile=25)
    # numpy's linear interpolation: position 0.75 between the sorted 0.1 and 0.3.
    assert result.image_threshold == pytest.approx(0.1 + 0.75 * 0.2)
    assert result.pixel_threshold is None and result.pixel_percentile is None
    assert result.flagged == 3  # 0.5, 0.9 and 0.3 are above 0.25


def test_no_known_good_image_is_an_error_naming_the_source() -> None:
    with pytest.raises(ValueError, match="No known-good image to calibrate on in known-good parts"):
        calibrated([batch([0.7], labels=[1])], percentile=99)


def test_a_new_run_starts_counting_afresh() -> None:
    callback = ThresholdCalibration(50)
    callback.on_predict_start(None, None)
    callback.on_predict_batch_end(None, None, batch([0.9]), None, 0)
    callback.on_predict_start(None, None)
    callback.on_predict_batch_end(None, None, batch([0.1]), None, 0)
    assert callback.result().scores == pytest.approx((0.1,))


def result_of(percentile: float, pixel_percentile: float | None) -> CalibrationResult:
    return CalibrationResult(
        image_threshold=0.5,
        pixel_threshold=None if pixel_percentile is None else 0.75,
        percentile=percentile,
        pixel_percentile=pixel_percentile,
        scores=(0.25, 0.5, 0.625),
        paths=("a.png", "b.png", "c.png"),
        source="line 4",
    )


def test_the_snippet_is_a_fixed_threshold_config_for_anomalib() -> None:
    snippet = result_of(99, 99.5).to_yaml()
    assert yaml.safe_load(snippet) == {
        "model": {
            "class_path": "anomalib_adaclip.AdaCLIP",
            "init_args": {"thresholds": {"image": 0.5, "pixel": 0.75, "mode": "fixed"}},
        }
    }
    assert snippet.startswith("# AdaCLIP thresholds calibrated on 3 known-good image(s) from line 4\n")
    assert "# thresholds.image: 99th percentile" in snippet and "# thresholds.pixel: 99.5th percentile" in snippet
    without_pixels = yaml.safe_load(result_of(99, None).to_yaml())["model"]["init_args"]
    assert without_pixels == {"thresholds": {"image": 0.5, "mode": "fixed"}}
    assert ThresholdConfig(**without_pixels["thresholds"]) == ThresholdConfig(image=0.5, mode="fixed")


@pytest.mark.parametrize(
    ("percentile", "ordinal"),
    [
        *((1, "1st"), (2, "2nd"), (3, "3rd"), (4, "4th"), (11, "11th"), (12, "12th"), (13, "13th")),
        *((21, "21st"), (22, "22nd"), (50, "50th"), (100, "100th"), (0, "0th"), (37.5, "37.5th")),
    ],
)
def test_percentiles_are_written_as_english_ordinals(percentile: float, ordinal: str) -> None:
    assert f"# thresholds.image: {ordinal} percentile of their image scores" in result_of(percentile, None).to_yaml()


def test_the_summary_gives_the_range_and_how_many_images_the_threshold_flags() -> None:
    summary = result_of(99, 99.5).summary()
    assert "Calibrated on 3 known-good image(s) from line 4: scores min 0.2500, median 0.5000, max 0.6250." in summary
    assert "image_threshold = 0.500000 (99th percentile; 1 of these images score above it)" in summary
    assert "pixel_threshold = 0.750000 (99.5th percentile of their pixel probabilities)" in summary


# ----------------------------------------------------------------------------------------------------------------------
# Where the images come from
# ----------------------------------------------------------------------------------------------------------------------
def test_calibration_loader_reads_paths_and_passes_loaders_through(tmp_path: Path) -> None:
    for name in ("a.png", "b.png"):
        write_png(tmp_path / "good" / name, np.zeros((8, 8, 3), dtype=np.uint8))
    loader, source = calibration_loader(tmp_path / "good", batch_size=2)
    assert source == str(tmp_path / "good") and len(loader.dataset) == 2 and loader.batch_size == 2
    given = DataLoader(TensorDataset(torch.zeros(3, 1)))
    assert calibration_loader(given) == (given, "the given data loader")
    loader, source = calibration_loader(TensorDataset(torch.zeros(3, 1)))
    assert source == "the given TensorDataset" and len(loader.dataset) == 3


def test_calibration_loader_names_a_missing_path_and_a_wrong_kind(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'nothing'} is neither an image file nor a folder"):
        calibration_loader(tmp_path / "nothing")
    with pytest.raises(TypeError, match="got int"):
        calibration_loader(42)
