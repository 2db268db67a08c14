"""The predictions table: one CSV row per predicted image, written as the batches finish.

:class:`PredictionCSVWriter` writes path, class name, score, decision and the anomalous-area fraction (the share of
pixels whose map exceeds the pixel threshold, at the original image size). It writes ``predictions.csv`` into the
run's results folder, next to the ``images/`` folder; when that file exists (anomalib's ``predict`` reuses its
``latest`` folder) it takes the next free name, ``predictions-v1.csv``, ``predictions-v2.csv``, ..., so no earlier
table is ever overwritten. :class:`~anomalib_adaclip.AdaCLIP` installs it by default (``configure_callbacks``).
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from anomalib_adaclip.files import open_new_text_file

from .class_names import ClassNamedModule
from .decisions import anomalous_area_fraction, applied_threshold, decision, image_file_size

if TYPE_CHECKING:
    from anomalib.data import ImageBatch
    from lightning.pytorch import LightningModule, Trainer

logger = logging.getLogger(__name__)

__all__ = ["CSV_COLUMNS", "DEFAULT_CSV_NAME", "PredictionCSVWriter", "csv_row"]


CSV_COLUMNS = ("path", "class_name", "score", "decision", "anomalous_area_fraction")
DEFAULT_CSV_NAME = "predictions.csv"


def csv_row(path: str, class_name: str, score: float | None, verdict: str, fraction: float | None) -> list[str]:
    """One row of the predictions table (``CSV_COLUMNS``); a missing score or area fraction is an empty cell."""
    return [
        path,
        class_name,
        "" if score is None else f"{score:.6f}",
        verdict,
        "" if fraction is None or math.isnan(fraction) else f"{fraction:.6f}",
    ]


class PredictionCSVWriter(BasePredictionWriter):
    """Write one CSV per prediction run: path, class name, score, decision and anomalous-area fraction.

    Rows are written as batches finish (a long run that stops early keeps what it has). In multi-process runs the
    other processes' rows are collected at the end and the global-rank-zero process alone writes the file.

    Args:
        output_dir: Folder of the CSV. Defaults to the run's results folder (``trainer.default_root_dir``), where
            the visualiser's ``images/`` folder is.
        filename: Preferred file name; an existing file is never overwritten: the next free ``-vN`` name is used.
            Defaults to ``"predictions.csv"``.
    """

    def __init__(self, output_dir: str | Path | None = None, filename: str = DEFAULT_CSV_NAME) -> None:
        super().__init__(write_interval="batch")
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.filename = filename
        self.path: Path | None = None
        self._file: IO[str] | None = None
        self._writer: Any = None
        self._pending: list[list[str]] = []

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Open a new CSV (rank zero only) for this run."""
        del pl_module
        self._pending = []
        self.path = None
        if trainer.is_global_zero:
            directory = self.output_dir or Path(trainer.default_root_dir)
            self.path, self._file = open_new_text_file(directory, self.filename)
            self._writer = csv.writer(self._file)
            self._writer.writerow(CSV_COLUMNS)

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
        """Write (rank zero) or keep (other ranks) the rows of a finished batch."""
        del batch_indices, batch, batch_idx, dataloader_idx
        rows = self.rows(pl_module, prediction)
        if self._writer is not None:
            self._writer.writerows(rows)
            self._file.flush()
        else:
            self._pending.extend(rows)

    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Collect the other ranks' rows into rank zero's file and close it."""
        del pl_module
        if trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered: list[Any] | None = [None] * trainer.world_size if trainer.is_global_zero else None
            torch.distributed.gather_object(self._pending, gathered, dst=0)
            if self._writer is not None and gathered is not None:
                for rows in gathered:
                    self._writer.writerows(rows or [])
        self._pending = []
        if self._file is not None:
            self._file.close()
            logger.info("AdaCLIP wrote the predictions table %s", self.path)
        self._file, self._writer = None, None

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        """Close the table of a run that failed; the rows written so far stay."""
        del trainer, pl_module, exception
        if self._file is not None:
            self._file.close()
        self._file, self._writer, self._pending = None, None, []
