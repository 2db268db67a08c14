"""Decisions from AdaCLIP's probabilities, with or without labelled validation data.

AdaCLIP's image score and anomaly map are probabilities of the "abnormal" state, so a fixed threshold (0.5 by
default) is meaningful without any labelled anomaly. anomalib's own :class:`~anomalib.post_processing.PostProcessor`
instead learns F1-adaptive thresholds and min-max statistics on the validation set; with no anomalous images it ends
at the lowest score and flags everything. :class:`AdaCLIPPostProcessor` offers three modes:

- ``"fixed"``: ``pred_label = pred_score > image_threshold`` and ``pred_mask = anomaly_map > pixel_threshold`` on the
  raw probabilities; nothing is learned and nothing is normalised.
- ``"adaptive"``: anomalib's behaviour (F1-adaptive thresholds and min-max normalisation from the validation set).
- ``"auto"`` (default): adaptive for a level (image or pixel) whose validation data hold both normal and anomalous
  samples, fixed otherwise (bare image folders, normal-only data, data without masks).
"""

from __future__ import annotations

import logging
from typing import Any, get_args

import torch
from lightning.pytorch import LightningModule, Trainer

from anomalib_adaclip.compat import PostProcessorHooks
from anomalib_adaclip.config import ThresholdingMode

logger = logging.getLogger(__name__)

__all__ = ["THRESHOLDING_MODES", "AdaCLIPPostProcessor", "ThresholdingMode", "set_calibrated_thresholds"]

THRESHOLDING_MODES: tuple[str, ...] = get_args(ThresholdingMode)


def _check_threshold(value: float, name: str) -> float:
    if not 0.0 <= float(value) <= 1.0:
        msg = f"{name} must be a probability in [0, 1], got {value}."
        raise ValueError(msg)
    return float(value)


