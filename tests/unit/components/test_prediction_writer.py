"""The predictions table's rows (``components/prediction_writer.py``): one per image, values worked out by hand.

What a run does with the rows (files, resume, several processes) is tested through real runs in
``tests/integration/test_streaming.py`` and ``test_production.py``; the table format in
``tests/unit/components/test_prediction_table.py``.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from anomalib.data import ImageBatch, PredictDataset
from anomalib.data.datasets.image.folder import FolderDataset
from PIL import Image

from anomalib_adaclip.components.prediction_table import path_key
from anomalib_adaclip.components.prediction_writer import CSV_COLUMNS, PredictionCSVWriter, drop_finished_images
from tests.helpers import write_png


def module(pixel_threshold: float | None) -> SimpleNamespace:
    """A stand-in Lightning module: only the post-processor's threshold is read (no class names)."""
    return SimpleNamespace(post_processor=SimpleNamespace(normalized_pixel_threshold=pixel_threshold))


def test_rows_give_score_decision_and_the_area_at_the_files_size(tmp_path: Path) -> None:
    # The map's left half is hot (0.9), its right half cold (0.1): at the file's 8x8 (bilinear from 4x4) the
    # columns 0-3 stay above 0.5 (column 3 interpolates to 0.7, column 4 to 0.3): exactly half the image.
    write_png(tmp_path / "a.png", np.zeros((8, 8, 3), dtype=np.uint8))
    half = torch.tensor([0.9, 0.9, 0.1, 0.1]).expand(4, 4)
    batch = ImageBatch(
        image=torch.zeros(2, 3, 4, 4),
        pred_score=torch.tensor([0.734, 0.25]),
        pred_label=torch.tensor([True, False]),
        anomaly_map=torch.stack([half, torch.full((4, 4), 0.2)]),
        image_path=[str(tmp_path / "a.png"), str(tmp_path / "missing.png")],
    )
    rows = PredictionCSVWriter().rows(module(0.5), batch)
    assert len(CSV_COLUMNS) == 5
    assert rows == [
        [str(tmp_path / "a.png"), "", "0.734000", "NG", "0.500000"],
        # A file that cannot be read keeps the map's size: no pixel above 0.5.
        [str(tmp_path / "missing.png"), "", "0.250000", "OK", "0.000000"],
    ]


def test_without_a_pixel_threshold_the_mask_gives_the_area_and_missing_values_are_empty_cells() -> None:
    mask = torch.zeros(2, 4, 4, dtype=torch.bool)
    mask[0, :1] = True  # one row of four: a quarter
    batch = ImageBatch(
        image=torch.zeros(2, 3, 4, 4),
        pred_score=torch.tensor([0.5, 0.5]),
        pred_mask=mask,
        image_path=["", ""],
    )
    rows = PredictionCSVWriter().rows(module(None), batch)
    assert [row[4] for row in rows] == ["0.250000", "0.000000"]
    assert [row[3] for row in rows] == ["", ""]  # no label: no decision
    no_area = ImageBatch(image=torch.zeros(1, 3, 4, 4), pred_score=torch.tensor([0.5]))
    assert PredictionCSVWriter().rows(module(None), no_area) == [["", "", "0.500000", "", ""]]


def test_a_writer_that_was_not_set_up_writes_nothing(tmp_path: Path) -> None:
    writer = PredictionCSVWriter(output_dir=tmp_path)
    batch = ImageBatch(image=torch.zeros(1, 3, 4, 4), pred_score=torch.tensor([0.5]))
    writer.write_on_batch_end(None, module(0.5), batch, [0], batch, 0, 0)
    assert list(tmp_path.iterdir()) == [] and writer.path is None


def test_finished_images_are_left_out_of_anomalib_data_sets(tmp_path: Path) -> None:
    for name in "abc":
        Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(tmp_path / f"{name}.png")
    dataset = PredictDataset(tmp_path)
    assert drop_finished_images(dataset, {path_key(tmp_path / "b.png")}) == 1
    assert [Path(name).name for name in dataset.image_filenames] == ["a.png", "c.png"]
    assert len(dataset) == 2
    assert drop_finished_images(object(), {"x"}) is None  # a data set of another kind is left alone

    # Fewer left than processes: finished images fill up to one per process (Lightning's predict sampler needs it).
    refilled = PredictDataset(tmp_path)
    finished = {path_key(tmp_path / "a.png"), path_key(tmp_path / "b.png")}
    assert drop_finished_images(refilled, finished, minimum=2) == 1
    assert [Path(name).name for name in refilled.image_filenames] == ["a.png", "c.png"]
    nothing_left = PredictDataset(tmp_path)
    assert drop_finished_images(nothing_left, {path_key(tmp_path / f"{n}.png") for n in "abc"}, minimum=2) == 3

    folder = FolderDataset(name="parts", normal_dir=tmp_path)
    assert drop_finished_images(folder, {path_key(tmp_path / "a.png"), path_key("/elsewhere/c.png")}) == 1
    assert sorted(Path(name).name for name in folder.samples["image_path"]) == ["b.png", "c.png"]
    assert drop_finished_images(folder, set()) == 0
