"""Inspection at scale through ``anomalib-adaclip predict``: flat memory, resume after a kill, several processes.

Every run goes through the real command (``python -m anomalib_adaclip predict``, or ``cli.main`` in this process)
on generated 32 px PNGs and the micro CLIP (static prompts, no HSF: the cheapest model; what is measured here is the
run around the model). The truth every test checks against is the set of image files the test wrote.
"""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import torch

from anomalib_adaclip import cli
from anomalib_adaclip.components.prediction_table import CSV_COLUMNS, PART_COLUMNS, part_path
from anomalib_adaclip.locks import OwnedLock
from tests.helpers import RUN_DIR, explain, predict_arguments, subprocess_environment, table_paths, write_part_images

# Peak RSS of the child, printed by the child itself (ru_maxrss: kilobytes on Linux).
MEASURED_PREDICT = (
    "import resource, sys\n"
    "from anomalib_adaclip.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, flush=True)\n"
    "sys.exit(code)\n"
)


def peak_rss_kb(weights: Path, count: int, tmp_path: Path) -> tuple[int, set[str], Path]:
    """Peak resident memory of a fresh ``anomalib-adaclip predict`` over ``count`` new images."""
    data, root = tmp_path / f"images_{count}", tmp_path / f"run_{count}"
    truth = write_part_images(data, count)
    command = [sys.executable, "-c", MEASURED_PREDICT, *predict_arguments(weights, data, root)]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        env=subprocess_environment(OMP_NUM_THREADS="1"),
        timeout=1800,
        check=False,
    )
    assert result.returncode == 0, explain(result)
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("PEAK_RSS_KB")]
    return int(line.split()[1]), truth, root / RUN_DIR


@pytest.mark.parametrize(
    ("small", "large"),
    # Both behind -m slow: 20 vs 200 images costs about 40 s of the default suite's 10 minutes.
    [pytest.param(20, 200, marks=pytest.mark.slow), pytest.param(200, 2000, marks=pytest.mark.slow)],
)
def test_peak_memory_of_predict_does_not_grow_with_the_image_count(
    micro_weights: Path, tmp_path: Path, small: int, large: int
) -> None:
    small_peak, _, _ = peak_rss_kb(micro_weights, small, tmp_path)
    large_peak, truth, run_dir = peak_rss_kb(micro_weights, large, tmp_path)
    # Measured on this model: before streaming (predictions returned) 1.096 GB at 200 images and 1.642 GB at 2,000,
    # 0.30 MB per image, so 180 more images add 5 %; streaming: 1.054 GB at 200 and 1.057 GB at 2,000.
    assert large_peak <= 1.03 * small_peak, f"peak RSS {small_peak} kB at {small} images, {large_peak} kB at {large}"
    paths = table_paths(run_dir / "predictions.csv")
    assert sorted(paths) == sorted(truth)
    overlays = list((run_dir / "images").rglob("*.png"))
    assert len(overlays) == large


