"""line/hot_folder.py: a file is ready when it stopped changing; temporary names never; arrival order; each once."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from anomalib_adaclip.line import HotFolder, is_temporary


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def write(path: Path, content: bytes, mtime_ns: int | None = None) -> Path:
    path.write_bytes(content)
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))
    return path


def names(ready: list) -> list[str]:
    return [item.path.name for item in ready]


def test_temporary_names() -> None:
    assert all(map(is_temporary, [".a.png", "a.png.tmp", "a.PART", "a.png.partial", "a.crdownload", "a.png~"]))
    assert not any(map(is_temporary, ["a.png", "part.png", "tmp_1.jpg"]))


def test_a_file_is_ready_once_it_stopped_changing_for_the_settle_time(tmp_path: Path) -> None:
    clock = Clock()
    folder = HotFolder(tmp_path, settle_seconds=1.0, clock=clock)
    image = write(tmp_path / "a.png", b"12")
    assert folder.scan() == []  # first sight
    clock.now += 0.6
    write(image, b"1234")  # still growing: the wait starts again
    assert folder.scan() == []
    clock.now += 0.6
    assert folder.scan() == []  # 0.6 s unchanged
    clock.now += 0.5
    ready = folder.scan()
    assert names(ready) == ["a.png"] and ready[0].ready_at == clock.now
    assert folder.scan() == []  # reported once


def test_settle_zero_trusts_atomic_renames_and_temporary_names_are_never_read(tmp_path: Path) -> None:
    folder = HotFolder(tmp_path, settle_seconds=0.0, clock=Clock())
    write(tmp_path / "b.png.part", b"half")
    write(tmp_path / ".b.png", b"half")
    assert folder.scan() == []
    os.rename(tmp_path / "b.png.part", tmp_path / "b.png")
    assert names(folder.scan()) == ["b.png"]


def test_arrival_order_is_modification_time_then_name_and_known_files_are_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = HotFolder(tmp_path, settle_seconds=0.0, clock=Clock())
    second = 2_000_000_000_000_000_000
    write(tmp_path / "z.png", b"1", mtime_ns=second - 10)
    write(tmp_path / "b.png", b"1", mtime_ns=second)
    write(tmp_path / "a.png", b"1", mtime_ns=second)
    write(tmp_path / "done.png", b"1", mtime_ns=1)
    write(tmp_path / "notes.txt", b"1")
    (tmp_path / "sub").mkdir()
    with caplog.at_level(logging.WARNING):
        assert names(folder.scan(known={"done.png"})) == ["z.png", "a.png", "b.png"]
        folder.scan()
    assert sum("notes.txt: not an image file name" in record.message for record in caplog.records) == 1
