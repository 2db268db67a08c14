"""Two runs, one output: one writer per predictions table, one execution per benchmark run, never a traceback.

The runs go through the real command (``anomalib-adaclip predict``) on generated 32 px PNGs and the micro CLIP
(:mod:`tests.integration.test_streaming`'s helpers). The truth every test checks against is the set of image files the
test wrote, and the process ids of the runs it started. The default suite runs the command in this process against a
lock held by a child process (live, then killed); the runs of two real processes at once are ``slow``, as are the
benchmark workers in real processes (three at once; one killed mid-run). Their cheap counterparts, workers in threads
of one process with a stand-in job, are in ``tests/unit/benchmark/test_shared_grid.py``.
"""

from __future__ import annotations

import csv
import errno
import json
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from anomalib_adaclip import cli, lightning_model
from anomalib_adaclip.components import prediction_table
from anomalib_adaclip.components.prediction_table import CSV_COLUMNS
from anomalib_adaclip.data.synthetic import generate_defect_dataset
from anomalib_adaclip.locks import OwnedLock, Owner
from tests.conftest import MICRO_BACKBONE, TIRE_ROOT
from tests.helpers import (
    RUN_DIR,
    explain,
    hold_lock,
    predict_arguments,
    subprocess_environment,
    table_paths,
    write_part_images,
)


def write_table(table: Path, paths: list[str]) -> bytes:
    table.parent.mkdir(parents=True, exist_ok=True)
    with table.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([CSV_COLUMNS, *([path, "object", "0.5", "OK", "0.0"] for path in paths)])
    return table.read_bytes()


def is_free(lock: Path) -> bool:
    """Whether no process holds ``lock`` and no owner record is left beside it."""
    owned = OwnedLock(lock, what="the table")
    return not owned.in_use() and not owned.record_path.exists()


