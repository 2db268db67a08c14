"""What a post-processed prediction says about an image: the decision, the threshold it used, the anomalous area.

Shared by the visualiser (:mod:`.visualizer`) and the predictions table (:mod:`.prediction_writer`), so that both
show the same numbers.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from PIL import Image
from torch.nn import functional as F  # noqa: N812

if TYPE_CHECKING:
    from lightning.pytorch import LightningModule

__all__ = ["anomalous_area_fraction", "applied_threshold", "decision", "image_file_size"]


def decision(pred_label: torch.Tensor | bool | None) -> str:
    """``"NG"`` for an anomalous image, ``"OK"`` for a normal one, ``""`` when no decision was made."""
    if pred_label is None:
        return ""
    return "NG" if bool(pred_label) else "OK"


def applied_threshold(pl_module: LightningModule, level: str) -> float | None:
    """The threshold the post-processor compares the (possibly normalised) ``level`` output with."""
    post_processor = getattr(pl_module, "post_processor", None)
    value = getattr(post_processor, f"normalized_{level}_threshold", None) if post_processor is not None else None
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def image_file_size(path: str | None) -> tuple[int, int] | None:
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
