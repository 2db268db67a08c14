"""Thresholds from known-good images alone: percentiles of AdaCLIP's probabilities.

A new product line has no labelled defects, so anomalib's adaptive (F1) thresholds cannot be learned. AdaCLIP's
outputs are probabilities, and a folder of parts known to be good says how high they go on good parts: the image
threshold is set at a chosen percentile of the good images' scores (99: about 1 % of good parts would be flagged),
the pixel threshold optionally at a percentile of all their pixel probabilities.

:class:`ThresholdCalibration` is a Lightning callback that collects the scores of a predict run (so the images go
through the model's own pre-processing, tiling and class names) and turns them into a :class:`CalibrationResult`;
:meth:`AdaCLIP.calibrate <anomalib_adaclip.AdaCLIP.calibrate>` runs it and applies the thresholds.

Percentiles follow :func:`numpy.percentile` (linear interpolation). Image scores are kept exactly; pixel
probabilities are counted in a histogram of 2^20 bins over [0, 1] plus their exact minimum and maximum, so memory
stays fixed for any number of images and the pixel threshold is within 5e-7 of ``numpy.percentile`` of all pixels.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from anomalib.data import AnomalibDataModule, PredictDataset
from lightning.pytorch import Callback, LightningModule, Trainer
from torch.utils.data import DataLoader, Dataset

from anomalib_adaclip.quiet import quiet_loggers

logger = logging.getLogger(__name__)

__all__ = [
    "PIXEL_HISTOGRAM_BINS",
    "CalibrationResult",
    "PixelPercentiles",
    "ThresholdCalibration",
    "calibration_loader",
    "check_percentile",
    "run_calibration",
]

PIXEL_HISTOGRAM_BINS = 2**20
_LIGHTNING_PACKAGES = frozenset({"lightning", "lightning_fabric", "pytorch_lightning"})


def check_percentile(value: float, name: str = "percentile") -> float:
    """Return ``value`` as a float, or raise when it is not a percentile in [0, 100]."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= float(value) <= 100.0:
        msg = f"{name} must be a number in [0, 100] (e.g. 99 for the 99th percentile), got {value!r}."
        raise ValueError(msg)
    return float(value)


class PixelPercentiles:
    """Percentiles of probabilities in [0, 1], streamed: a fine histogram plus the exact extremes.

    Args:
        bins: Number of histogram bins over [0, 1]. Defaults to 2^20 (8 MB of counts; error below 5e-7).
    """

    def __init__(self, bins: int = PIXEL_HISTOGRAM_BINS) -> None:
        self.bins = int(bins)
        self.counts = torch.zeros(self.bins, dtype=torch.int64)
        self.minimum = math.inf
        self.maximum = -math.inf

    @property
    def count(self) -> int:
        """Number of values seen."""
        return int(self.counts.sum())

    def update(self, values: torch.Tensor) -> None:
        """Count a tensor of probabilities (any shape); values outside [0, 1] are clipped into it."""
        flat = values.detach().reshape(-1).to(device="cpu", dtype=torch.float64).clamp(0.0, 1.0)
        if flat.numel() == 0:
            return
        index = (flat * self.bins).floor().long().clamp_(max=self.bins - 1)
        self.counts += torch.bincount(index, minlength=self.bins)
        self.minimum = min(self.minimum, float(flat.min()))
        self.maximum = max(self.maximum, float(flat.max()))

    def percentile(self, q: float) -> float:
        """The ``q``-th percentile (linear interpolation between order statistics, as ``numpy.percentile``)."""
        q = check_percentile(q, "pixel percentile")
        total = self.count
        if total == 0:
            msg = "No pixel probabilities were counted; there is nothing to take a percentile of."
            raise ValueError(msg)
        position = (total - 1) * q / 100.0
        lower = math.floor(position)
        fraction = position - lower
        cumulative = torch.cumsum(self.counts, 0)
        # Bin of the k-th smallest value (0-based): the first bin whose cumulative count exceeds k.
        ranks = torch.tensor([lower, min(lower + 1, total - 1)], dtype=torch.int64)
        bins = torch.searchsorted(cumulative, ranks, right=True).double()
        low, high = ((bins + 0.5) / self.bins).tolist()
        value = low + fraction * (high - low)
        return float(min(max(value, self.minimum), self.maximum))


