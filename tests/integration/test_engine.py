"""AdaCLIP through anomalib's Engine, end to end: test, validate, predict, checkpoints and torch export.

Everything runs on a tiny random CLIP (MICRO_BACKBONE at 112 px) whose weights are saved to a file first, so that a
model rebuilt from a checkpoint gets exactly the same CLIP. The scores mean nothing; the tests check the plumbing:
pre-processing, metrics, thresholds, visualisations, class names and what travels in checkpoints.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from anomalib.data import Folder, MVTecAD
from anomalib.data.utils import read_image
from anomalib.deploy import TorchInferencer

from anomalib_adaclip import AdaCLIP
from anomalib_adaclip.components.post_processor import AdaCLIPPostProcessor
from anomalib_adaclip.data.synthetic import generate_defect_dataset
from anomalib_adaclip.lightning_model import CHECKPOINT_CLASS_NAME_KEY
from tests.conftest import TIRE_ROOT
from tests.helpers import IMAGE_SIZE, clip_normalised, make_adaclip, make_engine

METRICS = {"image_AUROC", "image_F1Max", "pixel_AUROC", "pixel_F1Max", "pixel_AUPRO"}


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated data set in MVTec layout (4 train, 4 good and 4 defective test images with masks)."""
    return generate_defect_dataset(tmp_path_factory.mktemp("generated"), "widget", size=96)


# ----------------------------------------------------------------------------------------------------------------------
# MVTecAD on the tire sample
# ----------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tire_run(micro_weights: Path, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("tire_run")
    model = make_adaclip(micro_weights)
    engine = make_engine(root)
    datamodule = MVTecAD(root=TIRE_ROOT, category="tire", num_workers=0, eval_batch_size=8)
    results = engine.test(model, datamodule=datamodule)
    run_dir = Path(engine.trainer.default_root_dir)
    return SimpleNamespace(model=model, results=results, run_dir=run_dir, datamodule=datamodule)


def test_mvtec_test_reports_image_and_pixel_metrics(tire_run: SimpleNamespace) -> None:
    assert len(tire_run.results) == 1
    metrics = tire_run.results[0]
    assert set(metrics) == METRICS
    assert all(0.0 <= value <= 1.0 for value in metrics.values())


def test_mvtec_test_uses_category_and_writes_every_visualisation(tire_run: SimpleNamespace) -> None:
    assert tire_run.model.model.class_name == "tire"
    test_images = sorted((TIRE_ROOT / "tire" / "test").rglob("*.png"))
    written = sorted((tire_run.run_dir / "images").rglob("*.png"))
    assert len(written) == len(test_images) == 15
    assert {path.relative_to(tire_run.run_dir / "images") for path in written} == {
        path.relative_to(TIRE_ROOT / "tire" / "test") for path in test_images
    }


def test_auto_thresholding_learned_from_labelled_validation(tire_run: SimpleNamespace) -> None:
    # MVTecAD validates on its test split (normal and anomalous images, masks): both levels become adaptive.
    post = tire_run.model.post_processor
    for name in ("image_min", "image_max", "pixel_min", "pixel_max"):
        assert torch.isfinite(getattr(post, name)), name
    for level in ("image", "pixel"):
        assert torch.isfinite(post.learned_threshold(level)), level


def test_validate_runs_without_fit(micro_weights: Path, tmp_path: Path) -> None:
    model = make_adaclip(micro_weights, thresholds={"mode": "fixed"})
    engine = make_engine(tmp_path)
    engine.validate(model, datamodule=MVTecAD(root=TIRE_ROOT, category="tire", num_workers=0, eval_batch_size=15))
    assert model.model.class_name == "tire"
    # The fixed mode learns nothing from validation.
    assert torch.isnan(model.post_processor.image_min) and torch.isnan(model.post_processor.pixel_threshold)


# ----------------------------------------------------------------------------------------------------------------------
# Lightning checkpoints
# ----------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tire_checkpoint(tire_run: SimpleNamespace) -> Path:
    path = tire_run.run_dir / "weights" / "lightning" / "model.ckpt"
    assert path.is_file(), "anomalib's ModelCheckpoint saves during the validation of Engine.test"
    return path


