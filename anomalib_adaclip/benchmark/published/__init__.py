"""The AdaCLIP paper's published numbers (Cao et al., ECCV 2024), as package data, read and checked by a loader.

``adaclip_eccv2024.csv`` holds one published number a line, with the paper table it comes from:

- ``level=dataset``: main Tables 1 (industrial) and 2 (medical): image AUROC, image max-F1, pixel AUROC, pixel max-F1
  of SAA, WinCLIP, DINOv2, SAM, APRIL-GAN and AdaCLIP per data set. ``value=n/a`` where the data set cannot have the
  metric (``note`` says why); ``flag=†`` marks the WinCLIP numbers the paper copies from the WinCLIP paper;
- ``level=average``: the group averages as printed (over the data sets that have the metric);
- ``level=category``: AdaCLIP's per-category image and pixel AUROC of Supplementary Tables 9-14.

The paper publishes no AP and no AUPRO. Data set names are the benchmark's (those of
``configs/benchmark/paper_full.yaml``): ``BTech`` is the paper's BTAD, ``KSDD`` its SDD, ``DTDSynthetic`` its
DTD-Synthetic.

Published numbers of methods outside the AdaCLIP paper (:data:`PEER_METHODS`) are one CSV per method, in the same
columns (:data:`PEER_FILES`), as ``level=dataset`` lines with seven metrics (:data:`PUBLISHED_METRICS`: the paper's
four, image AP, pixel AP and PRO):

- ``musc_iclr2024.csv``: MuSc's (Li et al., ICLR 2024; the README of its code) on MVTec AD, VisA and BTAD;
- ``rareclip_iccv2025.csv``: RareCLIP's (He et al., ICCV 2025) on MVTec AD and VisA, its online setting (each category
  in an order drawn with the seed, the mean over seeds 0-4; each line's note gives the standard deviation over the
  seeds). The source is the results table of the README of its code (``assets/zero-shot.png`` at commit a8e6d46 of
  the authors' repository, whose history github hy28hy/RareCLIP_v1 carries); its image AUROCs are the abstract's 98.2
  and 94.4 (the abstract adds 59.4 ms per image on an RTX 3090). The README publishes no per-category numbers and no
  other data set.

A peer lists only what it published: every data set it lists carries the same metrics, none is ``n/a``, and it has no
averages over the paper's groups (the reports show its other cells as not published).
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, replace
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Literal

__all__ = [
    "AVERAGE_TOLERANCE",
    "DATASET_LABELS",
    "PAPER",
    "PAPER_GROUPS",
    "PAPER_METHODS",
    "PAPER_METRICS",
    "PEER_FILES",
    "PEER_METHODS",
    "PEER_PUBLICATIONS",
    "PUBLISHED_FILE",
    "PUBLISHED_METRICS",
    "PaperGroup",
    "PublishedDataError",
    "PublishedResults",
    "PublishedValue",
    "load_published",
]

PAPER = "Cao et al., AdaCLIP, ECCV 2024 (arXiv 2407.15795v1)"
#: The package's CSV of the AdaCLIP paper's published cells.
PUBLISHED_FILE = "adaclip_eccv2024.csv"
#: The metrics of the paper's tables, by the benchmark's names.
PAPER_METRICS: tuple[str, ...] = ("image_AUROC", "image_F1Max", "pixel_AUROC", "pixel_F1Max")
#: The methods of the paper's tables, in its column order.
PAPER_METHODS: tuple[str, ...] = ("SAA", "WinCLIP", "DINOv2", "SAM", "APRIL-GAN", "AdaCLIP")
#: Every metric a published line may carry, by the benchmark's names where it computes the metric (anomalib's "AUPR" is
#: average precision); pixel AP ("pixel_AUPR") is published by MuSc but not computed by the benchmark.
PUBLISHED_METRICS: tuple[str, ...] = (*PAPER_METRICS, "image_AUPR", "pixel_AUPR", "pixel_AUPRO")
#: The methods published elsewhere whose numbers the package ships beside the paper's.
PEER_METHODS: tuple[str, ...] = ("MuSc", "RareCLIP")
#: The package's CSV of each peer method's published cells, by method.
PEER_FILES = {"MuSc": "musc_iclr2024.csv", "RareCLIP": "rareclip_iccv2025.csv"}
#: Each peer method's publication, as the reports cite it.
PEER_PUBLICATIONS = {
    "MuSc": "Li et al., MuSc, ICLR 2024 (README of github.com/xrli-U/MuSc, commit b76b93d; MIT licence)",
    "RareCLIP": (
        "He et al., RareCLIP, ICCV 2025 (README of its code, commit a8e6d46 in github.com/hy28hy/RareCLIP_v1, its "
        "results table; online, mean over seeds 0-4)"
    ),
}
#: The paper averages unrounded cells and rounds the average to 0.1; the printed average and the mean of the printed
#: cells differ by up to 0.05 + 0.05 (SAM's industrial pixel AUROC: 91.7 printed, 91.63 recomputed).
AVERAGE_TOLERANCE = 0.1
DATASET_LABELS = {
    "MVTecAD": "MVTec AD",
    "Visa": "VisA",
    "MPDD": "MPDD",
    "BTech": "BTAD",
    "KSDD": "KSDD (SDD)",
    "DAGM": "DAGM",
    "DTDSynthetic": "DTD-Synthetic",
    "HeadCT": "HeadCT",
    "BrainMRI": "BrainMRI",
    "Br35H": "Br35H",
    "ISIC": "ISIC",
    "ColonDB": "ColonDB",
    "ClinicDB": "ClinicDB",
    "TN3K": "TN3K",
}
_COLUMNS = ("level", "group", "dataset", "category", "metric", "method", "value", "flag", "source", "note")


@dataclass(frozen=True)
class PaperGroup:
    """A group of data sets with its own table and averages in the paper.

    Attributes:
        name: ``"industrial"`` or ``"medical"``.
        table: The paper table (``"Table 1"``, ``"Table 2"``).
        datasets: The data sets in the paper's row order.
    """

    name: Literal["industrial", "medical"]
    table: str
    datasets: tuple[str, ...]


PAPER_GROUPS: tuple[PaperGroup, ...] = (
    PaperGroup("industrial", "Table 1", ("MVTecAD", "Visa", "MPDD", "BTech", "KSDD", "DAGM", "DTDSynthetic")),
    PaperGroup("medical", "Table 2", ("HeadCT", "BrainMRI", "Br35H", "ISIC", "ColonDB", "ClinicDB", "TN3K")),
)


class PublishedDataError(ValueError):
    """The published-numbers file is malformed; the message names the line and what was expected."""


@dataclass(frozen=True)
class PublishedValue:
    """One published number.

    Attributes:
        level: ``"dataset"`` (a cell of Tables 1-2), ``"average"`` (a printed group average) or ``"category"``
            (a cell of Supplementary Tables 9-14).
        group: ``"industrial"`` or ``"medical"``.
        dataset: Data set name (``""`` for an average).
        category: Category (``""`` unless ``level="category"``).
        metric: One of :data:`PAPER_METRICS` (a peer's: one of :data:`PUBLISHED_METRICS`).
        method: One of :data:`PAPER_METHODS` or :data:`PEER_METHODS`.
        value: Percent, or ``None`` where the metric does not apply to the data set.
        flag: ``"†"`` for numbers the paper copies from another paper, else ``""``.
        source: The paper table (a peer's: its publication).
        note: Why a value is not applicable, or where a flagged value comes from (a peer's: the setting it was
            measured in).
    """

    level: Literal["dataset", "average", "category"]
    group: Literal["industrial", "medical"]
    dataset: str
    category: str
    metric: str
    method: str
    value: float | None
    flag: str
    source: str
    note: str

    @property
    def not_applicable(self) -> bool:
        """Whether the metric does not apply to the data set (``value`` is ``None``)."""
        return self.value is None


@dataclass(frozen=True)
class PublishedResults:
    """The paper's numbers, indexed for the reports.

    Attributes:
        values: Every published number.
    """

    values: tuple[PublishedValue, ...]

    def cell(self, dataset: str, metric: str, method: str) -> PublishedValue | None:
        """The Table 1/2 cell of ``method`` on ``dataset``, or ``None`` when the paper has no such row."""
        return self._index.get(("dataset", dataset, "", metric, method))

    def category(self, dataset: str, category: str, metric: str) -> PublishedValue | None:
        """AdaCLIP's per-category number (Supplementary Tables 9-14), or ``None`` when none is published."""
        return self._index.get(("category", dataset, category, metric, "AdaCLIP"))

    def average(self, group: str, metric: str, method: str) -> PublishedValue:
        """The printed average of ``group`` (``"industrial"``, ``"medical"``)."""
        return self._index[("average", "", group, metric, method)]

    def datasets(self, method: str) -> tuple[str, ...]:
        """The data sets ``method`` has published numbers on (a peer's: only those it lists), in the file's order."""
        return tuple(dict.fromkeys(v.dataset for v in self.values if v.method == method and v.level == "dataset"))

    def categories(self, dataset: str) -> tuple[str, ...]:
        """The categories of ``dataset`` with published per-category numbers, in the paper's order."""
        seen: dict[str, None] = {}
        for value in self.values:
            if value.level == "category" and value.dataset == dataset:
                seen.setdefault(value.category)
        return tuple(seen)

    @cached_property
    def _index(self) -> dict[tuple[str, str, str, str, str], PublishedValue]:
        return {_key(value): value for value in self.values}


def _key(value: PublishedValue) -> tuple[str, str, str, str, str]:
    # An average has no data set: its group takes the category's place in the key.
    third = value.group if value.level == "average" else value.category
    return (value.level, value.dataset, third, value.metric, value.method)


def _parse(row: dict[str, str], where: str) -> PublishedValue:
    level, group = row["level"], row["group"]
    if level not in ("dataset", "average", "category"):
        msg = f"{where}: level must be dataset, average or category, got {level!r}."
        raise PublishedDataError(msg)
    groups = {group.name: group for group in PAPER_GROUPS}
    if group not in groups:
        msg = f"{where}: group must be one of {list(groups)}, got {group!r}."
        raise PublishedDataError(msg)
    if row["metric"] not in PAPER_METRICS or row["method"] not in PAPER_METHODS:
        msg = f"{where}: metric must be one of {PAPER_METRICS} and method one of {PAPER_METHODS}."
        raise PublishedDataError(msg)
    expected_dataset = level != "average"
    if bool(row["dataset"]) != expected_dataset or (row["dataset"] and row["dataset"] not in groups[group].datasets):
        msg = f"{where}: dataset {row['dataset']!r} is not a {group} data set of the paper (or an average has one)."
        raise PublishedDataError(msg)
    if bool(row["category"]) != (level == "category"):
        msg = f"{where}: a category is given exactly on level=category lines."
        raise PublishedDataError(msg)
    if level == "category" and (row["method"] != "AdaCLIP" or row["metric"] not in ("image_AUROC", "pixel_AUROC")):
        msg = f"{where}: the supplementary tables give AdaCLIP's image and pixel AUROC per category only."
        raise PublishedDataError(msg)
    if not row["source"]:
        msg = f"{where}: every number needs its source (the paper table)."
        raise PublishedDataError(msg)
    if row["flag"] not in ("", "†"):
        msg = f"{where}: flag must be empty or '†', got {row['flag']!r}."
        raise PublishedDataError(msg)
    return PublishedValue(
        level, group, row["dataset"], row["category"], row["metric"], row["method"], _value(row, where), row["flag"],
        row["source"], row["note"],
    )  # fmt: skip


def _value(row: dict[str, str], where: str) -> float | None:
    if row["value"] == "n/a":
        if row["level"] != "dataset" or not row["note"]:
            msg = f"{where}: only a data set cell can be n/a, and its note must say why."
            raise PublishedDataError(msg)
        return None
    try:
        value = float(row["value"])
    except ValueError:
        value = math.nan
    if not 0 <= value <= 100:
        msg = f"{where}: value must be a percentage or n/a, got {row['value']!r}."
        raise PublishedDataError(msg)
    return value


def _check_complete(results: PublishedResults, origin: str) -> None:
    for group in PAPER_GROUPS:
        for metric in PAPER_METRICS:
            for method in PAPER_METHODS:
                cells = [results.cell(dataset, metric, method) for dataset in group.datasets]
                missing = [dataset for dataset, cell in zip(group.datasets, cells, strict=True) if cell is None]
                if missing:
                    msg = f"{origin}: no {metric} of {method} on {missing} ({group.table})."
                    raise PublishedDataError(msg)
                try:
                    printed = results.average(group.name, metric, method).value
                except KeyError:
                    msg = f"{origin}: no printed {group.name} average of {metric} for {method}."
                    raise PublishedDataError(msg) from None
                recomputed = statistics.fmean(cell.value for cell in cells if cell and cell.value is not None)
                if printed is None or abs(printed - recomputed) > AVERAGE_TOLERANCE:
                    msg = (
                        f"{origin}: the printed {group.name} average of {metric} for {method} ({printed}) is not the "
                        f"mean of its cells ({recomputed:.2f}): a cell was transcribed wrong."
                    )
                    raise PublishedDataError(msg)


def _parse_peer(row: dict[str, str], where: str) -> PublishedValue:
    if row["method"] not in PEER_METHODS:
        msg = f"{where}: method must be one of {PEER_METHODS}, got {row['method']!r}."
        raise PublishedDataError(msg)
    if row["level"] != "dataset" or row["category"]:
        msg = f"{where}: a peer's numbers are data set lines (level=dataset, no category)."
        raise PublishedDataError(msg)
    if row["metric"] not in PUBLISHED_METRICS:
        msg = f"{where}: metric must be one of {PUBLISHED_METRICS}, got {row['metric']!r}."
        raise PublishedDataError(msg)
    if row["value"] == "n/a":
        msg = f"{where}: a peer lists only what it published; leave out a number it did not publish (no n/a)."
        raise PublishedDataError(msg)
    # The group, data set, source, flag and value checks are those of the paper's lines.
    checked = _parse({**row, "metric": PAPER_METRICS[0], "method": PAPER_METHODS[0]}, where)
    return replace(checked, metric=row["metric"], method=row["method"])


def _check_peer_complete(values: Iterable[PublishedValue], origin: str) -> None:
    """Every data set a peer lists carries the same metrics (a dropped line is an error, not a missing cell)."""
    by_dataset: dict[tuple[str, str], set[str]] = {}
    for value in values:
        by_dataset.setdefault((value.method, value.dataset), set()).add(value.metric)
    for method in dict.fromkeys(method for method, _ in by_dataset):
        metrics = {(dataset, frozenset(found)) for (name, dataset), found in by_dataset.items() if name == method}
        union = set().union(*(found for _, found in metrics))
        incomplete = sorted(dataset for dataset, found in metrics if found != union)
        if incomplete:
            msg = f"{origin}: {method} lacks some of its metrics {sorted(union)} on {incomplete}."
            raise PublishedDataError(msg)


def _read(lines: Iterable[str], origin: str) -> PublishedResults:
    reader = csv.DictReader(lines)
    if tuple(reader.fieldnames or ()) != _COLUMNS:
        msg = f"{origin}: the columns must be {list(_COLUMNS)}, got {reader.fieldnames}."
        raise PublishedDataError(msg)
    values = tuple(_parse(row, f"{origin}, line {reader.line_num}") for row in reader)
    results = PublishedResults(values)
    _check_unique(values, origin)
    _check_complete(results, origin)
    return results


def _check_unique(values: tuple[PublishedValue, ...], origin: str) -> None:
    if len({_key(value) for value in values}) != len(values):
        msg = f"{origin}: a number is given twice (same level, data set, category, metric and method)."
        raise PublishedDataError(msg)


def _read_peer(lines: Iterable[str], origin: str) -> tuple[PublishedValue, ...]:
    reader = csv.DictReader(lines)
    if tuple(reader.fieldnames or ()) != _COLUMNS:
        msg = f"{origin}: the columns must be {list(_COLUMNS)}, got {reader.fieldnames}."
        raise PublishedDataError(msg)
    values = tuple(_parse_peer(row, f"{origin}, line {reader.line_num}") for row in reader)
    _check_unique(values, origin)
    _check_peer_complete(values, origin)
    return values


def _text(path: str | Path | None, name: str) -> tuple[str, str]:
    if path is None:
        return resources.files(__name__).joinpath(name).read_text(encoding="utf-8"), name
    return Path(path).read_text(encoding="utf-8"), str(path)


def load_published(
    path: str | Path | None = None, peers: dict[str, str | Path | None] | None = None
) -> PublishedResults:
    """Read and check the published numbers: the AdaCLIP paper's and its peers' (MuSc's, RareCLIP's).

    Checks of the paper's file: the columns; each line's level, group, data set, metric, method, value (a
    percentage, or ``n/a`` with a reason) and source; no number twice; every Table 1/2 cell present; every printed
    average within :data:`AVERAGE_TOLERANCE` of the mean of its cells. Checks of a peer's file: the same columns and
    line checks, data set lines of that method only, no ``n/a``, no number twice, the same metrics on each of its data
    sets.

    Args:
        path: A CSV of the paper's layout; defaults to the package's :data:`PUBLISHED_FILE`.
        peers: Per peer method, its CSV (``None``: the package's, :data:`PEER_FILES`); methods left out are read from
            the package. Defaults to the package's files of every peer.

    Returns:
        The published numbers.

    Raises:
        PublishedDataError: A file breaks one of the checks (the message names the file and line).
    """
    peers = {**dict.fromkeys(PEER_METHODS), **(peers or {})}
    unknown = [method for method in peers if method not in PEER_FILES]
    if unknown:
        msg = f"peers {unknown} are not published methods of this package; known: {list(PEER_FILES)}."
        raise PublishedDataError(msg)
    text, origin = _text(path, PUBLISHED_FILE)
    values = list(_read(io.StringIO(text), origin).values)
    for method, peer_path in peers.items():
        text, origin = _text(peer_path, PEER_FILES[method])
        peer_values = _read_peer(io.StringIO(text), origin)
        wrong = [value.method for value in peer_values if value.method != method]
        if wrong:
            msg = f"{origin}: the file of {method} holds numbers of {sorted(set(wrong))}."
            raise PublishedDataError(msg)
        values += peer_values
    return PublishedResults(tuple(values))
