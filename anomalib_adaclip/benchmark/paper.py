"""The paper-table report: this run's numbers in the layout of the AdaCLIP paper's Tables 1 and 2, beside the published.

For each table (1: industrial, 2: medical) and each of the paper's metrics (image AUROC, image max-F1, pixel AUROC,
pixel max-F1), a row per data set holds the published baselines (SAA, WinCLIP, DINOv2, SAM, APRIL-GAN), the published
AdaCLIP and, for each model of the run, its mean over the data set's categories with the difference to its published
counterpart (:func:`published_counterpart`: AdaCLIP to AdaCLIP, anomalib's WinClip to WinCLIP, AdaCLIP with mutual
scoring alone (``mutual.weight: 1``) to MuSc, AdaCLIP with RareCLIP's rarity scoring alone (``rarity.weight: 1`` with
its own text branch) to RareCLIP; models without one, such as AnomalyVFM or AdaCLIP fused with mutual or rarity
scoring, stand as extra columns without a difference). The last row averages each column over the group's data sets
that have the metric, as the paper does. Per category, AdaCLIP's image and pixel AUROC of Supplementary Tables 9-14
stand beside the run's.

The published peers (:data:`~anomalib_adaclip.benchmark.published.PEER_METHODS`: MuSc, Li et al., ICLR 2024, and
RareCLIP, He et al., ICCV 2025) stand beside the paper's methods where they published the number (MuSc: MVTec AD, VisA
and BTAD; RareCLIP: MVTec AD and VisA); their other cells are ``–`` (not published), never zero, and they have no group
average. Their image AP and PRO, which the AdaCLIP paper does not report, get a table per peer beside the run's image AP
and pixel AUPRO.

A cell the data set cannot have is ``n/a`` (a footnote says why); a cell of a data set or model the run does not have is
``not run`` (or ``failed``). A run average over fewer data sets than the paper's is compared with the published
counterpart's mean over the same data sets, and marked.

Files, in the report folder (``<output>/reports/v<N>/``): ``paper_tables.md``, ``paper_tables.csv`` (one line per cell,
:class:`PaperCell`) and ``paper_table1_industrial.png``, ``paper_table2_medical.png``.
"""

from __future__ import annotations

import csv
import io
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from anomalib_adaclip.output_files import write_new_file

from .config import BenchmarkConfig
from .metrics import NOT_APPLICABLE
from .published import (
    DATASET_LABELS,
    PAPER,
    PAPER_GROUPS,
    PAPER_METHODS,
    PAPER_METRICS,
    PEER_METHODS,
    PEER_PUBLICATIONS,
    PaperGroup,
    PublishedResults,
)
from .report import MEAN_CATEGORY, ResultRow, write_figure
from .specs import ModelSpec

__all__ = [
    "AVERAGE",
    "NOT_PUBLISHED",
    "NOT_RUN",
    "PAPER_CSV",
    "PAPER_MARKDOWN",
    "PUBLISHED_COUNTERPARTS",
    "PaperCell",
    "paper_cells",
    "published_counterpart",
    "write_paper_report",
]

#: The category of a group-average cell of the paper's tables.
AVERAGE = "average"
NOT_RUN = "not run"
NOT_PUBLISHED = "not published"
PAPER_MARKDOWN = "paper_tables.md"
PAPER_CSV = "paper_tables.csv"
#: The published column a run model is compared with, by the name of its class.
PUBLISHED_COUNTERPARTS = {"AdaCLIP": "AdaCLIP", "WinClip": "WinCLIP"}
_PAPER_LABELS = {
    "image_AUROC": "image AUROC",
    "image_F1Max": "image max-F1",
    "pixel_AUROC": "pixel AUROC",
    "pixel_F1Max": "pixel max-F1",
}
_CATEGORY_METRICS = ("image_AUROC", "pixel_AUROC")
# The peers' metrics beyond the paper's four that the benchmark computes too (image AP, pixel AUPRO), with their labels.
_PEER_METRICS = {"image_AUPR": "image AP", "pixel_AUPRO": "pixel AUPRO (PRO)"}
_PEER_TABLE = "peers"
Status = Literal["value", "n/a", "not run", "failed", "not published"]


