"""Benchmark reports: the records of the grid's runs summarised (:func:`summarise`) and written (:func:`write_report`).

A report is a new folder ``<output>/reports/v<N>/`` (``reports/latest`` links to the newest) with ``results.csv`` (per
category and model, mean and standard deviation over the seeds, plus the mean over the categories of each data set),
``runs.csv`` (every run, failed ones with their error), ``results.md`` (the tables in percent, and the failed runs),
``plot_<dataset>.png`` (bars per category and model, one panel per metric) and the ``config.yaml`` it was made from.
"""

from __future__ import annotations

import io
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from anomalib_adaclip.output_files import write_new_file

from .config import BenchmarkConfig
from .metrics import BENCHMARK_METRICS, METRIC_LABELS, NOT_APPLICABLE
from .specs import MODES, DataSpec
from .store import RunRecord, RunStore

__all__ = ["MEAN_CATEGORY", "ResultRow", "summarise", "write_figure", "write_report"]

MEAN_CATEGORY = "mean"
_ERROR_CHARACTERS = 300


@dataclass
class ResultRow:
    """A row of ``results.csv``: a model on a category (mean over its seeds), or the mean over a data set's categories.

    Attributes:
        dataset: Data set name.
        category: Category, or ``"mean"`` for the mean over the categories.
        model: Model name.
        runs_finished: Finished runs behind the row.
        runs_failed: Runs without a result (their latest attempt failed).
        categories: Categories behind a mean row (1 for a category row with a result, 0 without).
        metrics: Mean of each metric (``None`` where no run has it).
        std: Standard deviation over the seeds: of a category row's metric, or, in a mean row, of the data set's mean
            (each seed's mean over the categories, as RareCLIP reports ``98.2 ± 0.2``); ``None`` with fewer than two
            seeds, and in a mean row unless each of its categories has a value for the same seeds.
        not_applicable: The metrics the data cannot have, with the reason: in a category row, those every finished run
            recorded as not applicable; in a mean row, those not applicable in every category with a result. Their
            value is ``None``, and means over categories leave them out.
        mode: The mode of the runs behind the row (``"zero_shot"``, ``"few_shot"``, ``"one_class"``,
            ``"mutual_scoring"``, ...; several joined by ``"/"``), ``""`` without a finished run that recorded one.
    """

    dataset: str
    category: str
    model: str
    runs_finished: int
    runs_failed: int
    categories: int
    metrics: dict[str, float | None]
    std: dict[str, float | None]
    not_applicable: dict[str, str] = field(default_factory=dict)
    mode: str = ""

    def status(self, name: str) -> str:
        """``"value"``, ``"n/a"`` (the data cannot have the metric), ``"failed"`` or ``"missing"`` (not run)."""
        if self.metrics[name] is not None:
            return "value"
        if name in self.not_applicable:
            return NOT_APPLICABLE
        return "failed" if self.runs_finished == 0 and self.runs_failed else "missing"


def _modes(records: Sequence[RunRecord]) -> str:
    """The modes the records ran in, in order of appearance, joined by ``/`` (one, unless the store mixes them)."""
    return "/".join(dict.fromkeys(record.mode for record in records if record.mode))


def _mean(values: Sequence[float]) -> float | None:
    return statistics.fmean(values) if values else None


def summarise(records: Sequence[RunRecord], config: BenchmarkConfig) -> list[ResultRow]:
    """Per category and model, the mean (and standard deviation) over the seeds; per data set and model, the mean.

    Runs without a record (not yet run) count neither as finished nor as failed. The mean over a data set's categories
    covers the categories with a result; ``categories`` says how many. A metric that a category's data cannot have
    (recorded as not applicable by its runs) is ``None`` there and named in ``not_applicable``; it does not enter the
    mean.
    """
    by_cell: dict[tuple[str, str, str], list[RunRecord]] = {}
    for record in records:
        by_cell.setdefault((record.dataset, record.category, record.model), []).append(record)
    rows = []
    for data in config.data:
        category_rows: dict[str, list[ResultRow]] = {model.name: [] for model in config.models}
        category_runs: dict[str, list[list[RunRecord]]] = {model.name: [] for model in config.models}
        for category in data.categories or ("",):
            for model in config.models:
                cell = by_cell.get((data.name, category, model.name), [])
                finished = [record for record in cell if record.status == "finished"]
                metrics, std = {}, {}
                for name in BENCHMARK_METRICS:
                    values = [record.metrics[name] for record in finished if name in record.metrics]
                    metrics[name] = _mean(values)
                    std[name] = statistics.stdev(values) if len(values) > 1 else None
                row = ResultRow(
                    data.name, category, model.name, len(finished), len(cell) - len(finished), int(bool(finished)),
                    metrics, std, _not_applicable(finished, metrics), _modes(finished),
                )  # fmt: skip
                rows.append(row)
                category_rows[model.name].append(row)
                category_runs[model.name].append(finished)
        for model in config.models:
            cells = category_rows[model.name]
            with_result = [row for row in cells if row.runs_finished]
            metrics = {
                name: _mean([row.metrics[name] for row in with_result if row.metrics[name] is not None])
                for name in BENCHMARK_METRICS
            }
            rows.append(
                ResultRow(
                    data.name,
                    MEAN_CATEGORY,
                    model.name,
                    sum(row.runs_finished for row in cells),
                    sum(row.runs_failed for row in cells),
                    len(with_result),
                    metrics,
                    {name: _std_of_means(category_runs[model.name], name) for name in BENCHMARK_METRICS},
                    _not_applicable_in_all(with_result, metrics),
                    "/".join(dict.fromkeys(mode for row in with_result for mode in row.mode.split("/") if mode)),
                )
            )
    return rows


