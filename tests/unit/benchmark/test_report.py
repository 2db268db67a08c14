"""Benchmark summaries: means and standard deviations over seeds and categories, n/a cells; by hand (nothing runs)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from anomalib_adaclip.benchmark.config import load_config
from anomalib_adaclip.benchmark.metrics import PIXEL_METRICS
from anomalib_adaclip.benchmark.report import summarise, write_report
from anomalib_adaclip.benchmark.store import RunRecord, RunStore
from tests.helpers import adaclip_entry, folder_entry


def record(model: str, category: str, seed: int, auroc: float | None) -> RunRecord:
    if auroc is None:
        return RunRecord(model, "parts", category, seed, "failed", error="RuntimeError: boom")
    return RunRecord(model, "parts", category, seed, "finished", metrics={"image_AUROC": auroc, "pixel_AUROC": 0.5})


def test_summary_means_over_seeds_and_categories_by_hand() -> None:
    config = load_config(
        {"models": [adaclip_entry(), adaclip_entry(name="Other")], "data": [folder_entry()], "seeds": [0, 1]}
    )
    records = [
        record("AdaCLIP", "gear", 0, 0.8),
        record("AdaCLIP", "gear", 1, 0.6),
        record("AdaCLIP", "bracket", 0, 0.5),
        record("AdaCLIP", "bracket", 1, None),  # a failed seed does not count
        record("Other", "gear", 0, None),
        record("Other", "gear", 1, None),
        record("Other", "bracket", 0, 0.9),
    ]
    rows = {(row.category, row.model): row for row in summarise(records, config)}
    gear = rows[("gear", "AdaCLIP")]
    assert gear.metrics["image_AUROC"] == pytest.approx(0.7)
    assert gear.std["image_AUROC"] == pytest.approx(math.sqrt(0.02))  # sample standard deviation of 0.8 and 0.6
    assert gear.metrics["pixel_AUPRO"] is None  # no run has it
    bracket = rows[("bracket", "AdaCLIP")]
    assert (bracket.runs_finished, bracket.runs_failed, bracket.metrics["image_AUROC"]) == (1, 1, 0.5)
    assert bracket.std["image_AUROC"] is None
    mean = rows[("mean", "AdaCLIP")]
    assert mean.metrics["image_AUROC"] == pytest.approx((0.7 + 0.5) / 2) and mean.categories == 2
    other = rows[("mean", "Other")]  # gear failed on every seed: the mean covers bracket only, and says so
    assert other.metrics["image_AUROC"] == pytest.approx(0.9) and other.categories == 1
    assert (other.runs_finished, other.runs_failed) == (1, 2)


NO_MASKS = "the test set has no masks (image-level data set)"


def image_only(model: str, category: str, auroc: float) -> RunRecord:
    return RunRecord(
        model, "parts", category, 0, "finished", metrics={"image_AUROC": auroc},
        not_applicable=dict.fromkeys(PIXEL_METRICS, NO_MASKS),
    )  # fmt: skip


def test_not_applicable_metrics_are_n_a_and_left_out_of_the_means(tmp_path: Path) -> None:
    config = load_config(
        {"models": [adaclip_entry(), adaclip_entry(name="Other")], "data": [folder_entry()]}, output=tmp_path
    )
    records = [
        image_only("AdaCLIP", "gear", 0.8),
        RunRecord("AdaCLIP", "parts", "bracket", 0, "finished", metrics={"image_AUROC": 0.6, "pixel_AUROC": 0.5}),
        image_only("Other", "gear", 0.7),
        image_only("Other", "bracket", 0.9),
    ]
    rows = {(row.category, row.model): row for row in summarise(records, config)}
    gear = rows[("gear", "AdaCLIP")]
    assert gear.metrics["pixel_AUROC"] is None and gear.status("pixel_AUROC") == "n/a"
    assert gear.not_applicable["pixel_AUROC"] == NO_MASKS
    # The mean skips the n/a cell: bracket's 0.5 alone, not (0 + 0.5) / 2; and it is a value, not n/a.
    mean = rows[("mean", "AdaCLIP")]
    assert mean.metrics["pixel_AUROC"] == pytest.approx(0.5) and "pixel_AUROC" not in mean.not_applicable
    assert mean.metrics["image_AUROC"] == pytest.approx(0.7)
    # n/a in gear, but bracket (with masks) lacks it: the mean is missing, not n/a (it is n/a only where all are).
    assert mean.status("pixel_AUPRO") == "missing"
    other = rows[("mean", "Other")]  # n/a in every category: the mean is n/a too
    assert other.status("pixel_AUROC") == "n/a" and other.metrics["image_AUROC"] == pytest.approx(0.8)
    assert rows[("bracket", "AdaCLIP")].status("pixel_AUPRO") == "missing"  # the run had masks but no AUPRO

    store = RunStore(tmp_path / "runs")
    for item in records:
        store.save(item)
    report_dir, _, _, plots = write_report(config, store)
    with (report_dir / "results.csv").open(newline="") as file:
        table = {(row["category"], row["model"]): row for row in csv.DictReader(file)}
    assert table[("gear", "AdaCLIP")]["pixel_AUROC"] == "n/a"
    assert NO_MASKS in table[("gear", "AdaCLIP")]["not_applicable"]
    assert float(table[("mean", "AdaCLIP")]["pixel_AUROC"]) == pytest.approx(0.5)
    assert table[("mean", "Other")]["pixel_AUROC"] == "n/a"
    markdown = (report_dir / "results.md").read_text()
    assert "| gear | AdaCLIP | 80.0 | – | – | n/a‡ | n/a‡ | n/a‡ |" in markdown
    assert f"- parts: {NO_MASKS}." in markdown
    assert plots["parts"].is_file()
    with (report_dir / "runs.csv").open(newline="") as file:
        runs = list(csv.DictReader(file))
    by_run = {(row["category"], row["model"]): row["pixel_F1Max"] for row in runs}
    assert by_run == {("gear", "AdaCLIP"): "n/a", ("gear", "Other"): "n/a", ("bracket", "AdaCLIP"): "",
                      ("bracket", "Other"): "n/a"}  # fmt: skip
