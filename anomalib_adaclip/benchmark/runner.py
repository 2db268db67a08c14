"""Running the benchmark grid: a generator of runs, a job per run and the pipeline that ties them to the reports.

anomalib's own ``anomalib benchmark`` cannot run zero-shot models (it calls ``Engine.fit`` with the data module as a
positional argument, so WinCLIP and AdaCLIP end in "val_dataloader must be implemented") and refuses class paths from
outside anomalib. This runner runs any :class:`~anomalib.models.components.AnomalibModule` (AdaCLIP with any
checkpoint or backbone, anomalib's WinClip, PatchCore, ...) the way anomalib's Engine is meant to run it, in the shape
of anomalib's benchmark pipeline:

- :class:`RunGenerator` (the generator): the runs of the grid left to do, the grid minus the runs that finished
  earlier in the same output folder (resume), each with its job;
- :class:`RunJob` (the job): one run through anomalib's ``Engine`` with an equal, freshly built
  :func:`~anomalib_adaclip.benchmark.metrics.benchmark_evaluator`. A model that learns from normal images
  (``LearningType.ONE_CLASS``) is fitted and then tested; a zero- or few-shot model is tested directly
  (``Engine.test(model, datamodule=...)``, which validates first to collect its thresholds). A failure is recorded,
  not raised, and the grid goes on;
- :func:`run_benchmark` (the pipeline): plan, execute, record each run in the
  :class:`~anomalib_adaclip.benchmark.store.RunStore`, then write a new report
  (:func:`~anomalib_adaclip.benchmark.report.write_report`; with ``paper=True`` also the paper's tables,
  :func:`~anomalib_adaclip.benchmark.paper.write_paper_report`), with a progress bar over the grid;
  :func:`write_reports` writes a report from the store without running.

Example:
    >>> from anomalib_adaclip.benchmark.compare import run_benchmark
    >>> result = run_benchmark("configs/benchmark/paper.yaml")  # doctest: +SKIP
    >>> result.report_dir  # doctest: +SKIP
    PosixPath('results/benchmark/paper/reports/v0')
"""

from __future__ import annotations

import gc
import importlib
import logging
import random
import time
import traceback
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer

from .config import DEFAULT_ENGINE_ARGUMENTS, BenchmarkConfig, BenchmarkConfigError, RunKey, load_config
from .metrics import BENCHMARK_METRICS, METRIC_LABELS, NOT_APPLICABLE, benchmark_evaluator
from .paper import write_paper_report
from .report import ResultRow, write_report
from .store import RunRecord, RunStore

logger = logging.getLogger(__name__)

__all__ = [
    "EVALUATOR_ATTRIBUTE",
    "BenchmarkResult",
    "RunGenerator",
    "RunJob",
    "TrainingSubset",
    "run_benchmark",
    "write_reports",
]

# Where the evaluator sits in a model when the Engine runs it before the model's post-processor.
EVALUATOR_ATTRIBUTE = "benchmark_evaluator"


