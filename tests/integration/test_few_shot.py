"""Few-shot AdaCLIP end to end: Engine test and predict, the CLI on a bare folder, checkpoints, tiling and ONNX.

A tiny random CLIP (MICRO_BACKBONE at 112 px, weights from a file) on a generated data set in MVTec layout; the
scores mean nothing, the tests check that the references are drawn, encoded, kept and used everywhere.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from anomalib import LearningType
from anomalib.cli import AnomalibCLI
from anomalib.data import MVTecAD
from anomalib.data.utils import read_image

from anomalib_adaclip import AdaCLIP
from anomalib_adaclip.components.references import FewShotReferenceError
from anomalib_adaclip.data.synthetic import generate_defect_dataset
from tests.conftest import NANO_BACKBONE
from tests.helpers import assert_onnx_matches_torch, clip_normalised, make_adaclip, make_engine, tiny_flags

CATEGORY = "widget"


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MVTec layout: 4 normal training images, 2 good and 2 defective test images with masks."""
    return generate_defect_dataset(tmp_path_factory.mktemp("few_shot"), CATEGORY, n_good=2, n_defect=2, size=96)


def datamodule(generated: Path) -> MVTecAD:
    return MVTecAD(root=generated.parent, category=CATEGORY, num_workers=0, eval_batch_size=4)