@dataclass(frozen=True)
class PaperCell:
    """One cell of the paper tables (a line of ``paper_tables.csv``).

    Attributes:
        table: The paper table (``"Table 1"``, ``"Table 2"``, ``"Supp. Table 9"``, ...).
        group: ``"industrial"`` or ``"medical"``.
        metric: One of the paper's metrics (``image_AUROC``, ``image_F1Max``, ``pixel_AUROC``, ``pixel_F1Max``), or in
            the peers' table (``table="peers"``) ``image_AUPR`` or ``pixel_AUPRO``.
        dataset: Data set name.
        category: ``""`` for a data set row, :data:`AVERAGE` for the group average (its ``dataset`` is ``""``), or a
            category.
        column: A published method (``"SAA"``, ..., ``"AdaCLIP"``, the peers ``"MuSc"`` and ``"RareCLIP"``) or a
            model of the run.
        kind: ``"published"`` or ``"run"``.
        value: Percent, or ``None`` (see ``status``).
        status: ``"value"``, ``"n/a"`` (the data set cannot have the metric), ``"not run"``, ``"failed"`` or
            ``"not published"`` (a peer's cell it published no number for).
        published: For a run cell, the published number of its counterpart (``None`` without one).
        difference: ``value - published`` (``None`` unless both exist).
        note: Why a cell is n/a, a † source, or how many data sets an average covers.
    """

    table: str
    group: str
    metric: str
    dataset: str
    category: str
    column: str
    kind: Literal["published", "run"]
    value: float | None
    status: Status
    published: float | None = None
    difference: float | None = None
    note: str = ""


def published_counterpart(model: ModelSpec, dataset: str = "") -> str | None:
    """The published column a run model is compared with on ``dataset``, or ``None``.

    By class name (:data:`PUBLISHED_COUNTERPARTS`), except for a model with mutual or rarity scoring on: with
    ``mutual.weight`` 1 its maps and scores are MuSc's (compared with MuSc's published numbers), with
    ``rarity.weight`` 1 and RareCLIP's own text branch (``rarity.text_branch: tpb``) RareCLIP's; fused with its own
    (a weight between 0 and 1), or with AdaCLIP's map as RareCLIP's text side, it is a method nobody published (no
    counterpart).
    """
    mutual = model.mutual_settings(dataset)
    if mutual is not None:
        return "MuSc" if mutual.get("weight") == 1 else None
    rarity = model.rarity_settings(dataset)
    if rarity is not None:
        return "RareCLIP" if rarity.get("weight") == 1 and rarity.get("text_branch") == "tpb" else None
    return PUBLISHED_COUNTERPARTS.get(model.model_class.__name__)


def _compared(model: ModelSpec, config: BenchmarkConfig, method: str | None = None) -> bool:
    """Whether ``model`` has a published counterpart (``method``, if given) on some data set of the run."""
    counterparts = {published_counterpart(model, data.name) for data in config.data}
    return method in counterparts if method else bool(counterparts - {None})


def _run_value(row: ResultRow | None, metric: str) -> tuple[float | None, Status, str]:
    """A run's value in percent, its status and the n/a reason, from a summary row (``None``: not in the run)."""
    if row is None:
        return None, "not run", ""
    status = row.status(metric)
    if status == "value":
        return 100 * row.metrics[metric], "value", ""
    if status == NOT_APPLICABLE:
        return None, "n/a", row.not_applicable[metric]
    return None, "failed" if status == "failed" else "not run", ""


def _difference(value: float | None, published: float | None) -> float | None:
    return None if value is None or published is None else value - published


def _group_cells(
    group: PaperGroup, metric: str, config: BenchmarkConfig, means: dict[tuple[str, str], ResultRow],
    published: PublishedResults,
) -> list[PaperCell]:  # fmt: skip
    cells: list[PaperCell] = []
    for method in PAPER_METHODS:
        for dataset in group.datasets:
            cell = published.cell(dataset, metric, method)
            if cell is None:
                continue
            status: Status = "n/a" if cell.not_applicable else "value"
            cells.append(
                PaperCell(cell.source, group.name, metric, dataset, "", method, "published", cell.value, status,
                          note=cell.note)
            )  # fmt: skip
        printed = published.average(group.name, metric, method)
        cells.append(
            PaperCell(printed.source, group.name, metric, "", AVERAGE, method, "published", printed.value, "value")
        )
    for method in PEER_METHODS:
        cells += _peer_cells(group, metric, method, published)
    for model in config.models:
        counterparts = {dataset: published_counterpart(model, dataset) for dataset in group.datasets}
        run_cells = []
        for dataset in group.datasets:
            value, status, reason = _run_value(means.get((dataset, model.name)), metric)
            counterpart = counterparts[dataset]
            cell = published.cell(dataset, metric, counterpart) if counterpart else None
            reference = cell.value if cell else None
            run_cells.append(
                PaperCell(group.table, group.name, metric, dataset, "", model.name, "run", value, status, reference,
                          _difference(value, reference), reason)
            )  # fmt: skip
        cells += run_cells
        cells.append(_run_average(group, metric, model.name, counterparts, run_cells, published))
    return cells


