r"""AdaCLIP as an anomalib model: zero- and few-shot test, validate, predict and export through Engine and CLI.

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
    anomalib-adaclip predict --model AdaCLIP --model.k_shot 4 --model.few_shot_source good/ --data path/to/images

This module only adapts :class:`~anomalib_adaclip.model.AdaCLIPModel` to anomalib; everything else is a component of
:mod:`anomalib_adaclip.components`: the transform, the post-processor, class names per image, tiling, calibration,
the input-file checks, the visualiser, the predictions table, checkpoints without the frozen CLIP (it is rebuilt
from ``backbone`` and ``backbone_weights``) and the export guards.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
from anomalib import LearningType
from anomalib.data import AnomalibDataModule, Batch
from anomalib.metrics import AUPRO, AUROC, Evaluator, F1Max
from anomalib.models import AnomalibModule
from anomalib.pre_processing import PreProcessor
from anomalib.visualization import Visualizer
from lightning.pytorch import Callback
from lightning.pytorch.utilities.types import STEP_OUTPUT
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .compat import ignore_in_ddp
from .components import (
    AdaCLIPPostProcessor,
    AdaCLIPVisualizer,
    BatchClassNames,
    CalibrationResult,
    ClassNameRules,
    InputFileCheck,
    PredictionCSVWriter,
    ThresholdCalibration,
    ThresholdingMode,
    TileScore,
    adaclip_transform,
    check_tiling,
    run_calibration,
    tiled_predict,
)
from .components.attached import attached_datamodule, attached_trainer
from .components.class_names import CHECKPOINT_CLASS_NAME_KEY, ClassNamedPrompts
from .components.export import GuardedExports
from .components.lightning_checkpoints import FrozenBackboneCheckpoints
from .components.mutual_groups import MutualGroupStage, check_mutual_scoring, mutual_stage
from .components.post_processor import set_calibrated_thresholds
from .components.pre_processing import input_resize
from .components.references import FewShotReferences, ReferencePreparation
from .components.tiling import TiledInference
from .config import (
    DEFAULT_CLASS_NAME,
    AdaCLIPConfig,
    FewShotConfig,
    MutualGroupConfig,
    OptimizerSettings,
    PromptingBranch,
    PromptingType,
)
from .model import AdaCLIPModel
from .model.blocks import is_tracing
from .model.inputs import check_images

logger = logging.getLogger(__name__)

__all__ = ["CHECKPOINT_CLASS_NAME_KEY", "AdaCLIP"]  # the key: owned by components.class_names

_DEFAULTS = AdaCLIPConfig()
HYPERPARAMETERS = tuple(field.name for field in dataclasses.fields(AdaCLIPConfig))
_FEW_SHOT_DEFAULTS = FewShotConfig()
_MUTUAL_DEFAULTS = MutualGroupConfig()
FEW_SHOT_SETTINGS = tuple(field.name for field in dataclasses.fields(FewShotConfig))


class AdaCLIP(
    ClassNamedPrompts,
    ReferencePreparation,
    TiledInference,
    FrozenBackboneCheckpoints,
    GuardedExports,
    AnomalibModule,
):
    """AdaCLIP: zero-shot anomaly detection with hybrid learnable prompts (Cao et al., ECCV 2024).

    The arguments not under Args are documented and checked by the config dataclasses: the model's hyper-parameters
    by :class:`~anomalib_adaclip.config.AdaCLIPConfig` (``None`` for a sentence list means the paper's), the few-shot
    settings (``k_shot``, ``few_shot_*``) by :class:`~anomalib_adaclip.config.FewShotConfig`, and ``mutual_scoring``,
    ``mutual_weight`` and ``mutual_group_size`` (every image also scored against the other images of its class name,
    MuSc; :mod:`~anomalib_adaclip.components.mutual_groups`) by :class:`~anomalib_adaclip.config.MutualGroupConfig`.

    With ``k_shot > 0`` the references are drawn and encoded when a run starts (after the model is on its device), for
    every class name the memory lacks; no fit step is needed, and a memory from a checkpoint is kept.
    :meth:`prepare_references` fills it outside a run (e.g. for an export); :meth:`set_references`, with given images.

    Args:
        backbone_weights: open_clip pretrained tag (``"openai"``), path to a weights file, or ``None`` for random
            weights (tests only). Defaults to ``"openai"``.
        checkpoint: AdaCLIP's trained prompts: ``"mvtec_colondb"``, ``"visa_clinicdb"``, ``"all"``, a path, or
            ``None`` (untrained: only for training). Defaults to ``None``.
        mutual_feature_layers: MuSc's feature layers, 1-based blocks like ``feature_layers``. Defaults to the last
            block of each quarter of the tower, ``[6, 12, 18, 24]`` for ViT-L (MuSc's).
        mutual_r_list: MuSc's LNAMD neighbourhood sizes (``MutualScoringConfig.r_list``). Defaults to ``[1, 3, 5]``.
        mutual_topmin_min: Lower end of the averaged share of the other images (``MutualScoringConfig.topmin_min``).
            Defaults to 0.
        mutual_topmin_max: Upper end (``MutualScoringConfig.topmin_max``): the closest 30 % by default. Defaults to
            0.3.
        mutual_rscin_k: RsCIN's ``k`` values (``MutualScoringConfig.rscin_k``; ``[1, 8, 9]`` for VisA in MuSc, a list
            holding 0 switches it off). Defaults to ``[1, 2, 3]``.
        class_name: Object name for the prompts. Defaults to the data module's category, else the class name stored
            in a loaded Lightning checkpoint, else ``"object"``.
        export_class_names: Several class names for one exported model (a line of products): ``forward`` on raw
            images (exports, ``TorchInferencer``) scores each image with the one CLIP's zero-shot classification
            picks among them (:mod:`~anomalib_adaclip.model.class_choice`). Runs through the Engine keep using
            ``class_name`` and the class-name rules. Defaults to ``None`` (one class name, ``class_name``).
        few_shot_source: Where the ``k_shot`` normal reference images are drawn from: a folder (of the run's class
            name), or a mapping of class name to folder (many classes in one run). Defaults to the data module's
            normal training images.
        image_threshold: Fixed decision threshold of the image probability. Defaults to 0.5.
        pixel_threshold: Fixed decision threshold of the pixel probability. Defaults to 0.5.
        thresholding: ``"auto"`` (adaptive where validation labels allow, else fixed), ``"fixed"`` or
            ``"adaptive"`` (anomalib's). Defaults to ``"auto"``.
        class_name_map: Class name per image: glob pattern or folder name -> class name, first match wins (see
            :mod:`~anomalib_adaclip.components.class_names`). Defaults to ``None``.
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
            (:class:`~anomalib_adaclip.components.visualizer.AdaCLIPVisualizer`), ``False`` for none.
    """

    def __init__(
        self,
        backbone: str | dict[str, Any] = _DEFAULTS.backbone,
        backbone_weights: str | None = "openai",
        checkpoint: str | None = None,
        image_size: int = _DEFAULTS.image_size,
        feature_layers: list[int] | None = None,
        prompting_depth: int = _DEFAULTS.prompting_depth,
        prompting_length: int = _DEFAULTS.prompting_length,
        prompting_type: PromptingType = _DEFAULTS.prompting_type,
        prompting_branch: PromptingBranch = _DEFAULTS.prompting_branch,
        use_hsf: bool = _DEFAULTS.use_hsf,
        k_clusters: int = _DEFAULTS.k_clusters,
        blur_sigma: float = _DEFAULTS.blur_sigma,
        normal_states: list[str] | None = None,
        abnormal_states: list[str] | None = None,
        templates: list[str] | None = None,
        k_shot: int = _FEW_SHOT_DEFAULTS.k_shot,
        few_shot_source: str | dict[str, str] | None = None,
        few_shot_seed: int = _FEW_SHOT_DEFAULTS.few_shot_seed,
        few_shot_map_weight: float = _FEW_SHOT_DEFAULTS.few_shot_map_weight,
        few_shot_score_weight: float = _FEW_SHOT_DEFAULTS.few_shot_score_weight,
        few_shot_augment: bool = _FEW_SHOT_DEFAULTS.few_shot_augment,
        few_shot_coreset_ratio: float = _FEW_SHOT_DEFAULTS.few_shot_coreset_ratio,
        few_shot_top_percent: float = _FEW_SHOT_DEFAULTS.few_shot_top_percent,
        mutual_scoring: bool = _MUTUAL_DEFAULTS.mutual_scoring,
        mutual_weight: float = _MUTUAL_DEFAULTS.mutual_weight,
        mutual_group_size: int | None = _MUTUAL_DEFAULTS.mutual_group_size,
        mutual_feature_layers: list[int] | None = None,
        mutual_r_list: list[int] | None = None,
        mutual_topmin_min: float | None = None,
        mutual_topmin_max: float | None = None,
        mutual_rscin_k: list[int] | None = None,
        class_name: str | None = None,
        export_class_names: list[str] | None = None,
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
        given = locals()  # the hyper-parameters go to the config, which checks them; None keeps its default
        config = AdaCLIPConfig(**{name: given[name] for name in HYPERPARAMETERS if given[name] is not None})
        few_shot = FewShotConfig(**{name: given[name] for name in FEW_SHOT_SETTINGS})
        check_tiling(image_size, tile_overlap, tile_score)
        check_mutual_scoring(mutual_scoring, tiling)
        self._default_pre_processor = pre_processor is True
        # The default components depend on init arguments, so they are built before the base class would build them.
        super().__init__(
            pre_processor=self.configure_pre_processor(image_size, tiling) if pre_processor is True else pre_processor,
            post_processor=(
                self.configure_post_processor(image_threshold, pixel_threshold, thresholding)
                if post_processor is True
                else post_processor
            ),
            evaluator=evaluator,
            visualizer=visualizer,
        )
        self.model = AdaCLIPModel(
            config,
            backbone_weights=backbone_weights,
            checkpoint=checkpoint,
            class_name=class_name or DEFAULT_CLASS_NAME,
            few_shot=few_shot,
        )
        self.few_shot_source = dict(few_shot_source) if isinstance(few_shot_source, Mapping) else few_shot_source
        if checkpoint is None:
            logger.warning(
                "AdaCLIP has no trained prompts (checkpoint=None): use a released checkpoint (e.g. "
                "checkpoint='visa_clinicdb' for MVTec AD, 'mvtec_colondb' otherwise) or train the prompts first.",
            )
        self.class_name = class_name
        self.export_class_names: tuple[str, ...] | None = None
        self.set_export_class_names(export_class_names)  # checked (None: one class name)
        self.per_image_class_names = BatchClassNames(ClassNameRules(class_name_map or {}, class_name_from_parent))
        self.tiling, self.tile_overlap, self.tile_score = tiling, tile_overlap, tile_score
        self.optimizer_settings = OptimizerSettings()
        self._checkpoint_class_name: str | None = None
        self._csv_writer = PredictionCSVWriter()
        resize = input_resize(image_size) if pre_processor is True else None  # the default pre-processor's
        self.mutual_groups: MutualGroupStage | None = mutual_stage(given, self.model, partial(_rule_name, self), resize)

    @classmethod
    def configure_pre_processor(
        cls, image_size: int | tuple[int, int] | None = None, tiling: bool = False
    ) -> PreProcessor:
        """Resize to ``image_size`` (default 518; bicubic, aspect ratio not kept; not with ``tiling``), normalise."""
        return PreProcessor(transform=adaclip_transform(image_size, tiling))

    @classmethod
    def configure_post_processor(
        cls, image_threshold: float = 0.5, pixel_threshold: float = 0.5, thresholding: ThresholdingMode = "auto"
    ) -> AdaCLIPPostProcessor:
        """Threshold the probabilities: fixed thresholds, adaptive where labelled validation data allow it."""
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
        """Anomalib's components, the input-file checks and the predictions table (one CSV per ``predict`` run).

        A :class:`~anomalib_adaclip.components.PredictionCSVWriter` given to the Trainer (the last, if several) is
        used instead of the default. A calibration run (a Trainer with
        :class:`~anomalib_adaclip.components.ThresholdCalibration`) writes no files: no visualisations, no table.
        """
        callbacks = [*super().configure_callbacks(), InputFileCheck()]
        if self.model.few_shot_memory is not None:
            callbacks.append(FewShotReferences())
        if self.mutual_groups is not None:  # before the writer: it plans the groups before a resume cuts the data
            callbacks.append(self.mutual_groups)
        trainer_callbacks = trainer.callbacks if (trainer := attached_trainer(self)) is not None else []
        if any(isinstance(callback, ThresholdCalibration) for callback in trainer_callbacks):
            return [callback for callback in callbacks if not isinstance(callback, Visualizer)]
        # Returned callbacks replace the Trainer's of the same type and run after the Trainer's own: the writer must
        # come after the post-processor, so a writer given to the Trainer is returned (moved) too.
        # The last one given wins: `anomalib-adaclip predict --resume` appends its writer after a config file's.
        writer = next(
            (cb for cb in reversed(trainer_callbacks) if isinstance(cb, PredictionCSVWriter)), self._csv_writer
        )
        return [*callbacks, writer]

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """AdamW (``optimizer_settings``; the paper's by default) over the trainable tensors; the CLIP is frozen.

        anomalib's Engine never calls this (it only validates zero-shot models); AdaCLIP's training does.
        """
        settings = self.optimizer_settings
        parameters = [parameter for parameter in self.model.parameters() if parameter.requires_grad]
        return torch.optim.AdamW(parameters, lr=settings.lr, betas=settings.betas, weight_decay=settings.weight_decay)

    def prepare_training(self, optimizer: OptimizerSettings, evaluator: Evaluator) -> None:
        """Use these AdamW settings and validation metrics when the prompts are trained (``training.train``)."""
        self.optimizer_settings = optimizer
        self.evaluator = evaluator

    @property
    def trainer_arguments(self) -> dict[str, Any]:
        """No Trainer argument is needed: AdaCLIP does not fit on the target data."""
        return {}

    @property
    def learning_type(self) -> LearningType:
        """Zero-shot on the target data, or few-shot with ``k_shot`` normal references (``k_shot > 0``)."""
        return LearningType.FEW_SHOT if self.model.few_shot.k_shot > 0 else LearningType.ZERO_SHOT

    def setup(self, stage: str) -> None:
        """Choose the class name of the prompts for this run (it follows the data module of each call)."""
        del stage
        datamodule = attached_datamodule(self)
        self.apply_class_name(datamodule)
        if self.tiling and getattr(datamodule, "eval_batch_size", 1) > 1:
            logger.info(
                "Tiling: images reach AdaCLIP at full resolution, so a batch needs images of one size; "
                "set the data module's eval_batch_size to 1 for images of different sizes.",
            )

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

        A Lightning predict run of this model over ``data`` (an image, a folder, a Dataset, a DataLoader or a data
        module's training split); see :func:`~anomalib_adaclip.components.calibration.run_calibration` for the
        arguments. With ``apply`` (default) the thresholds are set on the post-processor.
        """
        result = run_calibration(
            self, data, percentile, pixel_percentile, batch_size=batch_size, num_workers=num_workers
        )
        if apply:
            set_calibrated_thresholds(self.post_processor, result.image_threshold, result.pixel_threshold)
        return result

    def score_batch(self, batch: Batch, class_names: Sequence[str] | None = None, loader_index: int = 0) -> Batch:
        """Score a pre-processed batch (in tiles with ``tiling``); the steps and ``score_images`` call it.

        With ``mutual_scoring`` a run's batch is one whole group (the stage regroups the loaders); outside a run (the
        demo's ``score_images``) the batch is grouped by the same rule (``mutual_groups.plan_groups``).

        Args:
            batch: The batch after the pre-processor.
            class_names: One class name per image; by default the batch's own, from the class-name rules, or the
                run's.
            loader_index: The index of the batch's data loader (groups are planned per data set).
        """
        names = class_names if class_names is not None else self.per_image_class_names.of(batch, self.model.class_name)
        if self.mutual_groups is not None and self.mutual_groups.running:  # the batch is one whole group
            predictions = self.mutual_groups.score_batch(self.model, batch.image, names, batch.image_path)
        elif self.mutual_groups is not None:
            predictions = self.mutual_groups.score_tensors(self.model, batch.image, names or self.model.class_name)
        elif self.tiling:
            predictions = tiled_predict(
                self.model, batch.image, names, overlap=self.tile_overlap, score=self.tile_score
            )
        else:
            predictions = self.model(batch.image, names)
        return batch.update(**predictions._asdict())

    def configure_model(self) -> None:
        """Exclude the tensors that never get a gradient (the text prompt of block 0) from DDP's synchronisation."""
        unused = [f"model.{name}" for name in self.model.parameters_without_gradient()]
        ignore_in_ddp(self, unused)

    def training_step(self, batch: Batch, *args: Any, **kwargs: Any) -> STEP_OUTPUT:
        """AdaCLIP's loss on a batch of annotated auxiliary images (labels and masks); logged as ``train_loss``."""
        del args, kwargs
        if batch.gt_label is None or batch.gt_mask is None:
            msg = (
                "AdaCLIP trains its prompts on annotated images: every training batch needs `gt_label` and `gt_mask` "
                "(use anomalib_adaclip.data.AuxiliaryDataModule, which serves the test splits of anomalib data sets)."
            )
            raise ValueError(msg)
        names = self.per_image_class_names.of(batch, self.model.class_name)
        loss = self.model.loss(batch.image, names, batch.gt_mask, batch.gt_label)
        self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(batch), sync_dist=True)
        return loss

    def validation_step(self, batch: Batch, *args: Any, **kwargs: Any) -> STEP_OUTPUT:
        """Score a validation batch (anomalib collects thresholds from it)."""
        return self.score_batch(batch, loader_index=_loader_index(args, kwargs))

    def test_step(self, batch: Batch, *args: Any, **kwargs: Any) -> STEP_OUTPUT:
        """Score a test batch."""
        return self.score_batch(batch, loader_index=_loader_index(args, kwargs))

    def predict_step(self, batch: Batch, *args: Any, **kwargs: Any) -> STEP_OUTPUT:
        """Score a prediction batch."""
        return self.score_batch(batch, loader_index=_loader_index(args, kwargs))

    def val_dataloader(self) -> list:
        """No validation data of its own, so ``Engine.predict`` runs on a bare image folder (a data module's win)."""
        return []

    def forward(self, batch: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        """Pre-process, score and post-process raw images ``[B, 3, H, W]`` in [0, 1] (export and TorchInferencer).

        With ``export_class_names`` each image is scored with the class name CLIP's zero-shot classification picks
        among them; otherwise with the run's class name.
        """
        if not is_tracing():
            check_images(batch, "batch", raw=True)
        if self.mutual_groups is None and self.export_class_names is None:
            return super().forward(batch, *args, **kwargs)
        # anomalib's forward (pre-processor, model, post-processor) with the groups or the candidates
        if self.mutual_groups is not None:  # eager only (exports refuse it): a run's transform, a run's groups
            batch = self.pre_processor.transform(batch) if self.pre_processor else batch
            batch = self.mutual_groups.score_tensors(self.model, batch, self.model.class_name)
        else:
            batch = self.pre_processor(batch) if self.pre_processor else batch
            batch = self.model(batch, choose_from=self.export_class_names)
        return self.post_processor(batch) if self.post_processor else batch

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore the component configuration and the class name the checkpoint's prompts used."""
        super().on_load_checkpoint(checkpoint)  # the class name: ClassNamedPrompts
        # a checkpoint may carry another pre-processor: the default one follows the model's tiling
        self.set_tiling(self.tiling, self.tile_overlap, self.tile_score)


def _rule_name(module: AdaCLIP, path: str) -> str:
    """The class name a run's batch gives an image of this path: the class-name rules, else the run's."""
    match = module.per_image_class_names.rules.match(path) if module.per_image_class_names.rules.active else None
    return match[0] if match else module.model.class_name


def _loader_index(args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    """The data-loader index of a step's ``(batch_idx, dataloader_idx)`` (Lightning passes it with several loaders)."""
    return kwargs.get("dataloader_idx", args[1] if len(args) > 1 else 0)
