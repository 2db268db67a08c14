"""Online rarity scoring (RareCLIP) as a benchmark mode: the seeded order, the mode of each run, RareCLIP's published
rows in the paper tables, the shipped online.yaml (nothing is scored; the run numbers are chosen here and RareCLIP's
published ones are typed from the results table of its README, commit a8e6d46, so every difference is worked out by
hand). The whole pipeline with a tiny CLIP runs in tests/integration/test_benchmark.py.
"""

from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from anomalib.data import MVTecAD
from lightning.pytorch.trainer.states import TrainerFn

from anomalib_adaclip import cli
from anomalib_adaclip.benchmark.config import BenchmarkConfigError, load_config
from anomalib_adaclip.benchmark.paper import AVERAGE, paper_cells, published_counterpart
from anomalib_adaclip.benchmark.published import PEER_FILES, PEER_METHODS, PEER_PUBLICATIONS, load_published
from anomalib_adaclip.benchmark.report import summarise
from anomalib_adaclip.benchmark.runner import BenchmarkJob, SeededTestOrder, TrainingSubset, write_reports
from anomalib_adaclip.benchmark.store import RunRecord, RunStore
from tests.conftest import PROJECT_ROOT, TIRE_ROOT
from tests.helpers import adaclip_entry, folder_entry, make_adaclip, paper_dataset

ONLINE_CONFIG = PROJECT_ROOT / "configs" / "benchmark" / "online.yaml"
TINY_SCORING = {"text_layers": [2, 4], "rarity_layers": [1, 3]}


def rarity_entry(name: str = "AdaCLIP-RareCLIP", **rarity: Any) -> dict[str, Any]:
    group = {"weight": 1.0, "text_branch": "tpb", "scoring": TINY_SCORING, **rarity}
    return adaclip_entry(name=name, init_args={"backbone_weights": None, "rarity": group})


# ----------------------------------------------------------------------------------------------------------------------
# The seeded order
# ----------------------------------------------------------------------------------------------------------------------


def tire_data(val_split_mode: str = "same_as_test") -> MVTecAD:
    return MVTecAD(root=TIRE_ROOT, category="tire", num_workers=0, val_split_mode=val_split_mode)


def paths(dataset: Any) -> list[str]:
    return [str(path) for path in dataset.samples.image_path]


def ordered_by(callback: SeededTestOrder, datamodule: MVTecAD, stage: TrainerFn) -> None:
    """What Lightning does at a stage's start: the data module's setup, then the callbacks'."""
    datamodule.setup(stage)
    callback.setup(SimpleNamespace(datamodule=datamodule), None, stage)  # type: ignore[arg-type]


def test_the_seeded_order_is_a_permutation_of_the_seed_shared_by_validation_and_test() -> None:
    datamodule = tire_data()
    datamodule.setup(TrainerFn.VALIDATING)
    original = paths(datamodule.test_data)
    assert len(original) == 15 and paths(datamodule.val_data) == original  # same_as_test: a copy of the test images
    datamodule = tire_data()
    callback = SeededTestOrder(seed=0)
    ordered_by(callback, datamodule, TrainerFn.VALIDATING)
    order = list(range(15))
    random.Random(0).shuffle(order)  # RareCLIP's test.py: random.seed(seed); random.shuffle(the category's images)
    assert paths(datamodule.test_data) == [original[index] for index in order] != original
    assert paths(datamodule.val_data) == paths(datamodule.test_data)  # the validation sees the test's order
    # Masks and labels travel with their images.
    samples = datamodule.test_data.samples
    assert all(
        ("good" in image) == (label == 0) for image, label in zip(samples.image_path, samples.label_index, strict=True)
    )
    # Engine.test's second stage: the data module keeps its sets and the callback leaves its own as they are.
    test_data, val_data = datamodule.test_data, datamodule.val_data
    ordered_by(callback, datamodule, TrainerFn.TESTING)
    assert datamodule.test_data is test_data and datamodule.val_data is val_data
    # Sets built again (a fresh data module) are drawn again, in the same order; another seed, another order.
    rebuilt = tire_data()
    ordered_by(SeededTestOrder(seed=0), rebuilt, TrainerFn.TESTING)
    assert paths(rebuilt.test_data) == paths(test_data)
    other = tire_data()
    ordered_by(SeededTestOrder(seed=1), other, TrainerFn.TESTING)
    assert sorted(paths(other.test_data)) == sorted(original) and paths(other.test_data) != paths(test_data)


