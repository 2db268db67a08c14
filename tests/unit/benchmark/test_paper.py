"""The paper-table report from a hand-made run store: values, differences, n/a, not run, averages (nothing runs).

The run's numbers are chosen here; the published ones are the paper's (typed here from Tables 1-2 and Supp. Table 9),
so every expected difference is worked out by hand.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest

from anomalib_adaclip import cli
from anomalib_adaclip.benchmark.config import load_config
from anomalib_adaclip.benchmark.metrics import IMAGE_METRICS, PIXEL_METRICS
from anomalib_adaclip.benchmark.paper import AVERAGE, PAPER_CSV, PAPER_MARKDOWN, PaperCell, paper_cells
from anomalib_adaclip.benchmark.published import PAPER_METHODS
from anomalib_adaclip.benchmark.report import summarise
from anomalib_adaclip.benchmark.runner import write_reports
from anomalib_adaclip.benchmark.store import RunRecord, RunStore
from tests.helpers import adaclip_entry, paper_dataset

NO_MASKS = "the test set has no masks (image-level data set)"
NO_NORMAL = "the test set has no normal images (pixel-level data set)"


def config(output: Path) -> Any:
    return load_config(
        {
            "models": [
                adaclip_entry(),
                {"name": "WinCLIP", "class_path": "anomalib.models.WinClip", "init_args": {"k_shot": 0}},
                {"name": "Peer", "class_path": "anomalib.models.Padim", "init_args": {"pre_trained": False}},
            ],
            "data": [
                paper_dataset("MVTecAD", ["bottle", "cable"]),
                paper_dataset("HeadCT", ["headct"]),
                paper_dataset("ISIC", ["isic"]),
            ],
        },
        output=output,
    )


def finished(model: str, dataset: str, category: str, **metrics: float) -> RunRecord:
    not_applicable = {}
    if dataset == "HeadCT":
        not_applicable = dict.fromkeys(PIXEL_METRICS, NO_MASKS)
    if dataset == "ISIC":
        not_applicable = dict.fromkeys(IMAGE_METRICS, NO_NORMAL)
    return RunRecord(model, dataset, category, 0, "finished", metrics=metrics, not_applicable=not_applicable)


RECORDS = [
    finished("AdaCLIP", "MVTecAD", "bottle", image_AUROC=0.90, image_F1Max=0.92, pixel_AUROC=0.80, pixel_F1Max=0.40),
    finished("AdaCLIP", "MVTecAD", "cable", image_AUROC=0.86, image_F1Max=0.88, pixel_AUROC=0.84, pixel_F1Max=0.46),
    finished("AdaCLIP", "HeadCT", "headct", image_AUROC=0.95, image_F1Max=0.90),
    finished("AdaCLIP", "ISIC", "isic", pixel_AUROC=0.90, pixel_F1Max=0.70),
    finished("WinCLIP", "MVTecAD", "bottle", image_AUROC=0.50),
    RunRecord("WinCLIP", "MVTecAD", "cable", 0, "failed", error="RuntimeError: boom"),
    finished("Peer", "MVTecAD", "bottle", image_AUROC=0.70),
]


@pytest.fixture(scope="module")
def cells(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str, str, str, str], PaperCell]:
    grid = config(tmp_path_factory.mktemp("paper"))
    found = paper_cells(grid, summarise(RECORDS, grid))
    # An average has no data set: its group takes the place.
    return {(cell.metric, cell.dataset or cell.group, cell.category, cell.column, cell.kind): cell for cell in found}


def run(cells: dict, metric: str, dataset: str, model: str, category: str = "") -> PaperCell:
    return cells[(metric, dataset, category, model, "run")]


def test_run_values_beside_the_published_with_the_difference(cells: dict) -> None:
    adaclip = run(cells, "image_AUROC", "MVTecAD", "AdaCLIP")  # mean of 90 and 86 against Table 1's 89.2
    assert (adaclip.value, adaclip.published, adaclip.table) == (pytest.approx(88.0), 89.2, "Table 1")
    assert adaclip.difference == pytest.approx(-1.2)
    pixel = run(cells, "pixel_F1Max", "MVTecAD", "AdaCLIP")  # (40 + 46) / 2 against 43.4
    assert (pixel.value, pixel.difference) == (pytest.approx(43.0), pytest.approx(-0.4))
    winclip = run(cells, "image_AUROC", "MVTecAD", "WinCLIP")  # cable failed: bottle alone, against WinCLIP's 91.8
    assert (winclip.value, winclip.published, winclip.difference) == (pytest.approx(50.0), 91.8, pytest.approx(-41.8))
    peer = run(cells, "image_AUROC", "MVTecAD", "Peer")  # no published counterpart: a column without a difference
    assert (peer.value, peer.published, peer.difference) == (pytest.approx(70.0), None, None)
    published = cells[("image_AUROC", "MVTecAD", "", "WinCLIP", "published")]
    assert published.value == 91.8 and published.note.startswith("taken from the WinCLIP paper")
    assert cells[("pixel_AUROC", "ISIC", "", "SAM", "published")].value == 94.2


def test_not_applicable_and_not_run_cells(cells: dict) -> None:
    headct = run(cells, "pixel_AUROC", "HeadCT", "AdaCLIP")
    assert (headct.status, headct.value, headct.difference, headct.note) == ("n/a", None, None, NO_MASKS)
    assert cells[("pixel_AUROC", "HeadCT", "", "AdaCLIP", "published")].status == "n/a"
    isic = run(cells, "image_F1Max", "ISIC", "AdaCLIP")
    assert (isic.status, isic.note) == ("n/a", NO_NORMAL)
    assert run(cells, "image_AUROC", "Visa", "AdaCLIP").status == "not run"  # not in the configuration
    assert run(cells, "image_AUROC", "HeadCT", "WinCLIP").status == "not run"  # in it, without a record
    cable = run(cells, "image_AUROC", "MVTecAD", "WinCLIP", "cable")
    assert cable.status == "failed" and cable.published is None  # per category: AdaCLIP's numbers only


def test_averages_cover_the_data_sets_with_the_metric(cells: dict) -> None:
    industrial = run(cells, "image_AUROC", "industrial", "AdaCLIP", AVERAGE)  # MVTec AD alone: against its 89.2
    assert (industrial.value, industrial.published, industrial.dataset) == (pytest.approx(88.0), 89.2, "")
    assert "1 of the paper's 7" in industrial.note
    image = run(
        cells, "image_AUROC", "medical", "AdaCLIP", AVERAGE
    )  # HeadCT only (ISIC is n/a): 95.0 against HeadCT's 91.4
    assert (image.value, image.published, image.difference) == (pytest.approx(95.0), 91.4, pytest.approx(3.6))
    assert "1 of the paper's 3" in image.note
    pixel = run(cells, "pixel_AUROC", "medical", "AdaCLIP", AVERAGE)  # ISIC only (HeadCT is n/a): 90.0 against 89.3
    assert (pixel.value, pixel.difference) == (pytest.approx(90.0), pytest.approx(0.7))
    assert "1 of the paper's 4" in pixel.note
    assert cells[("image_AUROC", "industrial", AVERAGE, "AdaCLIP", "published")].value == 90.2  # as printed
    assert cells[("image_AUROC", "medical", AVERAGE, "AdaCLIP", "published")].value == 94.6
    winclip = run(cells, "image_AUROC", "industrial", "WinCLIP", AVERAGE)  # MVTec AD only: 50.0 against 91.8
    assert winclip.difference == pytest.approx(-41.8)
    assert run(cells, "image_AUROC", "medical", "WinCLIP", AVERAGE).status == "not run"
    assert run(cells, "pixel_AUROC", "medical", "Peer", AVERAGE).status == "not run"


def test_per_category_beside_the_supplementary_tables(cells: dict) -> None:
    bottle = run(cells, "image_AUROC", "MVTecAD", "AdaCLIP", "bottle")  # 90.0 against Supp. Table 9's 94.4
    assert (bottle.value, bottle.published, bottle.difference, bottle.table) == (
        pytest.approx(90.0), 94.4, pytest.approx(-4.4), "Supp. Table 9"
    )  # fmt: skip
    cable = run(cells, "pixel_AUROC", "MVTecAD", "AdaCLIP", "cable")  # 84.0 against 79.8
    assert cable.difference == pytest.approx(4.2)
    assert ("image_AUROC", "MVTecAD", "zipper", "AdaCLIP", "run") in cells  # every published category, run or not
    assert run(cells, "image_AUROC", "MVTecAD", "AdaCLIP", "zipper").status == "not run"
    assert not any(cell.dataset == "Visa" and cell.category for cell in cells.values())  # not in the run


def test_musc_published_beside_the_paper_where_it_published(cells: dict) -> None:
    # MUSC.md section 7: MVTec AD image AUROC 97.77, VisA pixel F1-max 48.90, BTAD pixel AUROC 97.35.
    for metric, dataset, value in (("image_AUROC", "MVTecAD", 97.77), ("pixel_F1Max", "Visa", 48.90),
                                   ("pixel_AUROC", "BTech", 97.35)):  # fmt: skip
        cell = cells[(metric, dataset, "", "MuSc", "published")]
        assert (cell.value, cell.status, cell.kind) == (value, "value", "published") and "@ 518" in cell.note
    mpdd = cells[("image_AUROC", "MPDD", "", "MuSc", "published")]  # never published: not a zero, not n/a
    assert (mpdd.value, mpdd.status) == (None, "not published")
    headct = cells[("pixel_AUROC", "HeadCT", "", "MuSc", "published")]  # the data set cannot have it
    assert (headct.value, headct.status) == (None, "n/a")
    average = cells[("image_AUROC", "industrial", AVERAGE, "MuSc", "published")]
    assert (average.value, average.status) == (None, "not published") and "MVTec AD, VisA, BTAD" in average.note
    # Image AP and PRO, which the AdaCLIP paper lacks, in the peers' table beside each model.
    assert cells[("image_AUPR", "MVTecAD", "", "MuSc", "published")].value == 99.07
    assert cells[("pixel_AUPRO", "BTech", "", "MuSc", "published")].value == 83.43
    adaclip = cells[("pixel_AUPRO", "BTech", "", "AdaCLIP", "run")]  # zero-shot AdaCLIP: not MuSc's counterpart
    assert (adaclip.status, adaclip.published) == ("not run", None)
    assert not any(key[0] == "pixel_AUPR" for key in cells)  # published by MuSc, not computed by the benchmark


def test_written_files_markdown_csv_and_plots(tmp_path: Path) -> None:
    grid = config(tmp_path / "out")
    store = RunStore(grid.output / "runs")
    for record in RECORDS:
        store.save(record)
    first = write_reports(grid, paper=True)
    second = write_reports(grid, paper=True)  # a new folder: nothing is overwritten
    assert first.report_dir != second.report_dir
    assert set(first.paper) == {PAPER_MARKDOWN, PAPER_CSV, "paper_table1_industrial.png", "paper_table2_medical.png"}
    assert all(path.is_file() and path.parent == first.report_dir for path in first.paper.values())
    markdown = first.paper[PAPER_MARKDOWN].read_text()
    assert "## Table 1 (industrial): image AUROC" in markdown and "## Table 2 (medical): pixel max-F1" in markdown
    # MuSc's published 97.77 and RareCLIP's 98.2 stand beside the paper's methods (rounded to 0.1 as they are).
    mvtec = "| MVTec AD | 63.5 | 91.8 † | 74.4 | 70.8 | 82.3 | 89.2 | 97.8 | 98.2 | 88.0 | -1.2 | 50.0 | -41.8 | 70.0 |"
    assert mvtec in markdown
    assert "| HeadCT | — |" not in markdown
    assert "| HeadCT |" + " n/a¹ |" * 9 + "  | not run |  | not run |" in markdown
    assert f"n/a (HeadCT): this run, from its test data: {NO_MASKS}." in markdown
    assert "n/a (ClinicDB, ColonDB, ISIC, TN3K): the paper: no normal test images." in markdown
    assert "| bottle | 94.4 | 90.0 | -4.4 | 50.0 | 70.0 | 90.4 | 80.0 | -10.4 |" in markdown
    assert "| MPDD | 42.7 | 61.4 | 62.4 | 63.0 | 66.0 | 76.0 | – | – | not run |" in markdown  # peers: not published
    assert "| **Average** | 68.9 | 82.8 | 80.4 | 73.6 | 86.1 | 90.2 | – | – | 88.0 ² |" in markdown
    assert "## MuSc's further metrics: image AP and PRO" in markdown
    assert "| BTAD | 97.8 | not run | not run | not run | 83.4 | not run | not run | not run |" in markdown
    with first.paper[PAPER_CSV].open(newline="") as file:
        rows = list(csv.DictReader(file))
    line = next(r for r in rows if (r["metric"], r["dataset"], r["column"], r["kind"], r["category"]) ==
                ("image_AUROC", "MVTecAD", "AdaCLIP", "run", ""))  # fmt: skip
    assert (float(line["value"]), float(line["published"]), float(line["difference"])) == pytest.approx(
        (88.0, 89.2, -1.2)
    )
    headct = {(r["column"], r["value"]) for r in rows if r["dataset"] == "HeadCT" and r["metric"].startswith("pixel")}
    # The published cells and AdaCLIP's run are n/a; the models without a HeadCT run are "not run".
    published = {(method, "n/a") for method in (*PAPER_METHODS, "MuSc", "RareCLIP")}
    assert headct == {*published, ("WinCLIP", "not run"), ("Peer", "not run")}
    assert any(r["value"] == "not run" for r in rows)


def test_report_command_refuses_a_bad_configuration(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["benchmark", "report", "--config", str(tmp_path / "missing.yaml"), "--paper"]) == 2
    assert "benchmark report: error:" in capsys.readouterr().err and not (tmp_path / "reports").exists()