def _peer_cells(group: PaperGroup, metric: str, method: str, published: PublishedResults) -> list[PaperCell]:
    """A peer's column: its number where it published one, n/a where the data cannot have it, else not published."""
    source = PEER_PUBLICATIONS[method]
    cells = []
    for dataset in group.datasets:
        cell = published.cell(dataset, metric, method)
        paper = published.cell(dataset, metric, "AdaCLIP")
        if cell is not None:
            cells.append(
                PaperCell(cell.source, group.name, metric, dataset, "", method, "published", cell.value, "value",
                          note=cell.note)
            )  # fmt: skip
        elif paper is not None and paper.not_applicable:
            cells.append(
                PaperCell(source, group.name, metric, dataset, "", method, "published", None, "n/a", note=paper.note)
            )
        else:
            note = f"{method} published no number on this data set"
            cells.append(
                PaperCell(source, group.name, metric, dataset, "", method, "published", None, NOT_PUBLISHED, note=note)
            )
    datasets = [DATASET_LABELS.get(dataset, dataset) for dataset in published.datasets(method)]
    note = f"{method} published numbers on {', '.join(datasets) or 'none'} of the data sets only: no average"
    average = PaperCell(source, group.name, metric, "", AVERAGE, method, "published", None, NOT_PUBLISHED, note=note)
    cells.append(average)
    return cells


def _run_average(
    group: PaperGroup, metric: str, model: str, counterparts: dict[str, str | None], run_cells: Sequence[PaperCell],
    published: PublishedResults,
) -> PaperCell:  # fmt: skip
    """The mean over the data sets with a value; compared with the printed average only when it covers the same ones."""
    with_value = [cell for cell in run_cells if cell.value is not None]
    # The paper averages over the data sets that have the metric (its AdaCLIP cell is not n/a).
    expected = [
        dataset
        for dataset in group.datasets
        if (cell := published.cell(dataset, metric, "AdaCLIP")) is not None and not cell.not_applicable
    ]
    if not with_value:
        status: Status = "n/a" if run_cells and all(cell.status == "n/a" for cell in run_cells) else "not run"
        return PaperCell(group.table, group.name, metric, "", AVERAGE, model, "run", None, status)
    value = statistics.fmean(cell.value for cell in with_value)  # type: ignore[misc]
    covered = [cell.dataset for cell in with_value]
    reference, note = None, ""
    compared = {counterparts[dataset] for dataset in covered}
    if None not in compared:
        if len(compared) == 1 and compared <= set(PAPER_METHODS) and sorted(covered) == sorted(expected):
            reference = published.average(group.name, metric, compared.pop()).value
        else:
            # The counterparts' mean over the same data sets (a peer publishes no average over the paper's).
            values = [published.cell(dataset, metric, counterparts[dataset]) for dataset in covered]  # type: ignore[arg-type]
            numbers = [cell.value for cell in values if cell is not None and cell.value is not None]
            reference = statistics.fmean(numbers) if len(numbers) == len(covered) else None
    if sorted(covered) != sorted(expected):
        note = f"over {len(covered)} of the paper's {len(expected)} data sets ({', '.join(covered)})"
    return PaperCell(
        group.table, group.name, metric, "", AVERAGE, model, "run", value, "value", reference,
        _difference(value, reference), note,
    )  # fmt: skip


