"""``anomalib-adaclip prepare-data``: a public release converted and reported; every error a message, exit code 2.

The conversions themselves are tested in ``tests/unit/data/test_preparation.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from anomalib_adaclip.cli import main as cli_main
from tests.data.paper_layouts import write_raw_release


def test_command_prepares_and_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    release = write_raw_release("BrainMRI", tmp_path / "release")
    code = cli_main(["prepare-data", "BrainMRI", "--source", str(release.source), "--dest", str(tmp_path / "d")])
    out = capsys.readouterr().out
    assert code == 0
    assert "test images (normal, anomalous): (2, 3); the paper's: (98, 155)" in out
    assert f"--data anomalib_adaclip.data.BrainMRI --data.root {tmp_path / 'd'} --data.category brain_mri" in out
    assert sorted(path.name for path in (tmp_path / "d" / "brain_mri" / "test" / "tumor").iterdir()) == [
        "Y1.jpg",
        "Y2.JPG",
        "Y3.jpeg",
    ]


def test_command_errors_are_messages_with_exit_code_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["prepare-data", "Nope", "--source", str(tmp_path), "--dest", str(tmp_path / "d")]) == 2
    assert "unknown data set 'Nope'; the paper's data sets are: MVTecAD" in capsys.readouterr().err
    assert cli_main(["prepare-data", "Br35H", "--source", str(tmp_path / "missing"), "--dest", str(tmp_path)]) == 2
    assert "is not a folder; expected the unpacked Br35H release" in capsys.readouterr().err


def test_an_existing_destination_is_refused_and_left_as_it_was(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    release = write_raw_release("BrainMRI", tmp_path / "release")
    existing = tmp_path / "d" / "brain_mri" / "mine.txt"
    existing.parent.mkdir(parents=True)
    existing.write_text("keep me")
    arguments = ["prepare-data", "brainmri", "--source", str(release.source), "--dest", str(tmp_path / "d")]
    assert cli_main(arguments) == 2
    assert capsys.readouterr().err.startswith("error: ")
    assert [path.name for path in existing.parent.iterdir()] == ["mine.txt"] and existing.read_text() == "keep me"


def test_source_and_dest_are_required(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["prepare-data", "BrainMRI", "--dest", "somewhere"])
    assert exit_info.value.code == 2 and "--source" in capsys.readouterr().err
