"""The command ``anomalib-adaclip benchmark --config configs/benchmark/<name>.yaml``.

It reads the configuration (:func:`~anomalib_adaclip.benchmark.config.load_config`), lists the grid with
``--dry-run`` or runs it (:func:`~anomalib_adaclip.benchmark.runner.run_benchmark`), and prints the means over the
categories and where the report is; ``--paper`` adds the paper's Tables 1 and 2 beside the run's numbers
(:mod:`~anomalib_adaclip.benchmark.paper`). ``anomalib-adaclip benchmark report --config ... [--paper]`` writes a new
report from the runs recorded so far, running nothing. Exit codes: 0 when every run finished (``report``: always, once
written), 1 when some failed (or could not be claimed), 2 on a bad configuration or an output folder that cannot be
written.

On several machines (the tasks of a SLURM job array), ``--shard I/N`` runs a fixed, disjoint part of the grid
(by default the array task's, from ``SLURM_ARRAY_TASK_ID``); the last shard to end writes the report, and
``benchmark report`` writes one at any time. On one machine, any number of these commands may also share the same
runs in one output folder: each run is claimed before it starts and executed once between them
(:mod:`~anomalib_adaclip.benchmark.runner`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from anomalib_adaclip.locks import LockError

from .config import BenchmarkConfig, BenchmarkConfigError, load_config
from .metrics import BENCHMARK_METRICS, METRIC_LABELS, NOT_APPLICABLE
from .report import MEAN_CATEGORY
from .runner import BenchmarkResult, Shard, check_folder, run_benchmark, write_reports
from .store import RunStore

__all__ = ["build_parser", "build_report_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The ``anomalib-adaclip benchmark`` parser."""
    parser = argparse.ArgumentParser(
        prog="anomalib-adaclip benchmark",
        description=(
            "Benchmark AdaCLIP against other anomalib models (zero-shot, few-shot or one-class) on a grid of data "
            "sets, categories and seeds, with anomalib's Engine and the same metrics for every model. Runs that "
            "finished in the same output folder are skipped; results go to <output>/reports/v<N>/."
        ),
    )
    parser.add_argument("--config", required=True, type=Path, help="benchmark YAML (see configs/benchmark/)")
    parser.add_argument("--output", type=Path, default=None, help="output folder (overrides the config's 'output')")
    parser.add_argument(
        "--dry-run", action="store_true", help="list the runs and which of them have finished; run nothing"
    )
    parser.add_argument(
        "--skip-failed", action="store_true", help="do not run again the runs whose earlier attempt failed"
    )
    parser.add_argument("--paper", action="store_true", help=_PAPER_HELP)
    parser.add_argument(
        "--shard",
        type=_shard,
        default=None,
        metavar="I/N",
        help=(
            "run only the I-th of N fixed, disjoint parts of the grid (every N-th run), e.g. one per task of a job "
            "array; with --dry-run, list them. Default: the SLURM array task's part when SLURM_ARRAY_TASK_ID and "
            "SLURM_ARRAY_TASK_COUNT are set, else the whole grid"
        ),
    )
    return parser


_PAPER_HELP = (
    "also write the AdaCLIP paper's Tables 1 and 2 (industrial, medical) with this run's numbers beside the published "
    "ones: paper_tables.md, paper_tables.csv and a plot per table"
)


def _shard(text: str) -> Shard:
    try:
        return Shard.parse(text)
    except BenchmarkConfigError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def build_report_parser() -> argparse.ArgumentParser:
    """The ``anomalib-adaclip benchmark report`` parser."""
    parser = argparse.ArgumentParser(
        prog="anomalib-adaclip benchmark report",
        description=(
            "Write a new report (<output>/reports/v<N>/) from the runs recorded in the output folder so far; nothing "
            "is run. Cells without a run are shown as 'not run'."
        ),
    )
    parser.add_argument("--config", required=True, type=Path, help="benchmark YAML the runs were made with")
    parser.add_argument("--output", type=Path, default=None, help="output folder (overrides the config's 'output')")
    parser.add_argument("--paper", action="store_true", help=_PAPER_HELP)
    return parser


def _report(argv: Sequence[str]) -> int:
    arguments = build_report_parser().parse_args(argv)
    try:
        config = load_config(arguments.config, output=arguments.output)
        check_folder(config)
        result = write_reports(config, paper=arguments.paper)
    except (BenchmarkConfigError, LockError, OSError) as error:
        print(f"anomalib-adaclip benchmark report: error: {error}", file=sys.stderr)
        return 2
    _print_means(result)
    _print_report(result)
    return 0


