"""``anomalib-adaclip calibrate``'s checks before a model is built: nothing overwritten, ``--data`` required.

The calibration run through the command is in ``tests/integration/test_production.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from anomalib_adaclip.cli import calibrate


def test_an_existing_output_is_refused_and_kept(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    output = tmp_path / "thresholds.yaml"
    output.write_text("mine\n")
    assert calibrate.main(["--data", str(tmp_path), "--output", str(output)]) == 2
    assert f"{output} already exists; choose a new file for --output" in capsys.readouterr().err
    assert output.read_text() == "mine\n"


def test_data_is_required_without_a_config(capsys: pytest.CaptureFixture) -> None:
    assert calibrate.main(["--percentile", "95"]) == 2
    assert "--data <image or folder of known-good images> is required" in capsys.readouterr().err


@pytest.mark.parametrize("arguments", [["--device", "tpu"], ["--percentile", "high"], ["--batch-size", "1.5"]])
def test_own_options_are_type_checked(arguments: list[str], capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        calibrate.main(["--data", "x", *arguments])
    assert exit_info.value.code == 2 and arguments[0] in capsys.readouterr().err
