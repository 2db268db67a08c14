"""What a prediction run leaves behind: visualisations that show the decision, and one CSV for the whole run.

- :class:`AdaCLIPVisualizer` is anomalib's :class:`~anomalib.visualization.ImageVisualizer` (same panels, same
  folders) that also writes the decision onto the image panel: ``NG 0.734 > 0.500`` on red or ``OK 0.213 <= 0.500``
  on green. PNG files also carry it as text chunks (``Decision``, ``Score``, ``Threshold``).
- :class:`PredictionCSVWriter` writes one row per predicted image: path, class name, score, decision and the
  anomalous-area fraction (the share of pixels whose map exceeds the pixel threshold, at the original image size).
  It writes ``predictions.csv`` into the run's results folder, next to the ``images/`` folder; when that file
  exists (anomalib's ``predict`` reuses its ``latest`` folder) it takes the next free name, ``predictions-v1.csv``,
  ``predictions-v2.csv``, ..., so no earlier table is ever overwritten.

:class:`~anomalib_adaclip.AdaCLIP` installs both by default (``configure_visualizer``, ``configure_callbacks``).
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import torch
from anomalib.utils.path import generate_output_filename
from anomalib.visualization import ImageVisualizer
from anomalib.visualization.image.functional import add_text_to_image
from lightning.pytorch.callbacks import BasePredictionWriter
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from torch.nn import functional as F  # noqa: N812

if TYPE_CHECKING:
    from anomalib.data import ImageBatch, ImageItem
    from lightning.pytorch import LightningModule, Trainer

logger = logging.getLogger(__name__)

__all__ = ["CSV_COLUMNS", "AdaCLIPVisualizer", "PredictionCSVWriter", "anomalous_area_fraction", "decision"]

CSV_COLUMNS = ("path", "class_name", "score", "decision", "anomalous_area_fraction")
DEFAULT_CSV_NAME = "predictions.csv"
DECISION_COLOURS = {"NG": (200, 0, 0, 230), "OK": (0, 130, 0, 230), "": (0, 0, 0, 160)}


def decision(pred_label: torch.Tensor | bool | None) -> str:
    """``"NG"`` for an anomalous image, ``"OK"`` for a normal one, ``""`` when no decision was made."""
    if pred_label is None:
        return ""
    return "NG" if bool(pred_label) else "OK"


def _threshold(pl_module: LightningModule, level: str) -> float | None:
    """The threshold the post-processor compares the (possibly normalised) ``level`` output with."""
    post_processor = getattr(pl_module, "post_processor", None)
    value = getattr(post_processor, f"normalized_{level}_threshold", None) if post_processor is not None else None
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def _original_size(path: str | None) -> tuple[int, int] | None:
    """``(height, width)`` of an image file, read from its header only; ``None`` when it cannot be read."""
    if not path:
        return None
    try:
        with Image.open(path) as image:
            width, height = image.size
    except OSError:
        return None
    return height, width


def anomalous_area_fraction(
    anomaly_map: torch.Tensor | None,
    pred_mask: torch.Tensor | None,
    pixel_threshold: float | None,
    original_size: tuple[int, int] | None = None,
) -> float:
    """Share of an image's pixels whose anomaly map exceeds the pixel threshold.

    The map is resized (bilinearly) to the original image size first, so the fraction describes the image, not the
    model's input grid. Without a map or threshold the predicted mask is used (resized with nearest neighbours).

    Args:
        anomaly_map: Map of one image ``[H, W]`` (or ``[1, H, W]``), as post-processed.
        pred_mask: Predicted mask of the image, used when the map or the threshold is missing.
        pixel_threshold: Threshold the post-processor applies to the map.
        original_size: ``(height, width)`` of the image file; ``None`` keeps the map's size.

    Returns:
        The fraction in [0, 1], or NaN when neither a map with a threshold nor a mask is available.
    """
    if anomaly_map is not None and pixel_threshold is not None:
        values = anomaly_map.detach().float().reshape(anomaly_map.shape[-2:])
        if original_size is not None and tuple(values.shape) != tuple(original_size):
            values = F.interpolate(values[None, None], size=original_size, mode="bilinear", align_corners=False)[0, 0]
        return float((values > pixel_threshold).float().mean())
    if pred_mask is not None:
        mask = pred_mask.detach().float().reshape(pred_mask.shape[-2:])
        if original_size is not None and tuple(mask.shape) != tuple(original_size):
            mask = F.interpolate(mask[None, None], size=original_size, mode="nearest")[0, 0]
        return float(mask.mean())
    return float("nan")


class AdaCLIPVisualizer(ImageVisualizer):
    """anomalib's image visualiser, with the decision and the score written onto the image panel.

    Takes every argument of :class:`~anomalib.visualization.ImageVisualizer`; the files go where it puts them
    (``<results>/images/...``).

    Args:
        *args: Passed to ``ImageVisualizer``.
        show_decision: Write ``NG``/``OK``, the score and the threshold onto each image. Defaults to ``True``.
        **kwargs: Passed to ``ImageVisualizer``.
    """

    def __init__(self, *args: Any, show_decision: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.show_decision = show_decision

    def decision_text(self, item: ImageItem, image_threshold: float | None) -> str:
        """``"NG 0.734 > 0.500"``, ``"OK 0.213 <= 0.500"``, or the score alone when there is no decision."""
        if item.pred_score is None:
            return decision(item.pred_label)
        score = float(item.pred_score)
        verdict = decision(item.pred_label)
        if not verdict:
            return f"score {score:.3f}"
        if image_threshold is None:
            return f"{verdict} {score:.3f}"
        return f"{verdict} {score:.3f} {'>' if verdict == 'NG' else '<='} {image_threshold:.3f}"

    def _annotate(self, image: Image.Image, text: str) -> Image.Image:
        size = max(12, self.field_size[1] // 14)
        position = (8, image.height - size - 12)
        background = DECISION_COLOURS.get(text.split(" ", 1)[0], DECISION_COLOURS[""])
        return add_text_to_image(image, text, size=size, color="white", background=background, position=position)

    def on_test_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: ImageBatch,
        batch: ImageBatch,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Visualise each image of the batch, write its decision onto it and save it where anomalib would."""
        del outputs, batch_idx, dataloader_idx
        if self.output_dir is None:
            self.output_dir = Path(trainer.default_root_dir) / "images"
        image_threshold = _threshold(pl_module, "image")
        datamodule = getattr(trainer, "datamodule", None)
        for item in batch:
            image = self.visualize(item)
            if image is None:
                continue
            text = self.decision_text(item, image_threshold)
            if self.show_decision and text:
                image = self._annotate(image, text)
            filename = generate_output_filename(
                input_path=item.image_path or "",
                output_path=self.output_dir,
                dataset_name=getattr(datamodule, "name", None) if datamodule else None,
                category=getattr(datamodule, "category", None) if datamodule else None,
            )
            if filename.suffix.lower() == ".png":
                info = PngInfo()
                info.add_text("Decision", decision(item.pred_label))
                if item.pred_score is not None:
                    info.add_text("Score", repr(float(item.pred_score)))
                if image_threshold is not None:
                    info.add_text("Threshold", repr(image_threshold))
                image.save(filename, pnginfo=info)
            else:
                image.save(filename)