def test_a_validation_set_that_is_not_the_test_images_keeps_its_order() -> None:
    datamodule = tire_data("from_test")  # a validation split taken out of the test images: other images
    datamodule.setup(TrainerFn.VALIDATING)
    val_before = paths(datamodule.val_data)
    test_before = paths(datamodule.test_data)
    SeededTestOrder(seed=3).setup(SimpleNamespace(datamodule=datamodule), None, TrainerFn.VALIDATING)  # type: ignore[arg-type]
    assert paths(datamodule.val_data) == val_before
    assert sorted(paths(datamodule.test_data)) == sorted(test_before) and paths(datamodule.test_data) != test_before


def test_only_online_runs_are_reordered_and_they_skip_the_validation_on_raw_scores(tmp_path: Path) -> None:
    models = [adaclip_entry(), rarity_entry(), adaclip_entry(name="AdaCLIP-4shot", train_images=4)]
    config = load_config({"models": models, "data": [folder_entry()], "seeds": [0, 7]}, output=tmp_path)

    def job(model: str, seed: int = 7) -> BenchmarkJob:
        return BenchmarkJob(next(key for key in config.grid() if (key.model, key.seed) == (model, seed)), config)

    online = job("AdaCLIP-RareCLIP").data_callbacks()
    assert [callback.seed for callback in online if isinstance(callback, SeededTestOrder)] == [7]
    assert not any(isinstance(callback, SeededTestOrder) for callback in job("AdaCLIP").data_callbacks())
    subset = job("AdaCLIP-4shot").data_callbacks()
    assert not any(isinstance(c, SeededTestOrder) for c in subset) and any(
        isinstance(c, TrainingSubset) for c in subset
    )
    # Engine.test's validation (thresholds) changes no raw-score metric of an online run: it is skipped there only.
    assert job("AdaCLIP-RareCLIP").engine_arguments()["limit_val_batches"] == 0
    assert "limit_val_batches" not in job("AdaCLIP").engine_arguments()
    normalised = load_config(
        {"models": models, "data": [folder_entry()], "score_normalization": True}, output=tmp_path / "normalised"
    )
    key = next(key for key in normalised.grid() if key.model == "AdaCLIP-RareCLIP")
    assert "limit_val_batches" not in BenchmarkJob(key, normalised).engine_arguments()  # it learns the min-max


# ----------------------------------------------------------------------------------------------------------------------
# The mode and the configuration checks
# ----------------------------------------------------------------------------------------------------------------------


def test_a_model_with_the_rarity_group_runs_online() -> None:
    entries = [adaclip_entry(), rarity_entry(), rarity_entry("AdaCLIP-rarity", weight=0.5)]
    entries.append(adaclip_entry(name="AdaCLIP-off", init_args={"backbone_weights": None, "rarity": None}))
    config = load_config({"models": entries, "data": [folder_entry()]})
    adaclip, rareclip, fused, off = config.models
    assert (
        rareclip.online("parts") and fused.online("parts") and not adaclip.online("parts") and not off.online("parts")
    )
    assert rareclip.mode("parts", "zero_shot") == "online"
    assert rareclip.mode("parts", "few_shot") == "few_shot+online"
    assert off.mode("parts", "zero_shot") == adaclip.mode("parts", "zero_shot") == "zero_shot"
    assert rareclip.rarity_settings("parts") == {"weight": 1.0, "text_branch": "tpb"}
    # RareCLIP's own outputs are compared with its published numbers; a fusion, or AdaCLIP's map as its text side,
    # is a method nobody published.
    assert published_counterpart(rareclip, "parts") == "RareCLIP"
    assert published_counterpart(fused, "parts") is None
    adaclip_text = load_config({"models": [rarity_entry(text_branch="adaclip")], "data": [folder_entry()]}).models[0]
    assert published_counterpart(adaclip_text, "parts") is None
    assert published_counterpart(off, "parts") == published_counterpart(adaclip, "parts") == "AdaCLIP"


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (
            {"name": "WinCLIP", "class_path": "anomalib.models.WinClip", "init_args": {"rarity": {}}},
            "'rarity' is the rarity-scoring group of anomalib_adaclip.AdaCLIP; "
            "anomalib.models.image.winclip.lightning_model.WinClip has none (the online mode is AdaCLIP's)",
        ),
        (rarity_entry(weight=1.5), "rarity.weight"),
        (rarity_entry(text_branch="clip"), "rarity.text_branch"),
        (
            adaclip_entry(init_args={"backbone_weights": None, "rarity": {"scoring": TINY_SCORING}, "mutual": {}}),
            "rarity cannot be combined with mutual",
        ),
        (
            adaclip_entry(init_args={"backbone_weights": None, "rarity": {"scoring": TINY_SCORING}, "tiling": True}),
            "rarity cannot be combined with tiling",
        ),
    ],
)
def test_rarity_settings_are_checked_when_the_configuration_loads(model: dict[str, Any], message: str) -> None:
    with pytest.raises(BenchmarkConfigError) as error:
        load_config({"models": [model], "data": [folder_entry()]})
    assert message in str(error.value)
    assert "models[0]" in str(error.value)  # the entry is named


