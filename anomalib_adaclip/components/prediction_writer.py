"""The predictions table of a predict run: one CSV row per image, written as the batches finish; resumable.

:class:`PredictionCSVWriter` writes path, class name, score, decision and the anomalous-area fraction (the share of
pixels whose map exceeds the pixel threshold, at the original image size). It writes ``predictions.csv`` into the
run's results folder, next to the ``images/`` folder; when that file exists (anomalib's ``predict`` reuses its
``latest`` folder) it takes the next free name, ``predictions-v1.csv``, ``predictions-v2.csv``, ..., so no earlier
table is ever overwritten. :class:`~anomalib_adaclip.AdaCLIP` installs it by default (``configure_callbacks``).

Memory stays flat however many images a run has: rows go to disk (flushed) at the end of each batch and nothing of
a batch is kept. With ``resume`` the run appends to an earlier table instead and leaves out the images it already
has before the first batch (they are neither read nor scored). On several processes (DDP on CPUs, GPUs or nodes)
each process writes its own part file and the global-rank-zero process merges them into the one table at the end
(:mod:`.prediction_table`). The run's count, wall time and images per second are printed once at the end.

One writer per table: the global-rank-zero process holds the table's lock (``<table>.lock``,
:func:`~.prediction_table.table_lock`) from before the table is chosen until the run ends, also when it fails; the
other processes of the same run write only their parts and learn rank zero's answer by broadcast, so the run is one
writer. Another run that would append to a locked table stops before it scores anything, naming the holder. Under
``anomalib-adaclip predict --resume`` the command line took that lock before the model was built
(:func:`~.prediction_table.reserve_table`), and :func:`~.prediction_table.table_lock` hands it to this writer.
"""

from __future__ import annotations

import csv
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from anomalib_adaclip.compat import batch_sampler_of, release_predict_batch_indices, setup_predict_data
from anomalib_adaclip.locks import LockError, OwnedLock

from .class_names import ClassNamedModule
from .decisions import anomalous_area_fraction, applied_threshold, decision, image_file_size
from .input_files import loader_list
from .mutual_groups import GroupBatchSampler
from .prediction_table import (
    CSV_COLUMNS,
    DEFAULT_CSV_NAME,
    PART_COLUMNS,
    PredictionTableError,
    csv_row,
    existing_parts,
    merge_parts,
    part_path,
    path_key,
    read_finished,
    resume_target,
    start_table,
    table_lock,
)

if TYPE_CHECKING:
    from anomalib.data import ImageBatch
    from lightning.pytorch import LightningModule, Trainer

logger = logging.getLogger(__name__)

__all__ = ["CSV_COLUMNS", "DEFAULT_CSV_NAME", "PredictionCSVWriter", "csv_row", "drop_finished_images"]


def _kept_indices(paths: Sequence[Any], finished: set[str], minimum: int) -> list[int]:
    """Indices of the unfinished paths; if there are some but fewer than ``minimum``, the first finished fill up."""
    kept = [index for index, path in enumerate(paths) if path_key(path) not in finished]
    if 0 < len(kept) < minimum:
        fill = [index for index in range(len(paths)) if path_key(paths[index]) in finished][: minimum - len(kept)]
        kept = sorted(kept + fill)
    return kept


def drop_finished_images(dataset: Any, finished: set[str], minimum: int = 0) -> int | None:
    """Remove the images whose :func:`~.prediction_table.path_key` is in ``finished`` from ``dataset``, in place.

    Knows anomalib's data sets: ``PredictDataset`` (a list ``image_filenames``) and ``AnomalibDataset`` (a
    ``samples`` table with ``image_path``, cut with its own ``subsample``).

    Args:
        dataset: The data set.
        finished: Path keys of the images to remove.
        minimum: Keep at least this many images when some are left (finished ones fill up, in order): Lightning's
            predict sampler needs an image for every process. Defaults to 0.

    Returns:
        The number of images removed, or ``None`` for a data set of another kind (left as it is).
    """
    filenames = getattr(dataset, "image_filenames", None)
    if isinstance(filenames, list):
        dataset.image_filenames = [filenames[index] for index in _kept_indices(filenames, finished, minimum)]
        return len(filenames) - len(dataset.image_filenames)
    samples = getattr(dataset, "samples", None)
    if callable(getattr(dataset, "subsample", None)) and "image_path" in getattr(samples, "columns", ()):
        kept = _kept_indices(list(samples["image_path"]), finished, minimum)
        if len(kept) < len(samples):
            dataset.subsample(kept, inplace=True)
        return len(samples) - len(kept)
    return None


