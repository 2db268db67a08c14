"""Zero-shot in production: predict on unlabelled images, thresholds without labels, many categories, own prompts.

Everything runs offline on a tiny random CLIP (MICRO_BACKBONE at 112 px) whose weights, and whose prompts, are
saved to files first: a model built in another process (the console scripts) then gives exactly the scores of a
model built here, so the CSV written by ``anomalib predict`` can be checked against scores computed in this test.
Expected values come from the pre-processing written out (bicubic resize, CLIP normalisation), ``numpy.percentile``
and hand-made file trees, never from the code under test.
"""

from __future__ import annotations

import csv
import json
import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from anomalib.cli import AnomalibCLI
from anomalib.data import MVTecAD
from anomalib.data.utils import read_image
from open_clip.constants import OPENAI_DATASET_MEAN as OPENAI_MEAN
from open_clip.constants import OPENAI_DATASET_STD as OPENAI_STD
from open_clip.model import CLIP
from PIL import Image
from torch.nn import functional as F  # noqa: N812
from torch.utils.data import DataLoader
from torchvision.transforms.v2 import functional as TF  # noqa: N812

from anomalib_adaclip import AdaCLIP, AdaCLIPModel, cli
from anomalib_adaclip.components.prediction_writer import CSV_COLUMNS, PredictionCSVWriter
from anomalib_adaclip.data.synthetic import generate_defect_dataset
from anomalib_adaclip.weights import save_checkpoint
from tests.conftest import MICRO_BACKBONE
from tests.helpers import BIN, IMAGE_SIZE, OWN_PROMPTS, OWN_SENTENCES, make_adaclip, make_engine, run, tiny_flags


# ----------------------------------------------------------------------------------------------------------------------
# Fixtures and helpers
# ----------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny CLIP's weights and trained-looking prompts (ours and the released layout), in files."""
    folder = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    torch.save(CLIP(**MICRO_BACKBONE).state_dict(), folder / "micro_clip.pt")
    torch.manual_seed(1)
    donor = AdaCLIPModel(backbone=MICRO_BACKBONE, backbone_weights=None, image_size=IMAGE_SIZE)
    state = donor.trainable_state_dict()
    save_checkpoint(state, donor.config.to_dict(), folder / "prompts.pt")
    save_checkpoint(state, donor.config.to_dict(), folder / "released_layout.pth", released_layout=True)
    return {
        "weights": folder / "micro_clip.pt",
        "checkpoint": folder / "prompts.pt",
        "released": folder / "released_layout.pth",
    }


def trained_adaclip(files: dict[str, Path], **overrides: object) -> AdaCLIP:
    """The micro CLIP with the module's prompts file (every trainable tensor from it: no seed needed)."""
    return make_adaclip(files["weights"], seed=None, **{"checkpoint": str(files["checkpoint"]), **overrides})


def trained_flags(files: dict[str, Path]) -> list[str]:
    """The CLI flags of :func:`trained_adaclip`."""
    return [*tiny_flags(files["weights"]), *("--model.checkpoint", str(files["checkpoint"]))]


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated data set in MVTec layout: 2 train, 2 good and 2 defective test images (96 px) with masks."""
    return generate_defect_dataset(
        tmp_path_factory.mktemp("generated"), "widget", n_train=2, n_good=2, n_defect=2, size=96
    )


@pytest.fixture(scope="module")
def inspect_folder(generated: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three unlabelled images of different sizes (96x96, 120x80, 70x100), no masks, no labels."""
    folder = tmp_path_factory.mktemp("bare") / "inspect"
    folder.mkdir()
    sources = [generated / "test" / "good" / "000.png", *sorted((generated / "test" / "defect").glob("*.png"))]
    for name, source, size in zip(("a", "b", "c"), sources, [(96, 96), (120, 80), (70, 100)], strict=True):
        with Image.open(source) as image:
            image.convert("RGB").resize(size, Image.Resampling.BICUBIC).save(folder / f"{name}.png")
    return folder


def raw_outputs(model: AdaCLIP, path: Path, class_name: str = "object") -> tuple[float, torch.Tensor]:
    """AdaCLIP's probabilities for one image: the pre-processing written out, then the torch model."""
    image = read_image(path, as_tensor=True)
    image = TF.resize(image, [IMAGE_SIZE, IMAGE_SIZE], interpolation=TF.InterpolationMode.BICUBIC, antialias=True)
    image = TF.normalize(image, mean=list(OPENAI_MEAN), std=list(OPENAI_STD)).unsqueeze(0)
    with torch.no_grad():
        output = model.model.eval()(image, [class_name])
    return float(output.pred_score), output.anomaly_map[0]


