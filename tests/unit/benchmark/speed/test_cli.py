"""The speed benchmark's command line (``benchmark/speed/cli.py``): its arguments, their checks and a run in process.

The model is the micro CLIP with random weights; no speed is asserted.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from anomalib_adaclip.benchmark import speed
from anomalib_adaclip.benchmark.speed import cli
from anomalib_adaclip.config import AdaCLIPConfig
from tests.conftest import MICRO_BACKBONE
from tests.helpers import SPEED_RESULT_FIELDS

MICRO = json.dumps(MICRO_BACKBONE)


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
        assert set(result) == SPEED_RESULT_FIELDS
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


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--precision", "fp16"], "fp16 is for GPUs"),
        (["--device", "cuda:7"] if not torch.cuda.is_available() else ["--device", "tpu"], "--device"),
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


def test_an_existing_json_file_is_never_overwritten(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    existing = tmp_path / "speed.json"
    existing.write_text("keep me")
    arguments = ["--backbone", MICRO, "--image-size", "112", "--batch-size", "1", "--images", "1", "--warmup", "0"]
    assert speed.main([*arguments, "--json", str(existing)]) == 0
    assert existing.read_text() == "keep me"
    written = tmp_path / "speed-v1.json"  # the next free name, as every file the package writes
    assert f"report written to {written}" in capsys.readouterr().out
    assert json.loads(written.read_text())["results"][0]["images"] == 1


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


def test_defaults_are_the_documented_ones_and_the_models() -> None:
    """The help's defaults: batch 8, 32 images, one warm-up batch, the CPU in fp32, torch; the model's backbone."""
    args = cli.parse_args([])
    assert (args.backbone, args.image_size) == (AdaCLIPConfig().backbone, AdaCLIPConfig().image_size)
    assert (args.batch_size, args.images, args.warmup, args.threads) == (8, 32, 1, 0)
    assert (args.device, args.precision, args.runtime) == ("cpu", "fp32", ["torch"])
    assert (args.k_shot, args.mutual_group_sizes, args.json) == (0, None, None)
    assert not (args.no_hsf or args.compare_batch1 or args.profile)
    parsed = cli.parse_args(["--mutual-group-sizes", "2", "4", "--json", "out/speed.json", "--runtime", "openvino"])
    assert parsed.mutual_group_sizes == [2, 4] and parsed.json == Path("out/speed.json")
    assert parsed.runtime == ["openvino"]


@pytest.mark.parametrize("arguments", [["--precision", "fp64"], ["--runtime", "tensorrt"], ["--batch-size", "two"]])
def test_values_outside_the_choices_stop_the_parser(arguments: list[str], capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as raised:
        cli.main(arguments)
    assert raised.value.code == 2
    assert arguments[0] in capsys.readouterr().err


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--warmup", "-1"], "--warmup and --k-shot at least 0"),
        (["--k-shot", "-2"], "--warmup and --k-shot at least 0"),
        (["--images", "0"], "--images must be at least 1"),
        (["--mutual-group-sizes", "2", "--runtime", "torch", "openvino"], "leave out --k-shot and --runtime openvino"),
    ],
)
def test_arguments_are_checked_before_a_model_is_built(
    arguments: list[str], message: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    def no_model(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("a model was built for arguments that cannot work")

    monkeypatch.setattr(cli, "build_model", no_model)
    assert cli.main(["--backbone", MICRO, "--image-size", "112", *arguments]) == 2
    assert message in capsys.readouterr().err