def test_the_shipped_online_config(capsys: pytest.CaptureFixture) -> None:
    config = load_config(ONLINE_CONFIG)
    assert [data.name for data in config.data] == ["MVTecAD", "Visa"]  # RareCLIP's two data sets
    assert [model.name for model in config.models] == ["AdaCLIP", "AdaCLIP-RareCLIP", "AdaCLIP-rarity"]
    assert config.seeds == (0, 1, 2, 3, 4)  # RareCLIP's test.sh
    assert config.score_normalization is False
    adaclip, rareclip, fused = config.models
    # RareCLIP's test.sh: the TPB layers trained on the other data set (VisA's for MVTec AD, MVTec AD's for VisA).
    for model, weight in ((rareclip, 1.0), (fused, 0.5)):
        for dataset, trained_on in (("MVTecAD", "visa"), ("Visa", "mvtec")):
            arguments = model.arguments_for(dataset)
            assert (arguments["backbone"], arguments["backbone_weights"], arguments["image_size"]) == (
                "ViT-L-14-336", "openai", 518
            )  # fmt: skip
            group = arguments["rarity"]
            assert (group["weight"], group["text_branch"]) == (weight, "tpb")
            assert Path(group["tpb_weights"]).name == f"{trained_on}_pretrained.pth"
            assert model.mode(dataset, "zero_shot") == "online"
    # RareCLIP's test.py defaults, spelled out for VisA and the same ({} = the defaults) for MVTec AD.
    from anomalib_adaclip.config import RarityScoringConfig

    assert RarityScoringConfig(**rareclip.arguments_for("Visa")["rarity"]["scoring"]) == RarityScoringConfig()
    assert rareclip.arguments_for("MVTecAD")["rarity"]["scoring"] == {}
    assert adaclip.mode("MVTecAD", "zero_shot") == "zero_shot"
    assert [published_counterpart(model, "Visa") for model in config.models] == ["AdaCLIP", "RareCLIP", None]
    assert len(config.grid()) == 3 * (15 + 12) * 5
    assert cli.main(["benchmark", "--config", "online", "--dry-run"]) == 0  # the shipped name
    out = capsys.readouterr().out
    assert "405 runs" in out and "pending   AdaCLIP-RareCLIP · Visa/pipe_fryum · seed 4 (online)" in out
    assert "pending   AdaCLIP · MVTecAD/bottle · seed 0\n" in out  # AdaCLIP alone: not online


# ----------------------------------------------------------------------------------------------------------------------
# RareCLIP's published rows and the paper tables
# ----------------------------------------------------------------------------------------------------------------------

# The results table of RareCLIP's README (assets/zero-shot.png, commit a8e6d46), online rows, typed here from it:
# image AUROC, F1-max, AP; pixel AUROC, F1-max, AP, PRO.
RARECLIP_TABLE = {
    "MVTecAD": (98.2, 97.6, 99.3, 97.7, 64.1, 66.1, 93.5),
    "Visa": (94.4, 90.8, 95.3, 98.8, 50.9, 47.5, 93.5),
}
COLUMNS = ("image_AUROC", "image_F1Max", "image_AUPR", "pixel_AUROC", "pixel_F1Max", "pixel_AUPR", "pixel_AUPRO")


