"""The paper's numbers as package data: spot values against the paper's tables, the averages recomputed, the checks.

The expected numbers are typed here from the paper (Cao et al., ECCV 2024: Tables 1 and 2, Supplementary Tables
9-14), independently of the package's CSV.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from anomalib_adaclip.benchmark import published as published_module
from anomalib_adaclip.benchmark.published import (
    PAPER_GROUPS,
    PAPER_METHODS,
    PAPER_METRICS,
    PEER_FILES,
    PUBLISHED_FILE,
    PublishedDataError,
    load_published,
)


@pytest.fixture(scope="module")
def paper() -> published_module.PublishedResults:
    return load_published()


@pytest.mark.parametrize(
    ("dataset", "metric", "method", "value"),
    [
        ("MVTecAD", "image_AUROC", "AdaCLIP", 89.2),
        ("MVTecAD", "image_F1Max", "AdaCLIP", 90.6),
        ("Visa", "pixel_F1Max", "AdaCLIP", 37.7),
        ("BTech", "image_AUROC", "SAM", 89.4),
        ("KSDD", "pixel_AUROC", "DINOv2", 99.3),
        ("DTDSynthetic", "image_AUROC", "APRIL-GAN", 98.1),
        ("Br35H", "image_AUROC", "AdaCLIP", 97.7),
        ("ISIC", "pixel_F1Max", "SAM", 81.0),
        ("TN3K", "pixel_AUROC", "AdaCLIP", 77.2),
    ],
)
def test_spot_values_of_tables_1_and_2(
    paper: published_module.PublishedResults, dataset: str, metric: str, method: str, value: float
) -> None:
    cell = paper.cell(dataset, metric, method)
    assert cell is not None and cell.value == value
    assert cell.source == ("Table 1" if dataset in PAPER_GROUPS[0].datasets else "Table 2")


@pytest.mark.parametrize(
    ("datasets", "metrics", "reason"),
    [
        (("HeadCT", "BrainMRI", "Br35H"), ("pixel_AUROC", "pixel_F1Max"), "no masks"),
        (("ISIC", "ColonDB", "ClinicDB", "TN3K"), ("image_AUROC", "image_F1Max"), "no normal test images"),
    ],
)
def test_image_only_and_pixel_only_data_sets_are_not_applicable_for_every_method(
    paper: published_module.PublishedResults, datasets: tuple[str, ...], metrics: tuple[str, ...], reason: str
) -> None:
    for dataset in datasets:
        for metric in metrics:
            for method in PAPER_METHODS:
                cell = paper.cell(dataset, metric, method)
                assert cell is not None and cell.not_applicable and cell.value is None
                assert reason in cell.note


def test_the_printed_averages_follow_from_the_cells(paper: published_module.PublishedResults) -> None:
    assert paper.average("industrial", "image_AUROC", "AdaCLIP").value == 90.2
    assert paper.average("medical", "pixel_AUROC", "AdaCLIP").value == 85.3
    # AdaCLIP's industrial image AUROC, recomputed from the seven Table 1 cells (89.2 ... 95.5): 90.19.
    cells = [paper.cell(dataset, "image_AUROC", "AdaCLIP").value for dataset in PAPER_GROUPS[0].datasets]
    assert cells == [89.2, 85.8, 76.0, 88.6, 97.1, 99.1, 95.5]
    assert abs(statistics.fmean(cells) - 90.2) < 0.07
    # The medical image averages cover the three image-level data sets only.
    medical = [paper.cell(d, "image_AUROC", "AdaCLIP").value for d in ("HeadCT", "BrainMRI", "Br35H")]
    assert abs(statistics.fmean(medical) - paper.average("medical", "image_AUROC", "AdaCLIP").value) < 0.07


def test_winclip_numbers_copied_from_the_winclip_paper_are_flagged(paper: published_module.PublishedResults) -> None:
    flagged = {(value.dataset, value.metric) for value in paper.values if value.flag == "†"}
    assert flagged == {(dataset, metric) for dataset in ("MVTecAD", "Visa") for metric in PAPER_METRICS}
    assert all(paper.cell(d, m, "WinCLIP").flag == "†" for d, m in flagged)


def test_per_category_numbers_of_the_supplementary_tables(paper: published_module.PublishedResults) -> None:
    bottle = (paper.category("MVTecAD", "bottle", "image_AUROC"), paper.category("MVTecAD", "bottle", "pixel_AUROC"))
    assert [cell.value for cell in bottle] == [94.4, 90.4] and bottle[0].source == "Supp. Table 9"
    assert paper.category("Visa", "macaroni2", "image_AUROC").value == 64.1
    assert paper.category("BTech", "02", "pixel_AUROC").value == 92.9
    assert paper.category("DAGM", "Class4", "image_AUROC").value == 96.6
    assert paper.category("DTDSynthetic", "Woven_127", "pixel_AUROC").value == 93.3
    assert paper.category("MPDD", "tubes", "image_F1Max") is None  # the supplementary tables give AUROC only
    assert len(paper.categories("MVTecAD")) == 15 and len(paper.categories("DAGM")) == 10
    assert paper.categories("KSDD") == ()  # one category: Table 1 is its only number
    # Each data set's published number is the mean of its categories (up to the rounding of each to 0.1).
    for dataset in ("MVTecAD", "Visa", "MPDD", "BTech", "DAGM", "DTDSynthetic"):
        for metric in ("image_AUROC", "pixel_AUROC"):
            mean = statistics.fmean(paper.category(dataset, c, metric).value for c in paper.categories(dataset))
            assert abs(mean - paper.cell(dataset, metric, "AdaCLIP").value) <= 0.1, (dataset, metric, mean)


def test_no_ap_or_aupro_is_published(paper: published_module.PublishedResults) -> None:
    of_the_paper = [value for value in paper.values if value.method in PAPER_METHODS]
    assert {value.metric for value in of_the_paper} == set(PAPER_METRICS)
    assert len([v for v in of_the_paper if v.level == "dataset"]) == 14 * 4 * 6


def original_lines() -> list[str]:
    from importlib import resources

    return resources.files(published_module).joinpath(PUBLISHED_FILE).read_text().splitlines()


MVTEC = "dataset,industrial,MVTecAD,,image_AUROC"


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (f"{MVTEC},AdaCLIP,89.2,", f"{MVTEC},AdaCLIP,98.2,", "is not the mean of its cells"),
        (f"{MVTEC},SAA,63.5,,Table 1,", f"{MVTEC},SAA,63.5,,,", "needs its source"),
        (f"{MVTEC},SAA,63.5,", f"{MVTEC},SAA,163.5,", "must be a percentage"),
        (f"{MVTEC},SAA,63.5,", "dataset,industrial,MVTecAD,,image_AUPR,SAA,63.5,", "metric must be one of"),
        (
            "dataset,medical,ISIC,,image_AUROC,SAA,n/a,,Table 2,no normal test images",
            "dataset,medical,ISIC,,image_AUROC,SAA,n/a,,Table 2,",
            "note must say why",
        ),
    ],
)
def test_a_wrong_line_is_refused_with_its_reason(tmp_path: Path, old: str, new: str, message: str) -> None:
    text = "\n".join(original_lines()) + "\n"
    assert old in text
    path = tmp_path / "published.csv"
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(PublishedDataError, match=message):
        load_published(path)


def test_a_missing_cell_or_a_duplicate_is_refused(tmp_path: Path) -> None:
    lines = original_lines()
    path = tmp_path / "published.csv"
    path.write_text("\n".join(line for line in lines if ",BrainMRI,,pixel_F1Max,SAM," not in line) + "\n")
    with pytest.raises(PublishedDataError, match=r"no pixel_F1Max of SAM on \['BrainMRI'\]"):
        load_published(path)
    path.write_text("\n".join([*lines, lines[1]]) + "\n")
    with pytest.raises(PublishedDataError, match="given twice"):
        load_published(path)


# MuSc's published table (MUSC.md section 7, typed here from it): image AUROC, F1-max, AP; pixel AUROC, F1-max, AP, PRO.
MUSC_TABLE = {
    "MVTecAD": (97.77, 97.37, 99.07, 97.11, 62.16, 62.26, 93.45),
    "Visa": (92.57, 89.06, 93.31, 98.71, 48.90, 45.38, 92.43),
    "BTech": (96.16, 93.90, 97.85, 97.35, 57.86, 57.15, 83.43),
}
MUSC_COLUMNS = ("image_AUROC", "image_F1Max", "image_AUPR", "pixel_AUROC", "pixel_F1Max", "pixel_AUPR", "pixel_AUPRO")


def test_musc_published_rows_are_its_readme_table(paper: published_module.PublishedResults) -> None:
    assert paper.datasets("MuSc") == ("MVTecAD", "Visa", "BTech")
    for dataset, row in MUSC_TABLE.items():
        for metric, value in zip(MUSC_COLUMNS, row, strict=True):
            cell = paper.cell(dataset, metric, "MuSc")
            assert cell is not None and cell.value == value, (dataset, metric)
            assert "xrli-U/MuSc" in cell.source and "ViT-L-14-336" in cell.note and "@ 518" in cell.note
    assert "RsCIN k 1/8/9" in paper.cell("Visa", "image_AUROC", "MuSc").note  # MuSc's VisA setting
    assert "RsCIN k 1/2/3" in paper.cell("BTech", "image_AUROC", "MuSc").note
    musc = [value for value in paper.values if value.method == "MuSc"]
    assert len(musc) == 3 * 7 and all(value.level == "dataset" and value.group == "industrial" for value in musc)
    # Published nowhere else: absent, never zero; no average over the paper's groups.
    assert paper.cell("MPDD", "image_AUROC", "MuSc") is None and paper.cell("HeadCT", "image_AUROC", "MuSc") is None
    with pytest.raises(KeyError):
        paper.average("industrial", "image_AUROC", "MuSc")


def musc_lines() -> list[str]:
    from importlib import resources

    return resources.files(published_module).joinpath(PEER_FILES["MuSc"]).read_text().splitlines()


MUSC_MVTEC = "dataset,industrial,MVTecAD,,image_AUROC,MuSc,97.77"


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (MUSC_MVTEC, "dataset,industrial,MVTecAD,,image_AUROC,MuSc,n/a", "no n/a"),
        (MUSC_MVTEC, "dataset,industrial,MVTecAD,,image_AUROC,MuSc,977.7", "must be a percentage"),
        (MUSC_MVTEC, "dataset,industrial,MVTecAD,,image_AUROC,PatchCore,97.77", "method must be one of"),
        (MUSC_MVTEC, "dataset,industrial,MVTecAD,,image_IoU,MuSc,97.77", "metric must be one of"),
        (MUSC_MVTEC, "average,industrial,,,image_AUROC,MuSc,97.77", "data set lines"),
        (MUSC_MVTEC, "dataset,medical,MVTecAD,,image_AUROC,MuSc,97.77", "is not a medical data set"),
    ],
)
def test_a_wrong_musc_line_is_refused_with_its_reason(tmp_path: Path, old: str, new: str, message: str) -> None:
    text = "\n".join(musc_lines()) + "\n"
    assert old in text
    path = tmp_path / "musc.csv"
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(PublishedDataError, match=message):
        load_published(peers={"MuSc": path})


def test_a_dropped_or_doubled_musc_line_is_refused(tmp_path: Path) -> None:
    lines = musc_lines()
    path = tmp_path / "musc.csv"
    path.write_text("\n".join(line for line in lines if ",Visa,,pixel_AUPRO," not in line) + "\n")
    with pytest.raises(PublishedDataError, match=r"MuSc lacks some of its metrics .* on \['Visa'\]"):
        load_published(peers={"MuSc": path})
    path.write_text("\n".join([*lines, lines[1]]) + "\n")
    with pytest.raises(PublishedDataError, match="given twice"):
        load_published(peers={"MuSc": path})
    with pytest.raises(PublishedDataError, match="not published methods"):
        load_published(peers={"PatchCore": path})
