"""line/runner.py: each file once in arrival order, bad files as rows, replay after a kill, no poisoning, overload.

The scorer is ``tests.helpers.PatchMemoryScorer`` (a bank of pixel patches, a real tensor state); the expected
scores come from running it directly on the same images in the same order, without the line.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF  # noqa: N812

from anomalib_adaclip.components.pre_processing import adaclip_transform
from anomalib_adaclip.line import NOT_SCORED, LineConfig, LineError, LineRunner, LineScore, SnapshotError
from anomalib_adaclip.locks import LockHeldError, OwnedLock
from tests.helpers import PatchMemoryScorer, painted_tire_defects, shrink_images, tire_good_images

THRESHOLD = 7.0  # between the good tire images' scores (at most 4.7) and the painted defects' (at least 8.9)
SECOND = 1_000_000_000


def runner(folder: Path, output: Path, **settings: object) -> LineRunner:
    defaults = {"settle_seconds": 0.0, "poll_seconds": 0.0, "threshold": THRESHOLD}
    good = settings.pop("good_folder", None)
    return LineRunner(folder, output, PatchMemoryScorer(), LineConfig(**(defaults | settings)), good_folder=good)


def feed(folder: Path, sources: list[Path], first: int = 0) -> list[Path]:
    """Copy images into the hot folder as ``000.png``, ``001.png``, ... with increasing modification times."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for index, source in enumerate(sources, start=first):
        target = folder / f"{index:03d}.png"
        shutil.copyfile(source, folder / f".{target.name}.tmp")
        os.utime(folder / f".{target.name}.tmp", ns=(1_700_000_000 * SECOND + index * SECOND,) * 2)
        os.rename(folder / f".{target.name}.tmp", target)  # the camera's atomic hand-over
        written.append(target)
    return written


def table(output: Path) -> list[list[str]]:
    with (output / "predictions.csv").open(newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))[1:]


def direct_scores(paths: list[Path], threshold: float = THRESHOLD) -> tuple[list[float], PatchMemoryScorer]:
    """The independent truth: the scorer run on the images in order, admitting those at or below the threshold."""
    scorer, transform, scores = PatchMemoryScorer(), adaclip_transform(64), []
    for path in paths:
        with Image.open(path) as image:
            tensor = transform(TF.to_dtype(TF.to_image(image.convert("RGB")), torch.float32, scale=True))[None]
        result = scorer.score(tensor, "object")
        scores.append(result.score)
        if result.score <= threshold:
            scorer.admit(result.pending)
    return scores, scorer


def kill(line: LineRunner) -> None:
    """What ``kill -9`` leaves: no last snapshot, the table as flushed, the locks gone with the process."""
    assert line._table_file is not None
    line._table_file.close()
    line._release()