def test_rareclips_published_rows_are_its_readme_table() -> None:
    assert PEER_METHODS == ("MuSc", "RareCLIP") and PEER_FILES["RareCLIP"] == "rareclip_iccv2025.csv"
    assert "ICCV 2025" in PEER_PUBLICATIONS["RareCLIP"] and "a8e6d46" in PEER_PUBLICATIONS["RareCLIP"]
    published = load_published()
    assert published.datasets("RareCLIP") == ("MVTecAD", "Visa")
    for dataset, row in RARECLIP_TABLE.items():
        for metric, value in zip(COLUMNS, row, strict=True):
            cell = published.cell(dataset, metric, "RareCLIP")
            assert cell is not None and cell.value == value, (dataset, metric)
            assert "hy28hy/RareCLIP_v1 a8e6d46" in cell.source and "seeds 0-4" in cell.note and "@ 518" in cell.note
    assert "± 0.3" in published.cell("Visa", "image_AUROC", "RareCLIP").note  # the spread over the seeds
    assert "visa_pretrained.pth" in published.cell("MVTecAD", "image_AUROC", "RareCLIP").note
    rareclip = [value for value in published.values if value.method == "RareCLIP"]
    assert len(rareclip) == 2 * 7 and all(value.group == "industrial" for value in rareclip)
    assert published.cell("BTech", "image_AUROC", "RareCLIP") is None  # not published: absent, never zero
    with pytest.raises(KeyError):
        published.average("industrial", "image_AUROC", "RareCLIP")


def finished(model: str, dataset: str, category: str, seed: int, **metrics: float) -> RunRecord:
    mode = "zero_shot" if model == "AdaCLIP" else "online"
    return RunRecord(model, dataset, category, seed, "finished", metrics=metrics, learning_type="zero_shot", mode=mode)


# Two seeds of two categories: AdaCLIP-RareCLIP's MVTec AD image AUROC is (96 + 98 + 94 + 96) / 4 = 96.0, the seeds'
# data-set means 97.0 and 95.0.
RECORDS = [
    finished("AdaCLIP-RareCLIP", "MVTecAD", "bottle", 0, image_AUROC=0.96, image_AUPR=0.99, pixel_AUPRO=0.90),
    finished("AdaCLIP-RareCLIP", "MVTecAD", "cable", 0, image_AUROC=0.98, image_AUPR=0.97, pixel_AUPRO=0.92),
    finished("AdaCLIP-RareCLIP", "MVTecAD", "bottle", 1, image_AUROC=0.94, image_AUPR=0.99, pixel_AUPRO=0.90),
    finished("AdaCLIP-RareCLIP", "MVTecAD", "cable", 1, image_AUROC=0.96, image_AUPR=0.97, pixel_AUPRO=0.92),
    finished("AdaCLIP-rarity", "MVTecAD", "bottle", 0, image_AUROC=0.93),
    finished("AdaCLIP", "MVTecAD", "bottle", 0, image_AUROC=0.90, image_AUPR=0.95),
    finished("AdaCLIP", "MVTecAD", "bottle", 1, image_AUROC=0.90, image_AUPR=0.95),
]


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory) -> Any:
    models = [adaclip_entry(), rarity_entry(), rarity_entry("AdaCLIP-rarity", weight=0.5)]
    data = [paper_dataset("MVTecAD", ["bottle", "cable"]), paper_dataset("BTech", ["01"])]
    return load_config({"models": models, "data": data, "seeds": [0, 1]}, output=tmp_path_factory.mktemp("online"))


def test_the_mean_over_seeds_is_rareclips_mean_with_its_spread(grid: Any) -> None:
    rows = {(row.category, row.model): row for row in summarise(RECORDS, grid) if row.dataset == "MVTecAD"}
    mean = rows[("mean", "AdaCLIP-RareCLIP")]
    assert mean.metrics["image_AUROC"] == pytest.approx(0.96) and mean.mode == "online"
    assert mean.std["image_AUROC"] == pytest.approx(0.01414213, abs=1e-7)  # the sample std of 0.97 and 0.95
    assert mean.std["image_AUPR"] == 0.0  # the same AP on both seeds
    # One seed only (AdaCLIP-rarity), or categories with different seeds: no spread of the data-set mean.
    assert rows[("mean", "AdaCLIP-rarity")].std["image_AUROC"] is None
    assert rows[("mean", "AdaCLIP")].std["image_AUROC"] == 0.0  # one category, two seeds, the same number


