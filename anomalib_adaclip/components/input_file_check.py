"""A callback that checks every image and mask file a run will read, before its first batch.

Broken, truncated, 16-bit, CMYK or mismatched files would otherwise fail (or silently mislead) in the middle of a
long run. :class:`InputFileCheck` checks them with :mod:`.file_checks` at the start of training, validation, test
and predict (documentation: docs/source/guides/inputs.md); :class:`~anomalib_adaclip.AdaCLIP` installs it by default.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lightning.pytorch import Callback

from .file_checks import iter_loader_datasets, validate_dataset

if TYPE_CHECKING:
    from lightning.pytorch import LightningModule, Trainer

__all__ = ["InputFileCheck"]


class InputFileCheck(Callback):
    """Check the files of a run's data loaders before the first batch.

    Raises:
        InputFilesError: Files AdaCLIP cannot use; the message lists each with what to do.
    """

    @staticmethod
    def check(trainer: Trainer, loaders: Any, split: str) -> None:
        """Check the files of the data sets behind ``loaders``, naming ``split`` and the data module in messages."""
        datamodule = getattr(trainer, "datamodule", None)
        name = getattr(datamodule, "name", None) or (type(datamodule).__name__ if datamodule is not None else "")
        category = getattr(datamodule, "category", None)
        origin = f" of {name}" + (f" {category!r}" if category else "") if name else ""
        for dataset in iter_loader_datasets(loaders):
            validate_dataset(dataset, f"the {split} data{origin}")

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Check the training files."""
        del pl_module
        self.check(trainer, trainer.train_dataloader, "training")

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Check the validation files."""
        del pl_module
        self.check(trainer, trainer.val_dataloaders, "validation")

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Check the test files."""
        del pl_module
        self.check(trainer, trainer.test_dataloaders, "test")

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Check the files to predict on."""
        del pl_module
        self.check(trainer, trainer.predict_dataloaders, "prediction")