@pytest.fixture(scope="module")
def test_run(micro_weights: Path, generated: Path, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("few_shot_run")
    model = make_adaclip(micro_weights, few_shot={"k_shot": 2, "seed": 3})
    engine = make_engine(root)
    results = engine.test(model, datamodule=datamodule(generated))
    return SimpleNamespace(model=model, results=results, run_dir=Path(engine.trainer.default_root_dir))


def test_engine_test_draws_references_from_the_normal_training_images(
    test_run: SimpleNamespace, generated: Path
) -> None:
    model = test_run.model
    assert model.learning_type == LearningType.FEW_SHOT
    memory = model.model.few_shot_memory
    assert memory.class_names == [CATEGORY] and len(memory) == 2 * 64  # 2 references x 8 x 8 patches
    assert set(test_run.results[0]) >= {"image_AUROC", "pixel_AUROC"}
    # Drawn again with the same seed from the same files: the same references, hence the same memory.
    again = make_adaclip(model.hparams["backbone_weights"], few_shot={"k_shot": 2, "seed": 3})
    data = datamodule(generated)
    data.setup()
    again.model.class_name = CATEGORY
    again.prepare_references(data)
    assert torch.equal(again.model.few_shot_memory.patches, memory.patches)


def test_zero_shot_model_keeps_its_learning_type_and_state(micro_weights: Path) -> None:
    model = make_adaclip(micro_weights)
    assert model.learning_type == LearningType.ZERO_SHOT and model.model.few_shot_memory is None
    assert not any("few_shot" in key for key in model.state_dict())


def test_checkpoint_keeps_the_memory_and_reproduces_scores(test_run: SimpleNamespace, generated: Path) -> None:
    path = test_run.run_dir / "weights" / "lightning" / "model.ckpt"
    content = torch.load(path, map_location="cpu", weights_only=True)
    memory = test_run.model.model.few_shot_memory
    assert torch.equal(content["state_dict"]["model.few_shot_memory.patches"], memory.patches)
    reloaded = AdaCLIP.load_from_checkpoint(path)
    assert reloaded.model.few_shot_memory.class_names == [CATEGORY]
    images = torch.cat([clip_normalised(p) for p in sorted((generated / "test").rglob("*.png"))])
    with torch.no_grad():
        expected, got = test_run.model.model.eval()(images), reloaded.model.eval()(images)
    torch.testing.assert_close(got.pred_score, expected.pred_score, rtol=0, atol=1e-5)
    torch.testing.assert_close(got.anomaly_map, expected.anomaly_map, rtol=0, atol=1e-5)


def test_predict_from_a_checkpoint_uses_its_memory_without_a_source(
    test_run: SimpleNamespace, generated: Path, micro_weights: Path, tmp_path: Path
) -> None:
    path = test_run.run_dir / "weights" / "lightning" / "model.ckpt"
    model = AdaCLIP.load_from_checkpoint(path)
    batches = make_engine(tmp_path).predict(model, data_path=generated / "test" / "defect")
    assert len(batches) == 2 and all(0 <= float(batch.pred_score) <= 1 for batch in batches)
    del micro_weights


def test_predict_on_a_bare_folder_without_references_is_a_clear_error(
    micro_weights: Path, generated: Path, tmp_path: Path
) -> None:
    model = make_adaclip(micro_weights, few_shot={"k_shot": 1})
    with pytest.raises(FewShotReferenceError, match=r"give few_shot\.source"):
        make_engine(tmp_path).predict(model, data_path=generated / "test" / "defect")


def test_too_many_shots_for_the_training_split_is_a_clear_error(
    micro_weights: Path, generated: Path, tmp_path: Path
) -> None:
    model = make_adaclip(micro_weights, few_shot={"k_shot": 5})
    with pytest.raises(FewShotReferenceError, match="k_shot=5 needs 5 normal reference images, but the training split"):
        make_engine(tmp_path).test(model, datamodule=datamodule(generated))


def test_cli_predict_on_a_bare_folder_with_a_reference_folder(
    micro_weights: Path, generated: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good = generated / "train" / "good"
    data = generated / "test" / "defect"
    arguments = ["predict", "--model", "anomalib_adaclip.AdaCLIP", *tiny_flags(micro_weights)]
    arguments += ["--model.few_shot.k_shot", "2", "--model.few_shot.source", str(good), "--data", str(data)]
    with caplog.at_level(logging.INFO, logger="anomalib_adaclip"):
        cli = AnomalibCLI([*arguments, "--trainer.accelerator", "cpu", "--default_root_dir", str(tmp_path)])
    assert cli.model.model.few_shot_memory.class_names == ["object"]
    assert "few-shot references of 'object' (seed 0)" in caplog.text
    written = sorted((tmp_path / "AdaCLIP" / "latest" / "images").rglob("*.png"))
    assert len(written) == 2
    table = (tmp_path / "AdaCLIP" / "latest" / "predictions.csv").read_text().splitlines()
    assert len(table) == 3  # header and one row per image


def test_references_of_a_class_without_queries_are_reported(
    micro_weights: Path, generated: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good = generated / "train" / "good"
    model = make_adaclip(
        micro_weights,
        few_shot={"k_shot": 1, "source": {CATEGORY: str(good), "gear": str(good)}},
        classes={"name": CATEGORY},
    )
    with caplog.at_level(logging.WARNING, logger="anomalib_adaclip"):
        make_engine(tmp_path).predict(model, data_path=generated / "test" / "good")
    assert model.model.few_shot_memory.class_names == [CATEGORY, "gear"]
    assert "Few-shot references of ['gear'] were never used" in caplog.text


def test_tiling_cuts_references_into_tiles_like_the_queries(
    micro_weights: Path, generated: Path, tmp_path: Path
) -> None:
    # 96 px images and 56 px tiles with 8 px overlap: 2 x 2 tiles of 4 x 4 patches per reference.
    model = make_adaclip(
        micro_weights,
        image_size=56,
        tiling={"overlap": 8},
        few_shot={"k_shot": 1},
        classes={"name": CATEGORY},
    )
    data = datamodule(generated)
    data.setup()
    model.prepare_references(data)
    assert len(model.model.few_shot_memory) == 4 * 16
    batches = make_engine(tmp_path).predict(model, data_path=generated / "test" / "defect")
    assert batches[0].anomaly_map.shape[-2:] == (96, 96)


def test_prepare_references_needs_a_set_up_data_module(micro_weights: Path, generated: Path) -> None:
    model = make_adaclip(micro_weights, few_shot={"k_shot": 1})
    with pytest.raises(FewShotReferenceError, match="has none"):
        model.prepare_references(datamodule(generated))  # not set up: no training split yet


def test_onnx_export_bakes_the_memory_in(generated: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")

    torch.manual_seed(0)
    model = AdaCLIP(
        backbone=NANO_BACKBONE,
        backbone_weights=None,
        image_size=112,
        prompts={"depth": 2, "use_hsf": False},
        classes={"name": CATEGORY},
        few_shot={"k_shot": 2, "source": str(generated / "train" / "good")},
    )
    model.prepare_references()
    assert len(model.model.few_shot_memory) == 2 * 64
    path = make_engine(tmp_path).export(model, export_type="onnx", export_root=tmp_path)
    deviations = assert_onnx_matches_torch(path, model)
    assert deviations["pred_score"] <= 1e-5 and deviations["anomaly_map"] <= 1e-5
    print(f"few-shot ONNX vs torch, max |deviation|: {deviations}")


def test_references_of_another_size_are_resized_like_the_queries(micro_weights: Path, tmp_path: Path) -> None:
    from PIL import Image

    folder = tmp_path / "good"
    folder.mkdir()
    for index, size in enumerate([(150, 130), (64, 80)]):
        Image.new("RGB", size, color=(40 * index, 120, 200)).save(folder / f"{index}.png")
    model = make_adaclip(micro_weights, few_shot={"k_shot": 2, "source": str(folder)}, classes={"name": CATEGORY})
    model.prepare_references()
    assert len(model.model.few_shot_memory) == 2 * 64  # both at 112 px: 8 x 8 patches each


def test_calibration_of_a_few_shot_model_gives_thresholds_in_the_unit_interval(
    micro_weights: Path, generated: Path
) -> None:
    good = generated / "train" / "good"
    model = make_adaclip(micro_weights, few_shot={"k_shot": 2, "source": str(good)}, classes={"name": CATEGORY})
    result = model.calibrate(generated / "test" / "good", percentile=99.0, pixel_percentile=99.0)
    assert 0 <= result.image_threshold <= 1 and 0 <= result.pixel_threshold <= 1
    assert model.model.few_shot_memory.class_names == [CATEGORY] and len(model.model.few_shot_memory) == 2 * 64


def test_torch_export_carries_the_memory(
    micro_weights: Path, generated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from anomalib.deploy import TorchInferencer

    model = make_adaclip(
        micro_weights, few_shot={"k_shot": 1, "source": str(generated / "train" / "good")}, classes={"name": "w"}
    )
    model.prepare_references()
    path = make_engine(tmp_path).export(model, export_type="torch", export_root=tmp_path)
    monkeypatch.setenv("TRUST_REMOTE_CODE", "1")
    inferencer = TorchInferencer(path, device="cpu")
    assert inferencer.model.model.few_shot_memory.class_names == ["w"]
    image = sorted((generated / "test" / "defect").glob("*.png"))[0]
    with torch.no_grad():
        got = inferencer.predict(image)
        expected = model.eval()(inferencer.pre_process(read_image(image, as_tensor=True)))
    torch.testing.assert_close(got.pred_score, expected.pred_score, rtol=0, atol=1e-6)
