"""The visualiser (``components/visualizer.py``): the decision written onto anomalib's panels, and the warning before
an earlier run's images are replaced. Invariants against anomalib's own ``ImageVisualizer`` output.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from anomalib.data import ImageItem
from anomalib.visualization import ImageVisualizer

from anomalib_adaclip.components.visualizer import AdaCLIPVisualizer


def item(score: float | None = 0.734, label: bool | None = True) -> ImageItem:
    generator = torch.Generator().manual_seed(0)
    return ImageItem(
        image=torch.rand(3, 32, 32, generator=generator),
        pred_score=None if score is None else torch.tensor(score),
        pred_label=None if label is None else torch.tensor(label),
        anomaly_map=torch.rand(1, 32, 32, generator=generator),
        pred_mask=torch.zeros(1, 32, 32, dtype=torch.bool),
    )


@pytest.mark.parametrize(
    ("score", "label", "threshold", "text"),
    [
        (0.734, True, 0.5, "NG 0.734 > 0.500"),
        (0.2131, False, 0.5, "OK 0.213 <= 0.500"),
        (0.734, True, None, "NG 0.734"),
        (0.734, None, 0.5, "score 0.734"),
        (None, True, 0.5, "NG"),
        (None, None, 0.5, ""),
    ],
)
def test_decision_text(score: float | None, label: bool | None, threshold: float | None, text: str) -> None:
    assert AdaCLIPVisualizer().decision_text(item(score, label), threshold) == text


def pixels(image: object) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int64)


@pytest.mark.parametrize(("label", "colour"), [(True, 0), (False, 1)])  # NG on red (channel 0), OK on green (1)
def test_the_decision_is_written_in_a_band_at_the_bottom_and_nothing_else_changes(label: bool, colour: int) -> None:
    plain = pixels(ImageVisualizer().visualize(item(label=label)))
    rendered = pixels(AdaCLIPVisualizer().render(item(label=label), 0.5))
    assert rendered.shape == plain.shape
    changed = np.abs(rendered - plain).sum(-1) > 0
    rows = np.flatnonzero(changed.any(axis=1))
    height = plain.shape[0]
    assert rows.size and rows.min() >= height // 2 and rows.max() < height  # a band in the lower half only
    other = 1 - colour
    assert rendered[changed][:, colour].mean() > rendered[changed][:, other].mean() + 50
    assert np.array_equal(pixels(AdaCLIPVisualizer(show_decision=False).render(item(label=label), 0.5)), plain)


def test_an_earlier_runs_images_are_announced_before_they_are_replaced(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    trainer = SimpleNamespace(default_root_dir=str(tmp_path))
    visualizer = AdaCLIPVisualizer()
    with caplog.at_level(logging.WARNING, logger="anomalib_adaclip"):
        visualizer.on_predict_start(trainer, None)
        (tmp_path / "images").mkdir()
        visualizer.on_test_start(trainer, None)  # an empty folder is no earlier run
    assert caplog.text == ""
    (tmp_path / "images" / "widget").mkdir()
    (tmp_path / "images" / "widget" / "000.png").write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="anomalib_adaclip"):
        visualizer.on_predict_start(trainer, None)
    assert f"{tmp_path / 'images'} holds visualisations of an earlier run" in caplog.text
