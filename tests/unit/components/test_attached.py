"""A module outside a run has no Trainer (Lightning's property raises there); inside one, the Trainer and its data."""

from __future__ import annotations

from lightning.pytorch import LightningModule, Trainer

from anomalib_adaclip.components.attached import attached_datamodule, attached_trainer


def test_a_module_outside_a_run_has_no_trainer_and_no_data_module() -> None:
    module = LightningModule()
    assert attached_trainer(module) is None
    assert attached_datamodule(module) is None


def test_an_attached_module_gives_its_trainer_and_the_trainer_s_data_module() -> None:
    module = LightningModule()
    trainer = Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    module.trainer = trainer
    assert attached_trainer(module) is trainer
    assert attached_datamodule(module) is None  # a Trainer without a data module
    sentinel = object()
    trainer.datamodule = sentinel
    assert attached_datamodule(module) is sentinel
