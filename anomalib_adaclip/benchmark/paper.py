"""The paper-table report: this run's numbers in the layout of the AdaCLIP paper's Tables 1 and 2, beside the published.

For each table (1: industrial, 2: medical) and each of the paper's metrics (image AUROC, image max-F1, pixel AUROC,
pixel max-F1), a row per data set holds the published baselines (SAA, WinCLIP, DINOv2, SAM, APRIL-GAN), the published
AdaCLIP and, for each model of the run, its mean over the data set's categories with the difference to its published
counterpart (:data:`PUBLISHED_COUNTERPARTS`: AdaCLIP to AdaCLIP, anomalib's WinClip to WinCLIP; models without one,
such as AnomalyVFM, stand as extra columns without a difference). The last row averages each column over the group's
data sets that have the metric, as the paper does. Per category, AdaCLIP's image and pixel AUROC of Supplementary
Tables 9-14 stand beside the run's.

A cell the data set cannot have is ``n/a`` (a footnote says why); a cell of a data set or model the run does not have is
``not run`` (or ``failed``). A run average over fewer data sets than the paper's is compared with the published
counterpart's mean over the same data sets, and marked.

Files, in the report folder (``<output>/reports/v<N>/``): ``paper_tables.md``, ``paper_tables.csv`` (one line per cell,
:class:`PaperCell`) and ``paper_table1_industrial.png``, ``paper_table2_medical.png``.
"""

from __future__ import annotations

import csv
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .config import BenchmarkConfig
from .metrics import NOT_APPLICABLE
from .published import DATASET_LABELS, PAPER, PAPER_GROUPS, PAPER_METHODS, PAPER_METRICS, PaperGroup, PublishedResults
from .report import MEAN_CATEGORY, ResultRow
from .specs import ModelSpec

__all__ = [
    "AVERAGE",
    "NOT_RUN",
    "PAPER_CSV",
    "PAPER_MARKDOWN",
    "PUBLISHED_COUNTERPARTS",
    "PaperCell",
    "paper_cells",
    "published_counterpart",
    "write_paper_report",
]

AVERAGE = "average"
NOT_RUN = "not run"
PAPER_MARKDOWN = "paper_tables.md"
PAPER_CSV = "paper_tables.csv"
# The published column a run model is compared with, by the name of its class.
PUBLISHED_COUNTERPARTS = {"AdaCLIP": "AdaCLIP", "WinClip": "WinCLIP"}
_PAPER_LABELS = {
    "image_AUROC": "image AUROC",
    "image_F1Max": "image max-F1",
    "pixel_AUROC": "pixel AUROC",
    "pixel_F1Max": "pixel max-F1",
}
_CATEGORY_METRICS = ("image_AUROC", "pixel_AUROC")
Status = Literal["value", "n/a", "not run", "failed"]


