"""The speed benchmark runs end to end on a tiny backbone and reports every field; no speed is asserted."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from anomalib_adaclip.benchmark import speed
from tests.conftest import MICRO_BACKBONE

MICRO = json.dumps(MICRO_BACKBONE)
RESULT_FIELDS = {
    "batch_size",
    "batches",
    "images",
    "seconds",
    "images_per_second",
    "seconds_per_image",
    "median_seconds_per_image",
    "cpu_seconds_per_image",
    "peak_memory_bytes",
    "peak_memory_per_image_bytes",
    "memory_kind",
}


def test_full_run_writes_the_report(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The documented command's options, in process (the module's ``__main__`` only calls ``main``)."""
    output = tmp_path / "speed.json"
    arguments = ["--backbone", MICRO, "--image-size", "112", "--batch-size", "2", "--images", "2", "--device", "cpu"]
    arguments += ["--precision", "fp32", "--compare-batch1", "--profile", "--json", str(output)]
    assert speed.main(arguments) == 0
    printed = capsys.readouterr().out
    assert "images/s" in printed and "batch 2 vs batch 1" in printed
    report = json.loads(output.read_text())
    assert report["precision"] == "fp32" and report["device"] == "cpu" and report["image_size"] == 112
    assert report["backbone"] == MICRO_BACKBONE
    assert report["memory_before_model_bytes"] > 0 and report["memory_with_model_bytes"] > 0
    assert {"device_name", "torch_threads", "torch_version", "load_average", "load_average_after"} <= set(report)
    assert [result["batch_size"] for result in report["results"]] == [2, 1]
    for result in report["results"]:
        assert set(result) == RESULT_FIELDS
        assert result["images"] == 2 and result["images_per_second"] > 0 and result["peak_memory_bytes"] > 0
        assert result["seconds_per_image"] == pytest.approx(1 / result["images_per_second"])
    assert report["speedup_over_batch1"] == pytest.approx(
        report["results"][0]["images_per_second"] / report["results"][1]["images_per_second"]
    )
    profile = report["profile_seconds_per_batch"]
    assert set(profile) == {*speed.SECTIONS, "other", "total"}
    assert profile["total"] > 0 and all(value >= 0 for value in profile.values())
    assert sum(profile[section] for section in speed.SECTIONS) <= profile["total"] * 1.001
    assert profile["vision_frozen"] > 0 and profile["text"] > 0 and profile["hsf"] > 0