def area_fraction(anomaly_map: torch.Tensor, path: Path, threshold: float) -> float:
    """Share of the original image's pixels whose (bilinearly resized) map exceeds the threshold."""
    with Image.open(path) as image:
        width, height = image.size
    resized = F.interpolate(anomaly_map[None, None], size=(height, width), mode="bilinear", align_corners=False)
    return float((resized > threshold).float().mean())


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames) == CSV_COLUMNS
        return list(reader)


def label_colour(path: Path) -> tuple[int, int, int]:
    """Mean colour of the decision label's left padding (bottom left of the image panel), where no glyph is."""
    with Image.open(path) as image:
        array = np.asarray(image.convert("RGB"), dtype=np.float64)
    height = array.shape[0]
    return tuple(int(value) for value in array[height - 26 : height - 16, 5:7].reshape(-1, 3).mean(0))


# ----------------------------------------------------------------------------------------------------------------------
# 1 + 2. Predict on unlabelled images: visualisations, decisions, CSV; fixed thresholds without labels
# ----------------------------------------------------------------------------------------------------------------------
def test_predict_on_an_unlabelled_folder_writes_images_decisions_and_one_csv(
    files: dict[str, Path], inspect_folder: Path, tmp_path: Path
) -> None:
    model = trained_adaclip(files)
    batches = make_engine(tmp_path).predict(model, data_path=inspect_folder)
    run_dir = tmp_path / "AdaCLIP" / "latest"
    rows = read_csv(run_dir / "predictions.csv")
    paths = sorted(inspect_folder.glob("*.png"))
    assert [Path(row["path"]).name for row in rows] == [path.name for path in paths]
    # No labels, no validation data: nothing is learned or normalised; probability > 0.5 decides.
    post = model.post_processor
    assert torch.isnan(post.image_min) and torch.isnan(post.pixel_min) and torch.isnan(post.learned_threshold("image"))
    for batch, row, path in zip(batches, rows, paths, strict=True):
        score, anomaly_map = raw_outputs(model, path)
        assert float(row["score"]) == pytest.approx(score, abs=1e-6)
        assert float(batch.pred_score) == pytest.approx(score, abs=1e-6)
        assert row["decision"] == ("NG" if score > 0.5 else "OK")
        assert bool(batch.pred_label) == (score > 0.5)
        assert torch.equal(
            batch.pred_mask.reshape(anomaly_map.shape), batch.anomaly_map.reshape(anomaly_map.shape) > 0.5
        )
        assert row["class_name"] == "object"
        assert float(row["anomalous_area_fraction"]) == pytest.approx(area_fraction(anomaly_map, path, 0.5), abs=1e-6)
        # The decision is on the written image: as text chunks and as a red (NG) or green (OK) label.
        visualisation = run_dir / "images" / inspect_folder.name / path.name
        with Image.open(visualisation) as image:
            assert image.text["Decision"] == row["decision"]
            assert float(image.text["Score"]) == pytest.approx(score, abs=1e-6)
            assert float(image.text["Threshold"]) == 0.5
        red, green, _ = label_colour(visualisation)
        assert (red > 150 > green) if row["decision"] == "NG" else (green > 100 > red)