@dataclass(frozen=True)
class PaperCell:
    """One cell of the paper tables (a line of ``paper_tables.csv``).

    Attributes:
        table: The paper table (``"Table 1"``, ``"Table 2"``, ``"Supp. Table 9"``, ...).
        group: ``"industrial"`` or ``"medical"``.
        metric: One of the paper's metrics (``image_AUROC``, ``image_F1Max``, ``pixel_AUROC``, ``pixel_F1Max``).
        dataset: Data set name.
        category: ``""`` for a data set row, :data:`AVERAGE` for the group average (its ``dataset`` is ``""``), or a
            category.
        column: A published method (``"SAA"``, ..., ``"AdaCLIP"``) or a model of the run.
        kind: ``"published"`` or ``"run"``.
        value: Percent, or ``None`` (see ``status``).
        status: ``"value"``, ``"n/a"`` (the data set cannot have the metric), ``"not run"`` or ``"failed"``.
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


def published_counterpart(model: ModelSpec) -> str | None:
    """The published column a run model is compared with (:data:`PUBLISHED_COUNTERPARTS`), or ``None``."""
    return PUBLISHED_COUNTERPARTS.get(model.model_class.__name__)


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
    for model in config.models:
        counterpart = published_counterpart(model)
        run_cells = []
        for dataset in group.datasets:
            value, status, reason = _run_value(means.get((dataset, model.name)), metric)
            cell = published.cell(dataset, metric, counterpart) if counterpart else None
            reference = cell.value if cell else None
            run_cells.append(
                PaperCell(group.table, group.name, metric, dataset, "", model.name, "run", value, status, reference,
                          _difference(value, reference), reason)
            )  # fmt: skip
        cells += run_cells
        cells.append(_run_average(group, metric, model.name, counterpart, run_cells, published))
    return cells


def _run_average(
    group: PaperGroup, metric: str, model: str, counterpart: str | None, run_cells: Sequence[PaperCell],
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
    if counterpart:
        if sorted(covered) == sorted(expected):
            reference = published.average(group.name, metric, counterpart).value
        else:
            values = [published.cell(dataset, metric, counterpart) for dataset in covered]
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
                        reference = cell.value if published_counterpart(model) == "AdaCLIP" else None
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
    return cells + _category_cells(config, rows, published)


def _text(cell: PaperCell | None) -> str:
    if cell is None:
        return ""
    if cell.value is None:
        return {"n/a": f"{NOT_APPLICABLE}¹", "failed": "failed"}.get(cell.status, NOT_RUN)
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
    compared = {model.name for model in config.models if published_counterpart(model)}
    header = ["Data set", *(f"{method} (paper)" for method in PAPER_METHODS)]
    for model in config.models:
        header += [model.name, "Δ"] if model.name in compared else [model.name]
    lines = []
    for group in PAPER_GROUPS:
        for metric in PAPER_METRICS:
            rows = []
            for dataset, category in [*((dataset, "") for dataset in group.datasets), (group.name, AVERAGE)]:
                label = "**Average**" if category == AVERAGE else DATASET_LABELS.get(dataset, dataset)
                row = [label, *(_text(index.get((metric, dataset, category, m, "published"))) for m in PAPER_METHODS)]
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
            header += [model.name, "Δ"] if published_counterpart(model) == "AdaCLIP" else [model.name]
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
                    if published_counterpart(model) == "AdaCLIP":
                        row.append(_signed(cell.difference if cell else None))
            rows.append(row)
        title = f"## {DATASET_LABELS.get(dataset, dataset)} per category ({source}): AUROC"
        lines += ["", title, "", *_table(header, rows)]
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
        "paper's WinCLIP). Averages are over the group's data sets that have the metric, as in the paper. The paper "
        "publishes no AP and no AUPRO: this run's are in `results.md`.",
    ]
    lines += _group_tables(index, config) + _category_tables(cells, index, config) + _notes(cells)
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

    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        for cell in cells:
            writer.writerow(
                [cell.table, cell.group, cell.metric, cell.dataset, cell.category, cell.column, cell.kind,
                 number(cell.value) if cell.value is not None else cell.status, cell.status, number(cell.published),
                 number(cell.difference), cell.note]
            )  # fmt: skip


def _plot(path: Path, cells: Sequence[PaperCell], group: PaperGroup, models: Sequence[str]) -> Path:
    """Per metric, bars per data set (and the average): the published AdaCLIP and each model of the run."""
    from matplotlib.figure import Figure  # noqa: PLC0415  (no pyplot: nothing changes the caller's backend)

    columns = [("AdaCLIP (paper)", "AdaCLIP", "published"), *((model, model, "run") for model in models)]
    groups = [*((dataset, "") for dataset in group.datasets), (group.name, AVERAGE)]
    index = _index(cells)
    width = min(0.8 / len(columns), 0.35)
    figure = Figure(figsize=(max(8.0, 0.4 * len(groups) * len(columns) + 2), 2.4 * len(PAPER_METRICS)), dpi=100)
    axes = figure.subplots(len(PAPER_METRICS), 1, squeeze=False)[:, 0]
    for axis, metric in zip(axes, PAPER_METRICS, strict=True):
        for number, (label, column, kind) in enumerate(columns):
            colour = "0.6" if kind == "published" else f"C{(number - 1) % 10}"
            for position, (dataset, category) in enumerate(groups):
                x = position + (number - (len(columns) - 1) / 2) * width
                cell = index.get((metric, dataset, category, column, kind))
                if cell is not None and cell.value is not None:
                    axis.bar(x, cell.value, width=width, color=colour, label=label if position == 0 else None)
                else:
                    mark = NOT_APPLICABLE if cell is not None and cell.status == "n/a" else "×"
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
    figure.suptitle(f"{group_label(group.name)}: paper vs this run (× = not run, {NOT_APPLICABLE} = not applicable)")
    figure.legend(handles, labels, loc="upper right", fontsize=8, ncols=min(len(columns), 4), frameon=False)
    figure.tight_layout(rect=(0, 0, 1, 1 - 0.5 / (2.4 * len(PAPER_METRICS))))
    figure.savefig(path)
    return path


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
    (report_dir / PAPER_MARKDOWN).write_text(_markdown(cells, config))
    _write_csv(report_dir / PAPER_CSV, cells)
    models = [model.name for model in config.models]
    files = {PAPER_MARKDOWN: report_dir / PAPER_MARKDOWN, PAPER_CSV: report_dir / PAPER_CSV}
    for group in PAPER_GROUPS:
        name = f"paper_{_slug(group)}.png"
        files[name] = _plot(report_dir / name, cells, group, models)
    return files


def _slug(group: PaperGroup) -> str:
    return f"{group.table.lower().replace(' ', '')}_{group.name}"
