"""One rule for every file AdaCLIP writes: an existing file is never replaced; the next free ``-vN`` name is used."""

from __future__ import annotations

import re
from collections.abc import Iterator
from itertools import count
from pathlib import Path
from typing import IO

__all__ = ["existing_versions", "free_path", "open_new_text_file"]


def _candidates(path: Path) -> Iterator[Path]:
    """``path``, then ``<stem>-v1<suffix>``, ``-v2``, ... without end."""
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

    For files that another library creates (checkpoints, exports); a file this package writes itself is opened with
    :func:`open_new_text_file`, which also wins a race with another process.
    """
    # A dangling link counts as taken: writing through it would create its target.
    return next(
        candidate for candidate in _candidates(Path(path)) if not candidate.exists() and not candidate.is_symlink()
    )


def open_new_text_file(directory: str | Path, filename: str) -> tuple[Path, IO[str]]:
    """Create and open (exclusively, UTF-8, ``newline=""``) the first free name of ``filename`` in ``directory``.

    Returns:
        The path and the open file; ``filename``, ``<stem>-v1<suffix>``, ``-v2``, ... whichever was free.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    candidates = _candidates(directory / filename)
    while True:
        path = next(candidates)
        try:
            return path, path.open("x", newline="", encoding="utf-8")
        except FileExistsError:
            pass