def test_every_run_gets_its_own_csv_and_a_trainer_writer_is_honoured(
    files: dict[str, Path], inspect_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = str(inspect_folder / "a.png")
    monkeypatch.setattr(sys, "argv", ["anomalib-adaclip"])  # cli.main sets sys.argv for anomalib's parser
    command = ["predict", "--model", "AdaCLIP", *trained_flags(files), "--data", image]
    command += ["--trainer.accelerator", "cpu", "--default_root_dir", str(tmp_path)]
    run_dir = tmp_path / "AdaCLIP" / "latest"
    assert cli.main(command) == 0
    first = (run_dir / "predictions.csv").read_text()
    assert cli.main(command) == 0  # anomalib's predict reuses the `latest` folder
    assert (run_dir / "predictions.csv").read_text() == first
    assert read_csv(run_dir / "predictions-v1.csv") == read_csv(run_dir / "predictions.csv")
    # A writer given to the Trainer replaces the default, and still runs after the thresholding.
    writer = PredictionCSVWriter(output_dir=tmp_path / "tables", filename="shift_a.csv")
    make_engine(tmp_path / "other", callbacks=[writer]).predict(trained_adaclip(files), data_path=image)
    (row,) = read_csv(tmp_path / "tables" / "shift_a.csv")
    assert row["decision"] in {"OK", "NG"} and row["anomalous_area_fraction"]
    assert not (tmp_path / "other" / "AdaCLIP" / "latest" / "predictions.csv").exists()


@pytest.mark.parametrize(
    "entry",
    # `anomalib` runs AnomalibCLI: in this process by default; the console script itself in the slow suite.
    ["AnomalibCLI", pytest.param("console script", marks=pytest.mark.slow)],
)
def test_anomalib_predict_with_own_thresholds(
    files: dict[str, Path], inspect_folder: Path, tmp_path: Path, entry: str
) -> None:
    model = trained_adaclip(files)
    paths = sorted(inspect_folder.glob("*.png"))
    outputs = [raw_outputs(model, path) for path in paths]
    scores = sorted(score for score, _ in outputs)
    image_threshold = (scores[0] + scores[1]) / 2  # between the two lowest scores: one OK, two NG
    pixel_threshold = 0.6
    arguments = ["predict", "--model", "anomalib_adaclip.AdaCLIP", *trained_flags(files)]
    arguments += ["--model.thresholds.image", repr(image_threshold), "--model.thresholds.pixel", str(pixel_threshold)]
    arguments += ["--data", str(inspect_folder), "--trainer.accelerator", "cpu", "--default_root_dir", str(tmp_path)]
    if entry == "AnomalibCLI":
        AnomalibCLI(arguments)
    else:
        result = run([str(BIN / "anomalib"), *arguments], tmp_path)
        assert result.returncode == 0, result.stderr[-4000:]
    rows = read_csv(tmp_path / "AdaCLIP" / "latest" / "predictions.csv")
    assert [row["decision"] for row in rows].count("OK") == 1
    for row, path, (score, anomaly_map) in zip(rows, paths, outputs, strict=True):
        assert float(row["score"]) == pytest.approx(score, abs=1e-6)
        assert row["decision"] == ("NG" if score > image_threshold else "OK")
        expected = area_fraction(anomaly_map, path, pixel_threshold)
        assert float(row["anomalous_area_fraction"]) == pytest.approx(expected, abs=1e-6)
    assert len(list((tmp_path / "AdaCLIP" / "latest" / "images").rglob("*.png"))) == 3


# ----------------------------------------------------------------------------------------------------------------------
# With labels: anomalib's adaptive thresholds on request; class names per image in test
# ----------------------------------------------------------------------------------------------------------------------
def test_engine_test_with_labels_adaptive_thresholds_and_class_names_per_image(
    files: dict[str, Path], generated: Path, tmp_path: Path
) -> None:
    model = trained_adaclip(files, thresholds={"mode": "adaptive"}, classes={"map": {"widget": "gizmo"}})
    seen: list[str] = []
    forward = model.model.forward

    def recording_forward(images: torch.Tensor, class_names: list[str] | None = None) -> object:
        seen.extend(class_names)
        return forward(images, class_names)

    model.model.forward = recording_forward
    datamodule = MVTecAD(root=generated.parent, category="widget", num_workers=0, eval_batch_size=4)
    (metrics,) = make_engine(tmp_path).test(model, datamodule=datamodule)
    assert "image_AUROC" in metrics
    assert seen and set(seen) == {"gizmo"}  # the map beats the data module's category
    post = model.post_processor
    assert torch.isfinite(post.image_min) and torch.isfinite(post.learned_threshold("image"))  # anomalib adaptive


# ----------------------------------------------------------------------------------------------------------------------
# 2. Calibration on known-good images
# ----------------------------------------------------------------------------------------------------------------------


def test_calibrate_sets_thresholds_at_percentiles_of_known_good_scores(
    files: dict[str, Path], inspect_folder: Path, tmp_path: Path
) -> None:
    model = trained_adaclip(files)
    result = model.calibrate(inspect_folder, percentile=50, pixel_percentile=99)
    paths = sorted(inspect_folder.glob("*.png"))
    outputs = [raw_outputs(model, path) for path in paths]
    scores = [score for score, _ in outputs]
    pixels = torch.cat([anomaly_map.flatten() for _, anomaly_map in outputs]).double().numpy()
    assert result.image_threshold == pytest.approx(np.percentile(scores, 50), abs=1e-6)
    assert result.pixel_threshold == pytest.approx(np.percentile(pixels, 99), abs=1e-6)
    assert [Path(path).name for path in result.paths] == [path.name for path in paths]
    assert result.flagged == 1  # of three scores, only the highest lies above their median
    assert float(model.post_processor.fixed_image_threshold) == pytest.approx(result.image_threshold, abs=1e-7)
    assert float(model.post_processor.fixed_pixel_threshold) == pytest.approx(result.pixel_threshold, abs=1e-7)
    # Predicting the same images now flags exactly the one above the median, in the CSV and on the images.
    make_engine(tmp_path).predict(model, data_path=inspect_folder)
    run_dir = tmp_path / "AdaCLIP" / "latest"
    rows = read_csv(run_dir / "predictions.csv")
    assert [row["decision"] for row in rows] == ["NG" if score == max(scores) else "OK" for score in scores]
    for row, path in zip(rows, paths, strict=True):
        visualisation = run_dir / "images" / inspect_folder.name / path.name
        with Image.open(visualisation) as image:
            assert image.text["Decision"] == row["decision"]
            assert float(image.text["Threshold"]) == pytest.approx(result.image_threshold, abs=1e-7)
        red, green, _ = label_colour(visualisation)
        assert (red > 150 > green) if row["decision"] == "NG" else (green > 100 > red)


def test_calibrate_uses_normal_images_only(
    files: dict[str, Path], generated: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model = trained_adaclip(files)
    datamodule = MVTecAD(root=generated.parent, category="widget", num_workers=0, eval_batch_size=4)
    result = model.calibrate(datamodule, percentile=100, apply=False)
    assert sorted(Path(path).parent.name for path in result.paths) == ["good", "good"]  # the training split
    assert result.image_threshold == pytest.approx(max(result.scores), abs=0)
    assert float(model.post_processor.fixed_image_threshold) == 0.5  # apply=False
    test_data = datamodule.test_data
    with caplog.at_level(logging.WARNING, logger="anomalib_adaclip"):
        result = model.calibrate(DataLoader(test_data, batch_size=4, collate_fn=test_data.collate_fn), 90)
    assert sorted(Path(path).parent.name for path in result.paths) == ["good", "good"]
    assert "left out 2 image(s) labelled anomalous" in caplog.text


def test_calibrate_rejects_bad_input(files: dict[str, Path], inspect_folder: Path, tmp_path: Path) -> None:
    model = trained_adaclip(files)
    with pytest.raises(ValueError, match=r"percentile must be a number in \[0, 100\].*got 150"):
        model.calibrate(inspect_folder, percentile=150)
    with pytest.raises(ValueError, match="pixel_percentile must be a number"):
        model.calibrate(inspect_folder, pixel_percentile=-1)
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "missing")):
        model.calibrate(tmp_path / "missing")
    with pytest.raises(TypeError, match="Calibration data must be"):
        model.calibrate(42)


