"""The speed benchmark's few-shot mode (``benchmark/speed/few_shot.py``): measured beside zero-shot, and its lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from anomalib_adaclip.benchmark import speed
from anomalib_adaclip.benchmark.speed.few_shot import format_few_shot
from tests.conftest import MICRO_BACKBONE
from tests.helpers import SPEED_RESULT_FIELDS

MICRO = json.dumps(MICRO_BACKBONE)


def test_k_shot_measures_a_few_shot_model_side_by_side(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    output = tmp_path / "speed.json"
    arguments = ["--backbone", MICRO, "--image-size", "112", "--batch-size", "1", "--images", "1", "--warmup", "0"]
    assert speed.main([*arguments, "--k-shot", "3", "--profile", "--json", str(output)]) == 0
    printed = capsys.readouterr().out
    assert "with k_shot=3 references" in printed and "x the zero-shot s/image" in printed
    report = json.loads(output.read_text())
    few_shot = report["few_shot"]
    assert few_shot["k_shot"] == 3 and few_shot["reference_seconds"] > 0
    assert few_shot["memory_bytes"] == 3 * 64 * 4 * 32 * 4  # references x patches x layers x embed dim x 4 bytes
    assert [result["batch_size"] for result in few_shot["results"]] == [1]
    assert all(set(result) == SPEED_RESULT_FIELDS for result in few_shot["results"])
    assert report["profile_seconds_per_batch"]["few_shot"] > 0


def test_each_few_shot_row_is_set_against_the_zero_shot_row_of_its_batch_size() -> None:
    def result(batch_size: int, seconds_per_image: float) -> dict:
        return {
            "batch_size": batch_size,
            "images": 4,
            "images_per_second": 1 / seconds_per_image,
            "seconds_per_image": seconds_per_image,
            "median_seconds_per_image": seconds_per_image,
            "cpu_seconds_per_image": 1.0,
            "peak_memory_bytes": 2e9,
        }

    report = {
        "results": [result(4, 0.5), result(1, 0.8)],
        "few_shot": {
            "k_shot": 2,
            "reference_seconds": 0.25,
            "memory_bytes": 3_500_000,
            "results": [result(4, 0.75), result(1, 0.4)],
        },
    }
    lines = format_few_shot(report)
    assert lines[0] == ""
    assert lines[1] == (
        "with k_shot=2 references (measured after the zero-shot rows above, same run): references encoded in "
        "0.250 s, memory 3.5 MB"
    )
    assert lines[2].split()[:4] == ["4", "4", "1.333", "0.750"]
    assert lines[2].endswith("(1.50x the zero-shot s/image)")  # 0.75 / 0.5
    assert lines[3].endswith("(0.50x the zero-shot s/image)")  # 0.4 / 0.8
    assert len(lines) == 4