@dataclass(frozen=True)
class RunGenerator:
    """The generator: what is left to do of the grid, the runs without a finished record in the store.

    Args:
        config: The benchmark configuration.
        store: The run records of the output folder.
        retry_failed: Run again the runs whose earlier attempt failed. Defaults to ``True``.
    """

    config: BenchmarkConfig
    store: RunStore
    retry_failed: bool = True

    def mismatches(self) -> list[str]:
        """Finished runs in the folder whose model or data configuration differs from the current one."""
        problems = []
        for key in self.config.grid():
            record = self.store.finished(key)
            if record is None:
                continue
            expected = {
                "model": self.config.model(key.model).configuration_for(key.dataset),
                "data": self.config.dataset(key.dataset).configuration_for(key.category),
                "score_normalization": self.config.score_normalization,
            }
            stored = {
                "model": record.model_config,
                "data": record.data_config,
                "score_normalization": record.score_normalization,
            }
            for part, value in expected.items():
                if stored[part] != value:
                    problems.append(f"{key.label}: {part} was {stored[part]}, is now {value} ({record.path})")
        return problems

    def check_folder(self) -> None:
        """Refuse an output folder that holds finished runs of another configuration under the same names.

        Raises:
            BenchmarkConfigError: Some finished run's model, data or ``score_normalization`` differs (up to five are
                listed).
        """
        mismatches = self.mismatches()
        if not mismatches:
            return
        listed = "\n  ".join(mismatches[:5]) + (
            f"\n  ... and {len(mismatches) - 5} more" if len(mismatches) > 5 else ""
        )
        msg = (
            f"{self.config.output} holds finished runs of another configuration under the same names; their results "
            f"would be mixed with this one's. Use another output folder, or rename the model or data set:\n  {listed}"
        )
        raise BenchmarkConfigError(msg)

    def is_done(self, key: RunKey) -> bool:
        """Whether ``key`` is not left to do: it finished, or its last attempt failed and failures are not retried."""
        earlier = self.store.latest(key)
        return earlier is not None and (earlier.status == "finished" or not self.retry_failed)

    def generate_jobs(self) -> Iterator[tuple[RunKey, RunJob | None]]:
        """Every run of the grid in order, with the job that executes it, or ``None`` when it is not left to do.

        Lazy: whether a run is left to do is read from the store when the previous run has been recorded.
        """
        for key in self.config.grid():
            yield key, None if self.is_done(key) else RunJob(key, self.config)


