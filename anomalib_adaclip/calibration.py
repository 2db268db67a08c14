"""Thresholds from known-good images alone: percentiles of AdaCLIP's probabilities.

A new product line has no labelled defects, so anomalib's adaptive (F1) thresholds cannot be learned. AdaCLIP's
outputs are probabilities, and a folder of parts known to be good says how high they go on good parts: the image
threshold is set at a chosen percentile of the good images' scores (99: about 1 % of good parts would be flagged),
the pixel threshold optionally at a percentile of all their pixel probabilities.

:meth:`AdaCLIP.calibrate <anomalib_adaclip.AdaCLIP.calibrate>` runs the model (its pre-processing, tiling and
class names included) over the images; this module holds the statistics, the result and the data loading.

Percentiles follow :func:`numpy.percentile` (linear interpolation). Image scores are kept exactly; pixel
probabilities are counted in a histogram of 2^20 bins over [0, 1] plus their exact minimum and maximum, so memory
stays fixed for any number of images and the pixel threshold is within 5e-7 of ``numpy.percentile`` of all pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from anomalib.data import AnomalibDataModule, PredictDataset
from torch.utils.data import DataLoader, Dataset

__all__ = ["PIXEL_HISTOGRAM_BINS", "CalibrationResult", "PixelPercentiles", "calibration_loader", "check_percentile"]

PIXEL_HISTOGRAM_BINS = 2**20


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
        """A config snippet for anomalib's CLI (``--config``) with the thresholds and ``thresholding: fixed``."""
        lines = [
            f"# AdaCLIP thresholds calibrated on {len(self.scores)} known-good image(s) from {self.source}",
            f"# image_threshold: {_ordinal(self.percentile)} percentile of their image scores",
        ]
        if self.pixel_threshold is not None:
            ordinal = _ordinal(self.pixel_percentile)
            lines.append(f"# pixel_threshold: {ordinal} percentile of their pixel probabilities")
        lines += [
            "model:",
            "  class_path: anomalib_adaclip.AdaCLIP",
            "  init_args:",
            f"    image_threshold: {self.image_threshold!r}",
        ]
        if self.pixel_threshold is not None:
            lines.append(f"    pixel_threshold: {self.pixel_threshold!r}")
        lines.append("    thresholding: fixed")
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
