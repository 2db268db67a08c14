"""One writer at a time: kernel file locks (``filelock``) with a record beside each that names its holder.

Every place where two runs could write the same output (a predictions table, a run of a benchmark grid, an export
into a project folder, a benchmark report) holds an :class:`OwnedLock` while it writes. The lock itself is
:class:`filelock.FileLock` on ``<path>``: the kernel holds it (``flock``) for the process, so a holder that ends in
any way (``kill -9``, the out-of-memory killer) leaves it free at once; there is nothing to take over and nothing to
clean up. The lock file stays in place when released (``filelock`` keeps it, so that every run locks the same file).

Who holds a lock is told by an informational record, ``<path>.owner.json``: the holder's :class:`Owner` (host, PID,
command line, start time, run id), written once the lock is taken and deleted when it is given back. It serves the
one-line message of a refused run only; a record left by a killed holder is harmless (the lock is free) and is
replaced by the next holder.

On NFS, Linux emulates ``flock`` with POSIX locks, which belong to the process and are dropped when any descriptor
of the file is closed. So a process never opens a lock it holds a second time: a held lock is handed over as the same
object (:func:`~anomalib_adaclip.components.prediction_table.reserve_table`), never taken again. What a shared file
system guarantees is in the concurrency guide.

This module imports nothing of the package: every other module may use it.

Example:
    >>> from anomalib_adaclip.locks import OwnedLock
    >>> with OwnedLock("results/predictions.csv.lock", what="the predictions table results/predictions.csv"):
    ...     pass  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

logger = logging.getLogger(__name__)

__all__ = ["LockError", "LockHeldError", "OwnedLock", "Owner"]

RECORD_FORMAT = "anomalib-adaclip-lock-owner/2"


@dataclass(frozen=True)
class Owner:
    """Who holds a lock (informational: the kernel holds the lock itself).

    Attributes:
        host: Host name (``socket.gethostname()``).
        pid: Process id on that host.
        since: When the lock was taken (UTC, ISO 8601).
        run_id: Random id of the run; tells two holders with the same host and PID apart.
        command: The holder's command line (shortened).
    """

    host: str
    pid: int
    since: str
    run_id: str
    command: str = ""

    @classmethod
    def this_process(cls, run_id: str | None = None) -> Owner:
        """The owner record of the calling process, with a new run id unless one is given."""
        command = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv and sys.argv[0] else ""
        return cls(
            host=socket.gethostname(),
            pid=os.getpid(),
            since=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            run_id=run_id or uuid.uuid4().hex[:12],
            command=command[:300],
        )

    def describe(self) -> str:
        """``PID 123 on host node7 since 2026-01-01T10:00:00+00:00 (run 1a2b3c4d5e6f)``."""
        return f"PID {self.pid} on host {self.host} since {self.since} (run {self.run_id})"

    def to_json(self) -> str:
        """The record's content."""
        return json.dumps({"format": RECORD_FORMAT, **asdict(self)}, indent=1) + "\n"

    @classmethod
    def read(cls, path: Path) -> Owner | None:
        """The record in ``path``; ``None`` when there is none or it cannot be read (it is only informational)."""
        try:
            content = json.loads(path.read_text(encoding="utf-8"))
            if content.pop("format") != RECORD_FORMAT:
                return None
            return cls(**content)
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            return None


class LockError(RuntimeError):
    """A lock that cannot be taken: held by another run, or its folder cannot be written.

    Attributes:
        path: The lock file.
    """

    def __init__(self, message: str, path: Path) -> None:
        super().__init__(message)
        self.path = path


class LockHeldError(LockError):
    """Another run holds the lock.

    Attributes:
        path: The lock file.
        holder: The other run's record, or ``None`` when it could not be read (being written, or removed).
    """

    def __init__(self, message: str, path: Path, holder: Owner | None) -> None:
        super().__init__(message, path)
        self.holder = holder


