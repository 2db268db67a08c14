"""output_files.py: nothing the package writes replaces an existing file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from anomalib_adaclip import output_files
from anomalib_adaclip.output_files import existing_versions, free_path, replace_file, write_new_file


def test_free_path_takes_the_next_free_version(tmp_path: Path) -> None:
    target = tmp_path / "adaclip.pt"
    assert free_path(target) == target
    target.write_text("first")
    (tmp_path / "adaclip-v1.pt").write_text("second")
    assert free_path(target) == tmp_path / "adaclip-v2.pt"
    (tmp_path / "dangling.csv").symlink_to(tmp_path / "missing")  # a link counts as taken, even a dangling one
    assert free_path(tmp_path / "dangling.csv") == tmp_path / "dangling-v1.csv"


def test_write_new_file_never_overwrites(tmp_path: Path) -> None:
    first = write_new_file(tmp_path / "run" / "predictions.csv", "a\n")
    second = write_new_file(tmp_path / "run" / "predictions.csv", b"b\n")
    assert (first.name, second.name) == ("predictions.csv", "predictions-v1.csv")
    assert first.read_text() == "a\n" and second.read_bytes() == b"b\n"
    assert sorted(path.name for path in first.parent.iterdir()) == ["predictions-v1.csv", "predictions.csv"]


def test_existing_versions_lists_the_family_in_version_order(tmp_path: Path) -> None:
    assert existing_versions(tmp_path / "missing" / "predictions.csv") == []
    for name in ("predictions-v10.csv", "predictions.csv", "predictions-v2.csv", "predictions-vx.csv", "other.csv"):
        (tmp_path / name).write_text("")
    (tmp_path / "predictions-v3.csv").mkdir()  # not a file
    found = existing_versions(tmp_path / "predictions.csv")
    assert [path.name for path in found] == ["predictions.csv", "predictions-v2.csv", "predictions-v10.csv"]


def test_replace_file_swaps_the_whole_content_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    snapshot = tmp_path / "line" / "bank.pt"
    assert replace_file(snapshot, b"first") == snapshot
    assert replace_file(snapshot, "second, longer") == snapshot
    assert snapshot.read_text() == "second, longer"
    assert sorted(path.name for path in snapshot.parent.iterdir()) == ["bank.pt"]


def test_a_failed_replacement_keeps_the_old_snapshot_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    snapshot = tmp_path / "bank.pt"
    replace_file(snapshot, b"old state")

    def full_disk(descriptor: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(output_files.os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space"):
        replace_file(snapshot, b"new state that does not fit")
    monkeypatch.setattr(output_files.os, "fsync", os.fsync)
    assert snapshot.read_bytes() == b"old state"
    assert [path.name for path in tmp_path.iterdir()] == ["bank.pt"]


def test_replace_file_refuses_a_folder(tmp_path: Path) -> None:
    with pytest.raises(IsADirectoryError, match="folder"):
        replace_file(tmp_path, b"x")