def _std_of_means(categories: Sequence[Sequence[RunRecord]], name: str) -> float | None:
    """The standard deviation over the seeds of the mean over the categories.

    ``None`` unless each category with a value has one for the same two or more seeds.
    """
    by_seed = [{record.seed: record.metrics[name] for record in runs if name in record.metrics} for runs in categories]
    by_seed = [values for values in by_seed if values]
    seeds = {frozenset(values) for values in by_seed}
    if len(seeds) != 1 or len(next(iter(seeds))) < 2:
        return None
    return statistics.stdev(statistics.fmean(values[seed] for values in by_seed) for seed in sorted(by_seed[0]))


def _not_applicable(finished: Sequence[RunRecord], metrics: dict[str, float | None]) -> dict[str, str]:
    """The metrics without a value that every finished run recorded as not applicable, with the first reason."""
    return {
        name: finished[0].not_applicable[name]
        for name in BENCHMARK_METRICS
        if finished and metrics[name] is None and all(name in record.not_applicable for record in finished)
    }


def _not_applicable_in_all(rows: Sequence[ResultRow], metrics: dict[str, float | None]) -> dict[str, str]:
    """The metrics without a value that are not applicable in every one of ``rows`` (the categories with a result)."""
    return {
        name: rows[0].not_applicable[name]
        for name in BENCHMARK_METRICS
        if rows and metrics[name] is None and all(name in row.not_applicable for row in rows)
    }


def write_report(
    config: BenchmarkConfig, store: RunStore
) -> tuple[Path, list[RunRecord], list[ResultRow], dict[str, Path]]:
    """Write a new report folder ``<output>/reports/v<N>`` from the records of the grid's runs.

    Args:
        config: The benchmark configuration (its grid, data sets, models and output folder).
        store: The run records of the output folder.

    Returns:
        The report folder, the latest record of every run of the grid that has one, the rows of ``results.csv`` and
        the plot of each data set (by data set name).
    """
    from anomalib_adaclip.compat import create_versioned_dir  # noqa: PLC0415

    records = [record for key in config.grid() if (record := store.latest(key)) is not None]
    rows = summarise(records, config)
    report_dir = create_versioned_dir(config.output / "reports").resolve()
    config_text = yaml.safe_dump({**config.raw, "output": str(config.output)}, sort_keys=False)
    write_new_file(report_dir / "config.yaml", config_text, next_free=False)
    _write_results_csv(report_dir / "results.csv", rows)
    _write_runs_csv(report_dir / "runs.csv", records)
    _write_markdown(report_dir / "results.md", rows, records, config)
    models = [model.name for model in config.models]
    plots = {data.name: _plot(report_dir / f"plot_{data.name}.png", rows, data, models) for data in config.data}
    return report_dir, records, rows, plots


def _number(value: float | None) -> str:
    return "" if value is None or math.isnan(value) else f"{value:.6f}"


def _write_results_csv(path: Path, rows: Sequence[ResultRow]) -> None:
    import csv  # noqa: PLC0415

    header = ["dataset", "category", "model", "runs_finished", "runs_failed", "categories", *BENCHMARK_METRICS]
    header += [f"{name}_std" for name in BENCHMARK_METRICS]
    header += ["not_applicable", "mode"]
    with io.StringIO(newline="") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        for row in rows:
            values = [
                NOT_APPLICABLE if row.status(name) == NOT_APPLICABLE else _number(row.metrics[name])
                for name in BENCHMARK_METRICS
            ]
            values += [_number(row.std[name]) for name in BENCHMARK_METRICS]
            reasons = "; ".join(f"{name}: {reason}" for name, reason in row.not_applicable.items())
            category = row.category
            counts = [row.runs_finished, row.runs_failed, row.categories]
            writer.writerow([row.dataset, category, row.model, *counts, *values, reasons, row.mode])
        write_new_file(path, file.getvalue(), next_free=False)