def test_checkpoint_is_small_and_holds_no_clip(tire_checkpoint: Path, micro_weights: Path) -> None:
    content = torch.load(tire_checkpoint, map_location="cpu", weights_only=True)
    keys = list(content["state_dict"])
    assert not [key for key in keys if key.startswith("model.clip.")]
    assert any(key.startswith("model.visual_prompter.") for key in keys)
    assert any(key.startswith("post_processor.") for key in keys)
    trainable = sum(value.numel() * value.element_size() for value in content["state_dict"].values())
    clip_bytes = micro_weights.stat().st_size
    assert tire_checkpoint.stat().st_size < trainable + 100_000 < clip_bytes
    assert content[CHECKPOINT_CLASS_NAME_KEY] == "tire"
    assert content["hyper_parameters"]["backbone_weights"] == str(micro_weights)


def test_load_from_checkpoint_reproduces_scores(tire_run: SimpleNamespace, tire_checkpoint: Path) -> None:
    reloaded = AdaCLIP.load_from_checkpoint(tire_checkpoint)  # weights_only=True is anomalib's default
    assert reloaded.model.class_name == "tire"  # no data module here: the checkpoint's class name
    images = torch.cat([clip_normalised(path) for path in sorted((TIRE_ROOT / "tire" / "test").rglob("*.png"))[:4]])
    original = tire_run.model.model.eval()
    with torch.no_grad():
        expected, got = original(images), reloaded.model.eval()(images)
    torch.testing.assert_close(got.pred_score, expected.pred_score, rtol=0, atol=0)
    torch.testing.assert_close(got.anomaly_map, expected.anomaly_map, rtol=0, atol=0)
    for name, buffer in tire_run.model.post_processor.state_dict().items():
        torch.testing.assert_close(reloaded.post_processor.state_dict()[name], buffer, equal_nan=True)
    assert reloaded.post_processor.mode == "auto"


# ----------------------------------------------------------------------------------------------------------------------
# Predict on bare images (no data module, no validation data)
# ----------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def predict_folder(generated: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("bare") / "inspect"
    folder.mkdir()
    for source in sorted((generated / "test" / "defect").glob("*.png"))[:2]:
        (folder / source.name).write_bytes(source.read_bytes())
    return folder


def test_predict_on_a_folder_writes_heatmaps_and_raw_probabilities(
    micro_weights: Path, predict_folder: Path, tmp_path: Path
) -> None:
    model = make_adaclip(micro_weights, classes={"name": "widget"})
    engine = make_engine(tmp_path)
    batches = engine.predict(model, data_path=predict_folder)
    paths = sorted(predict_folder.glob("*.png"))
    assert [Path(batch.image_path[0]).name for batch in batches] == [path.name for path in paths]
    written = sorted((tmp_path / "AdaCLIP" / "latest" / "images" / predict_folder.name).glob("*.png"))
    assert [path.name for path in written] == [path.name for path in paths]
    # No validation data: the probabilities come out raw and are thresholded at the fixed 0.5.
    with torch.no_grad():
        model.model.eval()
        for batch, path in zip(batches, paths, strict=True):
            expected = model.model(clip_normalised(path))
            torch.testing.assert_close(batch.pred_score, expected.pred_score, rtol=0, atol=1e-6)
            torch.testing.assert_close(batch.anomaly_map.squeeze(1), expected.anomaly_map, rtol=0, atol=1e-6)
            assert torch.equal(batch.pred_label, batch.pred_score > 0.5)


def test_predict_from_checkpoint_without_data_module_keeps_its_class_name(
    micro_weights: Path, tire_checkpoint: Path, predict_folder: Path, tmp_path: Path
) -> None:
    model = make_adaclip(micro_weights)
    batches = make_engine(tmp_path).predict(model, data_path=predict_folder / "000.png", ckpt_path=tire_checkpoint)
    assert model.model.class_name == "tire"
    assert len(batches) == 1 and batches[0].pred_score.shape == (1,)