def test_report_of_a_run_in_process(capsys: pytest.CaptureFixture) -> None:
    arguments = ["--backbone", MICRO, "--image-size", "112", "--batch-size", "3", "--images", "4", "--warmup", "0"]
    assert speed.main(arguments) == 0
    printed = capsys.readouterr().out
    assert "custom config @ 112 px, fp32" in printed
    assert "    3      6" in printed  # 4 images round up to two batches of 3


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--precision", "fp16"], "fp16 is for GPUs"),
        (["--device", "cuda:7"] if not speed.torch.cuda.is_available() else ["--device", "tpu"], "--device"),
        (["--backbone", "{not json"], "does not parse"),
        (["--backbone", "ViT-Nope"], "Unknown open_clip model"),
        (["--image-size", "100"], "multiple of the backbone's patch size"),
        (["--batch-size", "0"], "at least 1"),
    ],
)
def test_bad_arguments_are_clear_errors(arguments: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    defaults = ["--backbone", MICRO, "--image-size", "112", "--images", "1"]
    assert speed.main([*defaults, *arguments]) == 2
    assert message in capsys.readouterr().err


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
    assert all(set(result) == RESULT_FIELDS for result in few_shot["results"])
    assert report["profile_seconds_per_batch"]["few_shot"] > 0


def test_an_existing_json_file_is_never_overwritten(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    existing = tmp_path / "speed.json"
    existing.write_text("keep me")
    assert speed.main(["--backbone", MICRO, "--image-size", "112", "--json", str(existing)]) == 2
    assert "exists already" in capsys.readouterr().err
    assert existing.read_text() == "keep me"


def resident_bytes() -> int:
    """The process's current resident size, read independently of PeakMemory (Linux's /proc/self/statm)."""
    statm = Path("/proc/self/statm")
    if not statm.is_file():
        pytest.skip("needs /proc/self/statm (Linux) for the resident size")
    import resource

    return int(statm.read_text().split()[1]) * resource.getpagesize()


# The kernel's resident-size counters are approximate (per-thread caches, synchronised every few page faults).
COUNTER_SLACK = 8 * 2**20


def test_peak_memory_is_measured_after_a_reset() -> None:
    memory = speed.PeakMemory(speed.torch.device("cpu"))
    memory.reset()
    baseline = memory.peak()
    block = speed.torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
    peak = memory.peak()
    assert peak >= resident_bytes() - COUNTER_SLACK  # never below what is resident now, block included
    if not memory.since_start:  # /proc/self/clear_refs was writable: the reset started a new measurement
        assert memory.kind == "peak_rss" and peak >= baseline + 60 * 2**20
    del block


def test_peak_memory_since_start_where_it_cannot_be_reset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a writable clear_refs the peak counts from the process start, says so, and is in bytes."""
    monkeypatch.setattr(speed, "_CLEAR_REFS", tmp_path)  # a folder: writing to it fails like a read-only clear_refs
    memory = speed.PeakMemory(speed.torch.device("cpu"))
    memory.reset()
    assert memory.since_start and memory.kind == "peak_rss_since_start"
    block = speed.torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
    resident = resident_bytes()
    assert resident - COUNTER_SLACK <= memory.peak() < 64 * resident  # bytes: KiB taken as bytes is 1024x less
    del block


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


def test_mutual_group_sizes_split_the_cost_between_clip_and_mutual_scoring(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    output = tmp_path / "mutual.json"
    arguments = ["--backbone", MICRO, "--image-size", "112", "--batch-size", "1", "--images", "1", "--warmup", "0"]
    assert speed.main([*arguments, "--mutual-group-sizes", "2", "3", "--json", str(output)]) == 0
    printed = capsys.readouterr().out
    assert "mutual scoring: the rows above are the CLIP passes" in printed and "total s/image" in printed
    assert "groups of [2, 3] images use the small-group rule" in printed  # MuSc's 30 % of 1 or 2 others is none
    mutual = json.loads(output.read_text())["mutual"]
    # MuSc's layers for a 4-block tower (the last block of each quarter); the micro CLIP's shapes at 112 px: an 8 x 8
    # grid of width-64 tokens, 32-dimensional embeddings.
    assert mutual["feature_layers"] == [0, 1, 2, 3] and mutual["r_list"] == [1, 3, 5]
    assert mutual["token_shape"] == [[64, 64]] * 4 and mutual["embedding_dim"] == 32
    assert [group["group_size"] for group in mutual["groups"]] == [2, 3]
    report = json.loads(output.read_text())
    clip = report["results"][0]["seconds_per_image"]
    for group in mutual["groups"]:
        assert group["seconds"] > 0 and group["peak_memory_bytes"] > 0
        assert group["seconds_per_image"] == pytest.approx(group["seconds"] / group["group_size"])
        assert group["clip_seconds_per_image"] == clip
        assert group["total_seconds_per_image"] == pytest.approx(clip + group["seconds_per_image"])
        assert group["total_peak_memory_bytes"] >= group["peak_memory_bytes"]


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--mutual-group-sizes", "1"], "each group needs at least 2 images"),
        (["--mutual-group-sizes", "4", "--k-shot", "2"], "leave out --k-shot"),
    ],
)
def test_mutual_group_sizes_refuse_what_cannot_be_measured(
    option: list[str], message: str, capsys: pytest.CaptureFixture
) -> None:
    assert speed.main(["--backbone", MICRO, "--image-size", "112", "--images", "1", *option]) == 2
    assert message in capsys.readouterr().err
