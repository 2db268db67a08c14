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
OpenAI CLIP mean and std; masks are resized the same way (nearest). Post-processing thresholds AdaCLIP's
probabilities (:class:`~anomalib_adaclip.post_processor.AdaCLIPPostProcessor`). Lightning checkpoints hold only the
trainable tensors and the configuration: the frozen CLIP is rebuilt from ``backbone`` and ``backbone_weights``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from anomalib import LearningType
from anomalib.data import Batch
from anomalib.metrics import AUPRO, AUROC, Evaluator, F1Max
from anomalib.models.components import AnomalibModule
from anomalib.pre_processing import PreProcessor
from anomalib.visualization import Visualizer
from lightning.pytorch.utilities.types import STEP_OUTPUT
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torchvision.transforms.v2 import Compose, InterpolationMode, Normalize, Resize

from .backbone import OPENAI_MEAN, OPENAI_STD
from .post_processor import AdaCLIPPostProcessor, ThresholdingMode
from .prompting import ABNORMAL_STATES, NORMAL_STATES, TEMPLATES, format_class_name
from .torch_model import AdaCLIPModel

logger = logging.getLogger(__name__)

__all__ = ["AdaCLIP", "OptimizerSettings"]

DEFAULT_CLASS_NAME = "object"
FROZEN_PREFIX = "model.clip."
# The class name the prompts used, kept in Lightning checkpoints: an export from a checkpoint has no data module.
CHECKPOINT_CLASS_NAME_KEY = "adaclip_class_name"
# anomalib's default opset (14) makes the exporter write opset 18 anyway, after a failed down-conversion.
ONNX_OPSET = 18


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
        prompting_type: ``"S"``, ``"D"`` or ``"SD"``. Defaults to ``"SD"``.
        prompting_branch: ``"V"``, ``"L"`` or ``"VL"``. Defaults to ``"VL"``.
        use_hsf: Hybrid Semantic Fusion for the image score. Defaults to ``True``.
        k_clusters: HSF clusters. Defaults to 20.
        blur_sigma: Gaussian blur of the map; 0 disables it. Defaults to 4.
        normal_states: State words of a normal object. Defaults to the paper's seven.
        abnormal_states: State words of an abnormal object. Defaults to the paper's five.
        templates: Sentence templates. Defaults to the paper's four.
        class_name: Object name for the prompts. Defaults to the data module's category, else the class name stored
            in a loaded Lightning checkpoint, else ``"object"``.
        image_threshold: Fixed decision threshold of the image probability. Defaults to 0.5.
        pixel_threshold: Fixed decision threshold of the pixel probability. Defaults to 0.5.
        thresholding: ``"auto"`` (adaptive where validation labels allow, else fixed), ``"fixed"`` or
            ``"adaptive"`` (anomalib's). Defaults to ``"auto"``.
        pre_processor: Pre-processor, ``True`` for the default, ``False`` for none.
        post_processor: Post-processor, ``True`` for the default, ``False`` for none.
        evaluator: Evaluator, ``True`` for the default metrics, ``False`` for none.
        visualizer: Visualizer, ``True`` for anomalib's default, ``False`` for none.
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
        pre_processor: nn.Module | bool = True,
        post_processor: nn.Module | bool = True,
        evaluator: Evaluator | bool = True,
        visualizer: Visualizer | bool = True,
    ) -> None:
        # The default components depend on init arguments, so they are built before the base class would build them.
        if pre_processor is True:
            pre_processor = self.configure_pre_processor(image_size)
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

    # ----------------------------------------------------------------------------------------------------------------
    # Components
    # ----------------------------------------------------------------------------------------------------------------
    @classmethod
    def configure_pre_processor(cls, image_size: int | tuple[int, int] | None = None) -> PreProcessor:
        """Resize to ``image_size`` (bicubic, aspect ratio not kept) and normalise with the CLIP mean and std.

        Args:
            image_size: Side length, or ``(height, width)``. Defaults to 518.
        """
        size = image_size or 518
        size = (size, size) if isinstance(size, int) else tuple(size)
        return PreProcessor(
            transform=Compose(
                [
                    Resize(size, interpolation=InterpolationMode.BICUBIC, antialias=True),
                    Normalize(mean=OPENAI_MEAN, std=OPENAI_STD),
                ]
            ),
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
        self.model.class_name = name
        logger.info(
            "AdaCLIP prompts use the class name %r (prompt text %r), from %s.", name, format_class_name(name), source
        )

    def setup(self, stage: str) -> None:
        """Choose the class name of the prompts for this run (it follows the data module of each call)."""
        del stage
        self._apply_class_name()

    def batch_class_names(self, batch: Batch) -> Sequence[str] | None:
        """Class names of the images of a batch; ``None`` uses the run's class name for every image.

        Batches of :mod:`anomalib_adaclip.data` carry one class name per image (``class_name``); anomalib's own batches
        carry none.
        """
        return getattr(batch, "class_name", None)

    # ----------------------------------------------------------------------------------------------------------------
    # Steps
    # ----------------------------------------------------------------------------------------------------------------
    def _predict_batch(self, batch: Batch) -> Batch:
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

    def load_state_dict(self, state_dict: dict[str, Any], strict: bool = True, assign: bool = False) -> Any:
        """Load a state dict that may lack the frozen CLIP; every other key is checked as usual."""
        result = super().load_state_dict(state_dict, strict=False, assign=assign)
        missing = [key for key in result.missing_keys if not key.startswith(FROZEN_PREFIX)]
        if strict and (missing or result.unexpected_keys):
            msg = f"Checkpoint does not fit AdaCLIP: missing keys {missing}, unexpected keys {result.unexpected_keys}."
            raise RuntimeError(msg)
        return result

    # ----------------------------------------------------------------------------------------------------------------
    # Export
    # ----------------------------------------------------------------------------------------------------------------
    def to_torch(self, export_root: Path | str, model_file_name: str = "model") -> Path:
        """Export the whole module (pre-processing, CLIP, prompts, post-processing) for anomalib's TorchInferencer.

        Args:
            export_root: Folder; the file goes to ``<export_root>/weights/torch/<model_file_name>.pt``.
            model_file_name: File name without suffix. Defaults to ``"model"``.
        """
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
        kwargs.setdefault("opset_version", ONNX_OPSET)
        logger.info("Exporting AdaCLIP with the class name %r in its prompts.", self.model.class_name)
        return super().to_onnx(export_root, model_file_name, input_size, **kwargs)