def test_rareclip_beside_musc_and_the_online_runs_compared_with_it(grid: Any) -> None:
    cells = {
        (cell.metric, cell.dataset or cell.group, cell.category, cell.column, cell.kind): cell
        for cell in paper_cells(grid, summarise(RECORDS, grid))
    }
    published = cells[("image_AUROC", "MVTecAD", "", "RareCLIP", "published")]
    assert (published.value, published.status) == (98.2, "value")
    assert cells[("image_AUROC", "MVTecAD", "", "MuSc", "published")].value == 97.77  # beside MuSc's
    assert cells[("pixel_F1Max", "BTech", "", "RareCLIP", "published")].status == "not published"
    average = cells[("image_AUROC", "industrial", AVERAGE, "RareCLIP", "published")]
    assert (average.value, average.status) == (None, "not published") and "MVTec AD, VisA" in average.note
    run = cells[("image_AUROC", "MVTecAD", "", "AdaCLIP-RareCLIP", "run")]  # 96.0 against RareCLIP's 98.2
    assert (run.value, run.published, run.difference) == (pytest.approx(96.0), 98.2, pytest.approx(-2.2))
    fused = cells[("image_AUROC", "MVTecAD", "", "AdaCLIP-rarity", "run")]  # a fusion nobody published
    assert (fused.value, fused.published, fused.difference) == (pytest.approx(93.0), None, None)
    adaclip = cells[("image_AUROC", "MVTecAD", "", "AdaCLIP", "run")]  # still against AdaCLIP's 89.2
    assert (adaclip.published, adaclip.difference) == (89.2, pytest.approx(0.8))
    average = cells[("image_AUROC", "industrial", AVERAGE, "AdaCLIP-RareCLIP", "run")]  # RareCLIP's MVTec AD cell
    assert (average.published, average.difference) == (98.2, pytest.approx(-2.2))
    # Image AP and PRO: the online run against RareCLIP's, whichever peer's table it also stands in.
    ap = cells[("image_AUPR", "MVTecAD", "", "AdaCLIP-RareCLIP", "run")]  # (99 + 97) / 2 = 98.0 against 99.3
    assert (ap.value, ap.published, ap.difference) == (pytest.approx(98.0), 99.3, pytest.approx(-1.3))
    pro = cells[("pixel_AUPRO", "MVTecAD", "", "AdaCLIP-RareCLIP", "run")]  # 91.0 against 93.5
    assert pro.difference == pytest.approx(-2.5)
    assert cells[("pixel_AUPRO", "Visa", "", "RareCLIP", "published")].value == 93.5
    assert cells[("image_AUPR", "MVTecAD", "", "AdaCLIP", "run")].published is None


def test_the_written_tables_show_the_mode_and_rareclips_columns(grid: Any) -> None:
    store = RunStore(grid.output / "runs")
    for record in RECORDS:
        store.save(record)
    report = write_reports(grid, paper=True)
    results = report.markdown.read_text()
    assert "| Model | Class | Mode | Mutual scoring | Rarity scoring |" in results
    assert "| AdaCLIP-RareCLIP | AdaCLIP | online | off | weight 1.0, text_branch tpb |" in results
    assert "| AdaCLIP | AdaCLIP | zero-shot | off | off |" in results
    assert "| **mean** | **AdaCLIP-RareCLIP** | **96.0 ± 1.4** |" in results  # the seeds' means 97 and 95
    paper = report.paper["paper_tables.md"].read_text()
    assert "| Data set | SAA (paper) |" in paper and "| MuSc (published) | RareCLIP (published) | AdaCLIP |" in paper
    assert (
        "| MVTec AD | 63.5 | 91.8 † | 74.4 | 70.8 | 82.3 | 89.2 | 97.8 | 98.2 | 90.0 | +0.8 | 96.0 | -2.2 | 93.0 |"
        in (paper)
    )
    assert "## RareCLIP's further metrics: image AP and PRO" in paper
    assert "| MVTec AD | 99.3 | 95.0 | 98.0 | -1.3 | not run | 93.5 |" in paper


def test_a_missing_tpb_weights_file_is_named_with_where_to_get_it(micro_weights: Path) -> None:
    """What an online run of online.yaml records when the authors' TPB file was not fetched (the grid goes on)."""
    missing = Path("weights/rareclip/visa_pretrained.pth")
    group = {"weight": 1.0, "text_branch": "tpb", "tpb_weights": str(missing), "scoring": TINY_SCORING}
    with pytest.raises(FileNotFoundError) as error:
        make_adaclip(micro_weights, rarity=group)
    message = str(error.value)
    assert f"TPB weights file not found: {missing} (absolute: {missing.absolute()})" in message
    assert "github.com/hy28hy/RareCLIP_v1" in message and "text_branch='adaclip'" in message