def _category_cells(config: BenchmarkConfig, rows: Sequence[ResultRow], published: PublishedResults) -> list[PaperCell]:
    by_cell = {(row.dataset, row.category, row.model): row for row in rows}
    groups = {dataset: group for group in PAPER_GROUPS for dataset in group.datasets}
    names = {data.name for data in config.data}
    cells = []
    for group in PAPER_GROUPS:
        for dataset in group.datasets:
            categories = published.categories(dataset)
            if dataset not in names or not categories:
                continue
            for metric in _CATEGORY_METRICS:
                for category in categories:
                    cell = published.category(dataset, category, metric)
                    if cell is None:
                        continue
                    cells.append(
                        PaperCell(cell.source, groups[dataset].name, metric, dataset, category, "AdaCLIP",
                                  "published", cell.value, "value")
                    )  # fmt: skip
                    for model in config.models:
                        value, status, reason = _run_value(by_cell.get((dataset, category, model.name)), metric)
                        reference = cell.value if published_counterpart(model, dataset) == "AdaCLIP" else None
                        cells.append(
                            PaperCell(cell.source, groups[dataset].name, metric, dataset, category, model.name, "run",
                                      value, status, reference, _difference(value, reference), reason)
                        )  # fmt: skip
    return cells


def paper_cells(
    config: BenchmarkConfig, rows: Sequence[ResultRow], published: PublishedResults | None = None
) -> list[PaperCell]:
    """Every cell of the paper tables: per group, metric and data set (and the averages), then per category.

    Args:
        config: The benchmark configuration (its models; its data sets are matched to the paper's by name).
        rows: The summary rows (:func:`~anomalib_adaclip.benchmark.report.summarise`).
        published: The published numbers; defaults to the package's
            (:func:`~anomalib_adaclip.benchmark.published.load_published`).

    Returns:
        The cells, published and run.
    """
    from .published import load_published  # noqa: PLC0415

    published = published or load_published()
    means = {(row.dataset, row.model): row for row in rows if row.category == MEAN_CATEGORY}
    cells = []
    for group in PAPER_GROUPS:
        for metric in PAPER_METRICS:
            cells += _group_cells(group, metric, config, means, published)
    return cells + _category_cells(config, rows, published) + _peer_metric_cells(config, means, published)


def _peer_metric_cells(
    config: BenchmarkConfig, means: dict[tuple[str, str], ResultRow], published: PublishedResults
) -> list[PaperCell]:
    """The peers' published image AP and PRO, and every run model's image AP and pixel AUPRO on the peers' data.

    A model has one cell per metric and data set, compared with its own counterpart's number where that peer
    published one; each peer's table shows it beside that peer's (the difference only beside its counterpart).
    """
    groups = {dataset: group.name for group in PAPER_GROUPS for dataset in group.datasets}
    cells = []
    for method in PEER_METHODS:
        for metric in _PEER_METRICS:
            for dataset in published.datasets(method):
                cell = published.cell(dataset, metric, method)
                if cell is not None:
                    cells.append(
                        PaperCell(_PEER_TABLE, groups[dataset], metric, dataset, "", method, "published", cell.value,
                                  "value", note=cell.note)
                    )  # fmt: skip
    for metric, dataset in dict.fromkeys((cell.metric, cell.dataset) for cell in list(cells)):
        for model in config.models:
            value, status, reason = _run_value(means.get((dataset, model.name)), metric)
            counterpart = published_counterpart(model, dataset)
            cell = published.cell(dataset, metric, counterpart) if counterpart in PEER_METHODS else None
            reference = cell.value if cell is not None else None
            cells.append(
                PaperCell(_PEER_TABLE, groups[dataset], metric, dataset, "", model.name, "run", value, status,
                          reference, _difference(value, reference), reason)
            )  # fmt: skip
    return cells


def _text(cell: PaperCell | None) -> str:
    if cell is None:
        return ""
    if cell.value is None:
        return {"n/a": f"{NOT_APPLICABLE}¹", "failed": "failed", NOT_PUBLISHED: "–"}.get(cell.status, NOT_RUN)
    text = f"{cell.value:.1f}"
    if cell.kind == "published" and cell.note.startswith("taken from"):
        text += " †"
    if cell.category == AVERAGE and cell.note:
        text += " ²"
    return text


def _signed(value: float | None) -> str:
    return "" if value is None else f"{value:+.1f}"


Index = dict[tuple[str, str, str, str, str], PaperCell]


