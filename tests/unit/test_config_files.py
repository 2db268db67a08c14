"""Shipped configurations: every file of the repository's configs/ is found by name, and bad names are explained."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from anomalib_adaclip.cli import main
from anomalib_adaclip.config import SMOKE_BACKBONE, SMOKE_IMAGE_SIZE
from anomalib_adaclip.config_files import (
    CONFIG_DIR,
    UnknownConfigError,
    resolve_config,
    resolve_config_arguments,
    shipped_configs,
)
from tests.conftest import PROJECT_ROOT

REPOSITORY_CONFIGS = sorted(
    path.relative_to(PROJECT_ROOT / "configs").as_posix() for path in (PROJECT_ROOT / "configs").rglob("*.yaml")
)


def test_the_shipped_configurations_are_the_repositorys() -> None:
    assert shipped_configs() == REPOSITORY_CONFIGS
    assert "benchmark/paper_full.yaml" in REPOSITORY_CONFIGS and "mvtecad.yaml" in REPOSITORY_CONFIGS
    for relative in REPOSITORY_CONFIGS:
        assert (CONFIG_DIR / relative).read_bytes() == (PROJECT_ROOT / "configs" / relative).read_bytes()


@pytest.mark.parametrize(
    ("value", "kind", "expected"),
    [
        ("paper_full", "benchmark", "benchmark/paper_full.yaml"),
        ("paper_full", "anomalib", "benchmark/paper_full.yaml"),  # unique anywhere
        ("paper_full.yaml", "benchmark", "benchmark/paper_full.yaml"),
        ("benchmark/paper_full.yaml", "anomalib", "benchmark/paper_full.yaml"),
        ("benchmark/paper_full", "train", "benchmark/paper_full.yaml"),
        ("configs/benchmark/paper_full.yaml", "benchmark", "benchmark/paper_full.yaml"),  # the README's path
        ("custom_folder", "benchmark", "benchmark/custom_folder.yaml"),  # the command's folder first
        ("custom_folder", "train", "train/custom_folder.yaml"),
        ("mvtecad", "anomalib", "mvtecad.yaml"),
        ("visa_clinicdb", "train", "train/visa_clinicdb.yaml"),
    ],
)
def test_a_shipped_configuration_is_found_by_name(
    value: str, kind: str, expected: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # not the repository: the repository path must not be what makes it work
    assert resolve_config(value, kind) == CONFIG_DIR / expected


def test_an_existing_file_wins_over_a_shipped_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "paper_full").write_text("own: true\n")
    assert resolve_config("paper_full", "benchmark") == Path("paper_full")


def test_an_ambiguous_or_unknown_name_is_refused_with_the_choices(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UnknownConfigError, match=r"benchmark/custom_folder\.yaml, train/custom_folder\.yaml"):
        resolve_config("custom_folder", "anomalib")
    with pytest.raises(UnknownConfigError) as caught:
        resolve_config("paper_ful", "benchmark")
    message = str(caught.value)
    assert "--config paper_ful: paper_ful does not exist" in message
    assert all(name in message for name in REPOSITORY_CONFIGS)


def test_config_options_are_rewritten_in_every_form(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    target = str(CONFIG_DIR / "benchmark" / "paper.yaml")
    assert resolve_config_arguments(["--config", "paper", "--dry-run"], "benchmark") == [
        "--config",
        target,
        "--dry-run",
    ]
    assert resolve_config_arguments(["report", "--config=paper"], "benchmark") == ["report", f"--config={target}"]
    assert resolve_config_arguments(["fit", "-c", "mvtecad"]) == ["fit", "-c", str(CONFIG_DIR / "mvtecad.yaml")]
    inline = ["train", "--config", "trainer: {max_epochs: 1}", "--config={}"]  # jsonargparse's inline configuration
    assert resolve_config_arguments(inline, "train") == inline


def test_the_command_refuses_an_unknown_config_before_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["benchmark", "--config", "nope", "--dry-run"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("anomalib-adaclip benchmark: error: --config nope: nope does not exist")
    assert "benchmark/paper_full.yaml" in error


def test_the_smoke_configurations_carry_the_smoke_backbone_with_random_weights() -> None:
    predict = yaml.safe_load(resolve_config("smoke", "anomalib").read_text())
    benchmark = yaml.safe_load(resolve_config("smoke", "benchmark").read_text())
    for init_args in (predict["model"]["init_args"], benchmark["models"][0]["init_args"]):
        assert init_args["backbone"] == SMOKE_BACKBONE  # the quick start's tiny CLIP, written out in YAML
        assert init_args["backbone_weights"] is None and init_args["image_size"] == SMOKE_IMAGE_SIZE
    assert predict["seed_everything"] == 0  # the same random weights in every run and resume
    assert (PROJECT_ROOT / benchmark["data"][0]["init_args"]["root"] / "tire" / "test").is_dir()
