"""Benchmark summaries: means and standard deviations over seeds and categories, checked by hand (nothing runs)."""

from __future__ import annotations

import math

import pytest

from anomalib_adaclip.benchmark.config import load_config
from anomalib_adaclip.benchmark.report import summarise
from anomalib_adaclip.benchmark.store import RunRecord
from tests.unit.benchmark.test_config import adaclip_entry, folder_entry


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