def _index(cells: Sequence[PaperCell]) -> Index:
    """Cells by metric, data set (the group for an average), category, column and kind."""
    return {(cell.metric, cell.dataset or cell.group, cell.category, cell.column, cell.kind): cell for cell in cells}


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "| --- |" + " ---: |" * (len(header) - 1)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _group_tables(index: Index, config: BenchmarkConfig) -> list[str]:
    compared = {model.name for model in config.models if _compared(model, config)}
    published = (*PAPER_METHODS, *PEER_METHODS)
    header = ["Data set", *(f"{method} (paper)" for method in PAPER_METHODS)]
    header += [f"{method} (published)" for method in PEER_METHODS]
    for model in config.models:
        header += [model.name, "Δ"] if model.name in compared else [model.name]
    lines = []
    for group in PAPER_GROUPS:
        for metric in PAPER_METRICS:
            rows = []
            for dataset, category in [*((dataset, "") for dataset in group.datasets), (group.name, AVERAGE)]:
                label = "**Average**" if category == AVERAGE else DATASET_LABELS.get(dataset, dataset)
                row = [label, *(_text(index.get((metric, dataset, category, m, "published"))) for m in published)]
                for model in config.models:
                    cell = index.get((metric, dataset, category, model.name, "run"))
                    row.append(_text(cell))
                    if model.name in compared:
                        row.append(_signed(cell.difference if cell else None))
                rows.append(row)
            lines += ["", f"## {group.table} ({group.name}): {_PAPER_LABELS[metric]}", "", *_table(header, rows)]
    return lines


def _category_tables(cells: Sequence[PaperCell], index: Index, config: BenchmarkConfig) -> list[str]:
    per_category = [cell for cell in cells if cell.category not in ("", AVERAGE)]
    header = ["Category"]
    for metric in _CATEGORY_METRICS:
        header.append(f"{_PAPER_LABELS[metric]} AdaCLIP (paper)")
        for model in config.models:
            header += [model.name, "Δ"] if _compared(model, config, "AdaCLIP") else [model.name]
    lines = []
    for dataset in dict.fromkeys(cell.dataset for cell in per_category):
        source = next(cell.table for cell in per_category if cell.dataset == dataset)
        rows = []
        for category in dict.fromkeys(cell.category for cell in per_category if cell.dataset == dataset):
            row = [category]
            for metric in _CATEGORY_METRICS:
                row.append(_text(index.get((metric, dataset, category, "AdaCLIP", "published"))))
                for model in config.models:
                    cell = index.get((metric, dataset, category, model.name, "run"))
                    row.append(_text(cell))
                    if _compared(model, config, "AdaCLIP"):
                        row.append(_signed(cell.difference if cell else None))
            rows.append(row)
        title = f"## {DATASET_LABELS.get(dataset, dataset)} per category ({source}): AUROC"
        lines += ["", title, "", *_table(header, rows)]
    return lines


def _peer_tables(cells: Sequence[PaperCell], index: Index, config: BenchmarkConfig) -> list[str]:
    """Per peer, its image AP and PRO beside each run model's image AP and pixel AUPRO on the peer's data sets."""
    lines = []
    for method in PEER_METHODS:
        mine = [cell for cell in cells if cell.table == _PEER_TABLE and cell.column == method]
        datasets = list(dict.fromkeys(cell.dataset for cell in mine))
        metrics = list(dict.fromkeys(cell.metric for cell in mine))
        if not mine:
            continue
        header = ["Data set"]
        for metric in metrics:
            header.append(f"{_PEER_METRICS[metric]} {method} (published)")
            for model in config.models:
                header += [model.name, "Δ"] if _compared(model, config, method) else [model.name]
        rows = []
        for dataset in datasets:
            row = [DATASET_LABELS.get(dataset, dataset)]
            for metric in metrics:
                row.append(_text(index.get((metric, dataset, "", method, "published"))))
                for model in config.models:
                    cell = index.get((metric, dataset, "", model.name, "run"))
                    row.append(_text(cell))
                    if _compared(model, config, method):
                        row.append(_signed(cell.difference if cell else None))
            rows.append(row)
        lines += [
            "",
            f"## {method}'s further metrics: image AP and PRO",
            "",
            f"{PEER_PUBLICATIONS[method]}. The benchmark's image AP is anomalib's AUPR and its pixel AUPRO integrates "
            f"up to a false positive rate of 0.3 over every threshold; {method}'s PRO integrates up to the same rate "
            "over 200 thresholds, so the two differ slightly for the same maps.",
            "",
            *_table(header, rows),
        ]
    return lines


