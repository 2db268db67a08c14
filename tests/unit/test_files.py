"""files.py: nothing the package writes replaces an existing file."""

from __future__ import annotations

from pathlib import Path

from anomalib_adaclip.files import free_path, open_new_text_file


def test_free_path_takes_the_next_free_version(tmp_path: Path) -> None:
    target = tmp_path / "adaclip.pt"
    assert free_path(target) == target
    target.write_text("first")
    (tmp_path / "adaclip-v1.pt").write_text("second")
    assert free_path(target) == tmp_path / "adaclip-v2.pt"
    (tmp_path / "dangling.csv").symlink_to(tmp_path / "missing")  # a link counts as taken, even a dangling one
    assert free_path(tmp_path / "dangling.csv") == tmp_path / "dangling-v1.csv"


def test_open_new_text_file_never_overwrites(tmp_path: Path) -> None:
    first, handle = open_new_text_file(tmp_path / "run", "predictions.csv")
    with handle:
        handle.write("a\n")
    second, handle = open_new_text_file(tmp_path / "run", "predictions.csv")
    with handle:
        handle.write("b\n")
    assert (first.name, second.name) == ("predictions.csv", "predictions-v1.csv")
    assert first.read_text() == "a\n" and second.read_text() == "b\n"
