"""One rule for every file AdaCLIP writes: an existing file is never replaced; the next free ``-vN`` name is used."""

from __future__ import annotations

from pathlib import Path
from typing import IO

__all__ = ["free_path", "open_new_text_file"]


def free_path(path: str | Path) -> Path:
    """``path`` if nothing is there, else the first free ``<stem>-v1<suffix>``, ``-v2``, ...

    For files that another library creates (checkpoints, exports); a file this package writes itself is opened with
    :func:`open_new_text_file`, which also wins a race with another process.
    """
    path = Path(path)
    candidate, version = path, 0
    while candidate.exists() or candidate.is_symlink():
        version += 1
        candidate = path.with_name(f"{path.stem}-v{version}{path.suffix}")
    return candidate


def open_new_text_file(directory: str | Path, filename: str) -> tuple[Path, IO[str]]:
    """Create and open (exclusively, UTF-8, ``newline=""``) the first free name of ``filename`` in ``directory``.

    Returns:
        The path and the open file; ``filename``, ``<stem>-v1<suffix>``, ``-v2``, ... whichever was free.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    stem, suffix = Path(filename).stem, Path(filename).suffix
    version = 0
    while True:
        path = directory / (filename if version == 0 else f"{stem}-v{version}{suffix}")
        try:
            return path, path.open("x", newline="", encoding="utf-8")
        except FileExistsError:
            version += 1