def _notes(cells: Sequence[PaperCell]) -> list[str]:
    lines = ["", "Notes:", "", "- † WinCLIP numbers the paper takes from the WinCLIP paper (MVTec AD and VisA)."]
    reasons: dict[str, set[str]] = {}
    for cell in cells:
        if cell.status == "n/a" and cell.category != AVERAGE:
            label = DATASET_LABELS.get(cell.dataset, cell.dataset)
            who = "the paper" if cell.kind == "published" else "this run, from its test data"
            reasons.setdefault(f"{who}: {cell.note or 'not applicable to the data set'}", set()).add(label)
    lines += [
        f"- ¹ {NOT_APPLICABLE} ({', '.join(sorted(datasets))}): {reason}."
        for reason, datasets in sorted(reasons.items())
    ]
    lines += [
        f"- ² {cell.column}, {group_label(cell.group)} {_PAPER_LABELS[cell.metric]}: average {cell.note}"
        + ("; Δ against the published counterpart's mean over them." if cell.published is not None else ".")
        for cell in cells
        if cell.category == AVERAGE and cell.kind == "run" and cell.note
    ]
    for method in PEER_METHODS:
        mine = [cell for cell in cells if cell.column == method and cell.kind == "published"]
        absent = sorted(
            {DATASET_LABELS.get(c.dataset, c.dataset) for c in mine if c.status == NOT_PUBLISHED and c.dataset}
        )
        if absent:
            lines.append(
                f"- – ({method}): not published: {method} published no number on {', '.join(absent)}, and no average "
                "over the paper's data sets."
            )
        if any(cell.status == "value" for cell in mine):
            lines.append(
                f"- {method} (published): {PEER_PUBLICATIONS[method]}; the setting behind each number (backbone, "
                "layers, r, RsCIN k, groups) is its note in `paper_tables.csv`."
            )
    lines.append(
        f"- {NOT_RUN}: the run has no result for the cell (data set or category not in the configuration, or not run "
        "yet); failed: every run of it failed (see `results.md`)."
    )
    return lines


def _markdown(cells: Sequence[PaperCell], config: BenchmarkConfig) -> str:
    index = _index(cells)
    lines = [
        f"# The paper's tables beside this run: {config.source}",
        "",
        f"Published numbers: {PAPER}, main Tables 1 (industrial) and 2 (medical), AdaCLIP per category from "
        "Supplementary Tables 9-14. Percent. *(paper)* columns are published; the others are this run (mean over each "
        "data set's categories) with Δ = run − published counterpart (AdaCLIP − AdaCLIP, anomalib's WinCLIP − the "
        "paper's WinCLIP, AdaCLIP with mutual scoring alone − MuSc, AdaCLIP with rarity scoring alone and RareCLIP's "
        "text branch − RareCLIP). Averages are over the group's data sets that have the metric, as in the paper. "
        "*(published)* columns are peers outside the paper, with their numbers where they published them (– "
        "elsewhere). The paper publishes no AP and no AUPRO: this run's are in `results.md`, and beside the peers' in "
        "the last tables.",
    ]
    lines += _group_tables(index, config) + _category_tables(cells, index, config)
    lines += _peer_tables(cells, index, config) + _notes(cells)
    return "\n".join(lines) + "\n"


def group_label(group: str) -> str:
    """``"Table 1 (industrial)"`` for ``"industrial"``."""
    table = next(item.table for item in PAPER_GROUPS if item.name == group)
    return f"{table} ({group})"


def _write_csv(path: Path, cells: Sequence[PaperCell]) -> None:
    header = ["table", "group", "metric", "dataset", "category", "column", "kind", "value", "status", "published",
              "difference", "note"]  # fmt: skip

    def number(value: float | None) -> str:
        return "" if value is None else f"{value:.4f}"

    with io.StringIO(newline="") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        for cell in cells:
            writer.writerow(
                [cell.table, cell.group, cell.metric, cell.dataset, cell.category, cell.column, cell.kind,
                 number(cell.value) if cell.value is not None else cell.status, cell.status, number(cell.published),
                 number(cell.difference), cell.note]
            )  # fmt: skip
        write_new_file(path, file.getvalue(), next_free=False)


