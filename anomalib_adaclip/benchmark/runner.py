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
- :func:`run_benchmark` (the pipeline): plan, claim, execute, record each run in the
  :class:`~anomalib_adaclip.benchmark.store.RunStore`, then write a new report
  (:func:`~anomalib_adaclip.benchmark.report.write_report`; with ``paper=True`` also the paper's tables,
  :func:`~anomalib_adaclip.benchmark.paper.write_paper_report`), with a progress bar over the grid;
  :func:`write_reports` writes a report from the store without running.

Many workers, one grid: any number of ``run_benchmark`` calls (processes, machines sharing the file system, the tasks
of a SLURM job array) may work on one output folder at once. Each run is claimed before it starts
(:meth:`~anomalib_adaclip.benchmark.store.RunStore.claim`: an atomic claim file with the worker's host, PID and start,
renewed by a heartbeat thread); a worker passes over the runs others hold, so every run is executed once between
them. A claim whose worker died is taken over: on the same host as soon as its PID is gone, from another host when
its heartbeat is older than ``heartbeat_timeout``. A run that failed is tried again once per round, not once per
worker. The report is written by the worker that finds, after its last run, that no run of the grid is left or held
by another worker (and only once for the same set of records: ``<output>/.last_report.json``).

Example:
    >>> from anomalib_adaclip.benchmark.compare import run_benchmark
    >>> result = run_benchmark("configs/benchmark/paper.yaml")  # doctest: +SKIP
    >>> result.report_dir  # doctest: +SKIP
    PosixPath('results/benchmark/paper/reports/v0')
