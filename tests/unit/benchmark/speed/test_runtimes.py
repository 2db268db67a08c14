"""Runtimes timed side by side with torch (``benchmark/speed/runtimes.py``): the order, the refusals, the lines."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from anomalib_adaclip.benchmark import speed
from anomalib_adaclip.benchmark.speed.runtimes import format_runtimes
from tests.conftest import MICRO_BACKBONE

MICRO = json.dumps(MICRO_BACKBONE)


def test_runtimes_are_timed_in_turn_on_the_same_images() -> None:
    calls: list[tuple[str, int]] = []
    images = torch.rand(2, 3, 8, 8)

    def runner(name: str) -> Callable[[torch.Tensor], None]:
        def run(batch: torch.Tensor) -> None:
            assert batch is images
            calls.append((name, len(calls)))

        return run

    results = speed.measure_runtimes({"torch": runner("torch"), "openvino": runner("openvino")}, images, 3, warmup=1)
    # one warm-up each, then torch-openvino, openvino-torch, torch-openvino
    assert [name for name, _ in calls] == [
        "torch",
        "openvino",
        "torch",
        "openvino",
        "openvino",
        "torch",
        "torch",
        "openvino",
    ]
    assert [result["runtime"] for result in results] == ["torch", "openvino"]
    for result in results:
        assert result["batch_size"] == 2 and result["batches"] == 3 and result["images"] == 6
        assert result["seconds_per_image"] == pytest.approx(1 / result["images_per_second"])


def test_runtime_openvino_without_openvino_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino then raises ImportError
    assert speed.main(["--backbone", MICRO, "--image-size", "112", "--runtime", "torch", "openvino"]) == 2
    assert 'pip install "anomalib-adaclip[openvino]"' in capsys.readouterr().err


@pytest.mark.parametrize("option", [["--precision", "bf16"], ["--k-shot", "2"], ["--profile"]])
def test_runtime_openvino_refuses_what_it_cannot_measure(option: list[str], capsys: pytest.CaptureFixture) -> None:
    assert speed.main(["--backbone", MICRO, "--image-size", "112", "--runtime", "openvino", *option]) == 2
    assert "CPU in fp32, zero-shot" in capsys.readouterr().err


@pytest.mark.slow
def test_torch_and_openvino_side_by_side(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The whole run: an export, both runtimes at two batch sizes, and their agreement (the same model)."""
    output = tmp_path / "speed.json"
    arguments = ["--backbone", MICRO, "--image-size", "112", "--batch-size", "2", "--images", "2", "--no-hsf"]
    assert speed.main([*arguments, "--runtime", "torch", "openvino", "--compare-batch1", "--json", str(output)]) == 0
    assert "openvino is" in capsys.readouterr().out
    report = json.loads(output.read_text())
    assert [(row["runtime"], row["batch_size"]) for row in report["results"]] == [
        ("torch", 2),
        ("openvino", 2),
        ("torch", 1),
        ("openvino", 1),
    ]
    assert report["export_seconds"] > 0 and report["openvino_version"]
    for agreement in report["runtime_agreement"]:  # fp32 in both: the ONNX test's tolerances
        assert agreement["max_score_difference"] < 1e-5 and agreement["max_map_difference"] < 1e-4


def runtime_row(runtime: str, images_per_second: float, cpu_seconds_per_image: float) -> dict[str, Any]:
    return {
        "runtime": runtime,
        "batch_size": 4,
        "images": 8,
        "images_per_second": images_per_second,
        "seconds_per_image": 1 / images_per_second,
        "median_seconds_per_image": 1 / images_per_second,
        "cpu_seconds_per_image": cpu_seconds_per_image,
    }


def test_the_runtime_lines_give_openvino_against_torch_as_worked_out() -> None:
    report = {
        "runtimes": ["torch", "openvino"],
        "openvino_version": "2025.0",
        "export_seconds": 12.34,
        "results": [runtime_row("torch", 20.0, 0.2), runtime_row("openvino", 30.0, 0.1)],
        "runtime_agreement": [{"batch_size": 4, "max_score_difference": 2.5e-7, "max_map_difference": 1e-5}],
        "peak_memory_bytes": 1.5e9,
    }
    lines = format_runtimes(report)
    assert lines[0].startswith("runtimes torch, openvino side by side") and "OpenVINO 2025.0" in lines[0]
    assert lines[0].endswith("export took 12.3 s")
    assert [line.split()[:4] for line in lines[3:5]] == [
        ["torch", "4", "8", "20.000"],
        ["openvino", "4", "8", "30.000"],
    ]
    # 30 / 20 images/s; torch's 0.2 CPU s/image over openvino's 0.1
    assert "batch 4: openvino is 1.50x torch's images/s (2.00x in CPU s/image)" in lines
    assert "batch 4: openvino vs torch, max |score diff| 2.50e-07, max |map diff| 1.00e-05" in lines
    assert lines[-1] == "peak memory of the process (both runtimes): 1.50 GB"


def test_one_runtime_alone_has_no_ratio_line() -> None:
    report = {
        "runtimes": ["openvino"],
        "openvino_version": "2025.0",
        "export_seconds": 1.0,
        "results": [runtime_row("openvino", 30.0, 0.1)],
        "peak_memory_bytes": 1e9,
    }
    assert not any("x torch's images/s" in line or "vs torch" in line for line in format_runtimes(report))
