"""One writer at a time: lock files that say who holds them, and what happens when that holder is gone.

Every place where two runs could write the same output (a predictions table, a run of a benchmark grid, an export
into a project folder, a demo run folder) holds an :class:`OwnedLock` while it writes. A lock is a small JSON file
beside what it guards, created atomically (a complete temporary file hard-linked to the lock's name: the link fails
when the name exists, and a reader never sees a half-written lock), holding its :class:`Owner`: host, PID, start time
of the process, a run id and the command line.

Whether a holder still runs is decided like this (:meth:`OwnedLock.stale_reason`):

- **same host:** the PID is asked (``os.kill(pid, 0)``); on Linux the process's start time is compared as well, so a
  reused PID is not mistaken for the holder. A lock whose process is gone is taken over, with a warning;
- **another host:** its processes cannot be seen from here. With ``stale_after`` (the benchmark's claims, kept fresh
  by a heartbeat thread that touches the file) a lock whose file was not touched for that long is taken over; without
  it (predictions tables) the lock is trusted until the user deletes the file, and the message says how.

A lock file that is not a lock (any other content) is never taken over: :class:`NotALockFileError` names it and says how
to clear it. A folder that cannot be written (read-only, full) is a :class:`LockError` naming the folder.

This module imports nothing of the package: every other module may use it.

Example:
    >>> from anomalib_adaclip.locks import OwnedLock
    >>> with OwnedLock("results/predictions.csv.lock", what="the predictions table results/predictions.csv"):
    ...     pass  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

__all__ = [
    "LOCK_FORMAT",
    "LockError",
    "LockHeldError",
    "NotALockFileError",
    "OwnedLock",
    "Owner",
    "process_alive",
]

LOCK_FORMAT = "anomalib-adaclip-lock/1"
# Errors of os.link on file systems without hard links; creation then falls back to O_EXCL.
_NO_HARD_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EXDEV, errno.EMLINK}
# A stale lock is removed under a guard file held for milliseconds; a guard older than this was left by a crash.
_TAKEOVER_SECONDS = 30.0
# How long a lock file may stay empty or unreadable (being written through the O_EXCL fallback) before it is garbage.
_WRITE_GRACE_SECONDS = 2.0


def _process_start(pid: int) -> str:
    """The start time of process ``pid`` in clock ticks since boot (Linux), ``""`` where it cannot be read."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    # The command name (field 2) may contain spaces and parentheses: fields are counted after its last ')'.
    fields = stat.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else ""


@dataclass(frozen=True)
class Owner:
    """Who holds a lock.

    Attributes:
        host: Host name (``socket.gethostname()``).
        pid: Process id on that host.
        since: When the lock was taken (UTC, ISO 8601).
        run_id: Random id of the run; tells two holders with the same host and PID apart.
        process_start: The process's start time in clock ticks since boot (Linux; ``""`` elsewhere): a PID reused by
            another process after the holder died has another start time.
        command: The holder's command line (shortened).
    """

    host: str
    pid: int
    since: str
    run_id: str
    process_start: str = ""
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
            process_start=_process_start(os.getpid()),
            command=command[:300],
        )

    def describe(self) -> str:
        """``PID 123 on host node7 since 2026-01-01T10:00:00+00:00 (run 1a2b3c4d5e6f)``."""
        return f"PID {self.pid} on host {self.host} since {self.since} (run {self.run_id})"

    def to_json(self) -> str:
        """The lock file's content."""
        return json.dumps({"format": LOCK_FORMAT, **asdict(self)}, indent=1) + "\n"


