"""Accuracy benchmark: AdaCLIP against other anomalib models on a grid of data sets, categories and seeds.

This module is the stable import path of the benchmark (``from anomalib_adaclip.benchmark.compare import
load_config, run_benchmark``); it only re-exports. The parts live in:

- :mod:`~anomalib_adaclip.benchmark.config`: the YAML schema and its validation
  (:class:`~anomalib_adaclip.benchmark.config.BenchmarkConfig`, :class:`~anomalib_adaclip.benchmark.config.RunKey`,
  :class:`~anomalib_adaclip.benchmark.config.BenchmarkConfigError`,
  :func:`~anomalib_adaclip.benchmark.config.load_config`);
- :mod:`~anomalib_adaclip.benchmark.specs`: a model and a data set of the grid and how they are built
  (:class:`~anomalib_adaclip.benchmark.specs.ModelSpec`, :class:`~anomalib_adaclip.benchmark.specs.DataSpec`);
- :mod:`~anomalib_adaclip.benchmark.metrics`: the six metrics and the evaluator every run gets, which leaves out and
  explains the metrics a data set cannot have (:data:`~anomalib_adaclip.benchmark.metrics.BENCHMARK_METRICS`,
  :func:`~anomalib_adaclip.benchmark.metrics.benchmark_evaluator`,
  :class:`~anomalib_adaclip.benchmark.metrics.BenchmarkEvaluator`,
  :func:`~anomalib_adaclip.benchmark.metrics.not_applicable_reasons`);
- :mod:`~anomalib_adaclip.benchmark.store`: the resumable run records on disk
  (:class:`~anomalib_adaclip.benchmark.store.RunRecord`, :class:`~anomalib_adaclip.benchmark.store.RunStore`);
- :mod:`~anomalib_adaclip.benchmark.runner`: the grid as an anomalib pipeline, a job generator and the job that executes
  one run through anomalib's Engine, run by anomalib's runners in
  :func:`~anomalib_adaclip.benchmark.runner.run_benchmark` (:class:`~anomalib_adaclip.benchmark.runner.BenchmarkResult`,
  :class:`~anomalib_adaclip.benchmark.runner.Shard`);
- :mod:`~anomalib_adaclip.benchmark.report`: summaries and the CSV, Markdown and PNG reports
  (:class:`~anomalib_adaclip.benchmark.report.ResultRow`, :func:`~anomalib_adaclip.benchmark.report.summarise`,
  :func:`~anomalib_adaclip.benchmark.report.write_report`);
- :mod:`~anomalib_adaclip.benchmark.published`: the AdaCLIP paper's numbers
  (:func:`~anomalib_adaclip.benchmark.published.load_published`); :mod:`~anomalib_adaclip.benchmark.paper`: the paper's
  Tables 1 and 2 beside a run (:func:`~anomalib_adaclip.benchmark.paper.write_paper_report`);
- :mod:`~anomalib_adaclip.benchmark.cli`: the command ``anomalib-adaclip benchmark``
  (:func:`~anomalib_adaclip.benchmark.cli.main`).

The grid, the output folder and the Engine settings come from a YAML file (``configs/benchmark/*.yaml``)::

    anomalib-adaclip benchmark --config configs/benchmark/paper.yaml

Outputs, under the configured ``output`` folder (nothing that exists is overwritten):

- ``runs/<model>/<dataset>/<category>/seed<k>.json``: one record per finished run (its metrics, timings, the model and
  data configuration, versions). A rerun on the same folder skips every run that has one (resume). A failed run is
  recorded as ``seed<k>.failed.json`` (``-v1``, ``-v2``, ... for later attempts) and tried again on the next rerun.
  While a worker runs it, it holds ``seed<k>.claim``: any number of ``benchmark`` processes on one machine may share
  the folder, each run is executed once between them; on several machines each takes a shard (see the concurrency
  guide).
- ``reports/v<N>/`` (``reports/latest`` links to the newest): ``results.csv`` (per category and model, mean and
  standard deviation over the seeds, plus the mean over the categories of each data set), ``runs.csv`` (every run,
  failed ones with their error), ``results.md`` (the tables in percent, and the failed runs), ``plot_<dataset>.png``
  (bars per category and model, one panel per metric) and the ``config.yaml`` it was made from.
- ``artifacts/<model>/<dataset>/<category>/seed<k>/v<N>/``: anomalib's run folder of each attempt (visualisations when
  ``visualize: true``; no model checkpoints are written).

Example:
    >>> from anomalib_adaclip.benchmark.compare import run_benchmark
    >>> result = run_benchmark("configs/benchmark/paper.yaml")  # doctest: +SKIP
    >>> result.report_dir  # doctest: +SKIP
    PosixPath('results/benchmark/paper/reports/v0')
"""

from .cli import main
from .config import (
    CONFIG_KEYS,
    DATA_KEYS,
    DEFAULT_ENGINE_ARGUMENTS,
    MANAGED_ENGINE_ARGUMENTS,
    MODEL_KEYS,
    NO_CATEGORY_FOLDER,
    SHORT_NAME_MODULES,
    BenchmarkConfig,
    BenchmarkConfigError,
    RunKey,
    load_config,
)
from .metrics import (
    BENCHMARK_METRICS,
    METRIC_LABELS,
    NOT_APPLICABLE,
    BenchmarkEvaluator,
    benchmark_evaluator,
    not_applicable_reasons,
)
from .paper import PaperCell, paper_cells, write_paper_report
from .published import PublishedResults, load_published
from .report import MEAN_CATEGORY, ResultRow, summarise, write_report
from .runner import EVALUATOR_ATTRIBUTE, BenchmarkResult, Shard, run_benchmark, write_reports
from .specs import CATEGORY_PLACEHOLDER, RUNTIME_DATA_ARGUMENTS, DataSpec, ModelSpec
from .store import RunRecord, RunStore

__all__ = [
    "BENCHMARK_METRICS",
    "CATEGORY_PLACEHOLDER",
    "CONFIG_KEYS",
    "DATA_KEYS",
    "DEFAULT_ENGINE_ARGUMENTS",
    "EVALUATOR_ATTRIBUTE",
    "MANAGED_ENGINE_ARGUMENTS",
    "MEAN_CATEGORY",
    "METRIC_LABELS",
    "MODEL_KEYS",
    "NOT_APPLICABLE",
    "NO_CATEGORY_FOLDER",
    "RUNTIME_DATA_ARGUMENTS",
    "SHORT_NAME_MODULES",
    "BenchmarkConfig",
    "BenchmarkConfigError",
    "BenchmarkEvaluator",
    "BenchmarkResult",
    "DataSpec",
    "ModelSpec",
    "PaperCell",
    "PublishedResults",
    "ResultRow",
    "RunKey",
    "RunRecord",
    "RunStore",
    "Shard",
    "benchmark_evaluator",
    "load_config",
    "load_published",
    "main",
    "not_applicable_reasons",
    "paper_cells",
    "run_benchmark",
    "summarise",
    "write_paper_report",
    "write_report",
    "write_reports",
]