class AdaCLIPPostProcessor(PostProcessorHooks):
    """Threshold AdaCLIP's probabilities, learning adaptive thresholds only where labels allow it.

    Args:
        image_threshold: Fixed threshold of the image score. Defaults to 0.5.
        pixel_threshold: Fixed threshold of the anomaly map. Defaults to 0.5.
        mode: ``"auto"``, ``"fixed"`` or ``"adaptive"`` (see the module description). Defaults to ``"auto"``.
        **kwargs: Passed to anomalib's ``PostProcessor`` (e.g. ``image_sensitivity`` for the adaptive mode).
    """

    def __init__(
        self,
        image_threshold: float = 0.5,
        pixel_threshold: float = 0.5,
        mode: ThresholdingMode = "auto",
        **kwargs: Any,
    ) -> None:
        if mode not in THRESHOLDING_MODES:
            msg = f"thresholding mode must be one of {THRESHOLDING_MODES}, got {mode!r}."
            raise ValueError(msg)
        super().__init__(enable_normalization=mode != "fixed", enable_thresholding=True, **kwargs)
        self.mode = mode
        self.register_buffer(
            "fixed_image_threshold", torch.tensor(_check_threshold(image_threshold, "image_threshold"))
        )
        self.register_buffer(
            "fixed_pixel_threshold", torch.tensor(_check_threshold(pixel_threshold, "pixel_threshold"))
        )

    def checkpoint_config(self) -> dict[str, Any]:
        """The plain-data configuration anomalib stores in checkpoints, with the thresholding mode."""
        return {**super().checkpoint_config(), "mode": self.mode}

    def load_checkpoint_config(self, config: dict[str, Any]) -> None:
        """Restore :meth:`checkpoint_config`'s configuration (a checkpoint without a mode keeps the current one)."""
        super().load_checkpoint_config(config)
        if "mode" in config:
            self.mode = config["mode"]

    def set_fixed_thresholds(self, image_threshold: float | None = None, pixel_threshold: float | None = None) -> None:
        """Change the fixed thresholds (e.g. after calibration on known-good images)."""
        if image_threshold is not None:
            self.fixed_image_threshold.fill_(_check_threshold(image_threshold, "image_threshold"))
        if pixel_threshold is not None:
            self.fixed_pixel_threshold.fill_(_check_threshold(pixel_threshold, "pixel_threshold"))

    def on_validation_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, *args: Any, **kwargs: Any
    ) -> None:
        """Collect validation statistics, except in fixed mode, which needs none."""
        if self.mode != "fixed":
            super().on_validation_batch_end(trainer, pl_module, outputs, *args, **kwargs)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Learn thresholds and normalisation where the mode and the labels allow it."""
        if self.mode == "fixed":
            return
        if self.mode == "auto":
            for level in ("image", "pixel"):
                threshold_metric, min_max_metric = self.statistics_metrics(level)
                labelled = threshold_metric.update_called and self.has_both_labels(threshold_metric)
                if not labelled:
                    if threshold_metric.update_called:
                        logger.info(
                            "No normal and anomalous %s labels in the validation data: keeping the fixed %s "
                            "threshold on the raw probabilities.",
                            level,
                            level,
                        )
                    threshold_metric.reset()
                    min_max_metric.reset()
                    # What an earlier validation learned does not describe these data: back to the fixed threshold.
                    self.forget_statistics(level)
        super().on_validation_epoch_end(trainer, pl_module)

    @staticmethod
    def normalize_values(
        preds: torch.Tensor | None, norm_min: torch.Tensor, norm_max: torch.Tensor, threshold: torch.Tensor
    ) -> torch.Tensor | None:
        """Min-max normalisation (anomalib's) where statistics were learned, the raw values elsewhere; no NaN between.

        Unlearned statistics are NaN. anomalib normalises with them and then discards the result, so an export holds
        NaN constants that reach a clamp's bounds; OpenVINO's INT8 (low-precision) transformations fold those into
        the bounds and the INT8 model fails to compile ("Attribute 'min' must be less or equal than 'max'"). Finite
        stand-ins give the same outputs: where statistics are missing the raw values are returned either way.
        """
        if preds is None:
            return preds
        learned = ~torch.isnan(norm_min) & ~torch.isnan(norm_max)
        finite_min = torch.where(learned, norm_min, torch.zeros_like(norm_min))
        finite_max = torch.where(learned, norm_max, torch.ones_like(norm_max))
        finite_threshold = torch.where(torch.isnan(threshold), (finite_min + finite_max) / 2, threshold)
        normalized = PostProcessorHooks.anomalib_normalize(preds, finite_min, finite_max, finite_threshold)
        return torch.where(learned, normalized, preds)

    def _learned(self, minimum: torch.Tensor, maximum: torch.Tensor) -> torch.Tensor:
        # The fixed mode never uses learned statistics, not even those of a checkpoint saved in another mode.
        if self.mode == "fixed":
            return torch.zeros((), dtype=torch.bool, device=minimum.device)
        return ~torch.isnan(minimum) & ~torch.isnan(maximum)

    @property
    def normalized_image_threshold(self) -> torch.Tensor:
        """Threshold of the (normalised where learned) image score."""
        adaptive = torch.tensor(1.0 - self.image_sensitivity, device=self.fixed_image_threshold.device)
        return torch.where(self._learned(self.image_min, self.image_max), adaptive, self.fixed_image_threshold)

    @property
    def normalized_pixel_threshold(self) -> torch.Tensor:
        """Threshold of the (normalised where learned) anomaly map."""
        adaptive = torch.tensor(1.0 - self.pixel_sensitivity, device=self.fixed_pixel_threshold.device)
        return torch.where(self._learned(self.pixel_min, self.pixel_max), adaptive, self.fixed_pixel_threshold)


def set_calibrated_thresholds(post_processor: object, image_threshold: float, pixel_threshold: float | None) -> None:
    """Set thresholds calibrated on known-good images as the fixed thresholds of AdaCLIP's post-processor.

    Raises:
        TypeError: Another post-processor (or none): it has no fixed thresholds to set.
    """
    if not isinstance(post_processor, AdaCLIPPostProcessor):
        msg = (
            "Calibrated thresholds need AdaCLIP's post-processor; this model has "
            f"{type(post_processor).__name__}. Call calibrate(..., apply=False) and use the returned values."
        )
        raise TypeError(msg)
    post_processor.set_fixed_thresholds(image_threshold, pixel_threshold)