# ----------------------------------------------------------------------------------------------------------------------
# Folder data modules (empty category)
# ----------------------------------------------------------------------------------------------------------------------
def folder_datamodule(generated: Path, with_masks: bool) -> Folder:
    return Folder(
        name="generated",
        root=generated,
        normal_dir="train/good",
        normal_test_dir="test/good",
        abnormal_dir="test/defect",
        mask_dir="ground_truth/defect" if with_masks else None,
        val_split_mode="same_as_test",
        num_workers=0,
        eval_batch_size=8,
    )


@pytest.mark.parametrize("with_masks", [True, False], ids=["masks", "no-masks"])
def test_folder_test_with_and_without_masks(
    micro_weights: Path, generated: Path, tmp_path: Path, with_masks: bool, caplog: pytest.LogCaptureFixture
) -> None:
    model = make_adaclip(micro_weights)
    engine = make_engine(tmp_path)
    with caplog.at_level(logging.INFO, logger="anomalib_adaclip"):
        results = engine.test(model, datamodule=folder_datamodule(generated, with_masks))
    expected = METRICS if with_masks else {"image_AUROC", "image_F1Max"}
    assert set(results[0]) == expected
    # Folder's category is "": the prompts fall back to "object", and the log says so.
    assert model.model.class_name == "object"
    assert "class name 'object'" in caplog.text and "no data module category" in caplog.text
    written = list((Path(engine.trainer.default_root_dir) / "images").rglob("*.png"))
    assert len(written) == 8
    # Without masks there is nothing to learn a pixel threshold from: "auto" keeps the fixed one there.
    assert torch.isfinite(model.post_processor.image_min)
    assert torch.isfinite(model.post_processor.pixel_min) == with_masks


def test_auto_mode_forgets_thresholds_learned_on_other_data() -> None:
    # What one validation learned must not survive a validation whose data cannot support it (normal-only data).
    post = AdaCLIPPostProcessor()

    def validate(scores: list[float], labels: list[int]) -> None:
        batch = SimpleNamespace(pred_score=torch.tensor(scores), gt_label=torch.tensor(labels), anomaly_map=None)
        post.on_validation_batch_end(None, None, batch)
        post.on_validation_epoch_end(None, None)

    validate([0.2, 0.6, 0.9], [0, 1, 1])
    assert torch.isfinite(post.image_min) and torch.isfinite(post.learned_threshold("image"))
    assert post.normalized_image_threshold == pytest.approx(0.5)  # 1 - sensitivity on the normalised score
    validate([0.3, 0.4], [0, 0])
    assert torch.isnan(post.image_min) and torch.isnan(post.learned_threshold("image"))
    post.set_fixed_thresholds(image_threshold=0.35)
    assert post.normalized_image_threshold == pytest.approx(0.35)


def test_fixed_mode_ignores_learned_statistics() -> None:
    post = AdaCLIPPostProcessor(image_threshold=0.7, pixel_threshold=0.6, mode="fixed")
    for name in ("image_min", "pixel_min"):
        getattr(post, name).fill_(0.1)
    for name in ("image_max", "pixel_max"):
        getattr(post, name).fill_(0.9)
    assert post.normalized_image_threshold == pytest.approx(0.7)
    assert post.normalized_pixel_threshold == pytest.approx(0.6)
    with pytest.raises(ValueError, match="image_threshold must be a probability"):
        AdaCLIPPostProcessor(image_threshold=1.5)
    with pytest.raises(ValueError, match="thresholding mode must be one of"):
        AdaCLIPPostProcessor(mode="learned")


# ----------------------------------------------------------------------------------------------------------------------
# Class names
# ----------------------------------------------------------------------------------------------------------------------
def _setup_with_category(model: AdaCLIP, category: object) -> None:
    model._trainer = SimpleNamespace(datamodule=SimpleNamespace(category=category))  # what Lightning attaches
    model.setup("test")


