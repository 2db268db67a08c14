r"""AdaCLIP as an anomalib model: zero-shot test, validate, predict and export through anomalib's Engine and CLI.

Example:
    >>> from anomalib.data import MVTecAD
    >>> from anomalib.engine import Engine
    >>> from anomalib_adaclip import AdaCLIP
    >>> model = AdaCLIP(checkpoint="visa_clinicdb")  # doctest: +SKIP
    >>> Engine().test(model, datamodule=MVTecAD(category="bottle"))  # doctest: +SKIP

From the command line (nothing in anomalib changes)::

    anomalib test --model anomalib_adaclip.AdaCLIP --data MVTecAD --data.category bottle \
        --model.checkpoint visa_clinicdb
    anomalib-adaclip predict --model AdaCLIP --data path/to/images

Pre-processing resizes images to ``image_size`` (bicubic, aspect ratio not kept) and normalises them with the
OpenAI CLIP mean and std; masks are resized the same way (nearest). With ``tiling=True`` it only normalises, and the
full-resolution images are scored in overlapping tiles (:mod:`~anomalib_adaclip.tiling`). Post-processing thresholds
AdaCLIP's probabilities (:class:`~anomalib_adaclip.post_processor.AdaCLIPPostProcessor`); :meth:`AdaCLIP.calibrate`
sets the thresholds from known-good images. Class names can differ per image (``class_name_map``,
``class_name_from_parent``). ``predict`` writes a visualisation with the decision per image and one CSV per run
(:mod:`~anomalib_adaclip.callbacks`). Lightning checkpoints hold only the trainable tensors and the configuration:
the frozen CLIP is rebuilt from ``backbone`` and ``backbone_weights``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from anomalib import LearningType
from anomalib.data import AnomalibDataModule, Batch
from anomalib.metrics import AUPRO, AUROC, Evaluator, F1Max
from anomalib.models.components import AnomalibModule
from anomalib.pre_processing import PreProcessor
from anomalib.pre_processing.utils.transform import get_exportable_transform
from anomalib.visualization import Visualizer
from lightning.pytorch import Callback
from lightning.pytorch.utilities.types import STEP_OUTPUT
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms.v2 import Compose, InterpolationMode, Normalize, Resize

from .backbone import OPENAI_MEAN, OPENAI_STD
from .calibration import CalibrationResult, PixelPercentiles, calibration_loader, check_percentile
from .callbacks import AdaCLIPVisualizer, PredictionCSVWriter
from .checkpoint import RELEASED_CHECKPOINTS, CheckpointError, check_state_dict, read_checkpoint
from .class_names import ClassNameRules
from .post_processor import AdaCLIPPostProcessor, ThresholdingMode
from .prompting import ABNORMAL_STATES, NORMAL_STATES, TEMPLATES, format_class_name
from .tiling import TILE_SCORES, TileScore, tiled_predict
from .torch_model import AdaCLIPModel
from .utils import is_tracing
from .validation import iter_loader_datasets, validate_dataset

logger = logging.getLogger(__name__)

__all__ = ["AdaCLIP", "OptimizerSettings", "check_raw_images"]

DEFAULT_CLASS_NAME = "object"
FROZEN_PREFIX = "model.clip."
# The class name the prompts used, kept in Lightning checkpoints: an export from a checkpoint has no data module.
CHECKPOINT_CLASS_NAME_KEY = "adaclip_class_name"
# anomalib's default opset (14) makes the exporter write opset 18 anyway, after a failed down-conversion.
ONNX_OPSET = 18


def check_raw_images(images: Any, argument: str = "batch") -> None:
    """Check raw images for :meth:`AdaCLIP.forward`: a float tensor ``[B, 3, H, W]``, finite, in [0, 1].

    Raises:
        TypeError: Not a floating-point tensor.
        ValueError: Wrong rank or channels, NaN/inf values, or values outside [0, 1].
    """
    if not isinstance(images, torch.Tensor) or not images.is_floating_point():
        got = f"dtype {images.dtype}" if isinstance(images, torch.Tensor) else type(images).__name__
        msg = (
            f"`{argument}` must be a floating-point tensor [B, 3, H, W] of RGB values in [0, 1], got {got} "
            f"(for uint8 images: images.float() / 255)."
        )
        raise TypeError(msg)
    if images.ndim != 4 or images.shape[1] != 3:
        msg = (
            f"`{argument}` must have shape [B, 3, H, W] (RGB), got {tuple(images.shape)} (one image: "
            f"image.unsqueeze(0); grayscale: image.expand(-1, 3, -1, -1); RGBA: image[:, :3])."
        )
        raise ValueError(msg)
    if images.numel() == 0:
        msg = f"`{argument}` is empty: shape {tuple(images.shape)}."
        raise ValueError(msg)
    if not bool(torch.isfinite(images).all()):
        msg = f"`{argument}` holds {int((~torch.isfinite(images)).sum())} NaN or infinite value(s)."
        raise ValueError(msg)
    low, high = float(images.min()), float(images.max())
    if low < 0.0 or high > 1.0:
        msg = (
            f"`{argument}` must hold raw RGB values in [0, 1] (AdaCLIP normalises them itself), got values in "
            f"[{low:.4g}, {high:.4g}]" + (" (divide 8-bit values by 255)." if high > 1.0 else ".")
        )
        raise ValueError(msg)


@dataclass(frozen=True)
class OptimizerSettings:
    """AdamW settings for training AdaCLIP's prompts on auxiliary data; the defaults are the paper's.

    Args:
        lr: Learning rate. Defaults to 0.01.
        betas: AdamW's moment coefficients. Defaults to ``(0.5, 0.999)``.
        weight_decay: Decoupled weight decay. Defaults to 0.01.
    """

    lr: float = 0.01
    betas: tuple[float, float] = (0.5, 0.999)
    weight_decay: float = 0.01


class AdaCLIP(AnomalibModule):
    """AdaCLIP: zero-shot anomaly detection with hybrid learnable prompts (Cao et al., ECCV 2024).

    Args:
        backbone: open_clip ViT model name, or a config dict with ``embed_dim``, ``vision_cfg`` and ``text_cfg``.
            Defaults to ``"ViT-L-14-336"``.
        backbone_weights: open_clip pretrained tag (``"openai"``), path to a weights file, or ``None`` for random
            weights (tests only). Defaults to ``"openai"``.
        checkpoint: AdaCLIP's trained prompts: ``"mvtec_colondb"``, ``"visa_clinicdb"``, ``"all"``, a path, or
            ``None`` (untrained: only for training). Defaults to ``None``.
        image_size: Input side length, a multiple of the patch size. Defaults to 518.
        feature_layers: 1-based vision blocks for the maps. Defaults to n/4, n/2, 3n/4, n.
        prompting_depth: Prompted blocks per branch. Defaults to 4.
        prompting_length: Prompt tokens. Defaults to 5.
        prompting_type: Static prompts (``"S"``), dynamic prompts generated per image (``"D"``) or both (``"SD"``).
            Defaults to ``"SD"``.
        prompting_branch: Prompted branch: vision (``"V"``), text (``"L"``) or both (``"VL"``). Defaults to ``"VL"``.
        use_hsf: Hybrid Semantic Fusion (k-means over the most abnormal patches) in the image score. Defaults to
            ``True``.
        k_clusters: HSF clusters (``5 * k_clusters`` patches are clustered). Defaults to 20.
        blur_sigma: Gaussian blur of the anomaly map in pixels; 0 disables it. Defaults to 4.
        normal_states: State words of a normal object. Defaults to the paper's seven.
        abnormal_states: State words of an abnormal object. Defaults to the paper's five.
        templates: Sentence templates. Defaults to the paper's four.
        class_name: Object name for the prompts. Defaults to the data module's category, else the class name stored
            in a loaded Lightning checkpoint, else ``"object"``.
        image_threshold: Fixed decision threshold of the image probability. Defaults to 0.5.
        pixel_threshold: Fixed decision threshold of the pixel probability. Defaults to 0.5.
        thresholding: ``"auto"`` (adaptive where validation labels allow, else fixed), ``"fixed"`` or
            ``"adaptive"`` (anomalib's). Defaults to ``"auto"``.
        class_name_map: Class name per image: glob pattern or folder name -> class name, first match wins (see
            :mod:`~anomalib_adaclip.class_names`). Defaults to ``None``.
        class_name_from_parent: Use each image's parent folder name as its class name where the map has no match.
            Defaults to ``False``.
        tiling: Score full-resolution images in overlapping tiles of ``image_size`` and stitch the maps (the
            pre-processor then only normalises). Defaults to ``False``.
        tile_overlap: Overlap of neighbouring tiles in pixels. Defaults to a quarter of ``image_size``.
        tile_score: Image score with tiling: ``"max"`` over the tiles or ``"whole"`` (the whole image resized).
            Defaults to ``"max"``.
        pre_processor: Pre-processor, ``True`` for the default, ``False`` for none.
        post_processor: Post-processor, ``True`` for the default, ``False`` for none.
        evaluator: Evaluator, ``True`` for the default metrics, ``False`` for none.
        visualizer: Visualizer, ``True`` for anomalib's image visualiser with the decision written on each image
            (:class:`~anomalib_adaclip.callbacks.AdaCLIPVisualizer`), ``False`` for none.
    """

    def __init__(
        self,
        backbone: str | dict[str, Any] = "ViT-L-14-336",
        backbone_weights: str | None = "openai",
        checkpoint: str | None = None,
        image_size: int = 518,
        feature_layers: list[int] | None = None,
        prompting_depth: int = 4,
        prompting_length: int = 5,
        prompting_type: str = "SD",
        prompting_branch: str = "VL",
        use_hsf: bool = True,
        k_clusters: int = 20,
        blur_sigma: float = 4.0,
        normal_states: list[str] | None = None,
        abnormal_states: list[str] | None = None,
        templates: list[str] | None = None,
        class_name: str | None = None,
        image_threshold: float = 0.5,
        pixel_threshold: float = 0.5,
        thresholding: ThresholdingMode = "auto",
        class_name_map: dict[str, str] | None = None,
        class_name_from_parent: bool = False,
        tiling: bool = False,
        tile_overlap: int | None = None,
        tile_score: TileScore = "max",
        pre_processor: nn.Module | bool = True,
        post_processor: nn.Module | bool = True,
        evaluator: Evaluator | bool = True,
        visualizer: Visualizer | bool = True,
    ) -> None:
        self._check_tiling_arguments(image_size, tile_overlap, tile_score)
        class_name_rules = ClassNameRules(class_name_map or {}, class_name_from_parent)
        default_pre_processor = pre_processor is True
        # The default components depend on init arguments, so they are built before the base class would build them.
        if pre_processor is True:
            pre_processor = self.configure_pre_processor(image_size, tiling=tiling)
        if post_processor is True:
            post_processor = self.configure_post_processor(image_threshold, pixel_threshold, thresholding)
        super().__init__(
            pre_processor=pre_processor,
            post_processor=post_processor,
            evaluator=evaluator,
            visualizer=visualizer,
        )
        self.model = AdaCLIPModel(
            backbone=backbone,
            backbone_weights=backbone_weights,
            checkpoint=checkpoint,
            image_size=image_size,
            feature_layers=feature_layers,
            prompting_depth=prompting_depth,
            prompting_length=prompting_length,
            prompting_type=prompting_type,
            prompting_branch=prompting_branch,
            use_hsf=use_hsf,
            k_clusters=k_clusters,
            blur_sigma=blur_sigma,
            normal_states=normal_states or NORMAL_STATES,
            abnormal_states=abnormal_states or ABNORMAL_STATES,
            templates=templates or TEMPLATES,
            class_name=class_name or DEFAULT_CLASS_NAME,
        )
        if checkpoint is None:
            logger.warning(
                "AdaCLIP has no trained prompts (checkpoint=None): use a released checkpoint (e.g. "
                "checkpoint='visa_clinicdb' for MVTec AD, 'mvtec_colondb' otherwise) or train the prompts first.",
            )
        self.class_name = class_name
        self._checkpoint_class_name: str | None = None
        self._default_pre_processor = default_pre_processor
        self.class_name_rules = class_name_rules
        self._logged_class_names: set[str] = set()
        self._csv_writer = PredictionCSVWriter()
        self.tiling = tiling
        self.tile_overlap = tile_overlap
        self.tile_score = tile_score
        self._warn_if_prompts_differ_from_training(checkpoint)

    # ----------------------------------------------------------------------------------------------------------------
    # Components
    # ----------------------------------------------------------------------------------------------------------------
    @classmethod
    def configure_pre_processor(
        cls, image_size: int | tuple[int, int] | None = None, tiling: bool = False
    ) -> PreProcessor:
        """Resize to ``image_size`` (bicubic, aspect ratio not kept) and normalise with the CLIP mean and std.

        Args:
            image_size: Side length, or ``(height, width)``. Defaults to 518.
            tiling: Only normalise: tiled inference needs the images at full resolution. Defaults to ``False``.
        """
        normalize = Normalize(mean=OPENAI_MEAN, std=OPENAI_STD)
        if tiling:
            return PreProcessor(transform=Compose([normalize]))
        size = image_size or 518
        size = (size, size) if isinstance(size, int) else tuple(size)
        return PreProcessor(
            transform=Compose([Resize(size, interpolation=InterpolationMode.BICUBIC, antialias=True), normalize]),
        )

    @classmethod
    def configure_post_processor(
        cls,
        image_threshold: float = 0.5,
        pixel_threshold: float = 0.5,
        thresholding: ThresholdingMode = "auto",
    ) -> AdaCLIPPostProcessor:
        """Threshold the probabilities: fixed thresholds, adaptive where labelled validation data allow it.

        Args:
            image_threshold: Fixed image threshold. Defaults to 0.5.
            pixel_threshold: Fixed pixel threshold. Defaults to 0.5.
            thresholding: ``"auto"``, ``"fixed"`` or ``"adaptive"``. Defaults to ``"auto"``.
        """
        return AdaCLIPPostProcessor(image_threshold=image_threshold, pixel_threshold=pixel_threshold, mode=thresholding)

    @staticmethod
    def configure_evaluator() -> Evaluator:
        """Image AUROC and F1Max; pixel AUROC, F1Max and AUPRO (skipped when the data have no masks)."""
        return Evaluator(
            test_metrics=[
                AUROC(fields=["pred_score", "gt_label"], prefix="image_"),
                F1Max(fields=["pred_score", "gt_label"], prefix="image_"),
                AUROC(fields=["anomaly_map", "gt_mask"], prefix="pixel_", strict=False),
                F1Max(fields=["anomaly_map", "gt_mask"], prefix="pixel_", strict=False),
                AUPRO(fields=["anomaly_map", "gt_mask"], prefix="pixel_", strict=False),
            ],
        )

    @classmethod
    def configure_visualizer(cls) -> AdaCLIPVisualizer:
        """The image visualiser of anomalib, with the decision (``NG``/``OK``), score and threshold on each image."""
        return AdaCLIPVisualizer()

    def configure_callbacks(self) -> Sequence[Callback] | Callback:
        """The components of anomalib plus the predictions table (one CSV per ``predict`` run).

        A :class:`~anomalib_adaclip.callbacks.PredictionCSVWriter` given to the Trainer is used instead of the default.
        """
        # Returned callbacks replace the Trainer's of the same type and run after the Trainer's own: the writer must
        # come after the post-processor, so a writer given to the Trainer is returned (moved) too.
        trainer_callbacks = self._trainer.callbacks if self._trainer is not None else []
        writer = next((cb for cb in trainer_callbacks if isinstance(cb, PredictionCSVWriter)), self._csv_writer)
        return [*super().configure_callbacks(), writer]

    # Used only when the prompts are trained (anomalib_adaclip.training): the Engine never fits a zero-shot model.
    optimizer_settings: OptimizerSettings = OptimizerSettings()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """AdamW over the prompts, prompt generators and projections (``optimizer_settings``); the CLIP is frozen.

        anomalib's Engine never calls this (it only validates zero-shot models); AdaCLIP's training does
        (``anomalib-adaclip train``, :func:`anomalib_adaclip.training.train`, or a plain Lightning ``Trainer.fit``).
        """
        settings = self.optimizer_settings
        parameters = [parameter for parameter in self.model.parameters() if parameter.requires_grad]
        return torch.optim.AdamW(
            parameters, lr=settings.lr, betas=tuple(settings.betas), weight_decay=settings.weight_decay
        )

    @property
    def trainer_arguments(self) -> dict[str, Any]:
        """No Trainer argument is needed: AdaCLIP does not fit on the target data."""
        return {}

    @property
    def learning_type(self) -> LearningType:
        """AdaCLIP is zero-shot on the target data."""
        return LearningType.ZERO_SHOT

    # ----------------------------------------------------------------------------------------------------------------
    # Class names
    # ----------------------------------------------------------------------------------------------------------------
    def _resolve_class_name(self) -> tuple[str, str]:
        """The class name of the prompts and where it comes from.

        The ``class_name`` argument, else the data module's category (an empty one, as ``Folder`` has, counts as
        missing), else the name stored in a loaded Lightning checkpoint, else ``"object"``.
        """
        if self.class_name:
            return self.class_name, "the class_name argument"
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        category = getattr(datamodule, "category", None)
        if isinstance(category, str) and category.strip():
            return category, f"the category of the data module {type(datamodule).__name__}"
        if self._checkpoint_class_name:
            return self._checkpoint_class_name, "the loaded checkpoint"
        return DEFAULT_CLASS_NAME, "the default: no class_name argument and no data module category"

    def _apply_class_name(self) -> None:
        name, source = self._resolve_class_name()
        self.model.check_class_name(name)
        self.model.class_name = name
        logger.info(
            "AdaCLIP prompts use the class name %r (prompt text %r), from %s.", name, format_class_name(name), source
        )

    def setup(self, stage: str) -> None:
        """Choose the class name of the prompts for this run (it follows the data module of each call)."""
        del stage
        self._apply_class_name()
        self._logged_class_names = set()
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        if self.tiling and getattr(datamodule, "eval_batch_size", 1) > 1:
            logger.info(
                "Tiling: images reach AdaCLIP at full resolution, so a batch needs images of one size; "
                "set the data module's eval_batch_size to 1 for images of different sizes.",
            )

    def batch_class_names(self, batch: Batch) -> Sequence[str] | None:
        """Class names of the images of a batch: their own, else from ``class_name_map`` / ``class_name_from_parent``.

        Batches of :mod:`anomalib_adaclip.data` carry one class name per image (``class_name``) and keep them;
        anomalib's own batches carry none, and the rules apply to their image paths. Returns ``None`` (every image
        uses the run's class name) when no rule is set or the batch carries no image paths. Images that no rule
        matches use the run's class name. Each class name is logged once per run with the rule and the first image
        that gave it.
        """
        own_names = getattr(batch, "class_name", None)
        if own_names is not None:
            return own_names
        if not self.class_name_rules.active:
            return None
        paths = getattr(batch, "image_path", None)
        if paths is None:
            if "<no paths>" not in self._logged_class_names:
                self._logged_class_names.add("<no paths>")
                logger.warning(
                    "class_name_map/class_name_from_parent need image paths, but the batches carry none: every "
                    "image uses the run's class name %r.",
                    self.model.class_name,
                )
            return None
        names = []
        for path in [paths] if isinstance(paths, str) else paths:
            match = self.class_name_rules.match(path)
            name, rule = match if match else (self.model.class_name, "")
            names.append(name)
            key = name if match else f"<unmatched> {name}"
            if key not in self._logged_class_names:
                self._logged_class_names.add(key)
                if match:
                    logger.info("AdaCLIP prompts use the class name %r for %s and others (%s).", name, path, rule)
                else:
                    logger.warning(
                        "No class_name_map rule matches %s: it and every other unmatched image use the run's class "
                        "name %r.",
                        path,
                        name,
                    )
        return names

    def image_class_names(self, batch: Batch) -> list[str]:
        """The class name of every image of a batch: its own where a rule gives one, else the run's."""
        names = self.batch_class_names(batch)
        return list(names) if names is not None else [self.model.class_name] * len(batch)

    def _warn_if_prompts_differ_from_training(self, checkpoint: str | None) -> None:
        """Warn when own prompt sentences meet trained prompts that were learned with the paper's sentences."""
        if checkpoint is None or self.model.ensemble.is_default:
            return
        # Checkpoints in our format store their prompt settings (AdaCLIPModel warns when they differ); the released
        # ones store none and were trained with the paper's sentences.
        released = checkpoint in RELEASED_CHECKPOINTS or read_checkpoint(checkpoint)[1] is None
        if released:
            logger.warning(
                "AdaCLIP uses its own prompt sentences (normal_states/abnormal_states/templates differ from the "
                "paper's), but the checkpoint %r stores no prompt settings: the released checkpoints were trained with "
                "the paper's sentences, so their learned prompts may not fit these. Check the scores on known-good and "
                "defective parts (`anomalib-adaclip prompts` prints the sentences).",
                checkpoint,
            )

    # ----------------------------------------------------------------------------------------------------------------
    # Tiling and calibration
    # ----------------------------------------------------------------------------------------------------------------
    @staticmethod
    def _check_tiling_arguments(image_size: int, tile_overlap: int | None, tile_score: str) -> None:
        if tile_score not in TILE_SCORES:
            msg = f"tile_score must be one of {TILE_SCORES}, got {tile_score!r}."
            raise ValueError(msg)
        if tile_overlap is not None and not 0 <= tile_overlap < image_size:
            msg = f"tile_overlap must be in [0, image_size) = [0, {image_size}) pixels, got {tile_overlap}."
            raise ValueError(msg)

    def _sync_pre_processor(self) -> None:
        """Make the default pre-processor match ``image_size`` and ``tiling`` again (a checkpoint may carry another)."""
        if not self._default_pre_processor or self.pre_processor is None:
            return
        transform = self.configure_pre_processor(self.model.image_size, tiling=self.tiling).transform
        self.pre_processor.transform = transform
        self.pre_processor.export_transform = get_exportable_transform(transform)

    @torch.no_grad()
    def calibrate(
        self,
        data: str | Path | Dataset | DataLoader | AnomalibDataModule,
        percentile: float = 99.0,
        pixel_percentile: float | None = None,
        *,
        batch_size: int = 1,
        num_workers: int = 0,
        apply: bool = True,
    ) -> CalibrationResult:
        """Set the fixed thresholds from known-good images: percentiles of their scores (no labelled anomaly needed).

        The images go through this model's pre-processing, tiling and class names, as in ``predict``. The image
        threshold becomes the ``percentile``-th percentile of their image scores (``numpy.percentile``, linear);
        with ``pixel_percentile`` the pixel threshold becomes that percentile of all their pixel probabilities.
        Images labelled anomalous (``gt_label`` 1, e.g. from a data module) are left out.

        Args:
            data: An image or a folder of known-good images, a Dataset, a DataLoader, or an anomalib data module
                (its training split).
            percentile: Percentile of the image scores, in [0, 100]. Defaults to 99.
            pixel_percentile: Percentile of the pixel probabilities, or ``None`` to keep the pixel threshold.
            batch_size: Images per batch when loading paths, data sets and data modules. Defaults to 1 (images of
                different sizes need 1).
            num_workers: Loader processes. Defaults to 0.
            apply: Set the thresholds on the post-processor. Defaults to ``True``.

        Returns:
            The thresholds and the scores they come from.
        """
        percentile = check_percentile(percentile)
        if pixel_percentile is not None:
            pixel_percentile = check_percentile(pixel_percentile, "pixel_percentile")
        loader, source = calibration_loader(data, batch_size=batch_size, num_workers=num_workers)
        was_training = self.training
        self.eval()
        self._apply_class_name()
        self._logged_class_names = set()
        pixels = PixelPercentiles() if pixel_percentile is not None else None
        scores: list[float] = []
        paths: list[str] = []
        skipped = 0
        try:
            for batch in loader:
                batch.image = batch.image.to(self.device)
                if self.pre_processor is not None and self.pre_processor.transform is not None:
                    batch.image, batch.gt_mask = self.pre_processor.transform(batch.image, batch.gt_mask)
                output = self._predict_batch(batch)
                labels = getattr(batch, "gt_label", None)
                normal = torch.ones(len(batch), dtype=torch.bool) if labels is None else ~labels.cpu().bool()
                skipped += int((~normal).sum())
                image_paths = batch.image_path if batch.image_path is not None else [""] * len(batch)
                scores += output.pred_score.float().cpu()[normal].tolist()
                paths += [str(path) for path, keep in zip(image_paths, normal.tolist(), strict=True) if keep]
                if pixels is not None:
                    pixels.update(output.anomaly_map[normal.to(output.anomaly_map.device)])
        finally:
            self.train(was_training)
        if skipped:
            logger.warning("Calibration left out %d image(s) labelled anomalous in %s.", skipped, source)
        if not scores:
            msg = f"No known-good image to calibrate on in {source}."
            raise ValueError(msg)
        result = CalibrationResult(
            image_threshold=float(np.percentile(scores, percentile)),
            pixel_threshold=None if pixels is None else pixels.percentile(pixel_percentile),
            percentile=percentile,
            pixel_percentile=pixel_percentile,
            scores=tuple(scores),
            paths=tuple(paths),
            source=source,
        )
        logger.info(result.summary())
        if apply:
            self._apply_calibration(result)
        return result

    def _apply_calibration(self, result: CalibrationResult) -> None:
        if not isinstance(self.post_processor, AdaCLIPPostProcessor):
            msg = (
                "Calibrated thresholds need AdaCLIP's post-processor; this model has "
                f"{type(self.post_processor).__name__}. Call calibrate(..., apply=False) and use the returned values."
            )
            raise TypeError(msg)
        self.post_processor.set_fixed_thresholds(result.image_threshold, result.pixel_threshold)
        if self.post_processor.mode != "fixed":
            logger.info(
                "The calibrated thresholds are the fixed ones; thresholding=%r still learns adaptive thresholds from "
                "labelled validation data. Use thresholding='fixed' to keep them in every case.",
                self.post_processor.mode,
            )

    # ----------------------------------------------------------------------------------------------------------------
    # Steps
    # ----------------------------------------------------------------------------------------------------------------
    def _predict_batch(self, batch: Batch) -> Batch:
        if self.tiling:
            predictions = tiled_predict(
                self.model, batch.image, self.batch_class_names(batch), overlap=self.tile_overlap, score=self.tile_score
            )
        else:
            predictions = self.model(batch.image, self.batch_class_names(batch))
        return batch.update(**predictions._asdict())

    def configure_model(self) -> None:
        """Exclude the tensors that never get a gradient from DDP's gradient synchronisation.

        Without this, multi-device training (``strategy="ddp"``, or ``"auto"`` with several devices) would stop at the
        second step because the text prompt of block 0 never receives a gradient; ``find_unused_parameters`` is not
        needed.
        """
        unused = [f"model.{name}" for name in self.model.parameters_without_gradient()]
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(self, unused)

    def training_step(self, batch: Batch, *args: Any, **kwargs: Any) -> STEP_OUTPUT:
        """AdaCLIP's loss on a batch of annotated auxiliary images (labels and masks); logged as ``train_loss``."""
        del args, kwargs
        if batch.gt_label is None or batch.gt_mask is None:
            msg = (
                "AdaCLIP trains its prompts on annotated images: every training batch needs `gt_label` and `gt_mask` "
                "(use anomalib_adaclip.data.AuxiliaryDataModule, which serves the test splits of anomalib data sets)."
            )
            raise ValueError(msg)
        loss = self.model.loss(batch.image, self.batch_class_names(batch), batch.gt_mask, batch.gt_label)
        self.log(
            "train_loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(batch.image), sync_dist=True
        )
        return loss

    def validation_step(self, batch: Batch, *args: Any, **kwargs: Any) -> STEP_OUTPUT:
        """Score a validation batch (anomalib collects thresholds from it)."""
        del args, kwargs
        return self._predict_batch(batch)

    def test_step(self, batch: Batch, *args: Any, **kwargs: Any) -> STEP_OUTPUT:
        """Score a test batch."""
        del args, kwargs
        return self._predict_batch(batch)

    def predict_step(self, batch: Batch, *args: Any, **kwargs: Any) -> STEP_OUTPUT:
        """Score a prediction batch."""
        del args, kwargs
        return self._predict_batch(batch)

    def val_dataloader(self) -> list:
        """No validation data of its own: lets ``Engine.predict`` run on a bare image folder.

        anomalib validates zero-shot models before predicting; with no data module, Lightning asks the model for
        validation data. An empty list skips that validation; a data module's validation data still take precedence.
        """
        return []

    # ----------------------------------------------------------------------------------------------------------------
    # Input checks
    # ----------------------------------------------------------------------------------------------------------------
    def _validate_input_files(self, loaders: Any, split: str) -> None:
        """Check every image and mask file the run's loaders will read, before the first batch (README: Input handling).

        Raises:
            InputFilesError: Files AdaCLIP cannot use; the message lists each with what to do.
        """
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        name = getattr(datamodule, "name", None) or (type(datamodule).__name__ if datamodule is not None else "")
        category = getattr(datamodule, "category", None)
        origin = f" of {name}" + (f" {category!r}" if category else "") if name else ""
        for dataset in iter_loader_datasets(loaders):
            validate_dataset(dataset, f"the {split} data{origin}")

    def on_train_start(self) -> None:
        """Check the training files before the first step."""
        self._validate_input_files(self.trainer.train_dataloader, "training")

    def on_validation_start(self) -> None:
        """Check the validation files before the first batch."""
        self._validate_input_files(self.trainer.val_dataloaders, "validation")

    def on_test_start(self) -> None:
        """Check the test files before the first batch."""
        self._validate_input_files(self.trainer.test_dataloaders, "test")
        self._warn_if_visualisations_exist()

    def on_predict_start(self) -> None:
        """Check the files to predict on before the first batch."""
        self._validate_input_files(self.trainer.predict_dataloaders, "prediction")
        self._warn_if_visualisations_exist()

    def _warn_if_visualisations_exist(self) -> None:
        """Say so when this run's images will replace an earlier run's (anomalib's test/predict reuse ``latest``)."""
        if not self.visualizer:
            return
        folder = getattr(self.visualizer, "output_dir", None) or Path(self.trainer.default_root_dir) / "images"
        if Path(folder).is_dir() and any(path.is_file() for path in Path(folder).rglob("*")):
            logger.warning(
                "%s holds visualisations of an earlier run; images of the same name will be replaced (anomalib's "
                "test and predict write into the results folder's 'latest' version). Give the Engine another "
                "default_root_dir to keep them.",
                folder,
            )

    def forward(self, batch: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        """Pre-process, score and post-process raw images ``[B, 3, H, W]`` in [0, 1] (export and TorchInferencer).

        Raises:
            TypeError: ``batch`` is not a floating-point tensor.
            ValueError: Wrong rank or channels, NaN/inf values, or values outside [0, 1].
        """
        if not is_tracing():
            check_raw_images(batch)
        return super().forward(batch, *args, **kwargs)

    # ----------------------------------------------------------------------------------------------------------------
    # Checkpoints without the frozen CLIP
    # ----------------------------------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep only the trainable tensors, the configuration and the class name; the CLIP is rebuilt on loading."""
        super().on_save_checkpoint(checkpoint)
        state_dict = checkpoint.get("state_dict", {})
        for key in [key for key in state_dict if key.startswith(FROZEN_PREFIX)]:
            del state_dict[key]
        checkpoint[CHECKPOINT_CLASS_NAME_KEY] = self.model.class_name

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore the component configuration and the class name the checkpoint's prompts used."""
        super().on_load_checkpoint(checkpoint)
        self._checkpoint_class_name = checkpoint.get(CHECKPOINT_CLASS_NAME_KEY)
        self._apply_class_name()
        self._sync_pre_processor()

    def load_state_dict(self, state_dict: dict[str, Any], strict: bool = True, assign: bool = False) -> Any:
        """Load a state dict that may lack the frozen CLIP; every other key is checked as usual.

        Keys and shapes are checked before anything is copied, so a checkpoint that does not fit leaves the model as
        it was (``torch.nn.Module.load_state_dict`` would copy the fitting tensors before raising).

        Raises:
            RuntimeError: With ``strict``, missing or unexpected keys; always, shapes that differ.
        """
        own = self.state_dict()
        if strict:
            expected = {
                key: value for key, value in own.items() if not key.startswith(FROZEN_PREFIX) or key in state_dict
            }
            given = state_dict
        else:
            expected = {key: value for key, value in own.items() if key in state_dict}
            given = {key: value for key, value in state_dict.items() if key in own}
        try:
            check_state_dict(expected, given, "The checkpoint")
        except CheckpointError as error:
            msg = f"Checkpoint does not fit AdaCLIP; nothing was loaded. {error}"
            raise RuntimeError(msg) from error
        return super().load_state_dict(state_dict, strict=False, assign=assign)

    # ----------------------------------------------------------------------------------------------------------------
    # Export
    # ----------------------------------------------------------------------------------------------------------------
    def to_torch(self, export_root: Path | str, model_file_name: str = "model") -> Path:
        """Export the whole module (pre-processing, CLIP, prompts, post-processing) for anomalib's TorchInferencer.

        Args:
            export_root: Folder; the file goes to ``<export_root>/weights/torch/<model_file_name>.pt``.
            model_file_name: File name without suffix. Defaults to ``"model"``.
        """
        self._check_exportable()
        self._check_export_target(export_root, "torch", model_file_name, (".pt",))
        logger.info("Exporting AdaCLIP with the class name %r in its prompts.", self.model.class_name)
        return super().to_torch(export_root, model_file_name)

    def to_onnx(
        self,
        export_root: Path | str,
        model_file_name: str = "model",
        input_size: tuple[int, int] | None = None,
        **kwargs: Any,
    ) -> Path:
        """Export to ONNX: raw ``[B, 3, H, W]`` images in [0, 1] in; score, label, map and mask out.

        The class name's text prompts, the k-means of the Hybrid Semantic Fusion and the thresholds are part of the
        graph. The opset defaults to 18.

        Args:
            export_root: Folder; the file goes to ``<export_root>/weights/onnx/<model_file_name>.onnx``.
            model_file_name: File name without suffix. Defaults to ``"model"``.
            input_size: Fixed ``(height, width)`` of the input, or ``None`` for any size. Defaults to ``None``.
            **kwargs: Passed to ``torch.onnx.export`` (e.g. ``opset_version``).
        """
        self._check_exportable()
        self._check_export_target(export_root, "onnx", model_file_name, (".onnx", ".onnx.data"))
        kwargs.setdefault("opset_version", ONNX_OPSET)
        logger.info("Exporting AdaCLIP with the class name %r in its prompts.", self.model.class_name)
        return super().to_onnx(export_root, model_file_name, input_size, **kwargs)

    def to_openvino(self, export_root: Path | str, model_file_name: str = "model", *args: Any, **kwargs: Any) -> Path:
        """Export to OpenVINO IR (through ONNX, opset 18); an existing export is an error, as for the other formats."""
        self._check_export_target(export_root, "openvino", model_file_name, (".xml", ".bin"))
        return super().to_openvino(export_root, model_file_name, *args, **kwargs)

    @staticmethod
    def _check_export_target(
        export_root: Path | str, kind: str, model_file_name: str, suffixes: tuple[str, ...]
    ) -> None:
        """Refuse to export over an earlier export (anomalib would replace it silently)."""
        folder = Path(export_root) / "weights" / kind
        existing = [folder / f"{model_file_name}{suffix}" for suffix in suffixes]
        existing = [path for path in existing if path.exists()]
        if existing:
            msg = (
                f"{existing[0]} already exists: AdaCLIP never replaces an earlier export. Choose another export_root "
                f"or model_file_name, or delete the old files first."
            )
            raise FileExistsError(msg)

    def _check_exportable(self) -> None:
        if self.tiling:
            msg = (
                "Tiled inference cannot be exported: the tile grid depends on each image's size. Export a model with "
                "tiling=False (the export resizes every image to image_size) and tile in Python with "
                "anomalib_adaclip.tiling.tiled_predict, or predict through anomalib with tiling=True."
            )
            raise NotImplementedError(msg)
