"""One rule for every file AdaCLIP writes: an existing file is never replaced; the next free ``-vN`` name is used."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import count
from pathlib import Path
from typing import IO

__all__ = ["free_path", "open_new_text_file"]


def _candidates(path: Path) -> Iterator[Path]:
    """``path``, then ``<stem>-v1<suffix>``, ``-v2``, ... without end."""
    yield path
    for version in count(1):
        yield path.with_name(f"{path.stem}-v{version}{path.suffix}")


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
