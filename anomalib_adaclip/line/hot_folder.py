"""A camera's hot folder: which files are complete, and in which order they arrived.

Cameras and their software hand images over by writing files into a folder. A file may be read while it is still
being written, so :class:`HotFolder` reports a file as *ready* only when

- its name is not a temporary one (:func:`is_temporary`: hidden ``.*``, ``*.tmp``, ``*.part``, ``*.partial``,
  ``*.crdownload``, ``*.filepart``, ``*~``): software that writes under such a name and renames the finished file
  into place hands over complete files atomically, and
- its size and modification time have not changed between two looks at least ``settle_seconds`` apart (this host's
  monotonic clock, so a network share's clock does not matter; ``0``: ready when first seen).

**Arrival order** is the order in which files become ready; files that become ready at the same look are ordered by
modification time, then name. A line that was stopped sees every waiting file at once on its restart, so it scores
them in modification-time order, the order a line that never stopped follows when the camera writes one file after
another. Files with other suffixes than images' are logged once and left alone. The folder is not searched
recursively (sub-folders are a camera's own business).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

from torchvision.datasets.folder import IMG_EXTENSIONS

__all__ = ["HotFolder", "ReadyFile", "is_temporary"]

logger = logging.getLogger(__name__)

TEMPORARY_SUFFIXES = (".tmp", ".temp", ".part", ".partial", ".crdownload", ".filepart", ".download", "~")


def is_temporary(name: str) -> bool:
    """Whether ``name`` is one a writer uses while the file is not finished (hidden, ``.tmp``, ``.part``, ...)."""
    lowered = name.lower()
    return lowered.startswith(".") or lowered.endswith(TEMPORARY_SUFFIXES)


@dataclass(frozen=True)
class ReadyFile:
    """A complete file.

    Attributes:
        path: The file (inside the watched folder).
        mtime_ns: Its modification time when it was judged complete.
        ready_at: The monotonic time it was judged complete (the start of its latency).
    """

    path: Path
    mtime_ns: int
    ready_at: float


class HotFolder:
    """The files of a folder as they become complete, each reported once.

    Args:
        folder: The folder the camera writes into.
        settle_seconds: How long size and modification time must stay the same.
        clock: Monotonic seconds (a test's clock).
    """

    def __init__(self, folder: str | Path, settle_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.folder = Path(folder)
        self.settle_seconds = settle_seconds
        self.clock = clock
        self._watched: dict[str, tuple[tuple[int, int], float]] = {}  # name -> (size, mtime_ns), when first seen so
        self._reported: set[str] = set()
        self._ignored: set[str] = set()

    def scan(self, known: Collection[str] = ()) -> list[ReadyFile]:
        """Look at the folder once; the files that became ready since the last look, in arrival order.

        Args:
            known: Names already handled (a restarted line's table): never reported.

        Raises:
            FileNotFoundError: The folder is gone.
        """
        now = self.clock()
        ready: list[ReadyFile] = []
        present = set()
        with os.scandir(self.folder) as entries:
            for entry in entries:
                name = entry.name
                if name in self._reported or name in known or is_temporary(name):
                    continue
                try:
                    if not entry.is_file():
                        continue
                    status = entry.stat()
                except OSError:  # removed or renamed while listed
                    continue
                if os.path.splitext(name)[1].lower() not in IMG_EXTENSIONS:
                    if name not in self._ignored:
                        self._ignored.add(name)
                        logger.warning(
                            "%s: not an image file name (%s); left alone.",
                            self.folder / name,
                            ", ".join(IMG_EXTENSIONS),
                        )
                    continue
                present.add(name)
                signature = (status.st_size, status.st_mtime_ns)
                seen = self._watched.get(name)
                if seen is None or seen[0] != signature:
                    self._watched[name] = (signature, now)
                    seen = self._watched[name]
                if now - seen[1] >= self.settle_seconds:
                    ready.append(ReadyFile(self.folder / name, status.st_mtime_ns, now))
        for name in list(self._watched):
            if name not in present:  # gone before it was complete (or renamed): forgotten
                del self._watched[name]
        ready.sort(key=lambda item: (item.mtime_ns, item.path.name))
        for item in ready:
            del self._watched[item.path.name]
            self._reported.add(item.path.name)
        return ready