def _write_runs_csv(path: Path, records: Sequence[RunRecord]) -> None:
    import csv  # noqa: PLC0415

    header = ["dataset", "category", "model", "seed", "status", *BENCHMARK_METRICS]
    header += ["learning_type", "mode", "fit_seconds", "test_seconds", "not_applicable", "error", "record"]
    with io.StringIO(newline="") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        for record in records:
            writer.writerow(
                [
                    record.dataset,
                    record.category,
                    record.model,
                    record.seed,
                    record.status,
                    *(
                        NOT_APPLICABLE if name in record.not_applicable else _number(record.metrics.get(name))
                        for name in BENCHMARK_METRICS
                    ),
                    record.learning_type or "",
                    record.mode or "",
                    "" if record.fit_seconds is None else record.fit_seconds,
                    "" if record.test_seconds is None else record.test_seconds,
                    "; ".join(f"{name}: {reason}" for name, reason in record.not_applicable.items()),
                    record.error or "",
                    str(record.path or ""),
                ]
            )
        write_new_file(path, file.getvalue(), next_free=False)


def _cell(row: ResultRow, name: str) -> str:
    value = row.metrics[name]
    if value is None:
        return {"failed": "failed", NOT_APPLICABLE: f"{NOT_APPLICABLE}‡"}.get(row.status(name), "–")
    text = f"{100 * value:.1f}"
    if row.std[name] is not None:
        text += f" ± {100 * row.std[name]:.1f}"
    return text


def _markdown_text(text: str) -> str:
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= _ERROR_CHARACTERS else text[: _ERROR_CHARACTERS - 1] + "…"


def _write_markdown(
    path: Path, rows: Sequence[ResultRow], records: Sequence[RunRecord], config: BenchmarkConfig
) -> None:
    seeds = ", ".join(str(seed) for seed in config.seeds)
    lines = [
        f"# Benchmark: {config.source}",
        "",
        "Metrics in percent, computed for every model by the same anomalib Evaluator: "
        + ", ".join(METRIC_LABELS[name] for name in BENCHMARK_METRICS)
        + ". Image AP is anomalib's AUPR (average precision); pixel AUPRO integrates up to a false positive rate "
        "of 0.3. "
        + (
            "Computed on the scores and maps after each model's post-processing (anomalib's normalisation). "
            if config.score_normalization
            else "Computed on each model's raw scores and maps (before anomalib's normalisation). "
        )
        + f"Seeds: {seeds} (with several, `mean ± standard deviation` over the seeds). The `mean` rows average the "
        "categories of a data set (their ± is the standard deviation of that average over the seeds).",
    ]
    lines += _models_section(rows, config)
    header = "| Category | Model | " + " | ".join(METRIC_LABELS[name] for name in BENCHMARK_METRICS) + " |"
    rule = "| --- | --- | " + " | ".join("---:" for _ in BENCHMARK_METRICS) + " |"
    footnote = False
    reasons: dict[str, set[str]] = {}
    for data in config.data:
        lines += ["", f"## {data.name}", "", header, rule]
        total = len(data.categories) or 1
        for row in (row for row in rows if row.dataset == data.name):
            values = [_cell(row, name) for name in BENCHMARK_METRICS]
            for reason in row.not_applicable.values():
                reasons.setdefault(reason, set()).add(data.name)
            if row.category == MEAN_CATEGORY:
                label = "**mean**"
                if row.categories < total:
                    label = f"**mean** ({row.categories} of {total})†"
                    footnote = True
                cells = [
                    label,
                    f"**{row.model}**",
                    *(f"**{value}**" if value[:1].isdigit() else value for value in values),
                ]
            else:
                cells = [row.category or data.name, row.model, *values]
            lines.append("| " + " | ".join(cells) + " |")
    if footnote:
        lines += ["", "† The mean covers only the categories with a result: the others failed or have not run."]
    if reasons:
        lines += ["", f"‡ {NOT_APPLICABLE}: the data cannot have the metric; no value exists and means leave it out:"]
        lines += [f"- {', '.join(sorted(names))}: {reason}." for reason, names in sorted(reasons.items())]
    failed = [record for record in records if record.status == "failed"]
    if failed:
        lines += [
            "",
            "## Failed runs",
            "",
            "| Model | Data set | Category | Seed | Error |",
            "| --- | --- | --- | ---: | --- |",
        ]
        lines += [
            f"| {record.model} | {record.dataset} | {record.category or '–'} | {record.seed} | "
            f"{_markdown_text(record.error or '')} |"
            for record in failed
        ]
    write_new_file(path, "\n".join(lines) + "\n", next_free=False)