def test_a_killed_run_resumes_and_every_image_ends_up_once(micro_weights: Path, tmp_path: Path) -> None:
    data, root = tmp_path / "images", tmp_path / "run"
    truth = write_part_images(data, 60)
    table = root / RUN_DIR / "predictions.csv"
    command = [sys.executable, "-m", "anomalib_adaclip", *predict_arguments(micro_weights, data, root)]
    process = subprocess.Popen(
        command,
        env=subprocess_environment(OMP_NUM_THREADS="1"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 900
        while not (table.is_file() and len(table.read_bytes().splitlines()) > 11):
            assert process.poll() is None, f"predict ended before it was killed: {process.stderr.read()[-3000:]}"
            assert time.monotonic() < deadline, "no 10 rows within 15 minutes"
            time.sleep(0.2)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
        process.stderr.close()
    before = table_paths(table)
    assert 10 <= len(before) < len(truth)
    # The kernel freed the killed run's lock at once; its owner record stays behind, harmless.
    assert json.loads(table.with_name("predictions.csv.lock.owner.json").read_text())["pid"] == process.pid
    assert not OwnedLock(table.with_name("predictions.csv.lock"), what="the table").in_use()
    # A process killed inside a write leaves a row without its line end: here made sure of.
    with table.open("a", encoding="utf-8", newline="") as handle:
        handle.write(f"{data / 'part_00149.png'},obj")

    assert cli.main([*predict_arguments(micro_weights, data, root), "--resume"]) == 0

    after = table_paths(table)
    assert after[: len(before)] == before  # appended, nothing rewritten
    assert Counter(after) == Counter(truth)  # every image exactly once
    names = [path.name for path in sorted((root / RUN_DIR).glob("predictions*"))]
    assert names == ["predictions.csv", "predictions.csv.lock"]  # the lock file stays (free), no record


@pytest.mark.slow  # two DDP runs of 2 processes each (4 interpreter start-ups): 30-40 s on 2 cores
def test_two_cpu_processes_resume_a_table_each_image_once(micro_weights: Path, tmp_path: Path) -> None:
    """DDP (gloo) on 2 processes: 9 of 11 images left in a table and a killed run's part; then 1 image left."""
    data, root = tmp_path / "images", tmp_path / "run"
    truth = sorted(write_part_images(data, 11))
    table = root / RUN_DIR / "predictions.csv"
    table.parent.mkdir(parents=True)
    earlier = [[truth[0], "object", "0.100000", "OK", "0.000000"]]  # finished by the earlier run
    leftover = [["0", "4", truth[1], "object", "0.900000", "NG", "0.500000"]]  # in rank 1's part when it was killed
    with table.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([CSV_COLUMNS, *earlier])
    with part_path(table, 1).open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([PART_COLUMNS, *leftover])

    command = [sys.executable, "-m", "anomalib_adaclip", *predict_arguments(micro_weights, data, root)]
    command += ["--trainer.strategy", "ddp", "--trainer.devices", "2", "--resume", str(table)]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        env=subprocess_environment(OMP_NUM_THREADS="1"),
        timeout=1800,
        check=False,
    )
    assert result.returncode == 0, explain(result)

    with table.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))[1:]
    assert rows[:2] == [*earlier, leftover[0][2:]]  # kept as they were, the leftover part merged first
    assert Counter(table_paths(table)) == Counter(truth)
    assert not list(table.parent.glob("*.part"))
    overlays = Counter(path.name for path in (root / RUN_DIR / "images").rglob("*.png"))
    assert overlays == Counter(Path(path).name for path in truth[2:])  # the 9 images scored, each by one process
    summary = [line for line in result.stdout.splitlines() if line.startswith("AdaCLIP predicted")]
    assert len(summary) == 1, result.stdout[-3000:]
    assert "predicted 9 image(s)" in summary[0] and "on 2 process(es)" in summary[0] and "2 skipped" in summary[0]

    # One image left for two processes (Lightning's predict sampler needs one each): it is written once.
    lines = table.read_bytes().splitlines(keepends=True)
    table.write_bytes(b"".join(lines[:-1]))
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        env=subprocess_environment(OMP_NUM_THREADS="1"),
        timeout=1800,
        check=False,
    )
    assert result.returncode == 0, explain(result)
    assert Counter(table_paths(table)) == Counter(truth)
    assert "AdaCLIP predicted 1 image(s)" in result.stdout and "10 skipped" in result.stdout


def test_with_a_seed_a_resume_equals_an_uninterrupted_run_even_with_random_weights(tmp_path: Path) -> None:
    """``--seed_everything`` seeds the random backbone and prompts: the resumed rows are the uninterrupted run's."""
    data = tmp_path / "images"
    truth = write_part_images(data, 6)

    def arguments(root: Path) -> list[str]:
        command = predict_arguments(tmp_path / "unused", data, root)
        command[command.index("--model.backbone_weights") + 1] = "null"  # random weights, drawn after the seed
        return [*command, "--seed_everything", "7"]

    def scores(table: Path) -> dict[str, str]:
        with table.open(newline="", encoding="utf-8") as handle:
            return {row["path"]: row["score"] for row in csv.DictReader(handle)}

    assert cli.main(arguments(tmp_path / "whole")) == 0
    whole = scores(tmp_path / "whole" / RUN_DIR / "predictions.csv")
    assert sorted(whole) == sorted(truth)

    table = tmp_path / "resumed" / RUN_DIR / "predictions.csv"
    assert cli.main(arguments(tmp_path / "resumed")) == 0
    lines = table.read_bytes().splitlines(keepends=True)
    table.write_bytes(b"".join(lines[:3]))  # as if the run had been stopped after two images
    torch.manual_seed(12345)  # the process's random state moved on: only the seed makes the model the same
    assert cli.main([*arguments(tmp_path / "resumed"), "--resume"]) == 0
    assert scores(table) == whole