def test_calibrate_command_prints_a_config_that_predict_uses(
    files: dict[str, Path],
    inspect_folder: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    snippet_file = tmp_path / "thresholds.yaml"
    command = ["calibrate", "--data", str(inspect_folder), "--percentile", "50", "--pixel-percentile", "99"]
    command += [*trained_flags(files), "--output", str(snippet_file)]
    assert cli.main(command) == 0
    printed = capsys.readouterr()
    snippet = yaml.safe_load(printed.out)
    assert snippet == yaml.safe_load(snippet_file.read_text())
    model = trained_adaclip(files)
    outputs = [raw_outputs(model, path) for path in sorted(inspect_folder.glob("*.png"))]
    scores = [score for score, _ in outputs]
    pixels = torch.cat([anomaly_map.flatten() for _, anomaly_map in outputs]).double().numpy()
    arguments = snippet["model"]["init_args"]
    assert snippet["model"]["class_path"] == "anomalib_adaclip.AdaCLIP"
    thresholds = arguments["thresholds"]
    assert thresholds["image"] == pytest.approx(np.percentile(scores, 50), abs=1e-6)
    assert thresholds["pixel"] == pytest.approx(np.percentile(pixels, 99), abs=1e-6)
    assert thresholds["mode"] == "fixed"
    assert "--model.thresholds.image" in printed.err
    # An existing file is never overwritten.
    before = snippet_file.read_text()
    assert cli.main(command) == 2
    assert "already exists" in capsys.readouterr().err and snippet_file.read_text() == before
    # The snippet is a config for anomalib's predict: only the image above the median is NG.
    monkeypatch.setattr(sys, "argv", ["anomalib-adaclip"])
    predict = ["predict", "--config", str(snippet_file), *trained_flags(files), "--data", str(inspect_folder)]
    assert cli.main([*predict, "--trainer.accelerator", "cpu", "--default_root_dir", str(tmp_path / "run")]) == 0
    rows = read_csv(tmp_path / "run" / "AdaCLIP" / "latest" / "predictions.csv")
    assert [row["decision"] for row in rows] == ["NG" if score == max(scores) else "OK" for score in scores]


# ----------------------------------------------------------------------------------------------------------------------
# 3. Class names per image
# ----------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mixed_tree(inspect_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """line/screws/s.png, line/nuts/n.png, line/misc/m1.png, line/misc/m2.png."""
    root = tmp_path_factory.mktemp("mixed") / "line"
    sources = sorted(inspect_folder.glob("*.png"))
    for relative, source in zip(
        ["screws/s.png", "nuts/n.png", "misc/m1.png", "misc/m2.png"], [*sources, sources[0]], strict=True
    ):
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(source.read_bytes())
    return root


@pytest.mark.parametrize("from_parent", [False, True], ids=["map", "map+parent"])
def test_predict_over_many_categories_prompts_each_image_with_its_own_name(
    files: dict[str, Path], mixed_tree: Path, tmp_path: Path, from_parent: bool, caplog: pytest.LogCaptureFixture
) -> None:
    class_name_map = {"screws": "screw", "*/nuts/*.png": "metal-nut"}
    model = trained_adaclip(files, classes={"map": class_name_map, "from_parent": from_parent})
    with caplog.at_level(logging.INFO, logger="anomalib_adaclip"):
        make_engine(tmp_path).predict(model, data_path=mixed_tree)
    rows = {
        Path(row["path"]).relative_to(mixed_tree).as_posix(): row for row in read_csv(next(tmp_path.rglob("*.csv")))
    }
    unmatched = "misc" if from_parent else "object"
    expected = {"misc/m1.png": unmatched, "misc/m2.png": unmatched, "nuts/n.png": "metal-nut", "screws/s.png": "screw"}
    assert {path: row["class_name"] for path, row in rows.items()} == expected
    for path, name in expected.items():  # each image was scored with the prompts of its own name
        assert float(rows[path]["score"]) == pytest.approx(raw_outputs(model, mixed_tree / path, name)[0], abs=1e-6)
    warnings = [record for record in caplog.records if "No classes.map rule matches" in record.getMessage()]
    assert len(warnings) == (0 if from_parent else 1)  # logged once for both unmatched images
    assert "AdaCLIP prompts use the class name 'screw'" in caplog.text


# ----------------------------------------------------------------------------------------------------------------------
# 3. Own prompts from YAML and the command line; the warning with released checkpoints; the `prompts` command
# ----------------------------------------------------------------------------------------------------------------------
RELEASED_WARNING = "stores no prompt settings"


@pytest.mark.parametrize("source", ["flags", "yaml"])
def test_own_prompts_from_the_cli_warn_with_a_released_checkpoint(
    files: dict[str, Path], inspect_folder: Path, tmp_path: Path, source: str, caplog: pytest.LogCaptureFixture
) -> None:
    flags = [*trained_flags(files), "--model.checkpoint", str(files["released"])]
    if source == "flags":
        arguments = ["--model", "anomalib_adaclip.AdaCLIP", *flags]
        arguments += [
            item for key, value in OWN_PROMPTS.items() for item in (f"--model.prompts.{key}", json.dumps(value))
        ]
    else:
        config = tmp_path / "prompts.yaml"
        config.write_text(
            yaml.safe_dump({"model": {"class_path": "anomalib_adaclip.AdaCLIP", "init_args": {"prompts": OWN_PROMPTS}}})
        )
        arguments = ["--config", str(config), *flags]
    with caplog.at_level(logging.WARNING, logger="anomalib_adaclip"):
        model = AnomalibCLI(["predict", *arguments, "--data", str(inspect_folder)], run=False).model
    assert model.model.ensemble.sentences("metal-nut") == OWN_SENTENCES
    assert RELEASED_WARNING in caplog.text


def test_no_prompt_warning_where_the_checkpoint_fits(files: dict[str, Path], caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="anomalib_adaclip"):
        trained_adaclip(files, checkpoint=str(files["released"]))  # the paper's prompts
        trained_adaclip(files, prompts=OWN_PROMPTS)  # our format stores its prompts (AdaCLIPModel compares them itself)
    assert RELEASED_WARNING not in caplog.text