def _plot(path: Path, cells: Sequence[PaperCell], group: PaperGroup, models: Sequence[str]) -> Path:
    """Per metric, bars per data set (and the average): the published AdaCLIP and each model of the run."""
    from matplotlib.figure import Figure  # noqa: PLC0415  (no pyplot: nothing changes the caller's backend)

    columns = [
        ("AdaCLIP (paper)", "AdaCLIP", "published"),
        *((f"{method} (published)", method, "published") for method in PEER_METHODS),
        *((model, model, "run") for model in models),
    ]
    shades = {"AdaCLIP": "0.6", **dict.fromkeys(PEER_METHODS, "0.8")}
    groups = [*((dataset, "") for dataset in group.datasets), (group.name, AVERAGE)]
    index = _index(cells)
    width = min(0.8 / len(columns), 0.35)
    figure = Figure(figsize=(max(8.0, 0.4 * len(groups) * len(columns) + 2), 2.4 * len(PAPER_METRICS)), dpi=100)
    axes = figure.subplots(len(PAPER_METRICS), 1, squeeze=False)[:, 0]
    for axis, metric in zip(axes, PAPER_METRICS, strict=True):
        for number, (label, column, kind) in enumerate(columns):
            colour = shades[column] if kind == "published" else f"C{(number - 1 - len(PEER_METHODS)) % 10}"
            for position, (dataset, category) in enumerate(groups):
                x = position + (number - (len(columns) - 1) / 2) * width
                cell = index.get((metric, dataset, category, column, kind))
                if cell is not None and cell.value is not None:
                    axis.bar(x, cell.value, width=width, color=colour, label=label if position == 0 else None)
                else:
                    status = cell.status if cell is not None else NOT_RUN
                    mark = {"n/a": NOT_APPLICABLE, NOT_PUBLISHED: "–"}.get(status, "×")
                    axis.text(x, 2, mark, ha="center", va="bottom", color=colour, fontsize=7, rotation=90)
                    axis.bar(x, 0, width=width, color=colour, label=label if position == 0 else None)
        axis.set_ylim(0, 100)
        axis.set_ylabel(f"{_PAPER_LABELS[metric]} (%)")
        axis.set_xticks(range(len(groups)))
        labels = [
            AVERAGE if category == AVERAGE else DATASET_LABELS.get(dataset, dataset) for dataset, category in groups
        ]
        axis.set_xticklabels(labels, rotation=30, ha="right")
        axis.grid(axis="y", alpha=0.3)
        axis.axvline(len(groups) - 1.5, color="grey", linestyle=":", linewidth=1)  # data sets | average
    handles, labels = axes[0].get_legend_handles_labels()
    figure.suptitle(
        f"{group_label(group.name)}: published vs this run (× = not run, – = not published, {NOT_APPLICABLE} = not "
        "applicable)"
    )
    figure.legend(handles, labels, loc="upper right", fontsize=8, ncols=min(len(columns), 4), frameon=False)
    figure.tight_layout(rect=(0, 0, 1, 1 - 0.5 / (2.4 * len(PAPER_METRICS))))
    return write_figure(figure, path)


def write_paper_report(
    report_dir: Path,
    config: BenchmarkConfig,
    rows: Sequence[ResultRow],
    published: PublishedResults | None = None,
) -> dict[str, Path]:
    """Write ``paper_tables.md``, ``paper_tables.csv`` and a plot per table into a (new) report folder.

    Args:
        report_dir: The report folder (``<output>/reports/v<N>``, made by
            :func:`~anomalib_adaclip.benchmark.report.write_report`); files that exist there are an error, never
            replaced.
        config: The benchmark configuration.
        rows: The summary rows of the report.
        published: The published numbers; defaults to the package's.

    Returns:
        The files by name.

    Raises:
        FileExistsError: A file of the paper report exists in ``report_dir``.
    """
    cells = paper_cells(config, rows, published)
    names = [PAPER_MARKDOWN, PAPER_CSV, *(f"paper_{_slug(group)}.png" for group in PAPER_GROUPS)]
    existing = [name for name in names if (report_dir / name).exists()]
    if existing:
        msg = f"{report_dir} already holds {existing}: a report is written once; write a new report folder."
        raise FileExistsError(msg)
    write_new_file(report_dir / PAPER_MARKDOWN, _markdown(cells, config), next_free=False)
    _write_csv(report_dir / PAPER_CSV, cells)
    models = [model.name for model in config.models]
    files = {PAPER_MARKDOWN: report_dir / PAPER_MARKDOWN, PAPER_CSV: report_dir / PAPER_CSV}
    for group in PAPER_GROUPS:
        name = f"paper_{_slug(group)}.png"
        files[name] = _plot(report_dir / name, cells, group, models)
    return files


def _slug(group: PaperGroup) -> str:
    return f"{group.table.lower().replace(' ', '')}_{group.name}"