@dataclass(frozen=True)
class CalibrationResult:
    """Thresholds calibrated on known-good images.

    Attributes:
        image_threshold: The ``percentile``-th percentile of the image scores.
        pixel_threshold: The ``pixel_percentile``-th percentile of the pixel probabilities, or ``None``.
        percentile: Percentile of the image threshold.
        pixel_percentile: Percentile of the pixel threshold, or ``None``.
        scores: Image score of every calibration image, in loading order.
        paths: Path of every calibration image (empty strings where the data carry none).
        source: What the images came from.
    """

    image_threshold: float
    pixel_threshold: float | None
    percentile: float
    pixel_percentile: float | None
    scores: tuple[float, ...]
    paths: tuple[str, ...]
    source: str

    @property
    def flagged(self) -> int:
        """How many calibration images the image threshold calls anomalous (``score > threshold``)."""
        return sum(score > self.image_threshold for score in self.scores)

    def to_yaml(self) -> str:
        """A config snippet for anomalib's CLI (``--config``): the ``thresholds`` group with ``mode: fixed``."""
        lines = [
            f"# AdaCLIP thresholds calibrated on {len(self.scores)} known-good image(s) from {self.source}",
            f"# thresholds.image: {_ordinal(self.percentile)} percentile of their image scores",
        ]
        if self.pixel_threshold is not None:
            ordinal = _ordinal(self.pixel_percentile)
            lines.append(f"# thresholds.pixel: {ordinal} percentile of their pixel probabilities")
        lines += [
            "model:",
            "  class_path: anomalib_adaclip.AdaCLIP",
            "  init_args:",
            "    thresholds:",
            f"      image: {self.image_threshold!r}",
        ]
        if self.pixel_threshold is not None:
            lines.append(f"      pixel: {self.pixel_threshold!r}")
        lines.append("      mode: fixed")
        return "\n".join(lines) + "\n"

    def summary(self) -> str:
        """A human-readable account: counts, score range, thresholds."""
        scores = np.asarray(self.scores)
        text = (
            f"Calibrated on {len(scores)} known-good image(s) from {self.source}: scores min {scores.min():.4f}, "
            f"median {np.median(scores):.4f}, max {scores.max():.4f}.\n"
            f"image_threshold = {self.image_threshold:.6f} ({_ordinal(self.percentile)} percentile; "
            f"{self.flagged} of these images score above it)"
        )
        if self.pixel_threshold is not None:
            text += (
                f"\npixel_threshold = {self.pixel_threshold:.6f} ({_ordinal(self.pixel_percentile)} percentile of "
                "their pixel probabilities)"
            )
        return text


def _ordinal(value: float | None) -> str:
    number = f"{value:g}"
    if not number.isdigit():
        return f"{number}th"
    suffix = "th" if 10 <= int(number) % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(int(number) % 10, "th")
    return number + suffix


def calibration_loader(
    data: str | Path | Dataset | DataLoader | AnomalibDataModule,
    batch_size: int = 1,
    num_workers: int = 0,
) -> tuple[DataLoader | Any, str]:
    """A data loader over known-good images, and a description of where they come from.

    Args:
        data: An image file or a folder of images (read as anomalib's ``PredictDataset``, at full size), a data
            set, a data loader, or an anomalib data module (its training split, which holds normal images only).
        batch_size: Images per batch for paths, data sets and data modules. Images of different sizes need 1.
        num_workers: Loader processes for paths, data sets and data modules.

    Raises:
        FileNotFoundError: A path that does not exist.
        TypeError: Anything else.
    """
    if isinstance(data, DataLoader):
        return data, "the given data loader"
    if isinstance(data, AnomalibDataModule):
        data.setup("fit")
        dataset = data.train_data
        source = f"the training split of {type(data).__name__} {data.name!r}"
    elif isinstance(data, str | Path):
        path = Path(data).expanduser()
        if not path.exists():
            msg = f"Calibration images not found: {path} is neither an image file nor a folder."
            raise FileNotFoundError(msg)
        dataset = PredictDataset(path)
        source = str(path)
    elif isinstance(data, Dataset):
        dataset = data
        source = f"the given {type(data).__name__}"
    else:
        msg = (
            "Calibration data must be an image path, a folder, a Dataset, a DataLoader or an anomalib data module, "
            f"got {type(data).__name__}."
        )
        raise TypeError(msg)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=getattr(dataset, "collate_fn", None),
    )
    return loader, source


