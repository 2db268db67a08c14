"""The benchmark configuration: every error names the entry and what was expected; the shipped configs load.

Nothing is built or run: :func:`~anomalib_adaclip.benchmark.config.load_config` imports the class paths and
type-checks every ``init_args`` only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from anomalib.data.datasets.image.mvtecad import CATEGORIES as MVTEC_CATEGORIES
from anomalib.data.datasets.image.visa import CATEGORIES as VISA_CATEGORIES

import anomalib_adaclip.data
from anomalib_adaclip import cli
from anomalib_adaclip.benchmark.config import BenchmarkConfigError, load_config
from anomalib_adaclip.benchmark.published import PAPER_GROUPS, load_published
from anomalib_adaclip.weights.hub import RELEASED_CHECKPOINTS
from tests.conftest import PROJECT_ROOT
from tests.helpers import adaclip_entry, folder_entry, with_overrides


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


# The paper's 14 data sets need the data modules of branch "data" (issue 13: KSDD, DAGM, ..., TN3K).
PAPER_DATA_MODULES = all(hasattr(anomalib_adaclip.data, name) for name in ("KSDD", "DAGM", "HeadCT", "ISIC", "TN3K"))
needs_paper_data = pytest.mark.skipif(
    not PAPER_DATA_MODULES, reason="anomalib_adaclip.data has no KSDD, DAGM, ... yet (branch data, issue 13)"
)
SHIPPED = [
    pytest.param(path, id=path.stem, marks=[needs_paper_data] if path.stem.startswith("paper_full") else [])
    for path in sorted((PROJECT_ROOT / "configs" / "benchmark").glob("*.yaml"))
]
PAPER_FULL = PROJECT_ROOT / "configs" / "benchmark" / "paper_full.yaml"
PAPER_FULL_PEERS = PROJECT_ROOT / "configs" / "benchmark" / "paper_full_peers.yaml"


@pytest.mark.parametrize("path", SHIPPED)
def test_shipped_configs_load_and_comment_every_setting(path: Path) -> None:
    config = load_config(path)  # class paths import and every init_args fits its constructor; nothing is built
    assert config.output == Path("results/benchmark") / config.output.name
    for number, line in enumerate(path.read_text().splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", "- name:", "class_path:")) or stripped.endswith(":"):
            continue
        if stripped.startswith(("categories:", "transistor", "pipe_fryum", "Woven_001")):
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

    def k_shot(arguments: dict) -> int:  # WinCLIP's flat argument, AdaCLIP's few_shot group
        return arguments.get("k_shot", (arguments.get("few_shot") or {}).get("k_shot", 0))

    shots = {model.name: model.train_images or k_shot(model.arguments_for("MVTecAD")) for model in config.models}
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


# The authors' test.sh: prompts trained on VisA + ClinicDB for MVTec AD and ColonDB, on MVTec AD + ColonDB elsewhere.
PAPER_CHECKPOINTS = {
    "MVTecAD": "visa_clinicdb", "Visa": "mvtec_colondb", "MPDD": "mvtec_colondb", "BTech": "mvtec_colondb",
    "KSDD": "mvtec_colondb", "DAGM": "mvtec_colondb", "DTDSynthetic": "mvtec_colondb", "HeadCT": "mvtec_colondb",
    "BrainMRI": "mvtec_colondb", "Br35H": "mvtec_colondb", "ISIC": "mvtec_colondb", "ColonDB": "visa_clinicdb",
    "ClinicDB": "mvtec_colondb", "TN3K": "mvtec_colondb",
}  # fmt: skip
PAPER_CATEGORY_COUNTS = {
    "MVTecAD": 15, "Visa": 12, "MPDD": 6, "BTech": 3, "KSDD": 1, "DAGM": 10, "DTDSynthetic": 12, "HeadCT": 1,
    "BrainMRI": 1, "Br35H": 1, "ISIC": 1, "ColonDB": 1, "ClinicDB": 1, "TN3K": 1,
}  # fmt: skip


def checkpoint_of(model: dict[str, Any], dataset: str) -> str:
    return {**model["init_args"], **model.get("init_args_by_dataset", {}).get(dataset, {})}["checkpoint"]


@pytest.mark.parametrize("path", [PAPER_FULL, PAPER_FULL_PEERS], ids=["paper_full", "paper_full_peers"])
def test_paper_full_has_the_papers_14_data_sets_and_checkpoints(path: Path) -> None:
    """Read as YAML (no class imported), so it runs before the data modules exist."""
    raw = yaml.safe_load(path.read_text())
    names = [entry["name"] for entry in raw["data"]]
    assert names == [name for group in PAPER_GROUPS for name in group.datasets]  # the paper's row order
    assert {entry["name"]: len(entry["categories"]) for entry in raw["data"]} == PAPER_CATEGORY_COUNTS
    assert sum(len(entry["categories"]) for entry in raw["data"]) == 66
    published = load_published()
    for entry in raw["data"]:
        if published.categories(entry["name"]):  # the supplementary tables name the categories
            assert tuple(entry["categories"]) == published.categories(entry["name"]), entry["name"]
        assert entry["init_args"]["root"] == f"./datasets/{entry['name']}" or entry["name"] == "Visa"
    adaclip = next(model for model in raw["models"] if model["name"] == "AdaCLIP")
    assert {name: checkpoint_of(adaclip, name) for name in names} == PAPER_CHECKPOINTS
    assert set(PAPER_CHECKPOINTS.values()) <= set(RELEASED_CHECKPOINTS) - {"all"}  # "all" saw every test set
    assert adaclip["init_args"]["backbone"] == "ViT-L-14-336" and adaclip["init_args"]["image_size"] == 518
    assert raw["output"] == "results/benchmark/paper_full"  # peers land in the same folder, beside AdaCLIP's runs
    text = path.read_text()
    if path == PAPER_FULL:
        assert "paper's text" in text and "move the ColonDB" in text and "ClinicDB" in text  # how to switch
    else:
        assert raw["data"] == yaml.safe_load(PAPER_FULL.read_text())["data"]
        full = next(model for model in yaml.safe_load(PAPER_FULL.read_text())["models"] if model["name"] == "AdaCLIP")
        assert adaclip == full  # the same AdaCLIP: its finished runs are shared
        assert {model["name"] for model in raw["models"]} == {"AdaCLIP", "WinCLIP", "AnomalyVFM"}


@needs_paper_data
def test_paper_full_loads_with_66_categories_and_the_per_row_checkpoint() -> None:
    config = load_config(PAPER_FULL)
    assert len(config.data) == 14 and len(config.grid()) == 66
    adaclip = config.model("AdaCLIP")
    assert {data.name: adaclip.arguments_for(data.name)["checkpoint"] for data in config.data} == PAPER_CHECKPOINTS


def test_overrides_replace_roots_and_model_arguments_everywhere(tmp_path: Path) -> None:
    by_dataset = {"parts": {"image_size": 224, "checkpoint": "visa_clinicdb"}}
    config = load_config(
        {"models": [adaclip_entry(init_args_by_dataset=by_dataset)], "data": [folder_entry()], "output": "out"}
    )
    changed = with_overrides(
        config,
        data_init_args={"parts": {"root": str(tmp_path / "{category}")}, "*": {"num_workers": 0}},
        model_init_args={"*": {"image_size": 112, "checkpoint": None}},
        output=tmp_path / "out",
    )
    assert changed.dataset("parts").arguments_for("gear")["root"] == str(tmp_path / "gear")
    assert changed.dataset("parts").arguments_for("gear")["num_workers"] == 0
    arguments = changed.model("AdaCLIP").arguments_for("parts")  # the override wins over init_args_by_dataset too
    assert (arguments["image_size"], arguments["checkpoint"]) == (112, None)
    assert changed.output == tmp_path / "out" and changed.source == config.source
    assert config.model("AdaCLIP").arguments_for("parts")["image_size"] == 224  # the original is unchanged
    cut = with_overrides(config, datasets={"parts": ["bracket"]})
    assert cut.dataset("parts").categories == ("bracket",) and len(cut.grid()) == 1
    assert cut.model("AdaCLIP").arguments_for("parts")["image_size"] == 224  # its init_args_by_dataset entry is kept
    with pytest.raises(BenchmarkConfigError, match=r"has no categories \['wheel'\]"):
        with_overrides(config, datasets={"parts": ["wheel"]})
    with pytest.raises(BenchmarkConfigError, match=r"unknown data \['Parts'\]"):
        with_overrides(config, data_init_args={"Parts": {"root": "x"}})
    with pytest.raises(BenchmarkConfigError, match="init_args do not fit"):
        with_overrides(config, model_init_args={"AdaCLIP": {"imagesize": 3}})
