"""The Lightning model (``lightning_model.py``) as an adapter: its components, callbacks, optimiser and checks.

Models are built on the micro CLIP and never run through a Trainer here; runs through anomalib's Engine are in
``tests/integration/``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from anomalib import LearningType
from anomalib.data import ImageBatch
from anomalib.visualization import Visualizer
from lightning.pytorch import Trainer

from anomalib_adaclip import AdaCLIP
from anomalib_adaclip.components import ClassNames, PredictionCSVWriter, ThresholdCalibration, Tiling
from anomalib_adaclip.components.export import ExportGuard
from anomalib_adaclip.components.input_files import InputFileCheck
from anomalib_adaclip.components.lightning_checkpoints import FrozenBackboneCheckpoints
from anomalib_adaclip.components.references import FewShotReferences, ReferenceImages
from anomalib_adaclip.config import OptimizerSettings
from tests.helpers import make_adaclip


def test_optimizer_is_the_papers_adamw_over_the_trainable_tensors(micro_weights: Path) -> None:
    model = make_adaclip(micro_weights, visualizer=False, prompts={"k_clusters": 4})
    optimizer = model.configure_optimizers()
    assert isinstance(optimizer, torch.optim.AdamW)
    group = optimizer.param_groups[0]
    assert (group["lr"], tuple(group["betas"]), group["weight_decay"]) == (0.01, (0.5, 0.999), 0.01)
    optimised = {id(parameter) for parameter in group["params"]}
    trainable = {name for name, parameter in model.model.named_parameters() if id(parameter) in optimised}
    assert trainable == set(model.model.trainable_state_dict())
    model.optimizer_settings = OptimizerSettings(lr=0.001, betas=(0.9, 0.99), weight_decay=0.0)
    assert model.configure_optimizers().param_groups[0]["lr"] == 0.001


def test_training_step_needs_labels_and_masks(micro_weights: Path) -> None:
    model = make_adaclip(micro_weights, visualizer=False, prompts={"k_clusters": 4})
    with pytest.raises(ValueError, match=r"needs `gt_label` and `gt_mask`.*AuxiliaryDataModule"):
        model.training_step(ImageBatch(image=torch.rand(1, 3, 112, 112), gt_label=torch.tensor([True])), 0)


def test_zero_shot_or_few_shot_and_no_fitting(micro_weights: Path) -> None:
    zero_shot = make_adaclip(micro_weights)
    assert zero_shot.learning_type == LearningType.ZERO_SHOT
    assert zero_shot.trainer_arguments == {} and zero_shot.val_dataloader() == []
    assert make_adaclip(micro_weights, few_shot={"k_shot": 2}).learning_type == LearningType.FEW_SHOT


def test_callbacks_check_inputs_and_end_with_the_predictions_table(micro_weights: Path) -> None:
    callbacks = make_adaclip(micro_weights).configure_callbacks()
    kinds = [type(callback) for callback in callbacks]
    assert InputFileCheck in kinds and FewShotReferences not in kinds
    assert isinstance(callbacks[-1], PredictionCSVWriter)
    assert any(isinstance(callback, Visualizer) for callback in callbacks)
    few_shot = make_adaclip(micro_weights, few_shot={"k_shot": 1}).configure_callbacks()
    assert sum(isinstance(callback, FewShotReferences) for callback in few_shot) == 1


def test_the_trainers_last_writer_is_used_and_a_calibration_run_writes_nothing(micro_weights: Path) -> None:
    model = make_adaclip(micro_weights)
    first, last = PredictionCSVWriter(filename="a.csv"), PredictionCSVWriter(filename="b.csv")
    model.trainer = Trainer(callbacks=[first, last], logger=False, enable_progress_bar=False)
    callbacks = model.configure_callbacks()
    assert callbacks[-1] is last and first not in callbacks
    model.trainer = Trainer(callbacks=[ThresholdCalibration()], logger=False, enable_progress_bar=False)
    callbacks = model.configure_callbacks()
    assert not any(isinstance(callback, Visualizer | PredictionCSVWriter) for callback in callbacks)
    assert any(isinstance(callback, InputFileCheck) for callback in callbacks)


def test_tiling_switches_the_default_pre_processor_between_resizing_and_normalising_only(micro_weights: Path) -> None:
    model = make_adaclip(micro_weights)
    image = torch.rand(1, 3, 50, 70)
    assert model.pre_processor.transform(image).shape[-2:] == (112, 112)
    model.set_tiling(True)
    tiled = model.pre_processor.transform(image)
    assert tiled.shape[-2:] == (50, 70)
    # Normalising only: CLIP's per-channel mean and standard deviation, pixel by pixel.
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    torch.testing.assert_close(tiled, (image - mean) / std)
    model.set_tiling(False)
    assert model.pre_processor.transform(image).shape[-2:] == (112, 112)


def test_a_checkpoint_keeps_the_class_name_of_its_prompts(micro_weights: Path) -> None:
    model = make_adaclip(micro_weights, classes={"name": "widget"})
    checkpoint: dict = {"state_dict": model.state_dict()}
    model.on_save_checkpoint(checkpoint)
    assert checkpoint["adaclip_class_name"] == "widget"
    assert not any(key.startswith("model.clip.") for key in checkpoint["state_dict"])  # the frozen CLIP stays out


def test_bad_settings_are_refused_when_the_model_is_built(micro_weights: Path) -> None:
    with pytest.raises(ValueError, match=r"tiling\.score"):
        make_adaclip(micro_weights, tiling={"score": "mean"})
    with pytest.raises(ValueError, match="tiling"):
        make_adaclip(micro_weights, tiling=True, mutual={})
    with pytest.raises(TypeError):
        AdaCLIP.set_export_class_names(make_adaclip(micro_weights), "bottle")


def test_adaclip_is_the_only_class_of_the_package_in_its_mro() -> None:
    """Its parts are objects it owns (issue 27), not mixins: anomalib's, Lightning's and torch's classes only."""
    own = [cls for cls in AdaCLIP.__mro__ if cls.__module__.split(".")[0] == "anomalib_adaclip"]
    assert own == [AdaCLIP]
    assert len(AdaCLIP.__mro__) <= 12  # anomalib's WinClip has 12


def test_the_parts_are_owned_objects(micro_weights: Path) -> None:
    model = make_adaclip(micro_weights, few_shot={"k_shot": 1}, tiling={"overlap": 8}, classes={"name": "widget"})
    assert isinstance(model.tiling, Tiling) and model.tiling.overlap == 8
    assert isinstance(model.class_names, ClassNames) and model.class_names.settings.name == "widget"
    assert isinstance(model.references, ReferenceImages) and model.references.model is model.model
    assert isinstance(model.export_guard, ExportGuard)
    assert isinstance(model.frozen_checkpoints, FrozenBackboneCheckpoints)
    assert model.mutual_groups is None
