"""Running the benchmark grid as an anomalib pipeline: a job generator, a job per run, anomalib's runners.

anomalib's own ``anomalib benchmark`` cannot run zero-shot models (it calls ``Engine.fit`` with the data module as a
positional argument, so WinCLIP and AdaCLIP end in "val_dataloader must be implemented") and refuses class paths from
outside anomalib. This module runs any :class:`~anomalib.models.components.AnomalibModule` (AdaCLIP with any
checkpoint or backbone, anomalib's WinClip, PatchCore, ...) the way anomalib's Engine is meant to run it, with the
pieces of anomalib's pipelines (:mod:`anomalib.pipelines.components`):

- :class:`BenchmarkJobGenerator` (a :class:`~anomalib.pipelines.components.JobGenerator`): a job for every run of the
  grid, or of this worker's :class:`Shard` of it;
- :class:`BenchmarkJob` (a :class:`~anomalib.pipelines.components.Job`): one model on one category with one seed. It
  claims the run, skips it when it finished before in the same output folder (resume), else runs it through anomalib's
  ``Engine`` with an equal, freshly built :func:`~anomalib_adaclip.benchmark.metrics.benchmark_evaluator` and records
  it in the :class:`~anomalib_adaclip.benchmark.store.RunStore`. A model that learns from normal images
  (``LearningType.ONE_CLASS``) is fitted and then tested; a zero- or few-shot model is tested directly
  (``Engine.test(model, datamodule=...)``, which validates first to collect its thresholds). An online model
  (AdaCLIP with its ``rarity`` group) scores each category in an order drawn with the run's seed
  (:class:`SeededTestOrder`), on raw scores without that validation. A failure is recorded, not raised, and the grid
  goes on. ``collect`` gathers the outcomes into a :class:`BenchmarkResult`; ``save`` writes
  the report (:func:`~anomalib_adaclip.benchmark.report.write_report`; with ``paper=True`` also the paper's tables,
  :func:`~anomalib_adaclip.benchmark.paper.write_paper_report`) once no run of the grid is left;
- anomalib's :class:`~anomalib.pipelines.components.runners.SerialRunner` runs the jobs one after the other, or
  its :class:`~anomalib.pipelines.components.runners.ParallelRunner` one process per GPU of the machine
  (:func:`run_benchmark`); :func:`write_reports` writes a report from the store without running. anomalib's
  ``Pipeline`` base class is not used: it reads its own YAML, sends every log line to ``runs/pipeline.log`` in the
  working folder and turns a runner's error into a printed line, where the benchmark checks its configuration first
  and ends with an exit code.

Many workers, one grid:

- on several machines (the tasks of a SLURM job array), each worker takes a fixed, disjoint :class:`Shard` of the
  grid (``--shard I/N``, or the array's task index): nothing is shared but the output folder;
- on one machine, any number of workers may also share the same runs: each run is claimed before it starts with a
  non-blocking kernel lock (:meth:`~anomalib_adaclip.benchmark.store.RunStore.claim`, freed at once when its worker
  dies), and a worker passes over the runs others hold. A run that failed is tried again once per round, not once per
  worker.

The report is written by the worker that finds, after its last run, that every run of the grid has a record and none
is held by another worker (and only once for the same set of records: ``<output>/.last_report.json``); ``benchmark
report`` writes one at any time.

Example:
    >>> from anomalib_adaclip.benchmark.compare import run_benchmark
    >>> result = run_benchmark("configs/benchmark/paper.yaml")  # doctest: +SKIP
    >>> result.report_dir  # doctest: +SKIP
    PosixPath('results/benchmark/paper/reports/v0')
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import random
import time
import traceback
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from anomalib.pipelines.components import Job, JobGenerator, Runner
from anomalib.pipelines.components.runners import ParallelRunner, SerialRunner
from lightning.pytorch import Callback, LightningModule, Trainer

from anomalib_adaclip.compat import ordered_subsample
from anomalib_adaclip.locks import LockError, LockHeldError, OwnedLock, Owner

from .config import DEFAULT_ENGINE_ARGUMENTS, BenchmarkConfig, BenchmarkConfigError, RunKey, load_config
from .environment import package_versions
from .metrics import BENCHMARK_METRICS, METRIC_LABELS, NOT_APPLICABLE, benchmark_evaluator
from .paper import write_paper_report
from .report import ResultRow, summarise, write_report
from .store import RunRecord, RunStore

logger = logging.getLogger(__name__)

__all__ = [
    "EVALUATOR_ATTRIBUTE",
    "BenchmarkJob",
    "BenchmarkJobGenerator",
    "BenchmarkResult",
    "RunOutcome",
    "SeededTestOrder",
    "Shard",
    "TrainingSubset",
    "check_folder",
    "run_benchmark",
    "write_reports",
]

# Where the evaluator sits in a model when the Engine runs it before the model's post-processor.
EVALUATOR_ATTRIBUTE = "benchmark_evaluator"
# The record of the last report: which run records it was made from (a second worker does not write it again).
LAST_REPORT_FILE = ".last_report.json"


@dataclass(frozen=True)
class Shard:
    """A fixed, disjoint part of the grid, for one task of a job array.

    The shard ``I/N`` holds the runs at positions ``I - 1``, ``I - 1 + N``, ``I - 1 + 2N``, ... of
    :meth:`~anomalib_adaclip.benchmark.config.BenchmarkConfig.grid` (every ``count``-th run, so that each shard gets
    a share of every model). The shards ``1/N`` ... ``N/N`` together are the grid, each run in exactly one of them.

    Args:
        index: Which part, from 1.
        count: Into how many parts the grid is cut.
    """

    index: int
    count: int

    def __post_init__(self) -> None:
        if not 1 <= self.index <= self.count:
            msg = f"A shard is I/N with 1 <= I <= N, got {self.index}/{self.count}."
            raise BenchmarkConfigError(msg)

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"I/N"`` (as ``--shard`` takes it).

        Raises:
            BenchmarkConfigError: Not two whole numbers ``I/N`` with ``1 <= I <= N``.
        """
        index, _, count = text.partition("/")
        if not (index.strip().isdigit() and count.strip().isdigit()):
            msg = f"--shard takes I/N (the I-th of N parts of the grid, e.g. 2/8), got {text!r}."
            raise BenchmarkConfigError(msg)
        return cls(int(index), int(count))

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Shard | None:
        """The shard of a SLURM job array's task, ``None`` outside one.

        SLURM numbers an array's tasks as given to ``--array`` (``0-9``, ``1-10``, ``0-18:2``):
        ``SLURM_ARRAY_TASK_ID`` is the task's number, ``SLURM_ARRAY_TASK_MIN``/``_MAX`` the first and last,
        ``SLURM_ARRAY_TASK_STEP`` the step and ``SLURM_ARRAY_TASK_COUNT`` how many. The shard is the task's position
        in that range: ``(ID - MIN) / STEP + 1`` of ``COUNT``. A list that is not a range (``--array=1,4,5``) has no
        such position; there each task must be given its ``--shard``.

        Raises:
            BenchmarkConfigError: The array's numbers are not a regular range, or a variable is missing.
        """
        environ = os.environ if environ is None else environ
        if "SLURM_ARRAY_TASK_ID" not in environ:
            return None
        try:
            task = int(environ["SLURM_ARRAY_TASK_ID"])
            count = int(environ["SLURM_ARRAY_TASK_COUNT"])
            first = int(environ.get("SLURM_ARRAY_TASK_MIN", task if count == 1 else ""))
            last = int(environ.get("SLURM_ARRAY_TASK_MAX", first + count - 1))
            step = int(environ.get("SLURM_ARRAY_TASK_STEP", "1"))
        except (KeyError, ValueError) as error:
            msg = (
                f"SLURM_ARRAY_TASK_ID is set, but the array's SLURM_ARRAY_TASK_COUNT/_MIN/_MAX/_STEP are missing or "
                f"not numbers ({error}); pass --shard I/N."
            )
            raise BenchmarkConfigError(msg) from None
        position, off_step = divmod(task - first, step) if step > 0 else (-1, 0)
        if off_step or not 0 <= position < count or last - first != (count - 1) * step:
            msg = (
                f"The SLURM array's task numbers are not the range {first}-{last}:{step} of {count} tasks (task "
                f"{task}), so the task's part of the grid is not defined by them; give each task --shard I/N, or "
                "submit --array as a range (e.g. --array=0-7)."
            )
            raise BenchmarkConfigError(msg)
        return cls(position + 1, count)

    def select(self, keys: Sequence[RunKey]) -> list[RunKey]:
        """This shard's runs of ``keys`` (the expanded grid, in its order)."""
        return [key for position, key in enumerate(keys) if position % self.count == self.index - 1]


