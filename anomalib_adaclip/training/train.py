"""Training AdaCLIP's prompts on auxiliary annotated data, with Lightning.

AdaCLIP is zero-shot on its target data; its prompts, prompt generators and projections are learned beforehand on
*other* annotated data (:mod:`anomalib_adaclip.data`). anomalib's ``Engine.fit`` cannot do this: for a zero-shot model
it only runs validation. Training therefore runs through Lightning's ``Trainer.fit`` on the same
:class:`~anomalib_adaclip.AdaCLIP` module that anomalib tests and exports (it has a ``training_step`` and an AdamW
optimizer), driven by :func:`train` (Python) or ``anomalib-adaclip train --config configs/train/<name>.yaml`` (CLI).

:func:`train` adds what a training run needs around ``Trainer.fit``:

- a new versioned run folder ``<results_dir>/AdaCLIP/training/<name>/v<N>`` (anomalib's scheme, with a ``latest``
  link); nothing that exists is overwritten;
- validation metrics (anomalib's AUROC / AUPR / F1Max / AUPRO on images and pixels) and best-checkpoint selection by a
  configurable metric; ``checkpoints/last.ckpt`` for resuming (``resume=<run folder>``, Lightning's
  ``ckpt_path="last"``);
- seeding (``seed_everything(seed, workers=True)``), CSV logs of the losses and metrics, Lightning's progress bar;
- the result as an AdaCLIP checkpoint with only the trainable tensors and the model configuration
  (``adaclip.pt``, loadable by ``AdaCLIP(checkpoint=...)`` / ``AdaCLIPModel(checkpoint=...)``), and the same tensors
  in the authors' released layout (``adaclip_released_layout.pth``, ``clip_model.`` keys).

Mixed precision and several devices are Lightning's ``precision`` and ``strategy`` / ``devices`` settings.

Example:
    >>> from lightning import seed_everything
    >>> from anomalib_adaclip import AdaCLIP
    >>> from anomalib_adaclip.data import AuxiliaryDataModule, DatasetSource
    >>> from anomalib_adaclip.training import train
    >>> seed_everything(111)  # doctest: +SKIP
    >>> model = AdaCLIP()  # doctest: +SKIP
    >>> data = AuxiliaryDataModule(train=[DatasetSource("MVTecAD", root="datasets/MVTecAD")])  # doctest: +SKIP
    >>> result = train(model, data, name="mvtec", trainer_arguments={"max_epochs": 5})  # doctest: +SKIP
    >>> result.checkpoint  # doctest: +SKIP
    PosixPath('results/AdaCLIP/training/mvtec/v0/adaclip.pt')
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from anomalib.metrics import AUPR, AUPRO, AUROC, Evaluator, F1Max
from lightning.fabric.plugins import CheckpointIO
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from anomalib_adaclip.compat import anomalib_checkpoint_io, anomalib_safe_globals, create_versioned_dir
from anomalib_adaclip.config import OptimizerSettings
from anomalib_adaclip.data import AuxiliaryDataModule
from anomalib_adaclip.lightning_model import AdaCLIP
from anomalib_adaclip.output_files import free_path, write_new_file
from anomalib_adaclip.weights import save_checkpoint

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_VAL_METRICS",
    "CheckpointSettings",
    "TrainingResult",
    "resume_dir",
    "train",
    "trainable_tensors_of",
    "validation_evaluator",
]

TRAINING_FOLDER = Path("AdaCLIP") / "training"
RUN_DIR_ENV = "ADACLIP_TRAINING_RUN_DIR"  # hands the run folder to the processes Lightning's DDP launcher starts
CHECKPOINT_DIR = "checkpoints"
EXPORT_FILE = "adaclip.pt"
RELEASED_EXPORT_FILE = "adaclip_released_layout.pth"
DEFAULT_VAL_METRICS = ("image_AUROC", "image_F1Max", "pixel_AUROC", "pixel_F1Max")
_METRICS = {"AUROC": AUROC, "AUPR": AUPR, "F1Max": F1Max, "AUPRO": AUPRO}
_FIELDS = {"image": ["pred_score", "gt_label"], "pixel": ["anomaly_map", "gt_mask"]}
_MANAGED_TRAINER_ARGUMENTS = ("default_root_dir", "enable_checkpointing")
_LOSS_METRICS = ("train_loss_epoch", "train_loss_step", "train_loss")


@dataclass
class CheckpointSettings:
    """Which checkpoint a training run keeps as its result.

    Args:
        monitor: Metric that selects the best epoch (a validation metric such as ``"pixel_AUROC"``, or
            ``"train_loss_epoch"``); ``None`` keeps the last epoch, as the paper does. Defaults to ``None``.
        mode: ``"max"`` or ``"min"`` for ``monitor``. Defaults to ``"max"``.
        every_n_train_steps: Also refresh ``last.ckpt`` every N optimisation steps (resumable within long epochs);
            ``None`` saves it at the end of every epoch only. Defaults to ``None``.
    """

    monitor: str | None = None
    mode: Literal["max", "min"] = "max"
    every_n_train_steps: int | None = None


@dataclass
class TrainingResult:
    """What a training run produced (the paths are ``None`` in the other processes of a multi-device run).

    Attributes:
        run_dir: The run folder.
        checkpoint: The trained tensors and the model configuration (our format): ``AdaCLIP(checkpoint=...)``.
        released_checkpoint: The same tensors in the authors' released layout (``clip_model.`` keys).
        lightning_checkpoint: The Lightning checkpoint they come from (best epoch, or the last one).
        metrics: The last logged losses and metrics.
        best_score: The best value of the monitored metric (``None`` without ``monitor``).
    """

    run_dir: Path
    checkpoint: Path | None
    released_checkpoint: Path | None
    lightning_checkpoint: Path | None
    metrics: dict[str, float]
    best_score: float | None


def validation_evaluator(metric_names: Sequence[str] = DEFAULT_VAL_METRICS) -> Evaluator:
    """An anomalib evaluator with the given validation metrics (and AdaCLIP's default test metrics).

    Args:
        metric_names: ``"<image|pixel>_<AUROC|AUPR|F1Max|AUPRO>"`` (AUPRO is pixel-level only).

    Raises:
        ValueError: An unknown metric name.
    """
    metrics = []
    for metric_name in metric_names:
        level, _, kind = metric_name.partition("_")
        if level not in _FIELDS or kind not in _METRICS or (kind == "AUPRO" and level == "image"):
            msg = (
                f"Unknown validation metric {metric_name!r}: use <image|pixel>_<{'|'.join(_METRICS)}> "
                f"(AUPRO only at pixel level), e.g. 'pixel_AUROC'."
            )
            raise ValueError(msg)
        metrics.append(_METRICS[kind](fields=_FIELDS[level], prefix=f"{level}_", strict=level == "image"))
    return Evaluator(val_metrics=metrics, test_metrics=list(AdaCLIP.configure_evaluator().test_metrics))


def trainable_tensors_of(lightning_checkpoint: str | Path, model: AdaCLIP) -> dict[str, torch.Tensor]:
    """The trained tensors of a Lightning checkpoint of AdaCLIP, keyed like ``AdaCLIPModel`` (no ``model.``)."""
    with anomalib_safe_globals(extra=model.checkpoint_safe_globals()):
        content = torch.load(lightning_checkpoint, map_location="cpu", weights_only=True)
    state_dict = content["state_dict"]
    keys = model.model.trainable_state_dict().keys()
    missing = [key for key in keys if f"model.{key}" not in state_dict]
    if missing:
        msg = f"{lightning_checkpoint} lacks AdaCLIP's trained tensors {missing}."
        raise ValueError(msg)
    return {key: state_dict[f"model.{key}"] for key in keys}


def _is_launched_process() -> bool:
    """Whether this process was started by Lightning's DDP launcher for a non-zero local rank."""
    return os.environ.get(RUN_DIR_ENV) is not None and os.environ.get("LOCAL_RANK", "0") != "0"


def resume_dir(resume: str | Path) -> Path:
    """The run folder of ``resume`` (a ``v<N>`` or ``latest`` folder); it must hold ``checkpoints/last.ckpt``."""
    run_dir = Path(resume).expanduser().resolve()
    last = run_dir / CHECKPOINT_DIR / "last.ckpt"
    if not last.is_file():
        msg = (
            f"Cannot resume {resume}: {last} does not exist. Give the folder of an earlier run "
            f"(<results_dir>/{TRAINING_FOLDER}/<name>/v<N>, or its 'latest' link) that saved a checkpoint."
        )
        raise FileNotFoundError(msg)
    return run_dir


@contextmanager
def _run_dir_for_launched_processes(run_dir: Path) -> Iterator[None]:
    previous = os.environ.get(RUN_DIR_ENV)
    os.environ[RUN_DIR_ENV] = str(run_dir)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(RUN_DIR_ENV, None)
        else:
            os.environ[RUN_DIR_ENV] = previous


def _check_monitor(settings: CheckpointSettings, metric_names: Sequence[str], has_validation: bool) -> None:
    if settings.mode not in ("max", "min"):
        msg = f"checkpointing.mode must be 'max' or 'min', got {settings.mode!r}."
        raise ValueError(msg)
    if settings.every_n_train_steps is not None and settings.every_n_train_steps < 1:
        msg = f"checkpointing.every_n_train_steps must be at least 1 or null, got {settings.every_n_train_steps}."
        raise ValueError(msg)
    monitor = settings.monitor
    if monitor is None or monitor in _LOSS_METRICS:
        return
    if monitor not in metric_names:
        msg = (
            f"checkpointing.monitor {monitor!r} is neither a validation metric of this run ({list(metric_names)}) nor "
            f"a loss ({list(_LOSS_METRICS)})."
        )
        raise ValueError(msg)
    if not has_validation:
        msg = f"checkpointing.monitor {monitor!r} needs validation data: set data.val (or monitor null / a loss)."
        raise ValueError(msg)


def _callbacks(run_dir: Path, settings: CheckpointSettings) -> tuple[ModelCheckpoint, ModelCheckpoint | None]:
    """``last.ckpt`` (for resuming) and, with a monitor, the best epoch's checkpoint."""
    last = ModelCheckpoint(
        dirpath=run_dir / CHECKPOINT_DIR,
        save_top_k=0,
        save_last=True,
        every_n_train_steps=settings.every_n_train_steps,
    )
    if settings.monitor is None:
        return last, None
    best = ModelCheckpoint(
        dirpath=run_dir / CHECKPOINT_DIR,
        filename=f"best-epoch={{epoch}}-{settings.monitor}={{{settings.monitor}:.4f}}",
        auto_insert_metric_name=False,
        monitor=settings.monitor,
        mode=settings.mode,
        save_top_k=1,
    )
    return last, best


def _trainer_arguments(
    arguments: Mapping[str, Any] | None,
    run_dir: Path,
    callbacks: list[Callback],
    model: AdaCLIP,
) -> dict[str, Any]:
    arguments = dict(arguments or {})
    managed = [key for key in _MANAGED_TRAINER_ARGUMENTS if arguments.get(key) is not None]
    if managed:
        msg = f"Trainer arguments {managed} are set by the training run (run folder and checkpoints); leave them out."
        raise ValueError(msg)
    for key in _MANAGED_TRAINER_ARGUMENTS:
        arguments.pop(key, None)
    if arguments.get("max_epochs") is None and arguments.get("max_steps") in (None, -1):
        arguments["max_epochs"] = 5  # the paper's (Lightning's own default would be 1000)
    arguments["callbacks"] = [*(arguments.get("callbacks") or []), *callbacks]
    if arguments.get("logger") in (None, True):
        arguments["logger"] = CSVLogger(save_dir=run_dir, name="logs")
    plugins = arguments.get("plugins")
    plugins = list(plugins) if isinstance(plugins, list | tuple) else ([plugins] if plugins is not None else [])
    if not any(isinstance(plugin, CheckpointIO) for plugin in plugins):
        # Resuming reads the Lightning checkpoint with weights_only=True, with anomalib's types allowed.
        plugins.append(anomalib_checkpoint_io(extra_safe_globals=model.checkpoint_safe_globals()))
    arguments["plugins"] = plugins
    arguments["default_root_dir"] = run_dir
    return arguments


def _write_config(run_dir: Path, config: str | Mapping[str, Any]) -> Path:
    import yaml  # noqa: PLC0415

    text = config if isinstance(config, str) else yaml.safe_dump(dict(config), sort_keys=False)
    return write_new_file(run_dir / "config.yaml", text)


def train(
    model: AdaCLIP,
    datamodule: AuxiliaryDataModule,
    *,
    results_dir: str | Path = "results",
    name: str = "adaclip",
    seed: int | None = 111,
    optimizer: OptimizerSettings | None = None,
    checkpointing: CheckpointSettings | None = None,
    val_metrics: Sequence[str] = DEFAULT_VAL_METRICS,
    trainer_arguments: Mapping[str, Any] | None = None,
    resume: str | Path | None = None,
    config: str | Mapping[str, Any] | None = None,
) -> TrainingResult:
    """Train AdaCLIP's prompts, generators and projections on auxiliary data; the CLIP stays frozen.

    Args:
        model: The AdaCLIP module (its current trainable tensors are the starting point: random, or a checkpoint
            to fine-tune). For a reproducible initialisation, seed before building it (the CLI does).
        datamodule: Training (and validation) data.
        results_dir: Root of the results. Defaults to ``"results"``.
        name: Run name: the run folder is ``<results_dir>/AdaCLIP/training/<name>/v<N>``. Defaults to ``"adaclip"``.
        seed: Seed of the data order, the mosaic augmentation and the workers; ``None`` leaves the random state
            alone. Defaults to 111 (the reference's).
        optimizer: AdamW settings. Defaults to the paper's (lr 0.01, betas (0.5, 0.999), weight decay 0.01).
        checkpointing: Best-checkpoint selection and checkpoint frequency. Defaults to keeping the last epoch.
        val_metrics: Validation metrics (used when the data module has validation sources).
        trainer_arguments: Lightning ``Trainer`` arguments (``max_epochs`` defaults to 5; ``precision``,
            ``accelerator``, ``devices``, ``strategy``, ``accumulate_grad_batches``, ...). ``callbacks`` are added to
            the run's own; ``default_root_dir`` and ``enable_checkpointing`` are managed.
        resume: A run folder to continue from its ``checkpoints/last.ckpt`` (in that folder).
        config: The run's configuration, written to ``config.yaml`` in the run folder (the CLI passes its own).

    Returns:
        The run folder, the exported checkpoints and the final metrics.
    """
    if not isinstance(model, AdaCLIP):
        msg = f"`model` must be an anomalib_adaclip.AdaCLIP module, got {type(model).__name__}."
        raise TypeError(msg)
    if not isinstance(datamodule, AuxiliaryDataModule):
        msg = (
            f"`datamodule` must be an anomalib_adaclip.data.AuxiliaryDataModule (annotated auxiliary data), got "
            f"{type(datamodule).__name__}."
        )
        raise TypeError(msg)
    if not name or Path(name).name != name or name in {".", ".."}:
        msg = f"`name` must be a plain folder name (no path separators), got {name!r}."
        raise ValueError(msg)
    optimizer = optimizer or OptimizerSettings()
    checkpointing = checkpointing or CheckpointSettings()
    has_validation = bool(datamodule.val_sources)
    _check_monitor(checkpointing, list(val_metrics), has_validation)
    evaluator = validation_evaluator(val_metrics)  # also checks the names
    if seed is not None:
        seed_everything(seed, workers=True)

    launched = _is_launched_process()
    if launched:
        run_dir = Path(os.environ[RUN_DIR_ENV])
    elif resume is not None:
        run_dir = resume_dir(resume)
    else:
        run_dir = create_versioned_dir(Path(results_dir).expanduser() / TRAINING_FOLDER / name).resolve()
    if not launched:
        logger.info("Training run folder: %s", run_dir)
        if config is not None:
            _write_config(run_dir, config)

    model.prepare_training(optimizer, evaluator)
    last_callback, best_callback = _callbacks(run_dir, checkpointing)
    callbacks: list[Callback] = [last_callback] + ([best_callback] if best_callback is not None else [])
    trainer = Trainer(**_trainer_arguments(trainer_arguments, run_dir, callbacks, model))

    with _run_dir_for_launched_processes(run_dir), warnings.catch_warnings():
        # The frozen CLIP is in eval mode on purpose.
        warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode.*")
        trainer.fit(model, datamodule=datamodule, ckpt_path="last" if resume is not None else None)

    metrics = {key: float(value) for key, value in trainer.callback_metrics.items() if value.numel() == 1}
    best_score = None
    source = Path(last_callback.last_model_path) if last_callback.last_model_path else None
    if best_callback is not None and best_callback.best_model_path:
        source = Path(best_callback.best_model_path)
        best_score = float(best_callback.best_model_score) if best_callback.best_model_score is not None else None
    if not trainer.is_global_zero or source is None:
        return TrainingResult(run_dir, None, None, source, metrics, best_score)

    tensors = trainable_tensors_of(source, model)
    checkpoint = save_checkpoint(tensors, model.model.config.to_dict(), free_path(run_dir / EXPORT_FILE))
    released = save_checkpoint(tensors, {}, free_path(run_dir / RELEASED_EXPORT_FILE), released_layout=True)
    summary = {
        "run_dir": str(run_dir),
        "checkpoint": str(checkpoint),
        "released_checkpoint": str(released),
        "lightning_checkpoint": str(source),
        "monitor": checkpointing.monitor,
        "best_score": best_score,
        "epochs": trainer.current_epoch,
        "global_step": trainer.global_step,
        "metrics": metrics,
    }
    write_new_file(run_dir / "training_summary.json", json.dumps(summary, indent=2))
    logger.info("Trained AdaCLIP checkpoint: %s (released layout: %s)", checkpoint, released)
    return TrainingResult(run_dir, checkpoint, released, source, metrics, best_score)