class PredictionCSVWriter(BasePredictionWriter):
    """Write one CSV per prediction run (or append to an earlier one): path, class name, score, decision, area.

    Rows are written and flushed as batches finish, so a run that stops early keeps every finished row, and a
    resumed run (``resume``) carries on where it stopped. On several processes each writes a part file next to the
    table; the global-rank-zero process merges them at the end, in data-set order with every image once (the
    results folder must be one shared folder for all nodes).

    Args:
        output_dir: Folder of the CSV. Defaults to the run's results folder (``trainer.default_root_dir``), where
            the visualiser's ``images/`` folder is.
        filename: Preferred file name; an existing file is never overwritten: the next free ``-vN`` name is used.
            Defaults to ``"predictions.csv"``.
        resume: ``False``: a new table. ``True``: append to the one table of ``filename``'s family in the folder
            (an error when there are several; a new table when there is none). A path: append to that table.
            Images that already have a row are left out of the run. Defaults to ``False``.
    """

    def __init__(
        self,
        output_dir: str | Path | None = None,
        filename: str = DEFAULT_CSV_NAME,
        resume: bool | str | Path = False,
    ) -> None:
        super().__init__(write_interval="batch")
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.filename = filename
        self.resume = resume
        self.path: Path | None = None
        self._file: IO[str] | None = None
        self._writer: Any = None
        self._parts = False
        self._skip: set[str] = set()  # finished images that stayed in a data set this writer cannot cut
        self._finished: set[str] | None = None  # the resumed table's images, as rank zero read them
        self._written = 0
        self._skipped = 0  # rows of finished images not written again (each process its own)
        self._left_out = 0  # finished images cut out of the data (every process cuts the same whole data set)
        self._start = 0.0
        self._lock: OwnedLock | None = None  # the table's lock, held by the global-rank-zero process

    # ------------------------------------------------------------------------------------------------------------------
    # Start: choose (or resume) the table, leave out finished images, open this process's output
    # ------------------------------------------------------------------------------------------------------------------
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Choose the table and, when resuming, leave the finished images out of the data before any is loaded.

        Raises:
            PredictionTableError: The table to resume cannot be told or read (raised on every process).
        """
        if stage != "predict":
            return
        del pl_module
        self._start = time.perf_counter()
        self._written, self._skipped, self._left_out, self._skip, self.path = 0, 0, 0, set(), None
        self._finished = None
        directory = self.output_dir or Path(trainer.default_root_dir)
        # Rank zero alone creates, repairs or merges files; every process gets its answer, an error included, so
        # that no process waits for one that failed.
        answer = self._choose_table(directory) if trainer.is_global_zero else None
        table, error = trainer.strategy.broadcast(answer, src=0)
        if error:
            raise PredictionTableError(error)
        self.path = Path(table)
        if self.resume:
            self._leave_out_finished(trainer)
        self._parts = trainer.world_size > 1
        if self._parts:
            output = part_path(self.path, trainer.global_rank)
            self._file = output.open("x", newline="", encoding="utf-8")
            self._writer = csv.writer(self._file)
            self._writer.writerow(PART_COLUMNS)
        else:
            self._file = self.path.open("a", newline="", encoding="utf-8")
            self._writer = csv.writer(self._file)
        self._file.flush()

    def _choose_table(self, directory: Path) -> tuple[str | None, str | None]:
        """``(table, None)``, or ``(None, error message)``: the resumed table (repaired, parts merged) or a new one."""
        try:
            table = resume_target(directory, self.filename, self.resume) if self.resume else None
            if table is None:
                table, self._lock = start_table(directory, self.filename, resuming=bool(self.resume))
                if self.resume:
                    logger.info("Nothing to resume in %s: the run starts the table %s.", directory, table)
                stale = existing_parts(table)
                if stale:  # parts of a killed run whose table was since removed: they would be merged into this one
                    msg = (
                        f"{', '.join(str(part) for part in stale)}: part files of an earlier run whose table "
                        f"{table.name} is gone. Move them away (or put the table back and resume it)."
                    )
                    raise PredictionTableError(msg)
                return str(table), None
            self._lock = table_lock(table)
            self._lock.try_acquire()  # before the table is read: from here on no other run appends to it
            finished = read_finished(table)
            self._finished = finished.keys
            parts = existing_parts(table)
            if parts:  # a multi-process run was killed before it merged them
                merged = merge_parts(table, parts, finished.keys)
                logger.info("Merged %d row(s) of an interrupted run's %d part(s) into %s.", merged, len(parts), table)
            return str(table), None
        except LockError as error:
            self._release_lock()
            return None, str(error)
        except (PredictionTableError, OSError) as error:
            self._release_lock()
            return None, f"{type(error).__name__}: {error}"

    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.release()
        self._lock = None

    def _leave_out_finished(self, trainer: Trainer) -> None:
        """Cut the images the table has out of the run's data sets (or mark them, for data sets of other kinds)."""
        assert self.path is not None
        # Rank zero read it when it repaired it; the other processes read the repaired file.
        finished = self._finished if self._finished is not None else read_finished(self.path).keys
        self._finished = None
        # The loop builds its loaders here and again when it starts: both hold the same data set objects, so cutting
        # them now means the sampler, the batch count and the workers see only what is left.
        setup_predict_data(trainer)
        uncut, refilled = [], False
        for loader in loader_list(trainer.predict_dataloaders):
            batch_sampler = batch_sampler_of(loader)
            if isinstance(batch_sampler, GroupBatchSampler):
                # Batches are whole mutual-scoring groups: the finished groups are left out, the data set is not
                # touched (a group's members never change); a group with some finished images is scored whole.
                self._left_out += batch_sampler.leave_out(finished)
                self._skip = finished
                continue
            dataset = getattr(loader, "dataset", None)
            if dataset is None:
                continue
            size = len(dataset) if hasattr(dataset, "__len__") else 0
            dropped = drop_finished_images(dataset, finished, minimum=trainer.world_size)
            if dropped is None:
                uncut.append(type(dataset).__name__)
            else:
                self._left_out += dropped
                # Fewer images left than processes: Lightning's sampler needs one per process, so finished images
                # may have filled up (at most world_size are left then); they are scored but not written again.
                refilled |= trainer.world_size > 1 and 0 < size - dropped <= trainer.world_size
        if refilled:
            self._skip = finished
        if uncut:
            logger.warning(
                "Resuming: %s cannot leave images out before loading; images already in %s are scored again but "
                "not written again.",
                ", ".join(uncut),
                self.path,
            )
            self._skip = finished
        if trainer.is_global_zero:
            logger.info("Resuming %s: %d image(s) already have a row.", self.path, len(finished))

    # ------------------------------------------------------------------------------------------------------------------
    # Each batch: rows to disk, nothing kept
    # ------------------------------------------------------------------------------------------------------------------
    def rows(self, pl_module: LightningModule, batch: ImageBatch) -> list[list[str]]:
        """The CSV rows of a post-processed batch."""
        names = pl_module.image_class_names(batch) if isinstance(pl_module, ClassNamedModule) else None
        pixel_threshold = applied_threshold(pl_module, "pixel")
        rows = []
        for index, item in enumerate(batch):
            fraction = anomalous_area_fraction(
                item.anomaly_map, item.pred_mask, pixel_threshold, image_file_size(item.image_path)
            )
            score = None if item.pred_score is None else float(item.pred_score)
            rows.append(
                csv_row(
                    str(item.image_path or ""),
                    names[index] if names else "",
                    score,
                    decision(item.pred_label),
                    fraction,
                )
            )
        return rows

    def write_on_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        """Append the rows of a finished batch to the table (one process) or to this process's part, and flush."""
        del batch
        if self._writer is None:  # a predict run this writer was not set up for (e.g. called outside a Trainer)
            return
        rows = self.rows(pl_module, prediction)
        if self._skip:
            kept = [row for row in rows if path_key(row[0]) not in self._skip]
            self._skipped += len(rows) - len(kept)
            rows = kept
        if self._parts:
            indices = list(batch_indices) if batch_indices is not None and len(batch_indices) == len(rows) else None
            rows = [
                [str(dataloader_idx), "" if indices is None else str(indices[position]), *row]
                for position, row in enumerate(rows)
            ]
        try:
            self._writer.writerows(rows)
            self._file.flush()
        except OSError as error:  # a full disk, a share gone read-only: one line, and how to carry on
            output = part_path(self.path, trainer.global_rank) if self._parts else self.path
            msg = (
                f"Cannot write to {output}: {error.strerror or error}. The rows written before are kept (a row cut "
                "off is removed when resuming); free space (or make the folder writable) and run the same command "
                "with --resume."
            )
            raise PredictionTableError(msg) from error
        self._written += len(rows)
        _release_batch_indices(trainer, batch_idx, dataloader_idx)

    # ------------------------------------------------------------------------------------------------------------------
    # End: merge the parts, report the throughput
    # ------------------------------------------------------------------------------------------------------------------
    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Close this process's output; rank zero merges the parts and prints count, wall time and images/s.

        Runs on every process, also on one that got no image (a resumed run with fewer images left than processes),
        which skips the predict loop and its hooks; a failed run ends in ``on_exception`` instead.

        Raises:
            PredictionTableError: A process's part is missing (on several nodes the results folder must be shared).
        """
        del pl_module
        if stage != "predict" or self._file is None:
            return
        self._close(sync=self._parts)
        written, skipped = self._written, self._skipped
        if trainer.world_size > 1:
            # A collective: it also waits until every process has closed its part.
            totals = trainer.strategy.reduce(
                torch.tensor([written, skipped], dtype=torch.float64, device=trainer.strategy.root_device),
                reduce_op="sum",
            )
            written, skipped = (int(value) for value in totals.tolist())
        skipped += self._left_out
        try:
            if self._parts:
                error = self._merge(trainer) if trainer.is_global_zero else None
                error = trainer.strategy.broadcast(error, src=0)
                if error:
                    raise PredictionTableError(error)
        finally:
            self._release_lock()
        if trainer.is_global_zero:
            seconds = time.perf_counter() - self._start
            rate = written / seconds if seconds > 0 else float("nan")
            line = (
                f"AdaCLIP predicted {written} image(s) in {seconds:.1f} s ({rate:.2f} images/s) on "
                f"{trainer.world_size} process(es)"
                + (f"; {skipped} skipped (already in the table)" if skipped else "")
                + f"; table: {self.path}"
            )
            print(line, flush=True)

    def _merge(self, trainer: Trainer) -> str | None:
        """Merge every process's part into the table; an error message instead of raising (see ``teardown``)."""
        assert self.path is not None
        expected = [part_path(self.path, rank) for rank in range(trainer.world_size)]
        missing = [str(part) for part in expected if not part.is_file()]
        if missing:
            return (
                f"The part files {missing} of {self.path} are missing: on several nodes the results folder "
                "(--default_root_dir or PredictionCSVWriter(output_dir=...)) must be one shared folder. The parts that "
                "exist stay; resume the run from a node that sees them all."
            )
        try:
            merge_parts(self.path, expected)
        except (PredictionTableError, OSError) as error:
            return f"{type(error).__name__}: {error}"
        logger.info("AdaCLIP wrote the predictions table %s", self.path)
        return None

    def _close(self, sync: bool = False, failed: bool = False) -> None:
        if self._file is not None:
            try:
                self._file.flush()
                if sync:  # another process reads the part next
                    os.fsync(self._file.fileno())
                self._file.close()
            except OSError:
                if not failed:
                    raise
                # The run failed already (perhaps on this very write): the rows on disk are what resume reads.
                logger.warning("%s: the last rows of the failed run could not be written.", self.path)
        self._file, self._writer = None, None

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        """Close the output of a run that failed and release the table; the rows written so far stay (``resume``)."""
        del trainer, pl_module, exception
        self._close(failed=True)
        self._release_lock()


def _release_batch_indices(trainer: Trainer, batch_idx: int, dataloader_idx: int) -> None:
    """Drop the data-set indices Lightning kept for a finished batch (they would grow with the image count)."""
    loaders = loader_list(trainer.predict_dataloaders)
    if dataloader_idx < len(loaders):
        release_predict_batch_indices(loaders[dataloader_idx], batch_idx)