def _keys(config: BenchmarkConfig, shard: Shard | None) -> list[RunKey]:
    grid = config.grid()
    return grid if shard is None else shard.select(grid)


def mismatches(config: BenchmarkConfig, store: RunStore) -> list[str]:
    """Finished runs in the folder whose model or data configuration differs from the current one."""
    problems = []
    for key in config.grid():
        record = store.finished(key)
        if record is None:
            continue
        expected = {
            "model": config.model(key.model).configuration_for(key.dataset),
            "data": config.dataset(key.dataset).configuration_for(key.category),
            "score_normalization": config.score_normalization,
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


def check_folder(config: BenchmarkConfig) -> None:
    """Refuse an output folder that holds finished runs of another configuration under the same names.

    Raises:
        BenchmarkConfigError: Some finished run's model, data or ``score_normalization`` differs (up to five are
            listed).
    """
    problems = mismatches(config, RunStore(config.output / "runs"))
    if not problems:
        return
    listed = "\n  ".join(problems[:5]) + (f"\n  ... and {len(problems) - 5} more" if len(problems) > 5 else "")
    msg = (
        f"{config.output} holds finished runs of another configuration under the same names; their results "
        f"would be mixed with this one's. Use another output folder, or rename the model or data set:\n  {listed}"
    )
    raise BenchmarkConfigError(msg)


def _is_done(store: RunStore, key: RunKey, retry_failed: bool, failures_at_start: int) -> bool:
    """Whether ``key`` is not left to do: it finished, or it failed and is not retried (now) by this worker.

    A failure is not retried when ``retry_failed`` is off, or when it was recorded after this worker started (more
    than ``failures_at_start`` failed attempts: another worker's attempt of this round).
    """
    earlier = store.latest(key)
    if earlier is None:
        return False
    if earlier.status == "finished" or not retry_failed:
        return True
    return len(store.failures(key)) > failures_at_start


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


class SeededTestOrder(Callback):
    """Score the test images in an order drawn with the run's seed: the online mode's protocol (RareCLIP's).

    An online model (AdaCLIP with its ``rarity`` group) scores each image against the images before it, so its
    numbers depend on the order. RareCLIP's ``test.py`` shuffles each category with the run's seed (Python's
    ``random``), scores it with batch 1 and reports the mean over seeds 0-4; the benchmark's mean over seeds is that
    mean. (The permutation shuffles anomalib's order of the samples, not the authors' file listing: the same protocol,
    not their exact orders.) The batch size does not matter: the rarity part scores image by image inside a batch.

    Runs after the data module's ``setup`` (Lightning sets up the data module before the callbacks) and replaces its
    test set by its images in the permuted order (anomalib's ``subsample``, in the given order:
    :func:`~anomalib_adaclip.compat.ordered_subsample`), and its validation set by the same permutation when it holds
    the test images in the test order (``val_split_mode: same_as_test``): validation and test see one order.
    ``Engine.test`` sets up twice (validate, then test) while anomalib's data module builds its sets once: sets this
    callback made are left as they are, and sets built again are drawn again, in the same order.

    Args:
        seed: The run's seed.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.ordered: dict[str, Any] = {}  # "test" / "val" -> the data set this callback made

    def permutation(self, count: int) -> list[int]:
        """The order of ``count`` test images for this seed: ``random.Random(seed).shuffle`` of ``0 .. count - 1``."""
        order = list(range(count))
        random.Random(self.seed).shuffle(order)
        return order

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Put the test images (and a validation copy of them) in the seeded order, once per data set built."""
        del pl_module, stage
        datamodule = getattr(trainer, "datamodule", None)
        test = getattr(datamodule, "test_data", None)
        if test is None or test is self.ordered.get("test"):
            return
        val = getattr(datamodule, "val_data", None)
        same = val is not None and val is not self.ordered.get("val") and val.samples.equals(test.samples)
        order = self.permutation(len(test))
        self.ordered["test"] = datamodule.test_data = ordered_subsample(test, order)
        if same:
            self.ordered["val"] = datamodule.val_data = ordered_subsample(val, order)
        logger.info("Scoring the %d test images in the order of seed %d (online mode).", len(test), self.seed)


@dataclass
class RunOutcome:
    """What a :class:`BenchmarkJob` did with its run.

    Attributes:
        key: The run.
        state: ``"executed"`` (``record`` says whether it finished or failed), ``"skipped"`` (it finished before, or
            failed and is not retried), ``"held"`` (another worker runs it; ``reason`` names it) or ``"blocked"``
            (its record or claim could not be written; ``reason`` says why).
        config: The benchmark configuration (for the report).
        paper: Whether the report includes the paper's tables.
        record: The run's record, when executed.
        reason: Who holds it, or why it could not be run or recorded.
        claim_failed: The claim could not be made (when no claim of a worker can be made, the output folder cannot be
            written).
    """

    key: RunKey
    state: Literal["executed", "skipped", "held", "blocked"]
    config: BenchmarkConfig
    paper: bool = False
    record: RunRecord | None = None
    reason: str = ""
    claim_failed: bool = False


@dataclass
class BenchmarkJob(Job):
    """One run of the grid (a model on a category of a data set with a seed), claimed, executed and recorded.

    Args:
        key: The run.
        config: The benchmark configuration (the model and data specifications, Engine settings, output folder).
        retry_failed: Run it again when its earlier attempt failed.
        failures_at_start: Its failed attempts recorded before this worker started (a newer one is another worker's
            attempt of this round).
        paper: The report includes the paper's tables.
        show_progress: Print a line with the run's outcome.
        worker: The run id of the worker (the ``run_id`` of its claims' owner records: a worker's jobs may run in
            several processes, one per GPU). Defaults to a new one.
    """

    name = "benchmark"

    key: RunKey
    config: BenchmarkConfig
    retry_failed: bool = True
    failures_at_start: int = 0
    paper: bool = False
    show_progress: bool = True
    worker: str | None = field(default=None, compare=False)
    device: int | None = field(default=None, compare=False)

    def run(self, task_id: int | None = None) -> RunOutcome:
        """Claim the run, execute it unless it is done, record it, release the claim.

        Args:
            task_id: The GPU of this job when anomalib's ``ParallelRunner`` runs it (one process per GPU); ``None``
                in a serial run.

        Returns:
            What was done, with the record of an executed run.
        """
        outcome = self._claimed(RunStore(self.config.output / "runs"), task_id)
        if self.show_progress and outcome.state != "skipped":
            from tqdm import tqdm  # noqa: PLC0415  (the bar of anomalib's SerialRunner)

            tqdm.write(f"{self.key.label}: {_describe(outcome)}")
        return outcome

    def _claimed(self, store: RunStore, task_id: int | None) -> RunOutcome:
        made = {"key": self.key, "config": self.config, "paper": self.paper}
        with contextlib.ExitStack() as claim:
            try:
                # The owner record names the process that runs the job (with ParallelRunner, not the one that
                # made it).
                claim.enter_context(store.claim(self.key, Owner.this_process(self.worker)))
            except LockHeldError as held:
                return RunOutcome(**made, state="held", reason=str(held))
            except (LockError, OSError) as error:  # the folder cannot be written
                return RunOutcome(**made, state="blocked", reason=str(error), claim_failed=True)
            if _is_done(store, self.key, self.retry_failed, self.failures_at_start):  # before, or by another worker
                return RunOutcome(**made, state="skipped")
            self.device = task_id
            record = self.execute()
            try:
                store.save(record)
            except FileExistsError:
                logger.warning("%s was finished by another worker meanwhile; this result is not kept.", self.key.label)
                return RunOutcome(**made, state="skipped")
            except OSError as error:  # a full disk, a folder made read-only: the run is run again next time
                reason = (
                    f"its record could not be written ({error.strerror or error}) under {store.root}; free space (or "
                    "make the folder writable) and run the command again: this run is run again, the runs recorded "
                    "so far are kept"
                )
                return RunOutcome(**made, state="blocked", reason=reason)
            return RunOutcome(**made, state="executed", record=record)

    def engine_arguments(self) -> dict[str, Any]:
        """The Engine's arguments: the configuration's, on this job's GPU when it has one (``ParallelRunner``).

        An online run on raw scores (``score_normalization: false``) skips the validation that ``Engine.test`` runs
        first (``limit_val_batches: 0``). That validation scores the same test images in the same order only to learn
        thresholds and min-max statistics, which no benchmark metric reads on raw scores (F1-max takes the best
        threshold itself); the banks are emptied when the test starts, so it leaves nothing to the test either. It
        would double an online run's cost and change none of its numbers; with ``score_normalization: true`` the
        metrics are computed after the post-processor's normalisation, which it learns, so it is kept.
        """
        arguments = {**DEFAULT_ENGINE_ARGUMENTS, **self.config.engine}
        if not self.config.score_normalization and self.config.model(self.key.model).online(self.key.dataset):
            arguments["limit_val_batches"] = 0
        return arguments if self.device is None else {**arguments, "devices": [self.device]}

    def data_callbacks(self) -> list[Callback]:
        """The run's callbacks besides the evaluator: no model file, and the run's seed where the data depend on it.

        ``train_images`` fits on a seeded subset of the training images (:class:`TrainingSubset`); an online model
        scores the test images in a seeded order (:class:`SeededTestOrder`). Every other model's data stay as the
        data module gives them.
        """
        from anomalib.callbacks import ModelCheckpoint  # noqa: PLC0415

        model_spec, seed = self.config.model(self.key.model), self.key.seed
        # A checkpoint callback that saves nothing keeps anomalib from writing a model file per run (WinCLIP's holds
        # its whole CLIP).
        callbacks: list[Callback] = [ModelCheckpoint(save_top_k=0, save_last=False)]
        if model_spec.train_images is not None:
            callbacks.append(TrainingSubset(model_spec.train_images, seed))
        if model_spec.online(self.key.dataset):
            callbacks.append(SeededTestOrder(seed))
        return callbacks

    def execute(self) -> RunRecord:
        """Execute the run; any exception is recorded, not raised (``KeyboardInterrupt`` still stops).

        Returns:
            The run's record, ``"finished"`` with its metrics or ``"failed"`` with the error and its traceback;
            :meth:`run` stores it.
        """
        from anomalib import LearningType  # noqa: PLC0415
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
            callbacks = self.data_callbacks()
            if not config.score_normalization:
                callbacks.append(evaluator)
                # Lightning logs a metric object only when it is a submodule of the LightningModule.
                model.add_module(EVALUATOR_ATTRIBUTE, evaluator)
            engine = Engine(default_root_dir=artifacts, callbacks=callbacks, **self.engine_arguments())
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

    @staticmethod
    def collect(results: list[RunOutcome]) -> BenchmarkResult | None:
        """The outcomes of this worker's jobs, as a result without a report yet (``None`` without a job)."""
        if not results:
            return None
        return BenchmarkResult(
            report_dir=None,
            rows=[],
            records=[outcome.record for outcome in results if outcome.record is not None],
            executed=[outcome.key for outcome in results if outcome.state == "executed"],
            skipped=[outcome.key for outcome in results if outcome.state == "skipped"],
            held=[outcome.key for outcome in results if outcome.state == "held"],
            blocked={outcome.key: outcome.reason for outcome in results if outcome.state == "blocked"},
            # Not one run could be claimed: the output folder cannot be written, which is one error, not a run's.
            unwritable=results[0].reason if all(outcome.claim_failed for outcome in results) else None,
            config=results[0].config,
            with_paper=results[0].paper,
        )

    @staticmethod
    def save(results: BenchmarkResult | None) -> None:
        """Write the report when no run of the grid is left: each has a record and none is held by another worker.

        A worker that could not run or record some of its runs leaves the report to the next command.
        """
        if results is None or results.config is None or results.blocked:
            return
        config = results.config
        store = RunStore(config.output / "runs")
        results.still_held = [
            key for key in dict.fromkeys(results.held) if store.finished(key) is None and store.in_use(key)
        ]
        if results.still_held:
            return
        unfinished = [key for key in config.grid() if store.finished(key) is None]
        if any(store.latest(key) is None for key in unfinished):  # left to other shards or workers
            return
        if any(store.in_use(key) for key in unfinished):  # a failed run being tried again by another worker
            return
        report = write_reports(config, paper=results.with_paper, only_if_new=True)
        for name in ("report_dir", "rows", "records", "results_csv", "runs_csv", "markdown", "plots", "paper"):
            setattr(results, name, getattr(report, name))
        results.report_by_other = report.report_by_other


class BenchmarkJobGenerator(JobGenerator):
    """A :class:`BenchmarkJob` for every run of the grid (or of a :class:`Shard` of it), in the grid's order.

    After the last one, the runs that another worker held when their job came and that are free now (that worker died
    or stopped without recording them) get a job again.

    Args:
        config: The benchmark configuration.
        retry_failed: Run again the runs whose earlier attempt failed. Defaults to ``True``.
        shard: Only this part of the grid. Defaults to the whole grid.
        paper: The report includes the paper's tables.
        show_progress: Print a line per run.
    """

    def __init__(
        self,
        config: BenchmarkConfig,
        *,
        retry_failed: bool = True,
        shard: Shard | None = None,
        paper: bool = False,
        show_progress: bool = True,
    ) -> None:
        self.config, self.shard, self.retry_failed = config, shard, retry_failed
        self.paper, self.show_progress = paper, show_progress
        self.store = RunStore(config.output / "runs")
        self.keys = _keys(config, shard)
        # Failed attempts recorded before this worker started: a newer one is another worker's attempt this round.
        self.failures_at_start = {key: len(self.store.failures(key)) for key in self.keys}
        # This worker: its claims' owner records carry its run id (and the PID of the process that runs each job).
        self.owner = Owner.this_process()

    @property
    def job_class(self) -> type[BenchmarkJob]:
        """:class:`BenchmarkJob`."""
        return BenchmarkJob

    def job(self, key: RunKey) -> BenchmarkJob:
        """The job of ``key``."""
        return BenchmarkJob(
            key,
            self.config,
            retry_failed=self.retry_failed,
            failures_at_start=self.failures_at_start[key],
            paper=self.paper,
            show_progress=self.show_progress,
            worker=self.owner.run_id,
        )

    def is_done(self, key: RunKey) -> bool:
        """Whether ``key`` is not left to do for this worker (see :class:`BenchmarkJob`)."""
        return _is_done(self.store, key, self.retry_failed, self.failures_at_start[key])

    def generate_jobs(self, args: dict | None = None, prev_stage_result: Any = None) -> Iterator[BenchmarkJob]:
        """Every run's job; lazily, so that each is read from the store after the previous one was recorded.

        Args:
            args: Unused (the configuration was given to the generator).
            prev_stage_result: Unused.
        """
        del args, prev_stage_result
        held = []
        for key in self.keys:
            if not self.is_done(key) and self.store.in_use(key):
                held.append(key)
            yield self.job(key)
        for key in held:  # abandoned by their worker since
            if not self.is_done(key) and not self.store.in_use(key):
                yield self.job(key)


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
        held: Runs other workers held when this worker's job for them came.
        still_held: Runs of the grid that other workers still held when this worker ended; the last of them writes
            the report.
        blocked: Runs that could not be claimed or recorded, with the reason (a folder that cannot be written, a full
            disk).
        report_by_other: The report covering these records had been written by another worker already.
        unwritable: Why no run could be claimed (the output folder cannot be written), else ``None``.
        config: The configuration that was run.
        with_paper: Whether the report includes the paper's tables.
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
    unwritable: str | None = None
    config: BenchmarkConfig | None = field(default=None, repr=False)
    with_paper: bool = False

    @property
    def failed(self) -> list[RunRecord]:
        """Runs whose latest attempt failed."""
        return [record for record in self.records if record.status == "failed"]


def _latest_records(config: BenchmarkConfig, store: RunStore) -> list[RunRecord]:
    return [record for key in config.grid() if (record := store.latest(key)) is not None]


def _signature(records: list[RunRecord], store: RunStore) -> list[str]:
    """Which record files a report is made from (records are never rewritten, so their names identify them)."""
    return sorted(str(Path(record.path).relative_to(store.root)) for record in records if record.path is not None)


@contextlib.contextmanager
def _report_lock(config: BenchmarkConfig) -> Iterator[None]:
    """One report at a time per output folder; a second writer waits (reports are short) and says so once."""
    lock = OwnedLock(config.output / "reports.lock", what=f"The benchmark report of {config.output}")
    lock.acquire(wait=True, poll=0.2, on_wait=logger.warning)
    try:
        yield
    finally:
        lock.release()


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
    with _report_lock(config):
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
    shard: Shard | None = None,
) -> BenchmarkResult:
    """Run the grid, or a shard of it (skipping runs that finished before in the same output folder), and report.

    The jobs of :class:`BenchmarkJobGenerator` run on anomalib's ``SerialRunner``, or on its ``ParallelRunner`` with one
    process per GPU when the machine has several and each run uses one (``engine: {devices: 1}``, the default). Other
    workers may run the same grid on the same output folder at the same time; the worker that ends when no run of the
    grid is left writes the report.

    Args:
        config: A :class:`~anomalib_adaclip.benchmark.config.BenchmarkConfig`, a YAML file or its content as a mapping.
        output: Output folder; overrides the configuration's.
        retry_failed: Run again the runs whose earlier attempt failed. Defaults to ``True``.
        show_progress: Print a line per run with its metrics or error. Defaults to ``True``.
        paper: Also write the paper-table report (the AdaCLIP paper's Tables 1 and 2 beside this run's numbers; see
            :mod:`~anomalib_adaclip.benchmark.paper`). Defaults to ``False``.
        shard: Run only this part of the grid (a task of a job array). Defaults to the whole grid.

    Returns:
        The report paths, the rows and the run records; without a report (runs of the grid left to other workers or
        shards) the records of the runs this worker executed.

    Raises:
        BenchmarkConfigError: The configuration is invalid, the output folder holds finished runs of a different
            configuration under the same names, or it cannot be written.
    """
    if not isinstance(config, BenchmarkConfig):
        config = load_config(config, output=output)
    elif output is not None:
        config = replace(config, output=Path(output))
    check_folder(config)
    generator = BenchmarkJobGenerator(
        config, retry_failed=retry_failed, shard=shard, paper=paper, show_progress=show_progress
    )
    part = f" (shard {shard}: {len(generator.keys)} runs)" if shard is not None else ""
    logger.info(
        "Benchmark %s: %d runs%s, output %s, worker %s",
        config.source,
        len(config.grid()),
        part,
        config.output,
        generator.owner.describe(),
    )
    result = _runner(generator, config).run({})
    if result is None:  # an empty shard
        result = BenchmarkResult(report_dir=None, rows=[], records=[], executed=[], skipped=[], config=config)
    if result.unwritable is not None:
        raise BenchmarkConfigError(result.unwritable)
    return result


def _runner(generator: BenchmarkJobGenerator, config: BenchmarkConfig) -> Runner:
    """Anomalib's ParallelRunner over the GPUs when there are several and each run takes one, else its SerialRunner."""
    import torch  # noqa: PLC0415

    engine = {**DEFAULT_ENGINE_ARGUMENTS, **config.engine}
    gpus = torch.cuda.device_count()
    if gpus > 1 and engine.get("accelerator", "auto") in {"auto", "gpu", "cuda"} and engine.get("devices", 1) == 1:
        return ParallelRunner(generator, n_jobs=gpus)
    return SerialRunner(generator)


def _describe(outcome: RunOutcome) -> str:
    """The progress line of a run: its metrics in percent, its error, or why it was not run."""
    record = outcome.record
    if record is None:
        return f"run by another worker, {outcome.reason}" if outcome.state == "held" else f"not run: {outcome.reason}"
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
