"""locks.py: one holder at a time, owners named, stale locks taken over only when their holder is really gone."""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from anomalib_adaclip import locks, output_files
from anomalib_adaclip.locks import LockError, LockHeldError, NotALockFileError, OwnedLock, Owner, process_alive


def dead_pid() -> int:
    """The PID of a process that has ended (and was reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def write_lock(path: Path, owner: Owner) -> None:
    path.write_text(owner.to_json(), encoding="utf-8")


def other(**changes: object) -> Owner:
    """An owner record of another run, by default this host and this (live) process."""
    return dataclasses.replace(Owner.this_process(), **changes)


def test_a_lock_records_its_owner_and_a_second_run_is_refused_with_its_name(tmp_path: Path) -> None:
    path = tmp_path / "table.csv.lock"
    first = OwnedLock(path, what="the table")
    assert first.try_acquire() is None and first.held
    recorded = json.loads(path.read_text())
    assert recorded["host"] == socket.gethostname() and recorded["pid"] == os.getpid()
    assert recorded["run_id"] == first.owner.run_id and recorded["since"] == first.owner.since
    second = OwnedLock(path, what="the table", remedy="Use another folder.")
    with pytest.raises(LockHeldError) as error:
        second.try_acquire()
    message = str(error.value)
    assert f"PID {os.getpid()} on host {socket.gethostname()} since {first.owner.since}" in message
    assert "the table is in use by another run" in message and message.endswith("Use another folder.")
    assert error.value.holder == first.owner
    first.release()
    assert not path.exists()
    with second:  # free again
        assert second.still_ours()
    assert not path.exists()


def test_the_lock_is_released_when_the_block_raises(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    with pytest.raises(RuntimeError, match="boom"), OwnedLock(path, what="x"):
        raise RuntimeError("boom")
    assert not path.exists()


def test_a_lock_whose_process_is_gone_is_taken_over_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "x.lock"
    gone = other(pid=dead_pid())
    write_lock(path, gone)
    assert process_alive(gone) is False
    lock = OwnedLock(path, what="the table")
    with caplog.at_level(logging.WARNING, logger=locks.__name__):
        assert lock.try_acquire() == gone
    assert lock.still_ours()
    assert f"from PID {gone.pid}" in caplog.text and "is gone" in caplog.text
    lock.release()


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="process start times are read from /proc")
def test_a_reused_pid_does_not_keep_a_dead_holder_alive(tmp_path: Path) -> None:
    reused = other(process_start="1")  # this live PID, but a process that started at another time
    assert process_alive(reused) is False
    assert process_alive(other()) is True


def test_another_hosts_lock_is_trusted_until_deleted_without_a_heartbeat_timeout(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    remote = other(host="node-elsewhere", pid=12345)
    write_lock(path, remote)
    os.utime(path, (time.time() - 10**6, time.time() - 10**6))  # untouched for days
    assert process_alive(remote) is None
    with pytest.raises(LockHeldError, match=f"if it does not, delete {path}"):
        OwnedLock(path, what="the table").try_acquire()
    path.unlink()  # the documented recovery
    with OwnedLock(path, what="the table"):
        pass


def test_another_hosts_claim_is_taken_over_after_its_heartbeat_timeout(tmp_path: Path) -> None:
    path = tmp_path / "x.claim"
    write_lock(path, other(host="node-elsewhere", pid=12345))
    with pytest.raises(LockHeldError, match="taken over when it has not been renewed for 60 s"):
        OwnedLock(path, what="a run", stale_after=60).try_acquire()
    os.utime(path, (time.time() - 61, time.time() - 61))
    lock = OwnedLock(path, what="a run", stale_after=60)
    assert lock.try_acquire().host == "node-elsewhere"
    lock.release()


def test_garbage_in_a_lock_file_is_never_taken_over_and_the_message_says_how_to_clear_it(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    path.write_text("hello, not a lock\n")
    with pytest.raises(NotALockFileError) as error:
        OwnedLock(path, what="the table").try_acquire()
    assert f"rm {path}" in str(error.value) and "b'hello, not a lock" in str(error.value)
    assert path.read_text() == "hello, not a lock\n"  # left alone
    path.write_text(json.dumps({"format": "something/else"}))
    with pytest.raises(NotALockFileError):
        OwnedLock(path, what="the table").try_acquire()


def test_a_folder_that_cannot_be_written_is_a_lock_error_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(path: Path, text: str) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(locks, "_write_file", full)
    with pytest.raises(LockError, match=f"No space left on device. The folder {tmp_path} must be writable"):
        OwnedLock(tmp_path / "x.lock", what="the table").try_acquire()
    assert list(tmp_path.iterdir()) == []


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


@pytest.mark.parametrize("stale", [False, True])
def test_of_many_runs_at_once_exactly_one_gets_the_lock(tmp_path: Path, stale: bool) -> None:
    path = tmp_path / "x.lock"
    if stale:
        write_lock(path, other(pid=dead_pid()))
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
    assert all(isinstance(result, LockHeldError) and result.holder == winners[0].owner for result in results
               if result is not winners[0])  # fmt: skip
    assert json.loads(path.read_text())["run_id"] == winners[0].owner.run_id
    assert [entry.name for entry in tmp_path.iterdir()] == ["x.lock"]  # no temporary or moved files left


def test_the_heartbeat_renews_the_claim_and_notices_a_takeover(tmp_path: Path) -> None:
    path = tmp_path / "x.claim"
    lock = OwnedLock(path, what="a run", stale_after=60)
    lock.try_acquire()
    os.utime(path, (0, 0))
    lock.keep_alive(0.02)
    deadline = time.monotonic() + 10
    while path.stat().st_mtime < time.time() - 30:
        assert time.monotonic() < deadline, "no heartbeat"
        time.sleep(0.02)
    write_lock(path, other())  # another run took it over meanwhile
    while not lock.lost:
        assert time.monotonic() < deadline, "the takeover was not noticed"
        time.sleep(0.02)
    lock.release()
    assert path.exists()  # the other run's lock stays


def test_waiting_for_a_lock_says_so_once_and_gets_it_when_it_is_released(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    holder = OwnedLock(path, what="the export")
    holder.try_acquire()
    threading.Timer(0.3, holder.release).start()
    said: list[str] = []
    waiter = OwnedLock(path, what="the export")
    waiter.acquire(wait=30, poll=0.05, on_wait=said.append)
    assert waiter.still_ours()
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
