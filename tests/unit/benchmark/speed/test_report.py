"""The speed benchmark's report as text (``benchmark/speed/report.py``): a run's report, and one written by hand."""

from __future__ import annotations

import json
from typing import Any

import pytest

from anomalib_adaclip.benchmark import speed
from anomalib_adaclip.benchmark.speed.report import format_report
from tests.conftest import MICRO_BACKBONE

MICRO = json.dumps(MICRO_BACKBONE)


def test_report_of_a_run_in_process(capsys: pytest.CaptureFixture) -> None:
    arguments = ["--backbone", MICRO, "--image-size", "112", "--batch-size", "3", "--images", "4", "--warmup", "0"]
    assert speed.main(arguments) == 0
    printed = capsys.readouterr().out
    assert "custom config @ 112 px, fp32" in printed
    assert "    3      6" in printed  # 4 images round up to two batches of 3


def row(batch_size: int, images_per_second: float) -> dict[str, Any]:
    return {
        "batch_size": batch_size,
        "images": 2 * batch_size,
        "images_per_second": images_per_second,
        "seconds_per_image": 1 / images_per_second,
        "median_seconds_per_image": 0.125,
        "cpu_seconds_per_image": 1.5,
        "peak_memory_bytes": 4e9,
        "peak_memory_per_image_bytes": 4e9 / batch_size,
        "memory_kind": "peak_rss",
    }


def hand_written_report() -> dict[str, Any]:
    sections = dict.fromkeys(speed.SECTIONS, 0.0)
    return {
        "backbone": "ViT-B-16",
        "image_size": 224,
        "precision": "bf16",
        "hsf": False,
        "device": "cpu",
        "device_name": "Some CPU",
        "torch_threads": 4,
        "torch_version": "2.9.0",
        "load_average": [1.0, 0.5, 0.25],
        "load_average_after": [2.0, 1.0, 0.5],
        "cpu_count": 8,
        "memory_before_model_bytes": 1e9,
        "memory_with_model_bytes": 1.25e9,
        "notes": ["bf16 is emulated"],
        "results": [row(8, 4.0), row(1, 1.6)],
        "speedup_over_batch1": 2.5,
        "profile_batch_size": 8,
        "profile_seconds_per_batch": {**sections, "vision_frozen": 0.5, "text": 1.0, "other": 0.5, "total": 2.0},
    }


def test_a_hand_written_report_reads_as_worked_out() -> None:
    lines = format_report(hand_written_report()).splitlines()
    assert lines[0] == "AdaCLIP speed: ViT-B-16 @ 224 px, bf16, HSF off, random weights"
    assert lines[1] == "device: cpu (Some CPU), 4 torch threads, torch 2.9.0"  # a report without the instruction set
    with_isa = format_report({**hand_written_report(), "cpu_capability": "AVX512"}).splitlines()[1]
    assert with_isa == "device: cpu (Some CPU, CPU kernels AVX512), 4 torch threads, torch 2.9.0"
    assert lines[2] == "load average (1, 5, 15 min): 1.00, 0.50, 0.25 before, 2.00, 1.00, 0.50 after (8 CPUs)"
    assert lines[3] == "memory resident: 1.00 GB before building the model, 1.25 GB with it"
    assert lines[4] == "note: bf16 is emulated"
    # batch, images, images/s, s/image (1 / images/s), median, CPU, peak memory and its share per image
    assert lines[7].split() == [
        *("8", "16", "4.000", "0.250", "0.125", "1.500", "4.00", "GB"),
        *("(0.50", "GB", "per", "image,", "peak_rss)"),
    ]
    assert lines[8].split()[:4] == ["1", "2", "1.600", "0.625"]
    assert "batch 8 vs batch 1: 2.50x" in lines
    profile = lines[lines.index("time per batch of 8 (under the profiler):") + 1 :]
    assert len(profile) == len(speed.SECTIONS) + 2  # the sections, other, total
    assert profile[0].split() == ["vision_frozen", "0.500", "s", "25.0%"]
    assert profile[2].split() == ["text", "1.000", "s", "50.0%"]
    assert profile[-1].split() == ["total", "2.000", "s", "100.0%"]


def test_a_custom_backbone_on_a_gpu_reports_allocated_memory_and_no_optional_lines() -> None:
    report = {**hand_written_report(), "backbone": MICRO_BACKBONE, "device": "cuda:0", "hsf": True, "notes": []}
    for optional in ("load_average", "speedup_over_batch1", "profile_seconds_per_batch"):
        del report[optional]
    report["results"] = report["results"][:1]
    text = format_report(report)
    assert text.splitlines()[0] == "AdaCLIP speed: custom config @ 224 px, bf16, HSF on, random weights"
    assert "memory allocated: 1.00 GB before" in text
    assert "load average" not in text and "vs batch 1" not in text and "profiler" not in text and "note:" not in text