@pytest.mark.parametrize(
    ("class_name", "category", "expected", "source"),
    [
        ("metal-nut", "bottle", "metal-nut", "from classes.name"),
        (None, "bottle", "bottle", "category of the data module"),
        (None, "", "object", "no data module category"),
        (None, "   ", "object", "no data module category"),
        (None, None, "object", "no data module category"),
    ],
)
def test_class_name_rules_are_logged(
    micro_weights: Path,
    class_name: str | None,
    category: str | None,
    expected: str,
    source: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    model = make_adaclip(micro_weights, classes={"name": class_name})
    with caplog.at_level(logging.INFO, logger="anomalib_adaclip"):
        _setup_with_category(model, category)
    assert model.model.class_name == expected
    assert f"class name {expected!r}" in caplog.text
    assert source in caplog.text


def test_dashes_become_spaces_in_the_prompts(micro_weights: Path, caplog: pytest.LogCaptureFixture) -> None:
    model = make_adaclip(micro_weights, classes={"name": "metal-nut"})
    with caplog.at_level(logging.INFO, logger="anomalib_adaclip"):
        _setup_with_category(model, "ignored")
    assert "prompt text 'metal nut'" in caplog.text
    network = model.model.eval()
    with torch.no_grad():
        dashed = network.text_features(["metal-nut"])
        spaced = network.text_features(["metal nut"])
        underscored = network.text_features(["metal_nut"])  # underscores stay, as in the reference
    torch.testing.assert_close(dashed, spaced, rtol=0, atol=0)
    assert not torch.allclose(dashed, underscored)


# ----------------------------------------------------------------------------------------------------------------------
# Torch export and anomalib's TorchInferencer
# ----------------------------------------------------------------------------------------------------------------------
def test_torch_export_runs_in_torch_inferencer(
    micro_weights: Path, predict_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = make_adaclip(micro_weights, classes={"name": "widget"})
    path = make_engine(tmp_path).export(model, export_type="torch", export_root=tmp_path / "export")
    assert path == tmp_path / "export" / "weights" / "torch" / "model.pt"
    monkeypatch.setenv("TRUST_REMOTE_CODE", "1")
    inferencer = TorchInferencer(path, device="cpu")
    image_path = sorted(predict_folder.glob("*.png"))[0]
    with torch.no_grad():
        prediction = inferencer.predict(image_path)
        # The exported module is AdaCLIP.forward: export pre-processing (resize without antialiasing), the model
        # with the class name baked in, and the post-processor.
        expected = model.eval()(read_image(image_path, as_tensor=True).unsqueeze(0))
    assert inferencer.model.model.class_name == "widget"
    torch.testing.assert_close(prediction.pred_score, expected.pred_score, rtol=0, atol=1e-6)
    torch.testing.assert_close(prediction.anomaly_map, expected.anomaly_map, rtol=0, atol=1e-6)
    assert prediction.anomaly_map.shape == (1, IMAGE_SIZE, IMAGE_SIZE)
    assert torch.equal(prediction.pred_label, expected.pred_label)


# Results never silently replace earlier ones: anomalib's results folder of a second ``test`` run.
def test_a_second_test_run_keeps_the_first_checkpoint_and_warns_before_replacing_images(
    micro_weights: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = generate_defect_dataset(tmp_path / "data", "widget", n_train=1, n_good=1, n_defect=1, size=48)

    def datamodule() -> Folder:
        return Folder(
            name="widget",
            root=root,
            normal_dir="train/good",
            normal_test_dir="test/good",
            abnormal_dir="test/defect",
            val_split_mode="same_as_test",
            num_workers=0,
        )

    make_engine(tmp_path / "results").test(
        make_adaclip(micro_weights, classes={"name": "widget"}), datamodule=datamodule()
    )
    run_dir = tmp_path / "results" / "AdaCLIP" / "widget" / "latest"
    images = sorted((run_dir / "images").rglob("*.png"))
    assert len(images) == 2 and "earlier run" not in caplog.text
    with caplog.at_level(logging.WARNING, logger="anomalib_adaclip"):
        make_engine(tmp_path / "results").test(
            make_adaclip(micro_weights, classes={"name": "widget"}), datamodule=datamodule()
        )
    assert f"{run_dir / 'images'} holds visualisations of an earlier run" in caplog.text
    # anomalib's checkpoint of the forced validation: Lightning gives the second one a new name.
    assert sorted(path.name for path in (run_dir / "weights" / "lightning").glob("*.ckpt")) == [
        "model-v1.ckpt",
        "model.ckpt",
    ]