def test_a_resume_stops_before_the_model_is_built_while_another_run_holds_the_table_and_runs_once_it_is_killed(
    micro_weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    data, root = tmp_path / "images", tmp_path / "run"
    truth = sorted(write_part_images(data, 6))
    table = root / RUN_DIR / "predictions.csv"
    lock = table.with_name("predictions.csv.lock")
    before = write_table(table, truth[:2])
    arguments = [*predict_arguments(micro_weights, data, root), "--resume"]

    # Another run (a live process of this host) holds the table: the resume stops before it builds the model.
    other = hold_lock(lock, tmp_path)
    try:
        with monkeypatch.context() as patch:
            patch.setattr(lightning_model, "AdaCLIPModel", refuse_to_build)
            assert cli.main(arguments) == 1
        error = capsys.readouterr().err
        holder = Owner.read(OwnedLock(lock, what="").record_path)
        assert f"is in use by another run: PID {other.pid} on host {socket.gethostname()} since {holder.since}" in error
        assert f"command: hold_lock.py {lock}" in error and f"kill {other.pid}" in error
        assert "Nothing was scored" in error and "Traceback" not in error
        assert len(error.strip().splitlines()) == 1, error
        assert table.read_bytes() == before and not list((root / RUN_DIR).rglob("*.png"))
    finally:
        other.send_signal(signal.SIGKILL)
        other.wait()

    # Its process is gone (killed): the lock is free at once, and the next resume finishes the table.
    assert not OwnedLock(lock, what="the table").in_use()
    assert cli.main(arguments) == 0
    assert not prediction_table._reserved  # the lock taken before the model was the writer's (same table)
    assert table_paths(table)[:2] == truth[:2] and Counter(table_paths(table)) == Counter(truth)
    assert is_free(lock)


def refuse_to_build(*arguments: object, **options: object) -> None:
    raise AssertionError("the model was built before the lock was checked")


def start_predict(arguments: list[str], log: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "anomalib_adaclip", *arguments]
    with log.open("w") as handle:
        return subprocess.Popen(
            command, env=subprocess_environment(OMP_NUM_THREADS="1"), stdout=handle, stderr=subprocess.STDOUT
        )


def wait_for_rows(table: Path, process: subprocess.Popen, rows: int, log: Path) -> None:
    deadline = time.monotonic() + 900
    while not (table.is_file() and len(table.read_bytes().splitlines()) > rows):
        assert process.poll() is None, f"the run ended early: {log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"no {rows} rows within 15 minutes"
        time.sleep(0.2)


@pytest.mark.slow
def test_a_resume_started_while_a_new_run_writes_stops_naming_it_and_after_a_kill_9_a_resume_at_once_runs(
    micro_weights: Path, tmp_path: Path
) -> None:
    """Process A starts a table (no --resume); B resumes the same output meanwhile; A is killed; C finishes."""
    data, root = tmp_path / "images", tmp_path / "run"
    truth = write_part_images(data, 400)  # A must still run when B has started: it is killed long before its end
    table = root / RUN_DIR / "predictions.csv"
    lock = table.with_name("predictions.csv.lock")
    arguments = predict_arguments(micro_weights, data, root)
    first = start_predict(arguments, tmp_path / "a.log")
    try:
        wait_for_rows(table, first, 3, tmp_path / "a.log")
        second = subprocess.run(
            [sys.executable, "-m", "anomalib_adaclip", *arguments, "--resume"],
            capture_output=True, text=True, env=subprocess_environment(OMP_NUM_THREADS="1"), timeout=900, check=False,
        )  # fmt: skip
        assert first.poll() is None, "the first run ended before the second one checked: use more images"
        assert second.returncode == 1, explain(second)
        assert f"is in use by another run: PID {first.pid} on host" in second.stderr, explain(second)
        assert "Traceback" not in second.stderr and "AdaCLIP predicted" not in second.stdout
        assert "has no trained prompts" not in second.stderr  # refused before the model was built (its warning)
        assert "has no trained prompts" in (tmp_path / "a.log").read_text()
        assert json.loads(lock.with_name(f"{lock.name}.owner.json").read_text())["pid"] == first.pid
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
    written = table_paths(table)
    assert 3 <= len(written) < len(truth) and len(set(written)) == len(written)
    third = subprocess.run(
        [sys.executable, "-m", "anomalib_adaclip", *arguments, "--resume"],
        capture_output=True, text=True, env=subprocess_environment(OMP_NUM_THREADS="1"), timeout=1800, check=False,
    )  # fmt: skip
    assert third.returncode == 0, explain(third)  # started at once: not refused, the kernel freed the lock
    assert Counter(table_paths(table)) == Counter(truth)
    names = [path.name for path in sorted((root / RUN_DIR).glob("predictions*"))]
    assert names == ["predictions.csv", "predictions.csv.lock"] and is_free(lock)


@pytest.mark.slow
def test_two_resumes_started_at_once_score_each_image_once_and_the_second_names_the_first(
    micro_weights: Path, tmp_path: Path
) -> None:
    data, root = tmp_path / "images", tmp_path / "run"
    truth = sorted(write_part_images(data, 300))
    table = root / RUN_DIR / "predictions.csv"
    write_table(table, truth[:5])  # an interrupted earlier run
    arguments = [*predict_arguments(micro_weights, data, root), "--resume"]
    runs = [start_predict(arguments, tmp_path / f"{index}.log") for index in range(2)]
    for run in runs:
        run.wait(timeout=1800)
    logs = [(tmp_path / f"{index}.log").read_text() for index in range(2)]
    codes = sorted(run.returncode for run in runs)
    assert codes == [0, 1], "\n".join(log[-3000:] for log in logs)
    winner = next(run for run in runs if run.returncode == 0)
    loser_log = logs[runs.index(next(run for run in runs if run.returncode == 1))]
    assert f"is in use by another run: PID {winner.pid} on host" in loser_log and "Traceback" not in loser_log
    assert table_paths(table)[:5] == truth[:5] and Counter(table_paths(table)) == Counter(truth)
    assert is_free(table.with_name("predictions.csv.lock"))


def worker_grid(root: Path, weights: Path) -> Path:
    """AdaCLIP (micro CLIP) on the tire sample and a generated data set, two seeds: 4 runs of a few seconds."""
    generated = root / "generated"
    generate_defect_dataset(generated, "widget", n_train=2, n_good=3, n_defect=3, size=96)
    adaclip = {"backbone": MICRO_BACKBONE, "backbone_weights": str(weights), "image_size": 112}
    adaclip["prompts"] = {"k_clusters": 4}
    grid = {
        "output": str(root / "benchmark"),
        "seeds": [0, 1],
        "engine": {"accelerator": "cpu"},
        "models": [{"name": "AdaCLIP", "class_path": "anomalib_adaclip.AdaCLIP", "init_args": adaclip}],
        "data": [
            {
                "class_path": "anomalib.data.MVTecAD",
                "init_args": {"root": str(TIRE_ROOT), "num_workers": 0, "eval_batch_size": 8},
                "categories": ["tire"],
            },
            {
                "class_path": "Folder",
                "init_args": {
                    "name": "generated",
                    "root": str(generated / "{category}"),
                    "normal_dir": "train/good",
                    "normal_test_dir": "test/good",
                    "abnormal_dir": "test/defect",
                    "mask_dir": "ground_truth/defect",
                    "val_split_mode": "same_as_test",
                    "num_workers": 0,
                },
                "categories": ["widget"],
            },
        ],
    }
    path = root / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    return path


def executions_per_run(output: Path) -> Counter:
    """How often each run was executed: every execution makes its own anomalib run folder (``seed<k>/v<N>``)."""
    return Counter(
        str(version.parent.relative_to(output / "artifacts"))
        for version in (output / "artifacts").glob("*/*/*/seed*/v*")
        if version.is_dir() and not version.is_symlink()
    )


def start_worker(config: Path, log: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "anomalib_adaclip", "benchmark", "--config", str(config)]
    with log.open("w") as handle:
        return subprocess.Popen(
            command, env=subprocess_environment(OMP_NUM_THREADS="1"), stdout=handle, stderr=subprocess.STDOUT
        )


def check_complete_report(output: Path) -> None:
    reports = [path for path in (output / "reports").glob("v*") if path.is_dir()]
    assert len(reports) == 1, reports
    with (reports[0] / "runs.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4 and {row["status"] for row in rows} == {"finished"}
    assert len(list((output / "runs").rglob("seed*.json"))) == 4
    assert all(is_free(claim) for claim in output.rglob("*.claim")) and not list(output.rglob("*.tmp"))


@pytest.mark.slow
def test_three_benchmark_workers_at_once_run_every_run_once_and_write_one_report(
    micro_weights: Path, tmp_path: Path
) -> None:
    config = worker_grid(tmp_path, micro_weights)
    logs = [tmp_path / f"worker{index}.log" for index in range(3)]
    workers = [start_worker(config, log) for log in logs]
    for worker in workers:
        worker.wait(timeout=1800)
    texts = [log.read_text() for log in logs]
    assert [worker.returncode for worker in workers] == [0, 0, 0], "\n".join(text[-3000:] for text in texts)
    assert not any("Traceback" in text for text in texts)
    output = tmp_path / "benchmark"
    runs = executions_per_run(output)
    assert len(runs) == 4 and set(runs.values()) == {1}, runs  # every run executed exactly once
    check_complete_report(output)


@pytest.mark.slow
def test_a_benchmark_worker_killed_mid_run_leaves_its_claim_free_and_the_next_worker_runs_that_run_again(
    micro_weights: Path, tmp_path: Path
) -> None:
    config = worker_grid(tmp_path, micro_weights)
    output = tmp_path / "benchmark"
    first = start_worker(config, tmp_path / "first.log")
    try:
        deadline = time.monotonic() + 900
        while not list((output / "artifacts").glob("*/*/*/seed*/v0")):  # a run has started (its claim is held)
            assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no run started within 15 minutes"
            time.sleep(0.1)
        (claim,) = list((output / "runs").rglob("*.claim"))
        assert OwnedLock(claim, what="a run").holder().pid == first.pid
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
    assert not OwnedLock(claim, what="a run").in_use()  # free at once after kill -9
    second = subprocess.run(
        [sys.executable, "-m", "anomalib_adaclip", "benchmark", "--config", str(config)],
        capture_output=True, text=True, env=subprocess_environment(OMP_NUM_THREADS="1"), timeout=1800, check=False,
    )  # fmt: skip
    assert second.returncode == 0, explain(second)
    runs = executions_per_run(output)
    killed_run = str(claim.parent.relative_to(output / "runs") / claim.stem)
    assert runs[killed_run] == 2 and {count for run, count in runs.items() if run != killed_run} == {1}, runs
    check_complete_report(output)


def test_a_full_disk_during_predict_is_one_line_keeps_the_rows_written_and_resume_carries_on(
    micro_weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from anomalib_adaclip.components import prediction_writer

    class FullAfterOneRow:
        """The table's CSV writer on a disk that fills up after the header and one row."""

        def __init__(self, handle: object) -> None:
            self.inner = csv.writer(handle)

        def writerow(self, row: list[str]) -> None:
            self.inner.writerow(row)

        def writerows(self, rows: list[list[str]]) -> None:
            self.inner.writerow(rows[0])
            raise OSError(errno.ENOSPC, "No space left on device")

    class FullDiskCsv:
        writer = FullAfterOneRow

    data, root = tmp_path / "images", tmp_path / "run"
    truth = write_part_images(data, 5)
    table = root / RUN_DIR / "predictions.csv"
    arguments = predict_arguments(micro_weights, data, root)
    with monkeypatch.context() as patch:
        patch.setattr(prediction_writer, "csv", FullDiskCsv)
        assert cli.main(arguments) == 1
    error = capsys.readouterr().err
    assert f"Cannot write to {table}: No space left on device. The rows written before are kept" in error
    assert "--resume" in error and "Traceback" not in error
    assert len(table_paths(table)) == 1  # the row that reached the disk
    assert is_free(table.with_name("predictions.csv.lock"))  # released on the error
    assert cli.main([*arguments, "--resume"]) == 0
    assert Counter(table_paths(table)) == Counter(truth)