class ThresholdCalibration(Callback):
    """Collect the raw scores of a predict run's known-good images and compute thresholds from them.

    Runs before the post-processor (a Trainer's own callbacks come before the model's), so it sees the model's
    probabilities. Images labelled anomalous (``gt_label`` 1) are left out and counted. A calibration run writes no
    files: AdaCLIP leaves its visualiser and predictions table out of a run with this callback.

    Args:
        percentile: Percentile of the image scores, in [0, 100].
        pixel_percentile: Percentile of the pixel probabilities, or ``None`` for no pixel threshold.
        source: What the images come from (for messages).

    Raises:
        ValueError: A percentile outside [0, 100].
    """

    def __init__(self, percentile: float = 99.0, pixel_percentile: float | None = None, source: str = "") -> None:
        self.percentile = check_percentile(percentile)
        self.pixel_percentile = (
            None if pixel_percentile is None else check_percentile(pixel_percentile, "pixel_percentile")
        )
        self.source = source
        self.scores: list[float] = []
        self.paths: list[str] = []
        self.skipped = 0
        self.pixels: PixelPercentiles | None = None

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Start counting afresh."""
        del trainer, pl_module
        self.scores, self.paths, self.skipped = [], [], 0
        self.pixels = PixelPercentiles() if self.pixel_percentile is not None else None

    def on_predict_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Keep the scores (and count the pixel probabilities) of the batch's known-good images."""
        del trainer, pl_module, batch, batch_idx, dataloader_idx
        labels = getattr(outputs, "gt_label", None)
        normal = torch.ones(len(outputs), dtype=torch.bool) if labels is None else ~labels.cpu().bool()
        self.skipped += int((~normal).sum())
        image_paths = outputs.image_path if outputs.image_path is not None else [""] * len(outputs)
        self.scores += outputs.pred_score.float().cpu()[normal].tolist()
        self.paths += [str(path) for path, keep in zip(image_paths, normal.tolist(), strict=True) if keep]
        if self.pixels is not None:
            self.pixels.update(outputs.anomaly_map[normal.to(outputs.anomaly_map.device)])

    def result(self) -> CalibrationResult:
        """The thresholds of the images seen.

        Raises:
            ValueError: No known-good image was seen.
        """
        if self.skipped:
            logger.warning("Calibration left out %d image(s) labelled anomalous in %s.", self.skipped, self.source)
        if not self.scores:
            msg = f"No known-good image to calibrate on in {self.source}."
            raise ValueError(msg)
        return CalibrationResult(
            image_threshold=float(np.percentile(self.scores, self.percentile)),
            pixel_threshold=None if self.pixels is None else self.pixels.percentile(self.pixel_percentile),
            percentile=self.percentile,
            pixel_percentile=self.pixel_percentile,
            scores=tuple(self.scores),
            paths=tuple(self.paths),
            source=self.source,
        )


def run_calibration(
    module: LightningModule,
    data: str | Path | Dataset | DataLoader | AnomalibDataModule,
    percentile: float = 99.0,
    pixel_percentile: float | None = None,
    *,
    batch_size: int = 1,
    num_workers: int = 0,
) -> CalibrationResult:
    """Calibrate thresholds on known-good images through a Lightning predict run of ``module`` on its device.

    Args:
        module: The model (its pre-processor, tiling and class names apply as in any predict run).
        data: Images: see :func:`calibration_loader`.
        percentile: Percentile of the image scores, in [0, 100]. Defaults to 99.
        pixel_percentile: Percentile of the pixel probabilities, or ``None`` for no pixel threshold.
        batch_size: Images per batch when loading paths, data sets and data modules. Defaults to 1.
        num_workers: Loader processes. Defaults to 0.

    Returns:
        The thresholds and the scores they come from.
    """
    calibration = ThresholdCalibration(percentile, pixel_percentile)
    loader, calibration.source = calibration_loader(data, batch_size=batch_size, num_workers=num_workers)
    with quiet_loggers(*_LIGHTNING_PACKAGES, level=logging.WARNING):  # the CLI prints a config snippet
        trainer = Trainer(
            accelerator="gpu" if module.device.type == "cuda" else "cpu",
            devices=1,
            callbacks=[calibration],
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        trainer.predict(module, dataloaders=loader, return_predictions=False)
    result = calibration.result()
    logger.info(result.summary())
    return result
