"""The paper's benchmark end to end on generated copies: ``configs/benchmark/paper_full.yaml`` cut to three data sets.

The shipped configuration is loaded, cut to one category of DTD-Synthetic (image and pixel level), HeadCT (image
level only: no masks) and ISIC (pixel level only: no normal test images), and pointed with
:func:`tests.helpers.with_overrides` at the generated copies of ``tests/data/paper_layouts.py``
and at a tiny random CLIP (MICRO_BACKBONE at 112 px, no released prompts). The numbers mean nothing; what is checked is
which metrics each data set gets, decided from the data (the generator says which copy has masks and normal images),
and that the run store, ``results.csv`` and the paper tables say "n/a" where the data cannot have a metric and "not
run" where the run has no result. The same recipe over all 14 copies is the full check (``with_overrides`` with every
root).
"""

from __future__ import annotations

import contextlib
import csv
import io
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from anomalib_adaclip import cli
from anomalib_adaclip.benchmark.config import load_config
from anomalib_adaclip.benchmark.metrics import BENCHMARK_METRICS, IMAGE_METRICS, PIXEL_METRICS
from anomalib_adaclip.benchmark.paper import PAPER_CSV, PAPER_MARKDOWN
from anomalib_adaclip.benchmark.runner import run_benchmark
from tests.conftest import MICRO_BACKBONE, PROJECT_ROOT
from tests.data.paper_layouts import write_all_dataset_trees, write_dataset_tree
from tests.helpers import with_overrides

CUT = {"DTDSynthetic": "Blotchy_099", "HeadCT": "headct", "ISIC": "isic"}
# A tiny random CLIP instead of ViT-L/14@336, without the released prompts (the tests are offline).
TINY_ADACLIP = {"backbone": MICRO_BACKBONE, "image_size": 112, "prompts": {"k_clusters": 4}, "checkpoint": None}


@pytest.fixture(scope="module")
def paper_run(tmp_path_factory: pytest.TempPathFactory, micro_weights: Path) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("paper_benchmark")
    trees = {key: write_dataset_tree(key, root / "data" / key, [category]) for key, category in CUT.items()}
    config = with_overrides(
        load_config(PROJECT_ROOT / "configs" / "benchmark" / "paper_full.yaml"),
        datasets={key: [category] for key, category in CUT.items()},
        data_init_args={
            **{key: {"root": str(tree.root)} for key, tree in trees.items()},
            "*": {"num_workers": 0, "eval_batch_size": 4},
        },
        model_init_args={"AdaCLIP": {**TINY_ADACLIP, "backbone_weights": str(micro_weights)}},
        output=root / "benchmark",
    )
    torch.manual_seed(0)
    result = run_benchmark(config, paper=True, show_progress=False)
    config_file = root / "cut.yaml"
    config_file.write_text(yaml.safe_dump({**config.raw, "output": str(config.output)}))
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        exit_code = cli.main(["benchmark", "report", "--config", str(config_file), "--paper"])
    return SimpleNamespace(
        trees=trees, result=result, report_exit=exit_code, report_out=stdout.getvalue() + stderr.getvalue(),
        output=config.output,
    )  # fmt: skip


def test_every_run_finished_with_the_metrics_its_data_can_have(paper_run: SimpleNamespace) -> None:
    records = {record.dataset: record for record in paper_run.result.records}
    assert set(records) == set(CUT) and all(record.status == "finished" for record in records.values())
    for key, tree in paper_run.trees.items():
        counts = tree.counts[CUT[key]]
        expected_na = set()
        if not tree.has_masks:  # the generator wrote no masks: HeadCT
            expected_na |= set(PIXEL_METRICS)
        if counts.normal == 0:  # the generator wrote no normal test image: ISIC
            expected_na |= set(IMAGE_METRICS)
        record = records[key]
        assert set(record.not_applicable) == expected_na, key
        assert set(record.metrics) & set(BENCHMARK_METRICS) == set(BENCHMARK_METRICS) - expected_na, key
    assert "no masks" in records["HeadCT"].not_applicable["pixel_AUROC"]
    assert "no normal images" in records["ISIC"].not_applicable["image_AUROC"]
    assert not records["DTDSynthetic"].not_applicable