def process_alive(owner: Owner) -> bool | None:
    """Whether ``owner``'s process still runs: ``True``/``False`` on this host, ``None`` for another host."""
    if owner.host != socket.gethostname():
        return None
    try:
        os.kill(owner.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        pass
    except OSError:
        return None
    if owner.process_start:
        current = _process_start(owner.pid)
        if current and current != owner.process_start:  # the PID now belongs to another process
            return False
    return True


class LockError(RuntimeError):
    """A lock that cannot be taken: held by another run, not a lock file, or its folder cannot be written.

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
        holder: The other run.
    """

    def __init__(self, message: str, path: Path, holder: Owner) -> None:
        super().__init__(message, path)
        self.holder = holder


class NotALockFileError(LockError):
    """The lock's file exists but holds something else (garbage, another program's file)."""


def _read_owner(path: Path) -> tuple[Owner, float]:
    """The owner recorded in ``path`` and the file's modification time (the heartbeat).

    Raises:
        FileNotFoundError: No lock file.
        NotALockFileError: The file is not a lock.
    """
    deadline = time.monotonic() + _WRITE_GRACE_SECONDS
    while True:
        stat = path.stat()
        try:
            content = json.loads(path.read_text(encoding="utf-8"))
            if content.pop("format") != LOCK_FORMAT:
                raise ValueError(content)
            return Owner(**content), stat.st_mtime
        except FileNotFoundError:
            raise
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            # The O_EXCL fallback writes after it creates: a young empty file is a lock being written.
            if stat.st_size == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
                continue
            text = path.read_bytes()[:80] if path.is_file() else b""
            msg = (
                f"{path} is not a lock file of anomalib-adaclip (it starts with {text!r}). If no run is writing what "
                f"it guards, delete it (rm {path}) and start again."
            )
            raise NotALockFileError(msg, path) from None


def _write_file(path: Path, text: str) -> None:
    with path.open("x", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def _create_atomically(path: Path, text: str) -> bool:
    """Create ``path`` holding ``text``, complete when it appears; ``False`` when the name exists."""
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        _write_file(temporary, text)
        try:
            os.link(temporary, path)
            return True
        except FileExistsError:
            return False
        except OSError as error:
            if error.errno not in _NO_HARD_LINKS:
                raise
        try:
            _write_file(path, text)
        except FileExistsError:
            return False
        return True
    finally:
        with contextlib.suppress(OSError):
            temporary.unlink()


@dataclass
class OwnedLock:
    """A lock file with an owner record; a context manager (taken on entry, released on exit, also on errors).

    Args:
        path: The lock file (beside what it guards).
        what: What it guards, for messages (``"the predictions table results/predictions.csv"``).
        stale_after: Seconds without a touch of the file after which a lock of another host counts as abandoned;
            ``None``: such a lock is trusted until the user deletes it. Defaults to ``None``.
        remedy: What the user can do when another run holds the lock, appended to the message.
        owner: This run's owner record. Defaults to the calling process's (a new run id).
    """

    path: Path
    what: str
    stale_after: float | None = None
    remedy: str = ""
    owner: Owner = field(default_factory=Owner.this_process)
    _held: bool = field(default=False, init=False, repr=False)
    _beat: threading.Event | None = field(default=None, init=False, repr=False)
    _beat_thread: threading.Thread | None = field(default=None, init=False, repr=False)
    lost: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self.path = Path(self.path)

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._held

    def holder(self) -> Owner | None:
        """The current holder, or ``None`` when there is no lock file.

        Raises:
            NotALockFileError: The file is not a lock.
        """
        try:
            return _read_owner(self.path)[0]
        except FileNotFoundError:
            return None

    def stale_reason(self, holder: Owner, touched: float) -> str | None:
        """Why ``holder`` (whose file was last touched at ``touched``) no longer holds the lock, or ``None``."""
        alive = process_alive(holder)
        if alive is False:
            return f"its process (PID {holder.pid} on {holder.host}) is gone"
        if alive is None and self.stale_after is not None:
            age = time.time() - touched
            if age > self.stale_after:
                return f"its heartbeat stopped {age:.0f} s ago (timeout {self.stale_after:g} s)"
        return None

    def held_message(self, holder: Owner) -> str:
        """The one-line message for a lock another run holds: who, since when, what to do."""
        if holder.host == self.owner.host:
            check = f"wait for it to end, or stop it (kill {holder.pid})"
        elif self.stale_after is not None:
            check = (
                f"it is taken over when it has not been renewed for {self.stale_after:g} s; if that run is gone, "
                f"delete {self.path} to take it over now"
            )
        else:
            check = f"this host cannot tell whether it still runs: if it does not, delete {self.path} and start again"
        remedy = f" {self.remedy}" if self.remedy else ""
        return f"{self.what} is in use by another run: {holder.describe()}; {check}.{remedy}"

    def _unwritable(self, error: OSError) -> LockError:
        reason = error.strerror or str(error)
        msg = (
            f"Cannot create the lock {self.path} for {self.what}: {reason}. The folder {self.path.parent} must be "
            "writable and have free space."
        )
        return LockError(msg, self.path)

    def try_acquire(self) -> Owner | None:
        """Take the lock now; a stale one is taken over (with a warning).

        Returns:
            The holder that was taken over, or ``None`` when the lock was free.

        Raises:
            LockHeldError: Another run holds it.
            NotALockFileError: The file is not a lock.
            LockError: The folder cannot be written.
        """
        if self._held:
            return None
        replaced: Owner | None = None
        deadline = time.monotonic() + _TAKEOVER_SECONDS
        while time.monotonic() < deadline:  # a round is lost only to another run that won a race meanwhile
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                if _create_atomically(self.path, self.owner.to_json()):
                    self._held = True
                    return replaced
            except OSError as error:
                raise self._unwritable(error) from error
            try:
                holder, touched = _read_owner(self.path)
            except FileNotFoundError:  # released meanwhile
                continue
            reason = self.stale_reason(holder, touched)
            if reason is None:
                raise LockHeldError(self.held_message(holder), self.path, holder)
            if self._remove_stale(holder):
                logger.warning(
                    "Took over %s from %s: %s. Its output up to then is kept.", self.what, holder.describe(), reason
                )
                replaced = holder
        msg = f"Could not take the lock {self.path} for {self.what}: other runs keep taking it."
        raise LockError(msg, self.path)

    def _remove_stale(self, holder: Owner) -> bool:
        """Remove the lock file of ``holder``, only if it is still that holder's (several runs may judge it at once).

        One run at a time removes a stale lock: it first creates ``<lock>.takeover`` (atomically, with its owner
        record), then reads the lock again and deletes it only if it still names ``holder``. Nobody else deletes a lock
        meanwhile, so a live lock taken in between is never deleted. The others wait a moment and try again.
        """
        guard = self.path.with_name(f"{self.path.name}.takeover")
        if not _create_atomically(guard, self.owner.to_json()):
            try:
                other, touched = _read_owner(guard)
                # A run that died while taking over (within milliseconds) leaves its guard: it is removed.
                if process_alive(other) is False or time.time() - touched > _TAKEOVER_SECONDS:
                    guard.unlink(missing_ok=True)
            except (FileNotFoundError, NotALockFileError):
                pass
            time.sleep(0.01)
            return False
        try:
            try:
                current, _ = _read_owner(self.path)
            except FileNotFoundError:
                return False
            if current.run_id != holder.run_id:
                return False
            self.path.unlink()
            return True
        finally:
            guard.unlink(missing_ok=True)

    def acquire(
        self, wait: bool | float = False, poll: float = 1.0, on_wait: Callable[[str], Any] | None = None
    ) -> Owner | None:
        """Take the lock, waiting for it if asked.

        Args:
            wait: ``False``: fail at once when another run holds it; ``True``: wait until it is free; a number: wait
                at most that many seconds.
            poll: Seconds between tries while waiting.
            on_wait: Called once, with the held-lock message, when the run starts waiting (default: logged).

        Returns:
            The stale holder that was taken over, or ``None``.

        Raises:
            LockHeldError: Another run holds it (and the wait, if any, ran out).
            NotALockFileError: The file is not a lock.
            LockError: The folder cannot be written.
        """
        deadline = None if wait is True or wait is False else time.monotonic() + float(wait)
        told = False
        while True:
            try:
                return self.try_acquire()
            except LockHeldError as held:
                if wait is False or (deadline is not None and time.monotonic() >= deadline):
                    raise
                if not told:
                    (on_wait or logger.warning)(f"Waiting: {held}")
                    told = True
                time.sleep(poll)

    def still_ours(self) -> bool:
        """Whether the lock file still names this run (another run may have taken over a lock judged stale)."""
        try:
            return _read_owner(self.path)[0].run_id == self.owner.run_id
        except (FileNotFoundError, NotALockFileError):
            return False

    def touch(self) -> bool:
        """Renew the heartbeat (the file's modification time); ``False`` when the lock is no longer this run's."""
        if not self.still_ours():
            return False
        try:
            os.utime(self.path)
        except OSError:
            return False
        return True

    def keep_alive(self, interval: float) -> None:
        """Touch the lock every ``interval`` seconds in a daemon thread until :meth:`release`.

        When the lock turns out to be another run's (it was judged stale and taken over), ``lost`` is set.
        """
        if self._beat_thread is not None:
            return
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(interval):
                if not self.touch():
                    self.lost = True
                    logger.warning("%s: the lock %s is no longer this run's.", self.what, self.path)
                    return

        self._beat = stop
        self._beat_thread = threading.Thread(target=beat, name=f"heartbeat {self.path.name}", daemon=True)
        self._beat_thread.start()

    def release(self) -> None:
        """Give the lock back (delete its file, only if it is still this run's); stops the heartbeat."""
        if self._beat is not None:
            self._beat.set()
            if self._beat_thread is not None and self._beat_thread is not threading.current_thread():
                self._beat_thread.join()
        self._beat, self._beat_thread = None, None
        if not self._held:
            return
        self._held = False
        if self.still_ours():
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        else:
            logger.warning("%s: the lock %s was taken over by another run; it is left to it.", self.what, self.path)

    def __enter__(self) -> OwnedLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()
