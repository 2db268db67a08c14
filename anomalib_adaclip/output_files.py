"""One rule for every file AdaCLIP writes: an existing file is never replaced; the next free ``-vN`` name is used.

:func:`write_new_file` also makes a file appear complete or not at all (a reader never sees half of it, a full disk
leaves nothing); :mod:`anomalib_adaclip.locks` makes one writer at a time where a file is appended to.

The one exception is a file whose purpose is to be replaced, a *snapshot* of state that moves on (the running line's
bank): :func:`replace_file` swaps it for its new content atomically, so a reader (or a process that was killed
while writing) finds the old complete file or the new complete file, never a mixture and never nothing.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import uuid
from collections.abc import Iterator
from itertools import count
from pathlib import Path

__all__ = [
    "candidate_paths",
    "existing_versions",
    "free_path",
    "new_directory",
    "replace_file",
    "write_new_file",
]


def candidate_paths(path: str | Path) -> Iterator[Path]:
    """``path``, then ``<stem>-v1<suffix>``, ``-v2``, ... without end: the names the rule tries, in order."""
    path = Path(path)
    yield path
    for version in count(1):
        yield path.with_name(f"{path.stem}-v{version}{path.suffix}")


def existing_versions(path: str | Path) -> list[Path]:
    """The files of ``path``'s name family that exist: ``path``, ``<stem>-v1<suffix>``, ``-v2``, ... in version order.

    Versions are read from the folder, so a gap (``-v1`` deleted, ``-v2`` kept) does not hide later ones.
    """
    path = Path(path)
    if not path.parent.is_dir():
        return []
    pattern = re.compile(rf"{re.escape(path.stem)}(?:-v(\d+))?{re.escape(path.suffix)}")
    found = []
    for entry in path.parent.iterdir():
        match = pattern.fullmatch(entry.name)
        if match and entry.is_file():
            found.append((int(match.group(1) or 0), entry))
    return [entry for _, entry in sorted(found)]


def free_path(path: str | Path) -> Path:
    """``path`` if nothing is there, else the first free ``<stem>-v1<suffix>``, ``-v2``, ...

    For files that another library creates (checkpoints, exports); a file this package writes itself is written with
    :func:`write_new_file`, which also wins a race with another process.
    """
    # A dangling link counts as taken: writing through it would create its target.
    return next(
        candidate for candidate in candidate_paths(Path(path)) if not candidate.exists() and not candidate.is_symlink()
    )


def new_directory(path: str | Path) -> Path:
    """Create the first free directory of ``path``'s name family (``path``, ``<name>-v1``, ...); wins races too."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for candidate in candidate_paths(path):
        if candidate.is_symlink():
            continue
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return candidate
    raise AssertionError  # candidate_paths has no end


def write_new_file(path: str | Path, content: str | bytes, *, next_free: bool = True) -> Path:
    """Write a new file that appears complete or not at all: never half-written, never replacing another.

    The content goes to a temporary file in the same folder first (flushed to disk), which is then hard-linked to
    the final name: the link fails when the name exists, so of two processes writing the same name one gets it and
    the other the next free ``-vN`` name (or the error). A failed write (a full disk, a read-only folder) leaves
    nothing behind.

    Args:
        path: The preferred name.
        content: Text (UTF-8) or bytes.
        next_free: Take the next free ``-vN`` name when ``path`` exists; ``False``: raise instead.

    Returns:
        The file written.

    Raises:
        FileExistsError: ``path`` exists and ``next_free`` is ``False``.
        OSError: The folder cannot be written (no space, read-only, ...).
    """
    path = Path(path)
    data = content.encode("utf-8") if isinstance(content, str) else content
    with _synced_temporary(path, data) as temporary:
        for candidate in candidate_paths(path):
            try:
                if candidate.is_symlink():  # a dangling link counts as taken: writing through it creates its target
                    raise FileExistsError(candidate)
                _link_or_copy(temporary, candidate, data)
            except FileExistsError:
                if not next_free:
                    raise FileExistsError(f"{candidate} exists: it is never replaced.") from None
                continue
            return candidate
    raise AssertionError  # candidate_paths has no end


def replace_file(path: str | Path, content: str | bytes) -> Path:
    """Replace ``path``'s content atomically: the old complete file or the new complete file, never half of either.

    Only for snapshots, files whose purpose is to be replaced (every other file follows :func:`write_new_file`).
    The content goes to a temporary file in the same folder, is flushed to disk (``fsync``), then takes the name
    with ``os.replace``, and the folder is synced so that the new name survives a power loss. A failed write (a full
    disk, a read-only folder) leaves the old file as it was and no temporary file.

    Args:
        path: The snapshot file (created when missing).
        content: Text (UTF-8) or bytes.

    Returns:
        ``path``.

    Raises:
        OSError: The folder cannot be written (no space, read-only, ...).
        IsADirectoryError: ``path`` is a folder.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder: a snapshot file cannot replace it.")
    data = content.encode("utf-8") if isinstance(content, str) else content
    with _synced_temporary(path, data) as temporary:
        os.replace(temporary, path)
    _sync_directory(path.parent)
    return path


@contextlib.contextmanager
def _synced_temporary(path: Path, data: bytes) -> Iterator[Path]:
    """A complete temporary copy of ``data`` beside ``path``, flushed to disk; removed on exit unless it was renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with temporary.open("xb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        yield temporary
    finally:
        with contextlib.suppress(OSError):
            temporary.unlink()


def _sync_directory(directory: Path) -> None:
    """Flush a folder's entries to disk (a rename is durable only then); a no-op where folders cannot be opened."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:  # Windows cannot open folders
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def _link_or_copy(source: Path, target: Path, data: bytes) -> None:
    """Hard-link ``source`` to ``target``; where the file system has no hard links, write ``target`` exclusively."""
    try:
        os.link(source, target)
    except FileExistsError:
        raise
    except OSError as error:
        if error.errno not in {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EMLINK}:
            raise
        with target.open("xb") as handle:
            handle.write(data)