@pytest.fixture(scope="module")
def goods(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The 10 good tire images, 200 pixels wide."""
    return shrink_images(tire_good_images(), tmp_path_factory.mktemp("goods"))


@pytest.fixture(scope="module")
def defects(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The 9 defective tire images with their defects painted, 200 pixels wide."""
    return shrink_images(painted_tire_defects(tmp_path_factory.mktemp("painted")), tmp_path_factory.mktemp("defects"))


# ----------------------------------------------------------------------------------------------------------------------
# Exactly once, in arrival order
# ----------------------------------------------------------------------------------------------------------------------
def test_each_image_is_scored_once_in_arrival_order_with_the_scores_of_a_plain_run(
    tmp_path: Path, goods: list[Path]
) -> None:
    folder, output = tmp_path / "camera", tmp_path / "line"
    with runner(folder.mkdir() or folder, output) as line:
        for index, source in enumerate(goods[:6]):  # one file at a time
            feed(folder, [source], first=index)
            assert line.poll() == 1
        feed(folder, goods[6:], first=6)  # four at once: in modification-time order
        assert line.poll() == 4
        assert line.poll() == 0
    rows = table(output)
    expected, _ = direct_scores(goods)
    assert [row[0] for row in rows] == [str(folder / f"{index:03d}.png") for index in range(10)]
    assert [row[2] for row in rows] == [f"{score:.6f}" for score in expected]
    assert [row[3] for row in rows] == ["OK"] * 10 and {row[1] for row in rows} == {"object"}
    with runner(folder, output) as line:  # started again: nothing is scored twice
        assert line.poll() == 0 and line.summary.replayed == 0
    assert len(table(output)) == 10


def test_bad_files_get_a_row_with_the_reason_never_a_traceback(tmp_path: Path, goods: list[Path]) -> None:
    folder, output = tmp_path / "camera", tmp_path / "line"
    feed(folder, goods[:1])
    data = goods[1].read_bytes()
    (folder / "001.png").write_bytes(data[: len(data) // 2])  # truncated
    (folder / "002.png").write_text("not an image")
    with runner(folder, output) as line:
        assert line.poll() == 3
    rows = {Path(row[0]).name: row for row in table(output)}
    assert rows["000.png"][3] == "OK"
    for name, reason in (("001.png", "truncated or damaged"), ("002.png", "not an image that PIL can read")):
        assert rows[name][2] == "" and rows[name][3].startswith(f"{NOT_SCORED}: ")
        assert reason in rows[name][3], rows[name][3]


# ----------------------------------------------------------------------------------------------------------------------
# Restarts: replay after a kill
# ----------------------------------------------------------------------------------------------------------------------
def test_a_killed_line_replays_what_its_snapshot_lacks_and_ends_bit_for_bit_like_an_uninterrupted_one(
    tmp_path: Path, goods: list[Path], defects: list[Path]
) -> None:
    sources = [*goods[:7], defects[0], *goods[7:]]  # an NG image among them
    settings = {"snapshot_every": 4}
    straight = runner(tmp_path / "a", tmp_path / "a_out", **settings)
    feed(tmp_path / "a", sources)
    with straight:
        straight.poll()

    folder, output = tmp_path / "b", tmp_path / "b_out"
    feed(folder, sources[:7])
    first = runner(folder, output, **settings)
    first.start()
    first.poll()  # 7 rows; the snapshot covers 4
    kill(first)
    feed(folder, sources[7:8], first=7)
    with (output / "predictions.csv").open("a", encoding="utf-8") as handle:
        handle.write(f"{folder / '007.png'},object,9.4")  # killed while writing this row: cut off, scored again
    feed(folder, sources[8:], first=8)
    again = runner(folder, output, **settings)
    with again:
        assert again.summary.replayed == 3  # rows 5-7 were written after the snapshot
        again.poll()

    def comparable(rows: list[list[str]]) -> list[list[str]]:
        return [[Path(row[0]).name, *row[1:]] for row in rows]

    got, want = comparable(table(output)), comparable(table(tmp_path / "a_out"))
    assert got == want, [(a, b) for a, b in zip(got, want, strict=True) if a != b]
    assert [row[3] for row in table(output)].count("NG") == 1
    for name, value in straight.scorer.state_dict().items():
        assert torch.equal(value, again.scorer.state_dict()[name]), name
    assert straight.admission.state_dict() == again.admission.state_dict()


def test_a_restart_without_the_replay_would_miss_the_bank_updates(tmp_path: Path, goods: list[Path]) -> None:
    """The replay is what makes the restart exact: the snapshot alone lacks the images after it."""
    folder, output = tmp_path / "camera", tmp_path / "line"
    feed(folder, goods[:6])
    line = runner(folder, output, snapshot_every=4)
    line.start()
    line.poll()
    kill(line)
    from anomalib_adaclip.line import load_snapshot

    snapshot = load_snapshot(output / "bank.pt")
    assert snapshot is not None and snapshot.rows == 4 and len(snapshot.scorer["sizes"]) == 4
    with runner(folder, output, snapshot_every=4) as again:
        assert again.summary.replayed == 2 and len(again.scorer.sizes) == 6


def test_a_snapshot_that_does_not_fit_the_table_is_refused(tmp_path: Path, goods: list[Path]) -> None:
    folder, output = tmp_path / "camera", tmp_path / "line"
    feed(folder, goods[:2])
    with runner(folder, output) as line:
        line.poll()
    (output / "predictions.csv").write_text("path,class_name,score,decision,anomalous_area_fraction\n")
    with pytest.raises(SnapshotError, match=r"covers 2 rows of .*which has 0: rows were removed"):
        runner(folder, output).start()
    for lock in ("bank.pt.lock", "predictions.csv.lock"):  # released: free, with no owner record left
        assert not OwnedLock(output / lock, what=lock).in_use() and not (output / f"{lock}.owner.json").exists()


# ----------------------------------------------------------------------------------------------------------------------
# No poisoning
# ----------------------------------------------------------------------------------------------------------------------
def test_a_run_of_defects_freezes_the_bank_and_a_repeated_defect_never_becomes_normal(
    tmp_path: Path, goods: list[Path], defects: list[Path], caplog: pytest.LogCaptureFixture
) -> None:
    folder, output = tmp_path / "camera", tmp_path / "line"
    feed(folder, goods)
    with caplog.at_level(logging.INFO), runner(folder, output, freeze_streak=5) as line:
        line.poll()
        after_goods = line.scorer.state_dict()
        feed(folder, defects, first=10)
        line.poll()
        assert line.admission.frozen
        assert all(torch.equal(value, line.scorer.state_dict()[name]) for name, value in after_goods.items())
    rows = table(output)
    assert [row[3] for row in rows] == ["OK"] * 10 + ["NG"] * 9
    defect_scores = [float(row[2]) for row in rows[10:]]
    assert min(defect_scores) > THRESHOLD
    alarms = [record for record in caplog.records if record.levelno == logging.ERROR]
    assert len(alarms) == 1 and "ALARM" in alarms[0].message and "5 NG images in a row" in alarms[0].message
    assert "5 NG images in a row" in (output / "bank.frozen").read_text()

    # The same images without admission control: the bank learns the defect, and it scores as normal.
    learned, _ = direct_scores([*goods, *defects], threshold=float("inf"))
    assert min(learned[11:]) < THRESHOLD < min(defect_scores)


def test_a_frozen_bank_stays_frozen_across_restarts_until_its_marker_is_deleted(
    tmp_path: Path, goods: list[Path], defects: list[Path]
) -> None:
    folder, output = tmp_path / "camera", tmp_path / "line"
    feed(folder, [*goods[:5], *defects[:3]])
    with runner(folder, output, freeze_streak=3) as line:
        line.poll()
        assert line.admission.frozen
    feed(folder, goods[5:6], first=8)
    with runner(folder, output, freeze_streak=3) as line:  # restarted: still frozen
        assert line.admission.frozen
        line.poll()
        assert len(line.scorer.sizes) == 5  # the good image was scored OK but did not enter the bank
        (output / "bank.frozen").unlink()  # a person lifts the freeze
        feed(folder, goods[6:7], first=9)
        line.poll()
        assert not line.admission.frozen and len(line.scorer.sizes) == 6
        (output / "bank.frozen").write_text("maintenance")  # and freezes it by hand
        feed(folder, goods[7:8], first=10)
        line.poll()
        assert line.admission.frozen and len(line.scorer.sizes) == 6
    assert [row[3] for row in table(output)] == ["OK"] * 5 + ["NG"] * 3 + ["OK"] * 3


def test_the_threshold_is_calibrated_on_known_good_images(tmp_path: Path, goods: list[Path]) -> None:
    folder, output = tmp_path / "camera", tmp_path / "line"
    folder.mkdir()
    with runner(folder, output, threshold=None, good_folder=goods[0].parent, calibration_warmup=1) as line:
        known = sorted(goods[0].parent.glob("*.png"))
        scores, reference = direct_scores(known)
        assert line.admission.threshold == pytest.approx(float(np.percentile(scores[1:], 99)), abs=0)
        assert torch.equal(line.scorer.bank, reference.bank)
    with pytest.raises(LineError, match=r"needs an image threshold: give one \(--threshold\) or known-good"):
        runner(folder, tmp_path / "other", threshold=None).start()


# ----------------------------------------------------------------------------------------------------------------------
# Overload, one writer, reporting
# ----------------------------------------------------------------------------------------------------------------------
def test_overload_never_drops_a_part_silently(tmp_path: Path, goods: list[Path]) -> None:
    folder, output = tmp_path / "camera", tmp_path / "line"
    feed(folder, goods[:5])
    with runner(folder, output, max_backlog=2) as line:
        assert line.poll() == 5
    rows = table(output)
    assert [row[3].split(":")[0] for row in rows] == [NOT_SCORED] * 3 + ["OK"] * 2
    assert "the backlog of 5 waiting images exceeded max_backlog=2" in rows[0][3] and rows[0][2] == ""


def test_one_line_per_bank_and_table(tmp_path: Path, goods: list[Path]) -> None:
    folder, output = tmp_path / "camera", tmp_path / "line"
    folder.mkdir()
    with runner(folder, output), pytest.raises(LockHeldError, match=r"The line's bank .* is in use by another run"):
        runner(folder, output).start()


def test_json_lines_and_latency(tmp_path: Path, goods: list[Path], caplog: pytest.LogCaptureFixture) -> None:
    folder, output = tmp_path / "camera", tmp_path / "line"
    feed(folder, goods[:3])
    (folder / "003.png").write_text("broken")
    with caplog.at_level(logging.INFO), runner(folder, output, json_lines=str(tmp_path / "line.jsonl")) as line:
        line.poll()
    records = [json.loads(text) for text in (tmp_path / "line.jsonl").read_text().splitlines()]
    assert [record["status"] for record in records] == ["scored"] * 3 + [NOT_SCORED]
    assert records[0]["admitted"] and records[0]["decision"] == "OK" and records[0]["latency_ms"] >= 0
    assert records[3]["reason"] and records[3]["score"] is None
    stopped = [record.message for record in caplog.records if record.message.startswith("Line stopped")]
    assert len(stopped) == 1 and "3 scored, 1 not scored" in stopped[0] and "latency p50" in stopped[0]


def test_a_stop_leaves_waiting_files_without_a_row_and_a_missing_folder_is_retried(
    tmp_path: Path, goods: list[Path], caplog: pytest.LogCaptureFixture
) -> None:
    folder, output = tmp_path / "camera", tmp_path / "line"
    feed(folder, goods[:2])
    stop = threading.Event()
    stop.set()
    with runner(folder, output) as line:
        assert line.poll(stop) == 0  # stopped before the first file: nothing written, nothing lost
    with runner(folder, output) as line:
        folder.rename(tmp_path / "away")  # an unmounted share
        with caplog.at_level(logging.WARNING):
            assert line.poll() == 0
        assert any("Cannot list" in record.message for record in caplog.records)
        (tmp_path / "away").rename(folder)
        assert line.poll() == 2
    assert len(table(output)) == 2


class NaNScorer(PatchMemoryScorer):
    def score(self, image: torch.Tensor, class_name: str) -> LineScore:
        result = super().score(image, class_name)
        return LineScore(float("nan"), result.anomaly_map, result.pending)


def test_a_score_that_is_not_a_number_is_not_judged_and_never_enters_the_bank(
    tmp_path: Path, goods: list[Path]
) -> None:
    folder, output = tmp_path / "camera", tmp_path / "line"
    feed(folder, goods[:2])
    with LineRunner(folder, output, NaNScorer(), LineConfig(settle_seconds=0, threshold=THRESHOLD)) as line:
        line.poll()
        assert len(line.scorer.bank) == 0 and line.admission.judged == 0
    assert [row[3] for row in table(output)] == [f"{NOT_SCORED}: the scorer returned the score nan"] * 2
