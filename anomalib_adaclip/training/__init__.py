"""Training AdaCLIP's prompts, prompt generators and projections on auxiliary annotated data (the CLIP stays frozen).

:func:`~anomalib_adaclip.training.train.train` runs Lightning on an
:class:`~anomalib_adaclip.data.auxiliary.AuxiliaryDataModule` into a versioned run folder;
``anomalib-adaclip train --config`` (:mod:`anomalib_adaclip.cli.train`) does the same from a configuration.
"""

from anomalib_adaclip.config import OptimizerSettings

from .train import (
    DEFAULT_VAL_METRICS,
    CheckpointSettings,
    TrainingResult,
    resume_dir,
    train,
    trainable_tensors_of,
    validation_evaluator,
)

__all__ = [
    "DEFAULT_VAL_METRICS",
    "CheckpointSettings",
    "OptimizerSettings",
    "TrainingResult",
    "resume_dir",
    "train",
    "trainable_tensors_of",
    "validation_evaluator",
]
