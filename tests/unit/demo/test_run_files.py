"""The demo's run folders: the CSV and the zip of the overlays, the folders a session deletes, and a full disk."""

from __future__ import annotations

import csv
import errno
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from anomalib_adaclip.components.prediction_table import CSV_COLUMNS
from anomalib_adaclip.config import SMOKE_NOTE
from anomalib_adaclip.demo import run_files
from anomalib_adaclip.demo.results import ImageResult, RunResult
from anomalib_adaclip.demo.run_files import RunFiles


def _run() -> RunResult:
    """Three images: two scored (one without a picture), one refused."""
    return RunResult(
        results=[
            ImageResult("a.png", "/up/a.png", "tire", 0.75, "NG", 0.5, Image.new("RGB", (6, 3), "red")),
            ImageResult("b.jpg", "/up/b.jpg", "tire", error="Not scored: not an image that PIL can read."),
            ImageResult("c.png", "/up/c.png", "tire", 0.25, "OK", 0.0),
            ImageResult("d.tif", "/up/d.tif", "tire", 0.125, "OK", None, Image.new("RGB", (6, 3), "blue")),
        ]
    )


def test_a_run_folder_holds_the_csv_of_the_scored_images_and_the_overlays_zip(tmp_path: Path) -> None:
    run = _run()
    RunFiles(tmp_path).write(run)
    assert run.csv_path.parent == run.zip_path.parent and run.csv_path.parent.parent == tmp_path
    with run.csv_path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    assert rows == [
        list(CSV_COLUMNS),
        ["a.png", "tire", "0.750000", "NG", "0.500000"],
        ["c.png", "tire", "0.250000", "OK", "0.000000"],
        ["d.tif", "tire", "0.125000", "OK", ""],
    ]
    with zipfile.ZipFile(run.zip_path) as archive:
        assert archive.namelist() == ["001_a.png", "003_d.png", "predictions.csv"]  # numbered among the scored
        with Image.open(archive.open("001_a.png")) as png:
            assert png.text == {"Decision": "NG", "Score": "0.75"}
            assert png.convert("RGB").getpixel((0, 0)) == (255, 0, 0)


def test_the_smoke_model_s_files_say_that_they_mean_nothing(tmp_path: Path) -> None:
    run = _run()
    RunFiles(tmp_path, smoke=True).write(run)
    with zipfile.ZipFile(run.zip_path) as archive:
        assert archive.read("WARNING.txt").decode().strip() == SMOKE_NOTE
        with Image.open(archive.open("003_d.png")) as png:
            assert png.text["Warning"] == SMOKE_NOTE


def test_a_run_without_a_scored_image_writes_nothing(tmp_path: Path) -> None:
    run = RunResult(results=[ImageResult("b.png", "/up/b.png", "tire", error="Not scored.")])
    RunFiles(tmp_path / "out").write(run)
    assert run.csv_path is None and run.zip_path is None and not (tmp_path / "out").exists()


def test_sessions_sharing_an_output_folder_delete_only_their_own_old_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(run_files, "KEEP_RUNS", 2)
    first, other = RunFiles(tmp_path), RunFiles(tmp_path)  # another demo process on the same folder
    kept = _run()
    first.write(kept)
    runs = [_run() for _ in range(3)]
    for run in runs:
        other.write(run)
    assert kept.zip_path.is_file() and kept.csv_path.is_file()  # the other session never deletes it
    assert not runs[0].zip_path.parent.exists()  # its own oldest beyond KEEP_RUNS is deleted
    assert all(run.zip_path.is_file() for run in runs[1:])
    assert len({run.zip_path.parent for run in [kept, *runs]}) == 4  # a folder of its own per run


def test_a_full_disk_while_writing_the_files_is_a_message_and_leaves_no_half_written_zip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class FullDisk(zipfile.ZipFile):
        def write(self, *args: object, **kwargs: object) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(run_files.zipfile, "ZipFile", FullDisk)
    run = _run()
    RunFiles(tmp_path).write(run)
    assert run.csv_path is None and run.zip_path is None
    (message,) = run.messages
    assert message.startswith(f"The CSV and zip could not be written to {tmp_path}: No space left on device.")
    assert "The results shown here are complete" in message
    assert list(tmp_path.glob("run-*")) == []