def _models_section(rows: Sequence[ResultRow], config: BenchmarkConfig) -> list[str]:
    """The models with their mode (zero-shot, few-shot, one-class, mutual scoring, online) and their group settings."""
    lines = ["", "## Models", "", "| Model | Class | Mode | Mutual scoring | Rarity scoring |"]
    lines.append("| --- | --- | --- | --- | --- |")
    for model in config.models:
        modes = "/".join(dict.fromkeys(m for row in rows if row.model == model.name for m in row.mode.split("/") if m))
        label = " / ".join(MODES.get(mode, mode) for mode in modes.split("/")) if modes else "no result"
        groups = [_settings(model.mutual_settings, config), _settings(model.rarity_settings, config)]
        lines.append(f"| {model.name} | {model.model_class.__name__} | {label} | {' | '.join(groups)} |")
    if any(model.online(data.name) for model in config.models for data in config.data):
        lines += [
            "",
            "Online runs score each category's test images in an order drawn with the run's seed, one image after "
            "another against the images before it; their numbers are the mean over the seeds (± their standard "
            "deviation), as RareCLIP reports them.",
        ]
    return lines


def _settings(settings_on: Callable[[str], dict[str, Any] | None], config: BenchmarkConfig) -> str:
    """A group's reported settings on each data set (``off`` where it is off everywhere)."""
    found = [
        ", ".join(f"{name} {value}" for name, value in settings.items())
        for data in config.data
        if (settings := settings_on(data.name)) is not None
    ]
    return "; ".join(dict.fromkeys(found)) if found else "off"


def _plot(path: Path, rows: Sequence[ResultRow], data: DataSpec, models: Sequence[str]) -> Path:
    """Bars per category (and the mean) and model, one panel per metric with a value, saved as PNG."""
    from matplotlib.figure import Figure  # noqa: PLC0415  (no pyplot: nothing changes the caller's backend)

    rows = [row for row in rows if row.dataset == data.name]
    groups = [*(data.categories or (data.name,)), MEAN_CATEGORY]
    metrics = [name for name in BENCHMARK_METRICS if any(row.metrics[name] is not None for row in rows)]
    metrics = metrics or ["image_AUROC"]
    value = {(row.category or data.name, row.model): row.metrics for row in rows}
    not_applicable = {(row.category or data.name, row.model): row.not_applicable for row in rows}
    width = min(0.8 / max(len(models), 1), 0.35)
    figure = Figure(figsize=(max(6.0, 0.45 * len(groups) * max(len(models), 1) + 2), 2.4 * len(metrics)), dpi=100)
    axes = figure.subplots(len(metrics), 1, squeeze=False)[:, 0]
    colours = [f"C{index % 10}" for index in range(len(models))]
    for axis, metric in zip(axes, metrics, strict=True):
        for index, (model, colour) in enumerate(zip(models, colours, strict=True)):
            offsets = [group + (index - (len(models) - 1) / 2) * width for group in range(len(groups))]
            heights = [value.get((group, model), {}).get(metric) for group in groups]
            axis.bar(
                [x for x, h in zip(offsets, heights, strict=True) if h is not None],
                [100 * h for h in heights if h is not None],
                width=width,
                color=colour,
                label=model,
            )
            for x, h, group in zip(offsets, heights, groups, strict=True):
                if h is not None:
                    continue
                absent = NOT_APPLICABLE if metric in not_applicable.get((group, model), {}) else "×"
                axis.text(x, 2, absent, ha="center", va="bottom", color=colour, fontsize=7, rotation=90)
        axis.set_ylim(0, 100)
        axis.set_ylabel(f"{METRIC_LABELS[metric]} (%)")
        axis.set_xticks(range(len(groups)))
        axis.set_xticklabels(groups, rotation=45 if len(groups) > 6 else 0, ha="right" if len(groups) > 6 else "center")
        axis.grid(axis="y", alpha=0.3)
        axis.axvline(len(groups) - 1.5, color="grey", linestyle=":", linewidth=1)  # categories | mean
    handles, labels = axes[0].get_legend_handles_labels()
    figure.suptitle(f"{data.name}: per category and mean (× = no result, {NOT_APPLICABLE} = not applicable)")
    figure.legend(handles, labels, loc="upper right", fontsize=8, ncols=min(len(models), 4), frameon=False)
    figure.tight_layout(rect=(0, 0, 1, 1 - 0.5 / (2.4 * len(metrics))))
    return write_figure(figure, path)


def write_figure(figure: Any, path: Path) -> Path:
    """Save a matplotlib figure as a new PNG file (never replacing one): the report's plots."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return write_new_file(path, buffer.getvalue(), next_free=False)