class OwnedLock:
    """A kernel file lock with an owner record; a context manager (taken on entry, given back on exit).

    Entering never waits: it raises :class:`LockHeldError` at once when another process (or another
    :class:`OwnedLock` of this process) holds the lock.

    Args:
        path: The lock file (beside what it guards).
        what: What it guards, for messages (``"The predictions table results/predictions.csv"``).
        remedy: What the user can do when another run holds the lock, appended to the message.
        owner: This run's owner record. Defaults to the calling process's (a new run id).
    """

    def __init__(self, path: str | os.PathLike[str], what: str, remedy: str = "", owner: Owner | None = None) -> None:
        self.path = Path(path)
        self.what = what
        self.remedy = remedy
        self.owner = owner or Owner.this_process()
        self._lock: FileLock | None = None

    def __repr__(self) -> str:
        return f"OwnedLock({str(self.path)!r}, what={self.what!r}, held={self.held})"

    @property
    def record_path(self) -> Path:
        """The owner record beside the lock, ``<lock>.owner.json``."""
        return self.path.with_name(f"{self.path.name}.owner.json")

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._lock is not None

    def holder(self) -> Owner | None:
        """The record of the run that holds the lock now; ``None`` when it is free (or held here, or unrecorded)."""
        return Owner.read(self.record_path) if self.in_use() else None

    def in_use(self) -> bool:
        """Whether another run holds the lock now.

        A probe: a free lock is taken and given back at once (another run that tries it in that instant is refused as
        if the lock were held). A lock file that does not exist is free, and is not created.
        """
        if self.held or not self.path.exists():
            return False
        probe = FileLock(self.path, thread_local=False)
        try:
            probe.acquire(timeout=0)
        except Timeout:
            return True
        except OSError:
            return False
        probe.release()
        return False

    def held_message(self, holder: Owner | None) -> str:
        """The one-line message for a lock another run holds: who (host, PID, command), since when, what to do."""
        if holder is None:
            who = f"its record {self.record_path} cannot be read (being written)"
            check = "wait for it to end"
        else:
            who = holder.describe() + (f", command: {holder.command}" if holder.command else "")
            here = holder.host == socket.gethostname()
            check = f"wait for it to end, or stop it ({'' if here else f'on {holder.host}: '}kill {holder.pid})"
        remedy = f" {self.remedy}" if self.remedy else ""
        return f"{self.what} is in use by another run: {who}; {check}.{remedy}"

    def try_acquire(self) -> None:
        """Take the lock now, without waiting, and write this run's record beside it.

        Raises:
            LockHeldError: Another run holds it.
            LockError: The folder cannot be written.
        """
        if self.held:
            return
        # Not thread-local: a lock may be given back by another thread than the one that took it.
        lock = FileLock(self.path, thread_local=False)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            lock.acquire(timeout=0)
        except Timeout:
            holder = Owner.read(self.record_path)
            raise LockHeldError(self.held_message(holder), self.path, holder) from None
        except OSError as error:
            msg = (
                f"Cannot create the lock {self.path} for {self.what}: {error.strerror or error}. The folder "
                f"{self.path.parent} must be writable and have free space."
            )
            raise LockError(msg, self.path) from error
        self._lock = lock
        temporary = self.record_path.with_name(f".{self.record_path.name}.{self.owner.run_id}.tmp")
        try:  # complete or not at all: a refused run never reads half a record
            temporary.write_text(self.owner.to_json(), encoding="utf-8")
            temporary.replace(self.record_path)
        except OSError as error:  # only informational: the lock is held all the same
            logger.warning("%s: the owner record %s could not be written (%s).", self.what, self.record_path, error)
            with contextlib.suppress(OSError):
                temporary.unlink()

    def acquire(
        self, wait: bool | float = False, poll: float = 1.0, on_wait: Callable[[str], Any] | None = None
    ) -> None:
        """Take the lock, waiting for it if asked.

        Args:
            wait: ``False``: fail at once when another run holds it; ``True``: wait until it is free; a number: wait
                at most that many seconds.
            poll: Seconds between tries while waiting.
            on_wait: Called once, with the held-lock message, when the run starts waiting (default: logged).

        Raises:
            LockHeldError: Another run holds it (and the wait, if any, ran out).
            LockError: The folder cannot be written.
        """
        deadline = None if wait is True or wait is False else time.monotonic() + float(wait)
        told = False
        while True:
            try:
                self.try_acquire()
                return
            except LockHeldError as held:
                if wait is False or (deadline is not None and time.monotonic() >= deadline):
                    raise
                if not told:
                    (on_wait or logger.warning)(f"Waiting: {held}")
                    told = True
                time.sleep(poll)

    def release(self) -> None:
        """Give the lock back (its record first: the record never names a run that no longer holds the lock)."""
        if self._lock is None:
            return
        with contextlib.suppress(OSError):
            self.record_path.unlink()
        self._lock.release()
        self._lock = None

    def __enter__(self) -> OwnedLock:
        self.try_acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()
