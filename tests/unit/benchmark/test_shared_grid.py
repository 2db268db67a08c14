"""Many workers, one grid: each run claimed and executed once, a killed worker's claim free at once, one report.

The workers are :func:`run_benchmark` calls in threads of this process (each its own run id, so its own worker);
``BenchmarkJob.execute`` is replaced, for this test only, by a stand-in that writes a line per execution into a marker
file and returns a finished record, so nothing is trained or tested. The truth is the marker file: how often each run
was executed. Another worker that holds a claim is a real process (``tests.helpers.hold_lock``). Real processes on
real runs: ``tests/integration/test_concurrency.py``.
"""

from __future__ import annotations

import errno
import logging
import signal
import socket
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from anomalib_adaclip import locks
from anomalib_adaclip.benchmark import store as store_module
from anomalib_adaclip.benchmark.cli import main as benchmark_main
from anomalib_adaclip.benchmark.config import BenchmarkConfig, BenchmarkConfigError, load_config
from anomalib_adaclip.benchmark.metrics import BENCHMARK_METRICS
from anomalib_adaclip.benchmark.runner import BenchmarkJob, BenchmarkResult, Shard, run_benchmark, write_reports
from anomalib_adaclip.benchmark.store import RunRecord, RunStore
from anomalib_adaclip.locks import OwnedLock
from tests.helpers import adaclip_entry, folder_entry, hold_lock


@pytest.fixture
def config(tmp_path: Path) -> BenchmarkConfig:
    """2 categories x 3 seeds: 6 runs."""
    grid = {"models": [adaclip_entry()], "data": [folder_entry()], "seeds": [0, 1, 2]}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    return load_config(path, output=tmp_path / "benchmark")


