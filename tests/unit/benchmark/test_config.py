"""The benchmark configuration: every error names the entry and what was expected; the shipped configs load.

Nothing is built or run: :func:`~anomalib_adaclip.benchmark.config.load_config` imports the class paths and
type-checks every ``init_args`` only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from anomalib.data.datasets.image.mvtecad import CATEGORIES as MVTEC_CATEGORIES
from anomalib.data.datasets.image.visa import CATEGORIES as VISA_CATEGORIES

from anomalib_adaclip import cli
from anomalib_adaclip.benchmark.config import BenchmarkConfigError, load_config
from tests.conftest import PROJECT_ROOT


def folder_entry(**overrides: Any) -> dict[str, Any]:
    entry = {
        "class_path": "anomalib.data.Folder",
        "init_args": {"name": "parts", "root": "data/{category}", "normal_dir": "good", "abnormal_dir": "bad"},
        "categories": ["gear", "bracket"],
    }
    entry.update(overrides)
    return entry


def adaclip_entry(**overrides: Any) -> dict[str, Any]:
    entry = {"name": "AdaCLIP", "class_path": "anomalib_adaclip.AdaCLIP", "init_args": {"backbone_weights": None}}
    entry.update(overrides)
    return entry


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"modelz": []}, "unknown key(s) ['modelz']"),
        ({"models": []}, "'models' must be a non-empty list"),
        ({"models": [adaclip_entry(init_args={"imagesize": 3})]}, "init_args do not fit anomalib_adaclip"),
        ({"models": [adaclip_entry(init_args={"image_size": "big"})]}, 'Parser key "init.image_size"'),
        ({"models": [adaclip_entry(class_path="anomalib.models.NoSuchModel")]}, "cannot be imported"),
        ({"models": [adaclip_entry(class_path="anomalib.data.MVTecAD")]}, "is not a subclass of"),
        ({"models": [adaclip_entry(), adaclip_entry()]}, "two models are called 'AdaCLIP'"),
        ({"models": [adaclip_entry(name="Ada CLIP")]}, "must be a non-empty folder name"),
        ({"models": [adaclip_entry(init_args_by_dataset={"Visa": {}})]}, "unknown data sets ['Visa']"),
        ({"models": [adaclip_entry(init_args={"evaluator": False})]}, "leave out 'evaluator'"),
        ({"data": [folder_entry(init_args={"name": "p", "root": "d", "normal_dir": "g"})]}, "put {category} into"),
        ({"data": [folder_entry(categories=None)]}, "use {category} but no categories are listed"),
        ({"data": [{"class_path": "MVTecAD", "init_args": {"root": "d"}}]}, "MVTecAD needs categories"),
        (
            {"data": [{"class_path": "MVTecAD", "init_args": {"category": "bottle"}, "categories": ["x"]}]},
            "not as init_args.category",
        ),
        ({"seeds": [0, 0]}, "two seeds are called '0'"),
        ({"seeds": "0"}, "seeds must be a non-empty list of integers"),
        ({"score_normalization": "yes"}, "score_normalization must be true or false, got 'yes'"),
        ({"engine": {"default_root_dir": "x"}}, "engine.default_root_dir is set by the benchmark"),
        ({"engine": {"acelerator": "cpu"}}, "unknown engine argument(s) ['acelerator']"),
    ],
)
def test_configuration_errors_name_the_entry_and_what_was_expected(change: dict[str, Any], message: str) -> None:
    config = {"models": [adaclip_entry()], "data": [folder_entry()], **change}
    with pytest.raises(BenchmarkConfigError) as error:
        load_config(config)
    assert message in str(error.value)


SHIPPED = sorted((PROJECT_ROOT / "configs" / "benchmark").glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=[path.stem for path in SHIPPED])
def test_shipped_configs_load_and_comment_every_setting(path: Path) -> None:
    config = load_config(path)  # class paths import and every init_args fits its constructor; nothing is built
    assert config.output == Path("results/benchmark") / config.output.name
    for number, line in enumerate(path.read_text().splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", "- name:", "class_path:")) or stripped.endswith(":"):
            continue
        if stripped.startswith(("categories:", "transistor", "pipe_fryum")):
            continue  # the category lists speak for themselves
        assert "#" in stripped, f"{path.name}:{number} has no comment: {stripped}"


def test_paper_config_has_the_papers_layout(capsys: pytest.CaptureFixture) -> None:
    config = load_config(PROJECT_ROOT / "configs" / "benchmark" / "paper.yaml")
    assert [data.name for data in config.data] == ["MVTecAD", "Visa"]
    assert config.dataset("MVTecAD").categories == MVTEC_CATEGORIES  # all 15
    assert config.dataset("Visa").categories == VISA_CATEGORIES  # all 12
    adaclip = config.model("AdaCLIP")
    assert adaclip.class_path == "anomalib_adaclip.AdaCLIP"
    # The paper's protocol: never test on data the prompts were trained on.
    assert adaclip.arguments_for("MVTecAD")["checkpoint"] == "visa_clinicdb"
    assert adaclip.arguments_for("Visa")["checkpoint"] == "mvtec_colondb"
    assert adaclip.arguments_for("MVTecAD")["backbone"] == "ViT-L-14-336"
    assert adaclip.arguments_for("MVTecAD")["image_size"] == 518
    assert config.model("WinCLIP").class_path == "anomalib.models.WinClip"
    assert len(config.grid()) == 2 * (15 + 12)
    assert config.score_normalization is False  # metrics on raw outputs, as the paper computes them
    # --dry-run lists the grid without building anything.
    assert cli.main(["benchmark", "--config", str(PROJECT_ROOT / "configs/benchmark/paper.yaml"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "54 runs" in out and "pending   AdaCLIP · Visa/pipe_fryum · seed 0" in out


def test_few_shot_config_has_the_k_shot_axis() -> None:
    config = load_config(PROJECT_ROOT / "configs" / "benchmark" / "few_shot.yaml")
    shots = {
        model.name: model.train_images or model.arguments_for("MVTecAD").get("k_shot", 0) for model in config.models
    }
    assert shots == {
        "AdaCLIP": 0,
        "AdaCLIP-1shot": 1,
        "AdaCLIP-2shot": 2,
        "AdaCLIP-4shot": 4,
        "WinCLIP": 0,
        "WinCLIP-1shot": 1,
        "WinCLIP-2shot": 2,
        "WinCLIP-4shot": 4,
        "AnomalyDINO-1shot": 1,  # fitted on train_images training images
        "AnomalyDINO-2shot": 2,
        "AnomalyDINO-4shot": 4,
    }
    assert all(
        config.model(name).arguments_for("MVTecAD")["checkpoint"] == "visa_clinicdb"
        for name in shots
        if name.startswith("AdaCLIP")
    )
    assert len(config.grid()) == 11 * 15
