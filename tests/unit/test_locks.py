"""locks.py: one holder at a time (a kernel lock), the holder named, a killed holder's lock free at once."""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from anomalib_adaclip import output_files
from anomalib_adaclip.locks import LockError, LockHeldError, OwnedLock, Owner
from tests.helpers import hold_lock


@pytest.fixture
def holder_process(tmp_path: Path):
    """Start another process that holds a lock (``tests.helpers.hold_lock``); it is killed at the end."""
    processes: list[subprocess.Popen] = []
    yield lambda lock: processes.append(hold_lock(lock, tmp_path)) or processes[-1]
    for process in processes:
        process.kill()
        process.wait()


def test_a_lock_records_its_owner_and_a_second_run_is_refused_with_its_name(tmp_path: Path) -> None:
    path = tmp_path / "table.csv.lock"
    first = OwnedLock(path, what="the table")
    first.try_acquire()
    assert first.held and Owner.read(first.record_path) == first.owner
    assert first.owner.host == socket.gethostname() and first.owner.pid == os.getpid()
    second = OwnedLock(path, what="the table", remedy="Use another folder.")
    with pytest.raises(LockHeldError) as error:
        second.try_acquire()
    message = str(error.value)
    assert f"PID {os.getpid()} on host {socket.gethostname()} since {first.owner.since}" in message
    assert "the table is in use by another run" in message and message.endswith("Use another folder.")
    assert error.value.holder == first.owner and not second.held
    assert len(message.splitlines()) == 1
    first.release()
    assert not first.record_path.exists() and not first.held
    with second:  # free again
        assert second.held and Owner.read(second.record_path) == second.owner
    assert not second.record_path.exists()


def test_the_lock_is_released_when_the_block_raises(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    with pytest.raises(RuntimeError, match="boom"), OwnedLock(path, what="x"):
        raise RuntimeError("boom")
    with OwnedLock(path, what="x") as again:
        assert again.held


def test_another_process_is_refused_in_one_line_naming_its_host_pid_and_command(tmp_path: Path, holder_process) -> None:
    path = tmp_path / "table.csv.lock"
    process = holder_process(path)
    lock = OwnedLock(path, what="The predictions table t.csv", remedy="Nothing was scored.")
    assert lock.in_use()
    with pytest.raises(LockHeldError) as error:
        lock.try_acquire()
    message = str(error.value)
    assert f"PID {process.pid} on host {socket.gethostname()}" in message
    assert f"command: hold_lock.py {path}" in message and f"kill {process.pid}" in message
    assert message.startswith("The predictions table t.csv is in use by another run") and "\n" not in message
    assert error.value.holder is not None and error.value.holder.pid == process.pid
    assert lock.holder() == error.value.holder


def test_a_holder_killed_with_sigkill_leaves_the_lock_free_at_once(tmp_path: Path, holder_process) -> None:
    path = tmp_path / "table.csv.lock"
    process = holder_process(path)
    with pytest.raises(LockHeldError):
        OwnedLock(path, what="the table").try_acquire()
    process.send_signal(signal.SIGKILL)
    process.wait()
    lock = OwnedLock(path, what="the table")
    assert Owner.read(lock.record_path).pid == process.pid  # the killed run's record is left, and harmless
    assert not lock.in_use() and lock.holder() is None
    lock.try_acquire()  # at once: no waiting, no takeover
    assert Owner.read(lock.record_path) == lock.owner  # its record replaces the killed run's
    lock.release()


def test_a_lock_file_with_other_content_is_only_a_name_for_the_lock_and_is_left_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "seed0.claim"
    path.write_bytes(b'{"format": "anomalib-adaclip-lock/1", "pid": 1}')  # e.g. left by an earlier version
    lock = OwnedLock(path, what="a run")
    assert not lock.in_use()
    with lock:
        assert lock.held
    assert path.read_bytes() == b'{"format": "anomalib-adaclip-lock/1", "pid": 1}'


def test_a_lock_file_that_does_not_exist_is_free_and_is_not_created_by_asking(tmp_path: Path) -> None:
    lock = OwnedLock(tmp_path / "runs" / "seed0.claim", what="a run")
    assert not lock.in_use() and lock.holder() is None
    assert not (tmp_path / "runs").exists()


def test_a_folder_that_cannot_be_written_is_a_lock_error_naming_it(tmp_path: Path) -> None:
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("")
    with pytest.raises(
        LockError,
        match=f"Cannot create the lock {blocker}/x.lock for the table: .* The folder {blocker} must be writable",
    ):
        OwnedLock(blocker / "x.lock", what="the table").try_acquire()


def race(target, count: int) -> list[object]:
    """Run ``target`` in ``count`` threads released at once; their results (or exceptions), in thread order."""
    barrier, results = threading.Barrier(count), [None] * count

    def run(index: int) -> None:
        barrier.wait()
        try:
            results[index] = target()
        except Exception as error:
            results[index] = error

    threads = [threading.Thread(target=run, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_of_many_runs_at_once_exactly_one_gets_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    contenders = [OwnedLock(path, what="x") for _ in range(8)]
    iterator = iter(contenders)
    lock_of = threading.Lock()

    def attempt() -> OwnedLock:
        with lock_of:
            lock = next(iterator)
        lock.try_acquire()
        return lock

    results = race(attempt, len(contenders))
    winners = [result for result in results if isinstance(result, OwnedLock)]
    assert len(winners) == 1, results
    assert all(isinstance(result, LockHeldError) for result in results if result is not winners[0])
    assert Owner.read(winners[0].record_path) == winners[0].owner
    winners[0].release()
    assert sorted(entry.name for entry in tmp_path.iterdir()) == ["x.lock"]  # no record or temporary file left


def test_waiting_for_a_lock_says_so_once_and_gets_it_when_it_is_released(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    holder = OwnedLock(path, what="the export")
    holder.try_acquire()
    threading.Timer(0.3, holder.release).start()
    said: list[str] = []
    waiter = OwnedLock(path, what="the export")
    waiter.acquire(wait=30, poll=0.05, on_wait=said.append)
    assert waiter.held and Owner.read(waiter.record_path) == waiter.owner
    assert len(said) == 1 and said[0].startswith("Waiting: the export is in use by another run")
    waiter.release()
    holder.try_acquire()
    with pytest.raises(LockHeldError):
        OwnedLock(path, what="the export").acquire(wait=0.2, poll=0.05, on_wait=said.append)
    holder.release()


def test_write_new_file_never_replaces_and_leaves_nothing_when_the_disk_is_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = race(lambda: output_files.write_new_file(tmp_path / "result.yaml", "x: 1\n"), 6)
    assert sorted(path.name for path in names) == ["result-v1.yaml", "result-v2.yaml", "result-v3.yaml",
                                                   "result-v4.yaml", "result-v5.yaml", "result.yaml"]  # fmt: skip
    with pytest.raises(FileExistsError, match="never replaced"):
        output_files.write_new_file(tmp_path / "result.yaml", "x: 2\n", next_free=False)
    assert (tmp_path / "result.yaml").read_text() == "x: 1\n"

    def full(descriptor: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    before = sorted(tmp_path.iterdir())
    with pytest.raises(OSError, match="No space left"):
        output_files.write_new_file(tmp_path / "other.yaml", "y: 1\n")
    assert sorted(tmp_path.iterdir()) == before
