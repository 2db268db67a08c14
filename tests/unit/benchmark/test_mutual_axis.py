"""Mutual scoring as a benchmark mode: its configuration checks, the mode of each run in the reports, MuSc as the
published counterpart of AdaCLIP with mutual scoring alone (nothing runs; the run numbers are chosen here and MuSc's
published ones are typed from MUSC.md section 7, so every difference is worked out by hand).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest

from anomalib_adaclip.benchmark.config import BenchmarkConfigError, load_config
from anomalib_adaclip.benchmark.paper import AVERAGE, paper_cells, published_counterpart
from anomalib_adaclip.benchmark.report import summarise, write_report
from anomalib_adaclip.benchmark.store import RunRecord, RunStore
from tests.conftest import PROJECT_ROOT
from tests.helpers import adaclip_entry, folder_entry, paper_dataset

MUTUAL_CONFIG = PROJECT_ROOT / "configs" / "benchmark" / "mutual_scoring.yaml"


def mutual_entry(name: str = "AdaCLIP-MuSc", mutual: dict[str, Any] | None = None, **init_args: Any) -> dict[str, Any]:
    arguments = {"backbone_weights": None, "mutual": {"weight": 1.0, "group_size": 8, **(mutual or {})}}
    return adaclip_entry(name=name, init_args={**arguments, **init_args})


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (
            {"name": "WinCLIP", "class_path": "anomalib.models.WinClip", "init_args": {"mutual": {}}},
            "'mutual' is the mutual-scoring group of anomalib_adaclip.AdaCLIP; "
            "anomalib.models.image.winclip.lightning_model.WinClip has none",
        ),
        (
            adaclip_entry(init_args={"backbone_weights": None, "mutual_weight": 1.0, "mutual_group_size": 8}),
            "AdaCLIP's argument `mutual_weight` is now `mutual.weight`",  # the old flat names: their new place
        ),
        (mutual_entry(mutual={"weight": 1.5}), "mutual.weight"),
        (mutual_entry(mutual={"group_size": 1}), "mutual.group_size"),
        (mutual_entry(mutual={"r_list": [2]}), "r_list"),
        (mutual_entry(tiling=True), "tiling"),
        (mutual_entry(mutual={"weight": "high"}), "mutual.weight"),
    ],
)
def test_mutual_settings_are_checked_when_the_configuration_loads(model: dict[str, Any], message: str) -> None:
    with pytest.raises(BenchmarkConfigError) as error:
        load_config({"models": [model], "data": [folder_entry()]})
    assert message in str(error.value)
    assert "models[0]" in str(error.value)  # the entry is named


def test_mutual_null_is_plain_zero_shot() -> None:
    """``mutual: null`` switches the mode off (``mutual: {}`` on, with the defaults)."""
    entry = adaclip_entry(name="AdaCLIP-MuSc", init_args={"backbone_weights": None, "mutual": None})
    spec = load_config({"models": [entry], "data": [folder_entry()]})
    model = spec.model("AdaCLIP-MuSc")
    assert model.mutual_settings("parts") is None and model.mode("parts", "zero_shot") == "zero_shot"
    assert published_counterpart(model, "parts") == "AdaCLIP"
    defaults = load_config({"models": [adaclip_entry(init_args={"mutual": {}})], "data": [folder_entry()]})
    assert defaults.models[0].mutual_settings("parts") == {"weight": 0.5, "group_size": 32}


def test_modes_and_counterparts_of_the_shipped_mutual_config() -> None:
    config = load_config(MUTUAL_CONFIG)
    assert [data.name for data in config.data] == ["MVTecAD", "Visa", "BTech"]  # MuSc's three data sets
    assert [model.name for model in config.models] == ["AdaCLIP", "AdaCLIP-MuSc", "AdaCLIP-mutual"]
    adaclip, musc, fused = (config.model(name) for name in ("AdaCLIP", "AdaCLIP-MuSc", "AdaCLIP-mutual"))
    assert adaclip.mutual_settings("MVTecAD") is None
    assert musc.mutual_settings("BTech") == {"weight": 1.0, "group_size": None}  # the whole category at once
    assert fused.mutual_settings("Visa")["weight"] == 0.5
    assert musc.mode("Visa", "zero_shot") == "mutual_scoring"
    assert musc.mode("Visa", "few_shot") == "few_shot+mutual_scoring"
    assert adaclip.mode("Visa", "zero_shot") == "zero_shot"
    # MuSc's own settings per data set: RsCIN k 1, 8, 9 on VisA, its default elsewhere.
    assert musc.arguments_for("Visa")["mutual"]["rscin_k"] == [1, 8, 9] and "rscin_k" not in musc.init_args["mutual"]
    assert {**musc.init_args["mutual"], "rscin_k": [1, 8, 9]} == musc.arguments_for("Visa")["mutual"]
    for data in config.data:
        arguments = musc.arguments_for(data.name)
        assert (arguments["backbone"], arguments["image_size"]) == ("ViT-L-14-336", 518)  # MuSc's published setting
        assert published_counterpart(musc, data.name) == "MuSc"
        assert published_counterpart(fused, data.name) is None  # a fusion nobody published
        assert published_counterpart(adaclip, data.name) == "AdaCLIP"
    # Every test set (the largest, BTAD 03, has 441 images) is one group, as MuSc scores it.
    assert musc.init_args["mutual"]["group_size"] is None


def finished(model: str, category: str, mode: str, **metrics: float) -> RunRecord:
    return RunRecord(
        model, "MVTecAD", category, 0, "finished", metrics=metrics, learning_type="zero_shot", mode=mode
    )  # fmt: skip


RECORDS = [
    finished("AdaCLIP", "bottle", "zero_shot", image_AUROC=0.90, pixel_AUROC=0.80, image_AUPR=0.95),
    finished("AdaCLIP", "cable", "zero_shot", image_AUROC=0.86, pixel_AUROC=0.84, image_AUPR=0.91),
    finished("AdaCLIP-MuSc", "bottle", "mutual_scoring", image_AUROC=0.99, pixel_AUROC=0.97, image_AUPR=1.0),
    finished("AdaCLIP-MuSc", "cable", "mutual_scoring", image_AUROC=0.95, pixel_AUROC=0.95, image_AUPR=0.96),
    finished("AdaCLIP-mutual", "bottle", "mutual_scoring", image_AUROC=0.97),
]


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory) -> Any:
    models = [adaclip_entry(), mutual_entry(), mutual_entry("AdaCLIP-mutual", mutual={"weight": 0.5})]
    return load_config(
        {"models": models, "data": [paper_dataset("MVTecAD", ["bottle", "cable"])]},
        output=tmp_path_factory.mktemp("mutual"),
    )


def test_musc_is_the_counterpart_of_mutual_scoring_alone(grid: Any) -> None:
    cells = {
        (cell.metric, cell.dataset or cell.group, cell.category, cell.column, cell.kind): cell
        for cell in paper_cells(grid, summarise(RECORDS, grid))
    }
    musc = cells[("image_AUROC", "MVTecAD", "", "AdaCLIP-MuSc", "run")]  # (99 + 95) / 2 against MuSc's 97.77
    assert (musc.value, musc.published, musc.difference) == (pytest.approx(97.0), 97.77, pytest.approx(-0.77))
    pixel = cells[("pixel_AUROC", "MVTecAD", "", "AdaCLIP-MuSc", "run")]  # 96.0 against 97.11
    assert pixel.difference == pytest.approx(-1.11)
    fused = cells[("image_AUROC", "MVTecAD", "", "AdaCLIP-mutual", "run")]  # no published counterpart
    assert (fused.value, fused.published, fused.difference) == (pytest.approx(97.0), None, None)
    adaclip = cells[("image_AUROC", "MVTecAD", "", "AdaCLIP", "run")]  # still against AdaCLIP's 89.2
    assert (adaclip.published, adaclip.difference) == (89.2, pytest.approx(-1.2))
    # The average over the one data set run is compared with MuSc's number on it (MuSc prints no 7-set average).
    average = cells[("image_AUROC", "industrial", AVERAGE, "AdaCLIP-MuSc", "run")]
    assert (average.published, average.difference) == (97.77, pytest.approx(-0.77))
    assert "1 of the paper's 7" in average.note
    # Per category the supplementary tables are AdaCLIP's: no reference for mutual scoring.
    assert cells[("image_AUROC", "MVTecAD", "bottle", "AdaCLIP-MuSc", "run")].published is None
    # MuSc's image AP (99.07) beside the run's: (100 + 96) / 2 = 98.0.
    ap = cells[("image_AUPR", "MVTecAD", "", "AdaCLIP-MuSc", "run")]
    assert (ap.value, ap.published, ap.difference) == (pytest.approx(98.0), 99.07, pytest.approx(-1.07))
    assert cells[("image_AUPR", "MVTecAD", "", "AdaCLIP", "run")].published is None


def test_reports_name_each_runs_mode(grid: Any) -> None:
    store = RunStore(grid.output / "runs")
    for record in RECORDS:
        store.save(record)
    report_dir, _, _, _ = write_report(grid, store)
    markdown = (report_dir / "results.md").read_text()
    assert "| Model | Class | Mode | Mutual scoring |" in markdown
    assert "| AdaCLIP | AdaCLIP | zero-shot | off |" in markdown
    assert "| AdaCLIP-MuSc | AdaCLIP | mutual scoring | weight 1.0, group_size 8 |" in markdown
    with (report_dir / "runs.csv").open(newline="") as file:
        runs = {(row["model"], row["category"]): row["mode"] for row in csv.DictReader(file)}
    assert runs[("AdaCLIP-MuSc", "cable")] == "mutual_scoring" and runs[("AdaCLIP", "bottle")] == "zero_shot"
    with (report_dir / "results.csv").open(newline="") as file:
        results = {(row["model"], row["category"]): row["mode"] for row in csv.DictReader(file)}
    assert results[("AdaCLIP-mutual", "mean")] == "mutual_scoring" and results[("AdaCLIP", "mean")] == "zero_shot"
    assert results[("AdaCLIP-mutual", "cable")] == ""  # no run there yet


def test_records_without_a_mode_still_load(tmp_path: Path) -> None:
    """Records written before modes existed have no ``mode`` key: they read as ``None``."""
    record = RunRecord("AdaCLIP", "parts", "gear", 0, "finished", metrics={"image_AUROC": 0.5})
    path = tmp_path / "seed0.json"
    text = record.to_json().replace('  "mode": null,\n', "")
    assert '"mode"' not in text
    path.write_text(text)
    assert RunRecord.read(path).mode is None
