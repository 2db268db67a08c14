"""The MSM side-by-side (``tests/msm_speed.py``) runs end to end on a small tensor; no speed is asserted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests import msm_speed


def test_report_on_a_small_tensor(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "msm.json"
    arguments = ["--images", "6", "--patches", "16", "--channels", "8", "--repeats", "2", "--json", str(target)]
    assert msm_speed.main(arguments) == 0
    printed = capsys.readouterr().out
    assert "ratio (MuSc / ours)" in printed
    assert "load average" in printed
    report = json.loads(target.read_text())
    assert len(report["musc_loop_s"]) == len(report["mutual_patch_scores_s"]) == 2
    assert report["max_abs_difference"] < 1e-6  # the same scores as MuSc's loop
    assert report["device_name"]
    assert msm_speed.main(arguments) == 0  # an existing file is never overwritten: the next free name
    assert json.loads(target.read_text()) == report
    assert json.loads((tmp_path / "msm-v1.json").read_text())["images"] == 6