@pytest.fixture
def executions(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The marker file: one line per executed run (appended, so concurrent executions all show)."""
    marker = tmp_path / "executions.txt"

    def run(self: BenchmarkJob) -> RunRecord:
        with marker.open("a") as handle:
            handle.write(f"{self.key.label}\n")
        time.sleep(0.05)  # long enough for the other workers to find the claim
        key, config = self.key, self.config
        return RunRecord(
            key.model, key.dataset, key.category, key.seed, "finished",
            metrics=dict.fromkeys(BENCHMARK_METRICS, 0.5),
            model_config=config.model(key.model).configuration_for(key.dataset),
            data_config=config.dataset(key.dataset).configuration_for(key.category),
            score_normalization=config.score_normalization,
        )  # fmt: skip

    monkeypatch.setattr(BenchmarkJob, "execute", run)
    return marker


def executed(marker: Path) -> Counter:
    return Counter(marker.read_text().splitlines()) if marker.is_file() else Counter()


def reports(config: BenchmarkConfig) -> list[Path]:
    return sorted(path for path in (config.output / "reports").glob("v*") if path.is_dir())


def workers_at_once(config: BenchmarkConfig, count: int, **options: object) -> list[BenchmarkResult]:
    barrier, results, errors = threading.Barrier(count), [None] * count, []

    def work(index: int) -> None:
        barrier.wait()
        try:
            results[index] = run_benchmark(config, show_progress=False, **options)
        except Exception as error:  # collected: a worker must not fail
            errors.append(error)

    threads = [threading.Thread(target=work, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    return results


def test_three_workers_at_once_execute_every_run_once_and_one_report_covers_them_all(
    config: BenchmarkConfig, executions: Path
) -> None:
    results = workers_at_once(config, 3)
    labels = [key.label for key in config.grid()]
    assert executed(executions) == Counter(labels)  # every run exactly once between them
    mine = [set(result.executed) for result in results]
    assert sum(len(keys) for keys in mine) == len(labels) and set().union(*mine) == set(config.grid())
    (report,) = reports(config)  # one report, written by the worker that ended last
    assert {result.report_dir for result in results if result.report_dir is not None} == {report}
    assert sum(result.report_dir is not None and not result.report_by_other for result in results) == 1
    runs_csv = (report / "runs.csv").read_text().splitlines()
    assert len(runs_csv) == 1 + len(labels) and all(",finished," in line for line in runs_csv[1:])
    assert not any(OwnedLock(claim, what="a run").in_use() for claim in config.output.rglob("*.claim"))
    assert not OwnedLock(config.output / "reports.lock", what="the report").in_use()
    assert not list(config.output.rglob("*.tmp")) and not list(config.output.rglob("*.owner.json"))
    # A rerun finds everything finished: nothing executed, no new report for the same records.
    rerun = run_benchmark(config, show_progress=False)
    assert rerun.executed == [] and rerun.report_by_other and reports(config) == [report]


def test_shards_run_disjoint_parts_and_the_last_one_writes_the_report(
    config: BenchmarkConfig, executions: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    grid = config.grid()
    first = run_benchmark(config, show_progress=False, shard=Shard(1, 2))
    assert first.executed == grid[0::2] and executed(executions) == Counter(key.label for key in grid[0::2])
    assert first.report_dir is None and reports(config) == []  # the other shard's runs are left: no report yet
    arguments = ["--config", str(config.source), "--output", str(config.output), "--shard", "2/2"]
    assert benchmark_main(arguments) == 0
    out = capsys.readouterr().out
    assert "Runs: 3 executed, 0 skipped" in out and "Report: " in out
    assert executed(executions) == Counter(key.label for key in grid)  # each run once, by one of the two shards
    (report,) = reports(config)
    assert len((report / "runs.csv").read_text().splitlines()) == 1 + len(grid)
    again = run_benchmark(config, show_progress=False, shard=Shard(1, 2))  # a resubmitted shard: nothing left
    assert again.executed == [] and again.skipped == grid[0::2] and again.report_by_other


def test_a_claim_held_by_another_worker_is_passed_over_and_free_at_once_when_that_worker_is_killed(
    config: BenchmarkConfig, executions: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    store = RunStore(config.output / "runs")
    key = config.grid()[2]
    other = hold_lock(store.claim_path(key), tmp_path)  # another worker, busy with this run
    try:
        result = run_benchmark(config, show_progress=False)
        assert result.report_dir is None and result.still_held == [key] and key not in executed(executions)
        assert result.held == [key]
        assert reports(config) == []  # the grid is not complete: no report from a half-done grid
        assert benchmark_main(["--config", str(config.source), "--output", str(config.output), "--dry-run"]) == 0
        plan = capsys.readouterr().out
        assert f"pending   {key.label} (claimed by PID {other.pid} on host {socket.gethostname()}" in plan
    finally:
        other.send_signal(signal.SIGKILL)  # what kill -9 leaves behind: its claim file and record, no run record
        other.wait()
    assert store.claimed_by(key) is None  # free at once: no waiting, no takeover
    result = run_benchmark(config, show_progress=False)
    assert result.executed == [key] and result.report_dir is not None
    assert executed(executions) == Counter(k.label for k in config.grid())


def test_a_full_disk_while_recording_keeps_every_earlier_record_and_says_what_to_do(
    config: BenchmarkConfig, executions: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = config.grid()[0]
    real_write = store_module.write_new_file

    def full_after_first(path: Path, content: str, **options: object) -> Path:
        if Path(path) != RunStore(config.output / "runs").finished_path(first):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(path, content, **options)

    monkeypatch.setattr(store_module, "write_new_file", full_after_first)
    result = run_benchmark(config, show_progress=False)
    assert result.executed == [first] and set(result.blocked) == set(config.grid()[1:])
    reason = result.blocked[config.grid()[1]]
    assert "No space left on device" in reason and "run the command again" in reason
    assert result.report_dir is None and RunStore(config.output / "runs").finished(first) is not None
    assert not list(config.output.rglob("*.tmp")) and not list(config.output.rglob("*.owner.json"))  # all free


def test_an_output_folder_that_cannot_be_written_is_one_line_and_exit_code_2(
    config: BenchmarkConfig, executions: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def read_only(self: object, *arguments: object, **options: object) -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(locks.FileLock, "acquire", read_only)
    with pytest.raises(BenchmarkConfigError, match=r"Read-only file system\. The folder .* must be writable"):
        run_benchmark(config, show_progress=False)
    assert benchmark_main(["--config", str(config.source), "--output", str(config.output)]) == 2
    error = capsys.readouterr().err
    assert "anomalib-adaclip benchmark: error: Cannot create the lock" in error and "Traceback" not in error
    assert error.count("error:") == 1 and not executions.exists()


def test_a_report_waits_for_another_report_being_written_and_says_so(
    config: BenchmarkConfig, executions: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run_benchmark(config, show_progress=False)
    other = OwnedLock(config.output / "reports.lock", what="another report")
    other.try_acquire()  # another worker writes a report
    threading.Timer(0.5, other.release).start()
    with caplog.at_level(logging.WARNING, logger="anomalib_adaclip.benchmark.runner"):
        result = write_reports(config)
    assert "Waiting: The benchmark report of" in caplog.text
    assert result.report_dir is not None and len(reports(config)) == 2  # `benchmark report` always writes a new one