"""

from __future__ import annotations

import gc
import json
import logging
import os
import random
import time
import traceback
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer

from anomalib_adaclip.locks import LockError, LockHeldError, NotALockFileError, OwnedLock, Owner

from .config import DEFAULT_ENGINE_ARGUMENTS, BenchmarkConfig, BenchmarkConfigError, RunKey, load_config
from .environment import package_versions
from .metrics import BENCHMARK_METRICS, METRIC_LABELS, NOT_APPLICABLE, benchmark_evaluator
from .paper import write_paper_report
from .report import ResultRow, summarise, write_report
from .store import RunRecord, RunStore

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_HEARTBEAT_TIMEOUT",
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
# Seconds without a heartbeat after which another host's claim on a run is taken over; the heartbeat is renewed
# five times as often.
DEFAULT_HEARTBEAT_TIMEOUT = 300.0
# The record of the last report: which run records it was made from (a second worker does not write it again).
LAST_REPORT_FILE = ".last_report.json"


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
    failures_at_start: dict[RunKey, int] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        # Failed attempts recorded before this worker started: a newer one is another worker's attempt this round.
        self.failures_at_start.update({key: len(self.store.failures(key)) for key in self.config.grid()})

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
        """Whether ``key`` is not left to do: it finished, or it failed and is not retried (now) by this worker.

        A failure is not retried when ``retry_failed`` is off, or when it was recorded after this generator was made
        (another worker's attempt of this round).
        """
        earlier = self.store.latest(key)
        if earlier is None:
            return False
        if earlier.status == "finished" or not self.retry_failed:
            return True
        return len(self.store.failures(key)) > self.failures_at_start.get(key, 0)  # retried this round already

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
            versions=package_versions(),
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
        report_dir: ``<output>/reports/v<N>``; ``None`` when this worker left the report to another one (runs of the
            grid were still held by other workers when it ended).
        rows: The rows of ``results.csv`` (empty without a report).
        records: The latest record of every run of the grid (finished, else the last failure); runs not yet run have
            none. Without a report: the records of the runs this worker executed.
        executed: Runs executed by this call.
        skipped: Runs skipped because they had finished before (resume) or another worker finished them.
        results_csv: ``results.csv``.
        runs_csv: ``runs.csv``.
        markdown: ``results.md``.
        plots: ``plot_<dataset>.png`` per data set.
        paper: The paper-table report's files by name (``paper_tables.md``, ...; see
            :mod:`~anomalib_adaclip.benchmark.paper`), empty unless asked for.
        held: Runs other workers held when this worker passed them (and, at its end, still held: ``still_held``).
        still_held: Runs other workers still held when this worker ended; the last of them writes the report.
        blocked: Runs that could not be claimed, with the reason (a claim file that is not a claim, a folder that
            cannot be written).
        report_by_other: The report covering these records had been written by another worker already.
    """

    report_dir: Path | None
    rows: list[ResultRow]
    records: list[RunRecord]
    executed: list[RunKey]
    skipped: list[RunKey]
    results_csv: Path | None = None
    runs_csv: Path | None = None
    markdown: Path | None = None
    plots: dict[str, Path] = field(default_factory=dict)
    paper: dict[str, Path] = field(default_factory=dict)
    held: list[RunKey] = field(default_factory=list)
    still_held: list[RunKey] = field(default_factory=list)
    blocked: dict[RunKey, str] = field(default_factory=dict)
    report_by_other: bool = False

    @property
    def failed(self) -> list[RunRecord]:
        """Runs whose latest attempt failed."""
        return [record for record in self.records if record.status == "failed"]


def _latest_records(config: BenchmarkConfig, store: RunStore) -> list[RunRecord]:
    return [record for key in config.grid() if (record := store.latest(key)) is not None]


def _signature(records: list[RunRecord], store: RunStore) -> list[str]:
    """Which record files a report is made from (records are never rewritten, so their names identify them)."""
    return sorted(str(Path(record.path).relative_to(store.root)) for record in records if record.path is not None)


def _report_lock(config: BenchmarkConfig) -> OwnedLock:
    return OwnedLock(config.output / "reports.lock", what=f"The benchmark report of {config.output}")


def write_reports(
    config: BenchmarkConfig,
    *,
    paper: bool = False,
    executed: list[RunKey] | None = None,
    skipped: list[RunKey] | None = None,
    only_if_new: bool = False,
) -> BenchmarkResult:
    """Write a new report folder from the run store, without running anything.

    One report at a time per output folder (``<output>/reports.lock``; a second writer waits and says so).

    Args:
        config: The benchmark configuration.
        paper: Also write the paper-table report (:func:`~anomalib_adaclip.benchmark.paper.write_paper_report`).
        executed: Runs executed before the report (for the result).
        skipped: Runs skipped before the report (for the result).
        only_if_new: Write nothing when the last report was made from the same run records (another worker that
            finished at the same time wrote it); the result then names that report.

    Returns:
        The report paths, the rows and the run records.
    """
    store = RunStore(config.output / "runs")
    state = config.output / LAST_REPORT_FILE
    lock = _report_lock(config)
    lock.acquire(wait=True, poll=0.2, on_wait=logger.warning)  # reports are short: wait for the other one
    try:
        records = _latest_records(config, store)
        signature = _signature(records, store)
        if only_if_new and state.is_file():
            try:
                last = json.loads(state.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                last = {}
            report_dir = Path(last.get("report", ""))
            if last.get("records") == signature and report_dir.is_dir() and last.get("paper", False) >= paper:
                return _result(report_dir, summarise(records, config), records, executed, skipped, report_by_other=True)
        report_dir, records, rows, plots = write_report(config, store)
        paper_files = write_paper_report(report_dir, config, rows) if paper else {}
        temporary = state.with_name(f"{state.name}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps({"report": str(report_dir), "records": signature, "paper": paper}))
        os.replace(temporary, state)  # the one file that is replaced: a note of which report is the latest
    finally:
        lock.release()
    return _result(report_dir, rows, records, executed, skipped, plots=plots, paper=paper_files)


def _result(
    report_dir: Path,
    rows: list[ResultRow],
    records: list[RunRecord],
    executed: list[RunKey] | None,
    skipped: list[RunKey] | None,
    **extra: Any,
) -> BenchmarkResult:
    """The result naming a report folder's files (``extra``: plots, paper tables, whether another worker wrote it)."""
    return BenchmarkResult(
        report_dir=report_dir,
        rows=rows,
        records=records,
        executed=executed or [],
        skipped=skipped or [],
        results_csv=report_dir / "results.csv",
        runs_csv=report_dir / "runs.csv",
        markdown=report_dir / "results.md",
        **extra,
    )


def run_benchmark(
    config: BenchmarkConfig | str | Path | Mapping[str, Any],
    *,
    output: str | Path | None = None,
    retry_failed: bool = True,
    show_progress: bool = True,
    paper: bool = False,
    heartbeat_timeout: float = DEFAULT_HEARTBEAT_TIMEOUT,
) -> BenchmarkResult:
    """Run the grid (skipping runs that finished before in the same output folder) and write a new report.

    Other workers may run the same grid on the same output folder at the same time: each run is claimed before it
    starts and runs held by others are passed over; the worker that ends when no run is left or held writes the report.

    Args:
        config: A :class:`~anomalib_adaclip.benchmark.config.BenchmarkConfig`, a YAML file or its content as a mapping.
        output: Output folder; overrides the configuration's.
        retry_failed: Run again the runs whose earlier attempt failed. Defaults to ``True``.
        show_progress: Show a progress bar over the grid. Defaults to ``True``.
        paper: Also write the paper-table report (the AdaCLIP paper's Tables 1 and 2 beside this run's numbers; see
            :mod:`~anomalib_adaclip.benchmark.paper`). Defaults to ``False``.
        heartbeat_timeout: Seconds without a heartbeat after which a claim of a worker on another host is taken over
            (one on this host is taken over as soon as its process is gone). Defaults to 300.

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
    if heartbeat_timeout <= 0:
        msg = f"heartbeat_timeout must be a positive number of seconds, got {heartbeat_timeout}."
        raise BenchmarkConfigError(msg)
    store = RunStore(config.output / "runs")
    generator = RunGenerator(config, store, retry_failed=retry_failed)
    generator.check_folder()
    worker = _Worker(generator, heartbeat_timeout)
    total = len(config.grid())
    logger.info(
        "Benchmark %s: %d runs, output %s, worker %s", config.source, total, config.output, worker.owner.describe()
    )
    with tqdm(total=total, desc="benchmark", unit="run", disable=not show_progress, dynamic_ncols=True) as progress:
        for key, job in generator.generate_jobs():
            progress.set_postfix_str(key.label)
            if job is None:
                worker.skipped.append(key)
            else:
                worker.attempt(key, job, progress)
            progress.update()
        worker.take_over_abandoned(progress)
    still_held = [key for key in dict.fromkeys(worker.held) if worker.held_by_another(key)]
    if still_held or worker.blocked:
        return BenchmarkResult(
            report_dir=None,
            rows=[],
            records=worker.records,
            executed=worker.executed,
            skipped=worker.skipped,
            held=worker.held,
            still_held=still_held,
            blocked=worker.blocked,
        )
    result = write_reports(config, paper=paper, executed=worker.executed, skipped=worker.skipped, only_if_new=True)
    result.held = worker.held
    return result


@dataclass
class _Worker:
    """One worker's share of a grid: what it ran, passed over (held by others) or could not claim."""

    generator: RunGenerator
    heartbeat_timeout: float
    owner: Owner = field(default_factory=Owner.this_process)
    executed: list[RunKey] = field(default_factory=list)
    skipped: list[RunKey] = field(default_factory=list)
    held: list[RunKey] = field(default_factory=list)
    blocked: dict[RunKey, str] = field(default_factory=dict)
    records: list[RunRecord] = field(default_factory=list)

    @property
    def store(self) -> RunStore:
        return self.generator.store

    def attempt(self, key: RunKey, job: RunJob, progress: Any) -> None:
        """Claim, run and record ``key``, or note why not (another worker holds it, the claim cannot be made)."""
        claim = self.store.claim(key, self.owner, self.heartbeat_timeout)
        outcome = _claim_and_run(key, job, claim, self.generator, self.heartbeat_timeout)
        if isinstance(outcome, RunRecord):
            self.executed.append(key)
            self.records.append(outcome)
            progress.write(f"{key.label}: {_outcome(outcome)}")
        elif outcome is None:
            self.skipped.append(key)
        elif isinstance(outcome, LockHeldError):
            self.held.append(key)
            progress.write(f"{key.label}: run by another worker, {outcome.holder.describe()}")
        elif isinstance(outcome, LockError) and not isinstance(outcome, NotALockFileError):
            # The output folder cannot be written (read-only, full): no run can be claimed, so stop with one line.
            raise BenchmarkConfigError(str(outcome))
        else:
            self.blocked[key] = str(outcome)
            progress.write(f"{key.label}: not run: {outcome}")

    def take_over_abandoned(self, progress: Any) -> None:
        """Run the runs that another worker held when this one passed them and left unfinished (it died, or stopped)."""
        while True:
            free = [
                key
                for key in dict.fromkeys(self.held)
                if not self.generator.is_done(key) and not self.held_by_another(key)
            ]
            if not free:
                return
            self.held = [key for key in self.held if key not in free]
            for key in free:
                self.attempt(key, RunJob(key, self.generator.config), progress)

    def held_by_another(self, key: RunKey) -> bool:
        """Whether another worker holds ``key`` now (a claim whose worker lives, or whose heartbeat is recent)."""
        claim = self.store.claim(key, self.owner, self.heartbeat_timeout)
        try:
            holder = claim.holder()
            touched = claim.path.stat().st_mtime
        except FileNotFoundError:
            return False
        except LockError:
            return True
        return holder is not None and claim.stale_reason(holder, touched) is None


def _claim_and_run(
    key: RunKey,
    job: RunJob,
    claim: OwnedLock,
    generator: RunGenerator,
    heartbeat_timeout: float,
) -> RunRecord | LockError | str | None:
    """Claim a run, execute and record it, release the claim.

    Returns:
        The run's record; ``None`` when another worker finished it meanwhile; the :class:`LockHeldError` of the worker
        that holds it; another :class:`LockError` (a claim file that is not a claim, a folder that cannot be
        written); or why the finished run's record could not be written.
    """
    try:
        claim.try_acquire()
    except LockError as error:
        return error
    try:
        if generator.is_done(key):  # finished (or tried) by another worker between the plan and the claim
            return None
        claim.keep_alive(max(1.0, heartbeat_timeout / 5))
        record = job.run()
        try:
            generator.store.save(record)
        except FileExistsError:
            # A worker thought dead (its heartbeat stopped, e.g. suspended) finished after another took the run over.
            logger.warning("%s was finished by another worker meanwhile; this result is not kept.", key.label)
            return None
        except OSError as error:  # a full disk, a folder made read-only: the run is run again next time
            return (
                f"its record could not be written ({error.strerror or error}) under {generator.store.root}; free "
                "space (or make the folder writable) and run the command again: this run is run again, the runs "
                "recorded so far are kept"
            )
        if claim.lost:
            logger.warning("%s: another worker took this run over meanwhile; this worker's record was kept.", key.label)
        return record
    finally:
        claim.release()


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


def _release_memory() -> None:
    import torch  # noqa: PLC0415

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