def _free_path(directory: Path, filename: str) -> tuple[Path, IO[str]]:
    """Create and open the first free name of ``filename``, ``-v1``, ``-v2``, ... (exclusive: never overwrites)."""
    stem, suffix = Path(filename).stem, Path(filename).suffix
    directory.mkdir(parents=True, exist_ok=True)
    version = 0
    while True:
        path = directory / (filename if version == 0 else f"{stem}-v{version}{suffix}")
        try:
            return path, path.open("x", newline="", encoding="utf-8")
        except FileExistsError:
            version += 1


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
            self.path, self._file = _free_path(directory, self.filename)
            self._writer = csv.writer(self._file)
            self._writer.writerow(CSV_COLUMNS)

    def rows(self, pl_module: LightningModule, batch: ImageBatch) -> list[list[str]]:
        """The CSV rows of a post-processed batch."""
        names = pl_module.image_class_names(batch) if hasattr(pl_module, "image_class_names") else None
        pixel_threshold = _threshold(pl_module, "pixel")
        rows = []
        for index, item in enumerate(batch):
            fraction = anomalous_area_fraction(
                item.anomaly_map, item.pred_mask, pixel_threshold, _original_size(item.image_path)
            )
            rows.append(
                [
                    str(item.image_path or ""),
                    names[index] if names else "",
                    "" if item.pred_score is None else f"{float(item.pred_score):.6f}",
                    decision(item.pred_label),
                    "" if math.isnan(fraction) else f"{fraction:.6f}",
                ]
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
