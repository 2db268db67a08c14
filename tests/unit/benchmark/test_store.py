"""The run store: one record per finished run, a new file per failed attempt, nothing overwritten (nothing runs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from anomalib_adaclip.benchmark.config import BenchmarkConfigError, RunKey
from anomalib_adaclip.benchmark.store import RunRecord, RunStore

KEY = RunKey("AdaCLIP", "MVTecAD", "tire", 0)


def failed(key: RunKey = KEY, error: str = "RuntimeError: boom") -> RunRecord:
    return RunRecord(key.model, key.dataset, key.category, key.seed, "failed", error=error)


def finished(key: RunKey = KEY, auroc: float = 0.75) -> RunRecord:
    return RunRecord(key.model, key.dataset, key.category, key.seed, "finished", metrics={"image_AUROC": auroc})


def test_a_finished_record_is_written_once_and_read_back(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs")
    assert store.finished(KEY) is None and store.latest(KEY) is None
    record = finished()
    path = store.save(record)
    assert path == tmp_path / "runs" / "AdaCLIP" / "MVTecAD" / "tire" / "seed0.json" == store.finished_path(KEY)
    assert record.path == path and "path" not in json.loads(path.read_text())
    assert store.finished(KEY) == record and store.finished(KEY).path == path
    content = path.read_bytes()
    with pytest.raises(FileExistsError, match="never written twice"):
        store.save(finished(auroc=0.5))
    assert path.read_bytes() == content


def test_failed_attempts_get_a_new_file_each_and_the_finished_record_wins(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs")
    paths = [store.save(failed(error=f"RuntimeError: attempt {attempt}")) for attempt in range(3)]
    assert [path.name for path in paths] == ["seed0.failed.json", "seed0.failed-v1.json", "seed0.failed-v2.json"]
    assert store.failures(KEY) == paths  # oldest first
    assert store.latest(KEY).error == "RuntimeError: attempt 2"
    store.save(finished())
    assert store.latest(KEY).status == "finished"
    assert len(store.failures(KEY)) == 3  # the failed attempts stay


def test_failed_attempts_are_ordered_by_their_number(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs")
    folder = tmp_path / "runs" / "AdaCLIP" / "MVTecAD" / "tire"
    folder.mkdir(parents=True)
    for name, attempt in [("seed0.failed-v10.json", 10), ("seed0.failed-v2.json", 2), ("seed0.failed.json", 0)]:
        (folder / name).write_text(failed(error=f"RuntimeError: attempt {attempt}").to_json())
    assert [path.name for path in store.failures(KEY)] == [
        "seed0.failed.json",
        "seed0.failed-v2.json",
        "seed0.failed-v10.json",
    ]
    assert store.latest(KEY).error == "RuntimeError: attempt 10"


def test_a_run_without_a_category_has_its_own_folder(tmp_path: Path) -> None:
    key = RunKey("AdaCLIP", "parts", "", 3)
    path = RunStore(tmp_path).save(finished(key))
    assert path == tmp_path / "AdaCLIP" / "parts" / "_" / "seed3.json"


def test_a_file_that_is_not_a_record_is_an_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "seed0.json"
    path.write_text('{"model": "AdaCLIP"}')
    with pytest.raises(BenchmarkConfigError, match="is not a benchmark run record"):
        RunRecord.read(path)