def _print_left_to_others(result: BenchmarkResult, arguments: argparse.Namespace) -> None:
    """What a worker that writes no report says: who still runs what, what could not be run, how to get a report."""
    if result.still_held:
        print(
            f"{len(result.still_held)} run(s) are still being run by other workers; the last of them writes the report "
            f"(or, any time: anomalib-adaclip benchmark report --config {arguments.config})."
        )
    elif not result.blocked:
        print(
            "Runs of the grid are left to other shards or workers; the last of them writes the report (or, once they "
            f"are done: anomalib-adaclip benchmark report --config {arguments.config})."
        )
    for key, reason in result.blocked.items():
        print(f"Not run: {key.label}: {reason}", file=sys.stderr)
    for record in result.failed:
        print(f"Failed: {record.key.label}: {record.error}", file=sys.stderr)


def _print_report(result: BenchmarkResult) -> None:
    written = " (written by another worker, from the same runs)" if result.report_by_other else ""
    print(f"Report: {result.report_dir}{written} (results.csv, runs.csv, results.md, plot_<dataset>.png)")
    if result.paper:
        print(f"Paper tables: {', '.join(str(path) for path in result.paper.values())}")


def _print_plan(config: BenchmarkConfig, shard: Shard | None) -> None:
    store = RunStore(config.output / "runs")
    grid = config.grid()
    keys = grid if shard is None else shard.select(grid)
    part = "" if shard is None else f" of {len(grid)} (shard {shard})"
    print(f"{len(keys)} runs{part} ({config.source}), output {config.output}:")
    for key in keys:
        record = store.latest(key)
        state = "pending" if record is None else record.status
        model = config.model(key.model)
        mode = (
            " (mutual scoring)"
            if model.mutual_settings(key.dataset)
            else " (online)"
            if model.online(key.dataset)
            else ""
        )
        running = ""
        if state != "finished" and store.in_use(key):
            holder = store.claimed_by(key)  # None when its record is unreadable (being written, or just removed)
            running = f" (claimed by {holder.describe() if holder is not None else 'another worker'})"
        print(f"  {state:<9} {key.label}{mode}{running}")


def _print_means(result: BenchmarkResult) -> None:
    names = [
        name
        for name in BENCHMARK_METRICS
        if any(row.metrics[name] is not None or name in row.not_applicable for row in result.rows)
    ]
    print("Means over the categories (percent):")
    print("  " + " | ".join(["data set", "model", *(METRIC_LABELS[name] for name in names)]))
    for row in result.rows:
        if row.category == MEAN_CATEGORY:
            values = [
                f"{100 * row.metrics[n]:.1f}"
                if row.metrics[n] is not None
                else NOT_APPLICABLE
                if n in row.not_applicable
                else "–"
                for n in names
            ]
            print("  " + " | ".join([row.dataset, row.model, *values]))


def main(argv: Sequence[str] | None = None) -> int:
    """``anomalib-adaclip benchmark``; returns 0 when every run finished, 1 when some failed, 2 on a bad configuration.

    Args:
        argv: Arguments after ``benchmark``; ``report ...`` writes a report without running. Defaults to
            ``sys.argv[1:]``.

    Returns:
        The exit code.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["report"]:
        return _report(argv[1:])
    arguments = build_parser().parse_args(argv)
    try:
        config = load_config(arguments.config, output=arguments.output)
        shard = arguments.shard or Shard.from_environment()
        if arguments.dry_run:
            _print_plan(config, shard)
            return 0
        result = run_benchmark(config, retry_failed=not arguments.skip_failed, paper=arguments.paper, shard=shard)
    except (BenchmarkConfigError, LockError, OSError) as error:
        print(f"anomalib-adaclip benchmark: error: {error}", file=sys.stderr)
        return 2
    others = f", {len(result.held)} run by other workers" if result.held else ""
    print(f"Runs: {len(result.executed)} executed, {len(result.skipped)} skipped (finished earlier){others}.")
    if result.report_dir is None:
        _print_left_to_others(result, arguments)
        return 1 if result.failed or result.blocked else 0
    _print_means(result)
    _print_report(result)
    if result.failed:
        print(f"{len(result.failed)} run(s) failed; see {result.markdown} (a rerun tries them again).", file=sys.stderr)
        return 1
    return 0