class TrainingSubset(Callback):
    """Fit on ``k`` training images drawn with the run's seed instead of the whole training split (k-shot fitting).

    Runs after the data module's ``setup`` (Lightning sets up the data module before the callbacks) and replaces its
    training set by a seeded subset; validation and test data stay whole.

    Args:
        k: Training images to keep.
        seed: The run's seed.
    """

    def __init__(self, k: int, seed: int) -> None:
        self.k, self.seed = k, seed

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Replace the training set by ``k`` of its images (only when fitting).

        Raises:
            ValueError: The training split holds fewer than ``k`` images.
        """
        del pl_module
        datamodule = getattr(trainer, "datamodule", None)
        if stage != "fit" or datamodule is None or getattr(datamodule, "train_data", None) is None:
            return
        dataset = datamodule.train_data
        if self.k > len(dataset):
            msg = f"train_images={self.k}, but the training split holds only {len(dataset)} images."
            raise ValueError(msg)
        indices = sorted(random.Random(self.seed).sample(range(len(dataset)), self.k))
        datamodule.train_data = dataset.subsample(indices)
        logger.info("Fitting on %d of %d training images (seed %d).", self.k, len(dataset), self.seed)


@dataclass(frozen=True)
class RunJob:
    """The job: one run of the grid (a model on a category of a data set with a seed) through anomalib's Engine.

    Args:
        key: The run.
        config: The benchmark configuration (the model and data specifications, Engine settings, output folder).
    """

    key: RunKey
    config: BenchmarkConfig

    def run(self) -> RunRecord:
        """Run; any exception is recorded, not raised (``KeyboardInterrupt`` still stops).

        Returns:
            The run's record, ``"finished"`` with its metrics or ``"failed"`` with the error and its traceback; the
            caller stores it.
        """
        from anomalib import LearningType  # noqa: PLC0415
        from anomalib.callbacks import ModelCheckpoint  # noqa: PLC0415
        from anomalib.engine import Engine  # noqa: PLC0415
        from lightning.pytorch import seed_everything  # noqa: PLC0415

        from anomalib_adaclip.compat import create_versioned_dir  # noqa: PLC0415
        from anomalib_adaclip.data.paper_datasets import prepare_or_explain  # noqa: PLC0415

        key, config = self.key, self.config
        model_spec, data_spec = config.model(key.model), config.dataset(key.dataset)
        artifacts = create_versioned_dir(config.output / "artifacts" / key.folder / f"seed{key.seed}").resolve()
        record = RunRecord(
            model=key.model,
            dataset=key.dataset,
            category=key.category,
            seed=key.seed,
            status="failed",
            model_config=model_spec.configuration_for(key.dataset),
            data_config=data_spec.configuration_for(key.category),
            score_normalization=config.score_normalization,
            artifacts=str(artifacts),
            versions=_versions(),
        )
        model = datamodule = engine = None
        try:
            seed_everything(key.seed, workers=True)
            evaluator = benchmark_evaluator()
            # A model's own callbacks run after the Trainer's: the evaluator sees the post-processed (normalised)
            # scores when the model holds it, the raw outputs when the Engine does.
            model = model_spec.build(key.dataset, evaluator if config.score_normalization else False, config.visualize)
            datamodule = data_spec.build(key.category)
            prepare_or_explain(datamodule)  # a missing paper data set: where to get it, not a download error
            record.learning_type = LearningType(model.learning_type).value
            record.mode = model_spec.mode(key.dataset, record.learning_type)
            # A checkpoint callback that saves nothing keeps anomalib from writing a model file per run (WinCLIP's
            # holds its whole CLIP).
            callbacks = [ModelCheckpoint(save_top_k=0, save_last=False)]
            if model_spec.train_images is not None:
                callbacks.append(TrainingSubset(model_spec.train_images, key.seed))
            if not config.score_normalization:
                callbacks.append(evaluator)
                # Lightning logs a metric object only when it is a submodule of the LightningModule.
                model.add_module(EVALUATOR_ATTRIBUTE, evaluator)
            engine = Engine(
                default_root_dir=artifacts,
                callbacks=callbacks,
                **{**DEFAULT_ENGINE_ARGUMENTS, **config.engine},
            )
            if model.learning_type == LearningType.ONE_CLASS:
                start = time.perf_counter()
                engine.fit(model, datamodule=datamodule)
                record.fit_seconds = round(time.perf_counter() - start, 3)
            # Zero- and few-shot models are not fitted: Engine.test validates first (thresholds), then tests.
            start = time.perf_counter()
            results = engine.test(model, datamodule=datamodule, verbose=False)
            record.test_seconds = round(time.perf_counter() - start, 3)
            metrics = {name: float(value) for name, value in (results[0] if results else {}).items()}
            record.not_applicable = dict(evaluator.not_applicable)
            if not any(name in metrics or name in record.not_applicable for name in BENCHMARK_METRICS):
                msg = f"the test returned none of the benchmark metrics (got {sorted(metrics)})"
                raise RuntimeError(msg)
            record.metrics = metrics
            record.status = "finished"
        except Exception as error:  # every failure is recorded and the grid goes on
            record.error = f"{type(error).__name__}: {error}"
            record.traceback = traceback.format_exc()
            logger.error(
                "Benchmark run %s failed: %s (the traceback goes into its run record)", key.label, record.error
            )
        finally:
            del model, datamodule, engine
            _release_memory()
        record.finished_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        return record


@dataclass
class BenchmarkResult:
    """What :func:`run_benchmark` produced.

    Attributes:
        report_dir: ``<output>/reports/v<N>``.
        rows: The rows of ``results.csv``.
        records: The latest record of every run of the grid (finished, else the last failure); runs not yet run have
            none.
        executed: Runs executed by this call.
        skipped: Runs skipped because they had finished before (resume).
        results_csv: ``results.csv``.
        runs_csv: ``runs.csv``.
        markdown: ``results.md``.
        plots: ``plot_<dataset>.png`` per data set.
        paper: The paper-table report's files by name (``paper_tables.md``, ...; see
            :mod:`~anomalib_adaclip.benchmark.paper`), empty unless asked for.
    """

    report_dir: Path
    rows: list[ResultRow]
    records: list[RunRecord]
    executed: list[RunKey]
    skipped: list[RunKey]
    results_csv: Path
    runs_csv: Path
    markdown: Path
    plots: dict[str, Path]
    paper: dict[str, Path] = field(default_factory=dict)

    @property
    def failed(self) -> list[RunRecord]:
        """Runs whose latest attempt failed."""
        return [record for record in self.records if record.status == "failed"]


def write_reports(
    config: BenchmarkConfig,
    *,
    paper: bool = False,
    executed: list[RunKey] | None = None,
    skipped: list[RunKey] | None = None,
) -> BenchmarkResult:
    """Write a new report folder from the run store, without running anything.

    Args:
        config: The benchmark configuration.
        paper: Also write the paper-table report (:func:`~anomalib_adaclip.benchmark.paper.write_paper_report`).
        executed: Runs executed before the report (for the result).
        skipped: Runs skipped before the report (for the result).

    Returns:
        The report paths, the rows and the run records.
    """
    report_dir, records, rows, plots = write_report(config, RunStore(config.output / "runs"))
    paper_files = write_paper_report(report_dir, config, rows) if paper else {}
    return BenchmarkResult(
        report_dir=report_dir,
        rows=rows,
        records=records,
        executed=executed or [],
        skipped=skipped or [],
        results_csv=report_dir / "results.csv",
        runs_csv=report_dir / "runs.csv",
        markdown=report_dir / "results.md",
        plots=plots,
        paper=paper_files,
    )


def run_benchmark(
    config: BenchmarkConfig | str | Path | Mapping[str, Any],
    *,
    output: str | Path | None = None,
    retry_failed: bool = True,
    show_progress: bool = True,
    paper: bool = False,
) -> BenchmarkResult:
    """Run the grid (skipping runs that finished before in the same output folder) and write a new report.

    Args:
        config: A :class:`~anomalib_adaclip.benchmark.config.BenchmarkConfig`, a YAML file or its content as a mapping.
        output: Output folder; overrides the configuration's.
        retry_failed: Run again the runs whose earlier attempt failed. Defaults to ``True``.
        show_progress: Show a progress bar over the grid. Defaults to ``True``.
        paper: Also write the paper-table report (the AdaCLIP paper's Tables 1 and 2 beside this run's numbers; see
            :mod:`~anomalib_adaclip.benchmark.paper`). Defaults to ``False``.

    Returns:
        The report paths, the rows and the run records.

    Raises:
        BenchmarkConfigError: The configuration is invalid, or the output folder holds finished runs of a different
            configuration under the same names.
    """
    from tqdm.auto import tqdm  # noqa: PLC0415

    if not isinstance(config, BenchmarkConfig):
        config = load_config(config, output=output)
    elif output is not None:
        config = replace(config, output=Path(output))
    store = RunStore(config.output / "runs")
    generator = RunGenerator(config, store, retry_failed=retry_failed)
    generator.check_folder()
    total = len(config.grid())
    executed: list[RunKey] = []
    skipped: list[RunKey] = []
    logger.info("Benchmark %s: %d runs, output %s", config.source, total, config.output)
    with tqdm(total=total, desc="benchmark", unit="run", disable=not show_progress, dynamic_ncols=True) as progress:
        for key, job in generator.generate_jobs():
            progress.set_postfix_str(key.label)
            if job is None:
                skipped.append(key)
            else:
                record = job.run()
                store.save(record)
                executed.append(key)
                progress.write(f"{key.label}: {_outcome(record)}")
            progress.update()
    return write_reports(config, paper=paper, executed=executed, skipped=skipped)


def _outcome(record: RunRecord) -> str:
    """The progress line of a run: its metrics in percent, or its error."""
    if record.status != "finished":
        return f"FAILED: {record.error}"
    return ", ".join(
        f"{METRIC_LABELS[name]} {100 * record.metrics[name]:.1f}"
        if name in record.metrics
        else f"{METRIC_LABELS[name]} {NOT_APPLICABLE}"
        for name in BENCHMARK_METRICS
        if name in record.metrics or name in record.not_applicable
    )


def _versions() -> dict[str, str]:
    versions = {}
    for package in ("anomalib", "torch", "open_clip", "lightning", "anomalib_adaclip"):
        try:
            versions[package] = str(importlib.import_module(package).__version__)
        except (ImportError, AttributeError):
            continue
    return versions


def _release_memory() -> None:
    import torch  # noqa: PLC0415

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