def test_results_csv_says_n_a(paper_run: SimpleNamespace) -> None:
    with paper_run.result.results_csv.open(newline="") as file:
        rows = {(row["dataset"], row["category"]): row for row in csv.DictReader(file)}
    assert rows[("HeadCT", "mean")]["pixel_AUROC"] == "n/a" and float(rows[("HeadCT", "mean")]["image_AUROC"]) >= 0
    assert rows[("ISIC", "isic")]["image_F1Max"] == "n/a" and float(rows[("ISIC", "isic")]["pixel_AUROC"]) >= 0
    assert "no normal images" in rows[("ISIC", "mean")]["not_applicable"]


def test_the_paper_tables_place_the_run_beside_the_published(paper_run: SimpleNamespace) -> None:
    files = paper_run.result.paper
    assert files[PAPER_MARKDOWN].parent == paper_run.result.report_dir
    with files[PAPER_CSV].open(newline="") as file:
        cells = {
            (row["metric"], row["dataset"], row["category"], row["column"], row["kind"]): row
            for row in csv.DictReader(file)
        }
    headct = cells[("pixel_AUROC", "HeadCT", "", "AdaCLIP", "run")]
    assert (headct["value"], headct["status"]) == ("n/a", "n/a")
    assert cells[("image_AUROC", "ISIC", "", "AdaCLIP", "run")]["status"] == "n/a"
    assert cells[("image_AUROC", "Visa", "", "AdaCLIP", "run")]["value"] == "not run"
    dtd = cells[("image_AUROC", "DTDSynthetic", "", "AdaCLIP", "run")]
    run_value = 100 * next(
        row.metrics["image_AUROC"]
        for row in paper_run.result.rows
        if (row.dataset, row.category) == ("DTDSynthetic", "mean")
    )
    assert float(dtd["value"]) == pytest.approx(run_value, abs=1e-4) and float(dtd["published"]) == 95.5
    assert float(dtd["difference"]) == pytest.approx(run_value - 95.5, abs=1e-4)
    blotchy = cells[("image_AUROC", "DTDSynthetic", "Blotchy_099", "AdaCLIP", "published")]
    assert float(blotchy["value"]) == 100.0  # Supp. Table 14
    markdown = files[PAPER_MARKDOWN].read_text()
    assert "| HeadCT |" in markdown and "n/a¹" in markdown and "not run" in markdown


def test_report_command_writes_a_new_folder_with_the_paper_tables(paper_run: SimpleNamespace) -> None:
    assert paper_run.report_exit == 0, paper_run.report_out
    second = paper_run.output / "reports" / "v1"
    assert (second / PAPER_MARKDOWN).is_file() and (second / "results.csv").is_file()
    assert paper_run.result.report_dir.name == "v0" and (paper_run.result.report_dir / PAPER_MARKDOWN).is_file()
    assert "Paper tables:" in paper_run.report_out


@pytest.mark.slow  # 66 runs, about 85 s on 2 cores; the default suite runs a 3-data-set cut of the same config
def test_the_whole_paper_config_over_all_14_generated_copies(tmp_path: Path, micro_weights: Path) -> None:
    """``paper_full.yaml`` but for the roots and the tiny CLIP: 66 runs, each with the metrics its data has."""
    trees = write_all_dataset_trees(tmp_path / "data")
    config = with_overrides(
        load_config(PROJECT_ROOT / "configs" / "benchmark" / "paper_full.yaml"),
        data_init_args={
            **{key: {"root": str(tree.root)} for key, tree in trees.items()},
            "*": {"num_workers": 0, "eval_batch_size": 4},
        },
        model_init_args={"AdaCLIP": {**TINY_ADACLIP, "backbone_weights": str(micro_weights)}},
        output=tmp_path / "benchmark",
    )
    assert len(config.grid()) == 66
    result = run_benchmark(config, paper=True, show_progress=False)
    assert not result.failed, [record.error for record in result.failed]
    for record in result.records:
        tree = trees[record.dataset]
        expected = set(PIXEL_METRICS) if not tree.has_masks else set()
        expected |= set(IMAGE_METRICS) if tree.counts[record.category].normal == 0 else set()
        assert set(record.not_applicable) == expected, record.key.label
    with result.paper[PAPER_CSV].open(newline="") as file:
        statuses = [row["status"] for row in csv.DictReader(file) if row["kind"] == "run" and row["category"] == ""]
    assert "not run" not in statuses and "failed" not in statuses
