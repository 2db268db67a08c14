r"""AdaCLIP as an anomalib model: zero- and few-shot test, validate, predict and export through Engine and CLI.

Example:
    >>> from anomalib.data import MVTecAD
    >>> from anomalib.engine import Engine
    >>> from anomalib_adaclip import AdaCLIP
    >>> model = AdaCLIP(checkpoint="visa_clinicdb")  # doctest: +SKIP
    >>> Engine().test(model, datamodule=MVTecAD(category="bottle"))  # doctest: +SKIP
    >>> few_shot = AdaCLIP(checkpoint="mvtec_colondb", few_shot={"k_shot": 4, "source": "refs/"})  # doctest: +SKIP

From the command line (nothing in anomalib changes)::

    anomalib test --model anomalib_adaclip.AdaCLIP --data MVTecAD --data.category bottle \
        --model.checkpoint visa_clinicdb
    anomalib-adaclip predict --model AdaCLIP --data path/to/images
    anomalib-adaclip predict --model AdaCLIP --model.few_shot.k_shot 4 \
        --model.few_shot.source good/ --data path/to/images

This module adapts :class:`~anomalib_adaclip.model.AdaCLIPModel` to anomalib. The settings come in groups, each a
frozen dataclass of :mod:`anomalib_adaclip.config`, and the parts :class:`AdaCLIP` owns are objects of
:mod:`anomalib_adaclip.components`, each told what it needs: the class names (:class:`.ClassNames`), the tiling
(:class:`.Tiling`), the few-shot references (:class:`.ReferenceImages`), the group scoring
(:class:`.MutualGroupStage`), the export guard (:class:`.ExportGuard`) and the Lightning checkpoints without the
frozen CLIP (:class:`.FrozenBackboneCheckpoints`).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping, Sequence
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

from .compat import get_exportable_transform, ignore_in_ddp
from .components import (
    AdaCLIPPostProcessor,
    AdaCLIPVisualizer,
    CalibrationResult,
    InputFileCheck,
    PredictionCSVWriter,
    ThresholdCalibration,
    adaclip_transform,
    run_calibration,
)
from .components.attached import attached_datamodule, attached_trainer
from .components.class_names import CHECKPOINT_CLASS_NAME_KEY, ClassNames
from .components.export import ExportGuard
from .components.lightning_checkpoints import FrozenBackboneCheckpoints
from .components.mutual_groups import MutualGroupStage, check_mutual_scoring, mutual_stage
from .components.post_processor import set_calibrated_thresholds
from .components.pre_processing import input_resize
from .components.rarity import NewBanksPerRun, RarityBanks, check_rarity_scoring, rarity_banks
from .components.references import FewShotReferences, ReferenceImages
from .components.tiling import Tiling
from .config import (
    DEFAULT_CLASS_NAME,
    MOVED_ARGUMENTS,
    AdaCLIPConfig,
    ClassConfig,
    FewShotConfig,
    MutualGroupConfig,
    OptimizerSettings,
    PromptConfig,
    RarityGroupConfig,
    ThresholdConfig,
    ThresholdingMode,
    TilingConfig,
    moved_argument_message,
    settings_group,
)
from .model import AdaCLIPModel
from .model.blocks import is_tracing
from .model.inputs import check_images

logger = logging.getLogger(__name__)

__all__ = ["CHECKPOINT_CLASS_NAME_KEY", "AdaCLIP"]  # the key: owned by components.class_names

_DEFAULTS = AdaCLIPConfig()


def _moved_arguments_named(init: Callable[..., None]) -> Callable[..., None]:
    """Name the new place of an old flat argument in one line, instead of Python's "unexpected keyword argument".

    (A wrapper keeps the constructor's signature for anomalib's CLI and the docs, which a ``__new__`` would hide.)
    """

    @functools.wraps(init)
    def checked(self: Any, *args: Any, **kwargs: Any) -> None:
        for name in kwargs:
            if name in MOVED_ARGUMENTS:
                raise TypeError(moved_argument_message(name))
        init(self, *args, **kwargs)

    return checked


class AdaCLIP(AnomalibModule):
    """AdaCLIP: zero-shot anomaly detection with hybrid learnable prompts (Cao et al., ECCV 2024).

    The settings come in groups, each a frozen dataclass of :mod:`anomalib_adaclip.config` given as the dataclass or
    as a mapping of its fields (``--model.few_shot.k_shot 4`` on anomalib's command line; nested under ``init_args``
    in YAML). A group left at ``None`` is off (``few_shot``, ``mutual``, ``tiling``) or at its defaults (``prompts``,
    ``classes``, ``thresholds``).

    With ``few_shot.k_shot > 0`` the references are drawn and encoded when a run starts (after the model is on its
    device), for every class name the memory lacks; no fit step is needed, and a memory from a checkpoint is kept.
    :meth:`prepare_references` fills it outside a run (e.g. for an export); :meth:`set_references`, with given images.

    Args:
        backbone: open_clip ViT model name, or a config dict with ``embed_dim``, ``vision_cfg`` and ``text_cfg``.
            Defaults to ``"ViT-L-14-336"`` (the paper's).
        backbone_weights: open_clip pretrained tag (``"openai"``), path to a weights file, or ``None`` for random
            weights (tests only). Defaults to ``"openai"``.
        image_size: Input side length, a multiple of the patch size (the tile size with tiling). Defaults to 518.
        checkpoint: AdaCLIP's trained prompts: ``"mvtec_colondb"``, ``"visa_clinicdb"``, ``"all"``, a path, or
            ``None`` (untrained: only for training). Defaults to ``None``.
        prompts: The prompts, the maps' layers and the image score
            (:class:`~anomalib_adaclip.config.PromptConfig`). Defaults to the paper's.
        few_shot: Normal reference images per class name and how they are used
            (:class:`~anomalib_adaclip.config.FewShotConfig`). Defaults to ``None``: zero-shot.
        mutual: Every image also scored against the other images of its class name, MuSc
            (:class:`~anomalib_adaclip.config.MutualGroupConfig`; :mod:`~anomalib_adaclip.components.mutual_groups`).
            Defaults to ``None``: off.
        tiling: Full-resolution images scored in overlapping tiles of ``image_size``
            (:class:`~anomalib_adaclip.config.TilingConfig`; ``True`` for its defaults). Defaults to ``None``: off.
        classes: The class name of the prompts, per image rules and the export's class names
            (:class:`~anomalib_adaclip.config.ClassConfig`). Defaults to the data module's category, else
            ``"object"``.
        thresholds: Fixed thresholds and the thresholding mode (:class:`~anomalib_adaclip.config.ThresholdConfig`).
            Defaults to 0.5, 0.5 and ``"auto"``.
        rarity: Every image also scored, in the order it comes, against the earlier images of its class name,
            RareCLIP (:class:`~anomalib_adaclip.config.RarityGroupConfig`; :mod:`~anomalib_adaclip.components.rarity`;
            one bank per class name in :attr:`rarity`). Defaults to ``None``: off.
        pre_processor: Pre-processor, ``True`` for the default, ``False`` for none.
        post_processor: Post-processor, ``True`` for the default, ``False`` for none.
        evaluator: Evaluator, ``True`` for the default metrics, ``False`` for none.
        visualizer: Visualizer, ``True`` for anomalib's image visualiser with the decision written on each image
            (:class:`~anomalib_adaclip.components.visualizer.AdaCLIPVisualizer`), ``False`` for none.

    Raises:
        TypeError: An old flat argument (``k_shot``, ``mutual_weight``, ...): the message names its group.
        ValueError: A setting outside its allowed range.
    """

    @_moved_arguments_named
    def __init__(
        self,
        backbone: str | dict[str, Any] = _DEFAULTS.backbone,
        backbone_weights: str | None = "openai",
        image_size: int = _DEFAULTS.image_size,
        checkpoint: str | None = None,
        prompts: PromptConfig | dict[str, Any] | None = None,
        few_shot: FewShotConfig | dict[str, Any] | None = None,
        mutual: MutualGroupConfig | dict[str, Any] | None = None,
        tiling: TilingConfig | dict[str, Any] | bool | None = None,
        classes: ClassConfig | dict[str, Any] | None = None,
        thresholds: ThresholdConfig | dict[str, Any] | None = None,
        rarity: RarityGroupConfig | dict[str, Any] | None = None,
        pre_processor: nn.Module | bool = True,
        post_processor: nn.Module | bool = True,
        evaluator: Evaluator | bool = True,
        visualizer: Visualizer | bool = True,
    ) -> None:
        prompt_settings = settings_group(prompts, PromptConfig, "prompts") or PromptConfig()
        few_shot_settings = settings_group(few_shot, FewShotConfig, "few_shot")
        mutual_settings = settings_group(mutual, MutualGroupConfig, "mutual")
        tiling_settings = _tiling_group(tiling)
        class_settings = settings_group(classes, ClassConfig, "classes") or ClassConfig()
        threshold_settings = settings_group(thresholds, ThresholdConfig, "thresholds") or ThresholdConfig()
        rarity_settings = settings_group(rarity, RarityGroupConfig, "rarity")
        config = prompt_settings.model_config(backbone, image_size)
        tiling_part = Tiling(tiling_settings, image_size)  # checks the overlap against the tile
        check_mutual_scoring(mutual_settings is not None, tiling_part.enabled)
        check_rarity_scoring(rarity_settings is not None, mutual_settings is not None, tiling_part.enabled)
        # anomalib saves the arguments as they are now (save_hyperparameters): plain types, loadable with
        # torch.load(weights_only=True); a loaded checkpoint gives them back to this constructor.
        prompts, classes, thresholds = prompt_settings.to_dict(), class_settings.to_dict(), threshold_settings.to_dict()
        few_shot, mutual = _plain_or_none(few_shot_settings), _plain_or_none(mutual_settings)
        tiling, rarity = _plain_or_none(tiling_settings), _plain_or_none(rarity_settings)
        self._default_pre_processor = pre_processor is True
        # The default components depend on init arguments, so they are built before the base class would build them.
        super().__init__(
            pre_processor=(
                self.configure_pre_processor(image_size, tiling_part.enabled)
                if pre_processor is True
                else pre_processor
            ),
            post_processor=(
                self.configure_post_processor(
                    threshold_settings.image, threshold_settings.pixel, threshold_settings.mode
                )
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
            class_name=class_settings.name or DEFAULT_CLASS_NAME,
            few_shot=few_shot_settings,
        )
        if checkpoint is None:
            logger.warning(
                "AdaCLIP has no trained prompts (checkpoint=None): use a released checkpoint (e.g. "
                "checkpoint='visa_clinicdb' for MVTec AD, 'mvtec_colondb' otherwise) or train the prompts first.",
            )
        self.class_names = ClassNames(class_settings, self.model.check_class_name)
        self.tiling = tiling_part
        self.references = ReferenceImages(self.model, few_shot_settings.source if few_shot_settings else None)
        resize = input_resize(image_size) if pre_processor is True else None  # the default pre-processor's
        class_name_of = functools.partial(_class_name_of_path, self)
        self.mutual_groups: MutualGroupStage | None = mutual_stage(mutual_settings, self.model, class_name_of, resize)
        self.rarity: RarityBanks | None = rarity_banks(rarity_settings, self.model)
        self.export_guard = ExportGuard()
        self.frozen_checkpoints = FrozenBackboneCheckpoints()
        self.optimizer_settings = OptimizerSettings()
        self._csv_writer = PredictionCSVWriter()

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
            callbacks.append(FewShotReferences(self.prepare_references, self.references, self.image_class_names))
        if self.mutual_groups is not None:  # before the writer: it plans the groups before a resume cuts the data
            callbacks.append(self.mutual_groups)
        if self.rarity is not None:
            callbacks.append(NewBanksPerRun(self.rarity))
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
        """No Trainer argument is needed (AdaCLIP does not fit on the target data)."""
        return {}

    @property
    def learning_type(self) -> LearningType:
        """Zero-shot on the target data, or few-shot with ``few_shot.k_shot`` normal references (``k_shot > 0``)."""
        return LearningType.FEW_SHOT if self.model.few_shot.k_shot > 0 else LearningType.ZERO_SHOT

    def setup(self, stage: str) -> None:
        """Choose the class name of the prompts for this run (it follows the data module of each call)."""
        del stage
        datamodule = attached_datamodule(self)
        self.model.class_name = self.class_names.run_name(datamodule, __name__)
        if self.tiling.enabled and getattr(datamodule, "eval_batch_size", 1) > 1:
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

    def score_batch(self, batch: Batch, class_names: Sequence[str] | None = None) -> Batch:
        """Score a pre-processed batch (in tiles with ``tiling``); the steps and ``score_images`` call it.

        With ``mutual`` scoring a run's batch is one whole group (the stage regroups the loaders); outside a run (the
        demo's ``score_images``) the batch is grouped by the same rule (``mutual_groups.plan_groups``).

        Args:
            batch: The batch after the pre-processor.
            class_names: One class name per image; by default the batch's own, from the class-name rules, or the
                run's.
        """
        names = class_names if class_names is not None else self.class_names.of(batch, self.model.class_name)
        if self.mutual_groups is not None and self.mutual_groups.running:  # the batch is one whole group
            predictions = self.mutual_groups.score_batch(self.model, batch.image, names, batch.image_path)
        elif self.mutual_groups is not None:
            predictions = self.mutual_groups.score_tensors(self.model, batch.image, names or self.model.class_name)
        elif self.rarity is not None:
            predictions = self.rarity.score_images(self.model, batch.image, names or self.model.class_name)
        elif self.tiling.enabled:
            predictions = self.tiling.predict(self.model, batch.image, names)
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
        names = self.class_names.of(batch, self.model.class_name)
        loss = self.model.loss(batch.image, names, batch.gt_mask, batch.gt_label)
        self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(batch), sync_dist=True)
        return loss

    def validation_step(self, batch: Batch, *args: Any, **kwargs: Any) -> STEP_OUTPUT:
        """Score a validation batch (anomalib collects thresholds from it)."""
        del args, kwargs
        return self.score_batch(batch)

    def test_step(self, batch: Batch, *args: Any, **kwargs: Any) -> STEP_OUTPUT:
        """Score a test batch."""
        del args, kwargs
        return self.score_batch(batch)

    def predict_step(self, batch: Batch, *args: Any, **kwargs: Any) -> STEP_OUTPUT:
        """Score a prediction batch."""
        del args, kwargs
        return self.score_batch(batch)

    def val_dataloader(self) -> list:
        """No validation data of its own, so ``Engine.predict`` runs on a bare image folder (a data module's win)."""
        return []

    def forward(self, batch: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        """Pre-process, score and post-process raw images ``[B, 3, H, W]`` in [0, 1] (export and TorchInferencer).

        With ``classes.export_names`` each image is scored with the class name CLIP's zero-shot classification picks
        among them; otherwise with the run's class name.
        """
        if not is_tracing():
            check_images(batch, "batch", raw=True)
        export_names = self.class_names.export_names
        if self.mutual_groups is None and self.rarity is None and export_names is None:
            return super().forward(batch, *args, **kwargs)
        # anomalib's forward (pre-processor, model, post-processor) with the groups or the candidates
        if self.mutual_groups is not None:  # eager only (exports refuse it): a run's transform, a run's groups
            batch = self.pre_processor.transform(batch) if self.pre_processor else batch
            batch = self.mutual_groups.score_tensors(self.model, batch, self.model.class_name)
        elif self.rarity is not None:  # eager only (exports refuse it): a run's transform, image by image into the bank
            batch = self.pre_processor.transform(batch) if self.pre_processor else batch
            batch = self.rarity.score_images(self.model, batch, self.model.class_name)
        else:
            batch = self.pre_processor(batch) if self.pre_processor else batch
            batch = self.model(batch, choose_from=export_names)
        return self.post_processor(batch) if self.post_processor else batch

    # ------------------------------------------------------------------------------------------------------------------
    # Class names, tiling and few-shot references, changed after the model is built
    # ------------------------------------------------------------------------------------------------------------------
    def image_class_names(self, batch: Any) -> list[str]:
        """The class name of every image of a batch: its own where a rule gives one, else the run's."""
        return self.class_names.of_images(batch, self.model.class_name)

    def set_export_class_names(self, class_names: Sequence[str] | None) -> None:
        """Carry several class names into exports, each image scored with the one CLIP picks; ``None`` for one.

        Raises:
            ValueError: No name, a name given twice, or a name the prompts cannot use.
            TypeError: A single string, or a name that is not a string.
        """
        self.class_names.set_export_names(class_names)

    def set_tiling(self, tiling: TilingConfig | Mapping[str, Any] | bool | None) -> None:
        """Switch tiled inference on (settings, ``True`` for the defaults) or off without rebuilding the model.

        The default pre-processor follows: it resizes only without tiling.

        Raises:
            ValueError: An overlap outside ``[0, image_size)``, or tiling with mutual scoring.
        """
        settings = _tiling_group(tiling)
        check_mutual_scoring(self.mutual_groups is not None, settings is not None)
        check_rarity_scoring(self.rarity is not None, False, settings is not None)
        self.tiling.set(settings)
        if self._default_pre_processor and self.pre_processor is not None:
            transform = adaclip_transform(self.model.image_size, self.tiling.enabled)
            self.pre_processor.transform = transform
            self.pre_processor.export_transform = get_exportable_transform(transform)

    def prepare_references(self, datamodule: AnomalibDataModule | None = None) -> None:
        """Draw, read and encode the few-shot references of every class name the memory lacks (nothing if zero-shot).

        The classes are those of a ``few_shot.source`` mapping, else the run's class name; the references come from
        ``few_shot.source``, else the normal images of ``datamodule``'s training split (the run's data module by
        default). Classes already in the memory (from an earlier run or a checkpoint) keep their references. Runs
        call it through :class:`~anomalib_adaclip.components.references.FewShotReferences` before the first batch.

        Raises:
            ~anomalib_adaclip.components.references.FewShotReferenceError: No source of references, too few images, an
                empty or missing folder, or an unreadable image.
        """
        if datamodule is None:
            datamodule = attached_datamodule(self)
        self.references.prepare(datamodule, *self._reference_reading())

    def set_references(self, references: Mapping[str, Sequence[str | Path]]) -> None:
        """Make the few-shot memory hold exactly these known-good images: ``{class name: image files}``.

        Every file given is used (nothing is drawn; ``few_shot.k_shot`` is only the number :meth:`prepare_references`
        draws), read as :meth:`prepare_references` reads the drawn ones. Earlier references of every class name are
        forgotten, but only once every file has been read, so a bad file leaves the memory as it was. A run then uses
        them: it fills only the class names the memory lacks.

        Raises:
            RuntimeError: The model is zero-shot (no ``few_shot`` group, or ``k_shot=0``).
            ~anomalib_adaclip.components.references.FewShotReferenceError: A class name without images, or a file
                that cannot be read as an image.
            ValueError: An empty or too long class name.
        """
        self.references.set(references, *self._reference_reading())

    def _reference_reading(self) -> tuple[Callable[[torch.Tensor], torch.Tensor], int | None]:
        """How references are read: the model's transform, and the tile overlap with tiling (else ``None``)."""
        transform = self.pre_processor.transform if isinstance(self.pre_processor, PreProcessor) else None
        return transform or adaclip_transform(self.model.image_size, self.tiling.enabled), self.tiling.overlap

    # ------------------------------------------------------------------------------------------------------------------
    # Exports (anomalib's, guarded) and Lightning checkpoints (without the frozen CLIP)
    # ------------------------------------------------------------------------------------------------------------------
    def _export_guard(self, export_root: Path | str, kind: str, model_file_name: str) -> Any:
        return self.export_guard.guard(
            export_root,
            kind,
            model_file_name,
            tiling=self.tiling.enabled,
            mutual_scoring=self.mutual_groups is not None,
            rarity_scoring=self.rarity is not None,
            class_names=self.class_names.export_names or self.model.class_name,
        )

    def to_torch(self, export_root: Path | str, model_file_name: str = "model") -> Path:
        """Export the whole module (pre-processing, CLIP, prompts, post-processing) for anomalib's TorchInferencer.

        An earlier export of the name is moved aside, not replaced (:mod:`~anomalib_adaclip.components.export`).

        Raises:
            NotImplementedError: The model tiles or scores groups.
        """
        with self._export_guard(export_root, "torch", model_file_name):
            return super().to_torch(export_root, model_file_name)

    def to_onnx(
        self,
        export_root: Path | str,
        model_file_name: str = "model",
        input_size: tuple[int, int] | None = None,
        **kwargs: Any,
    ) -> Path:
        """Export to ONNX (opset 18 by default): raw images in [0, 1] in; score, label, map and mask out.

        The class name's text prompts, the k-means of the Hybrid Semantic Fusion and the thresholds are in the graph.

        Raises:
            NotImplementedError: The model tiles or scores groups.
        """
        kwargs.setdefault("opset_version", self.export_guard.onnx_opset)
        with self._export_guard(export_root, "onnx", model_file_name):
            return super().to_onnx(export_root, model_file_name, input_size, **kwargs)

    def to_openvino(self, export_root: Path | str, model_file_name: str = "model", *args: Any, **kwargs: Any) -> Path:
        """Export to OpenVINO IR (through ONNX, opset 18); an earlier export is kept, as for the other formats.

        Raises:
            NotImplementedError: The model tiles or scores groups.
        """
        with self._export_guard(export_root, "openvino", model_file_name):
            return super().to_openvino(export_root, model_file_name, *args, **kwargs)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Leave the frozen CLIP out; keep the class name the prompts used (an export from it has no data module)."""
        super().on_save_checkpoint(checkpoint)
        self.frozen_checkpoints.strip(checkpoint)
        ClassNames.save(checkpoint, self.model.class_name)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore the component configuration and the class name the checkpoint's prompts used."""
        super().on_load_checkpoint(checkpoint)
        self.class_names.load(checkpoint)
        self.model.class_name = self.class_names.run_name(attached_datamodule(self), __name__)
        # a checkpoint may carry another pre-processor: the default one follows the model's tiling
        self.set_tiling(self.tiling.settings)

    def load_state_dict(self, state_dict: dict[str, Any], strict: bool = True, assign: bool = False) -> Any:
        """Load a state dict that may lack the frozen CLIP (keys and shapes checked before anything is copied).

        The few-shot memory takes the size of the saved one (it is kept in checkpoints).

        Raises:
            RuntimeError: With ``strict``, missing or unexpected keys; always, shapes that differ.
        """
        self.references.prepare_load(state_dict, "model.few_shot_memory.")
        self.frozen_checkpoints.check(self.state_dict(), state_dict, strict)
        return super().load_state_dict(state_dict, strict=False, assign=assign)


def _tiling_group(tiling: TilingConfig | Mapping[str, Any] | bool | None) -> TilingConfig | None:
    """The tiling group: ``True`` for the defaults, ``False`` or ``None`` for off."""
    if isinstance(tiling, bool):
        return TilingConfig() if tiling else None
    return settings_group(tiling, TilingConfig, "tiling")


def _plain_or_none(settings: Any) -> dict[str, Any] | None:
    return None if settings is None else settings.to_dict()


def _class_name_of_path(module: AdaCLIP, path: str) -> str:
    """The class name a run's batch gives an image of this path: the class-name rules, else the run's."""
    return module.class_names.of_path(path, module.model.class_name)
