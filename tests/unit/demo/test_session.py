"""The demo's session without a browser: the same numbers as ``anomalib predict``, its files, and bad input answered.

The model is the micro CLIP of ``tests/conftest.py`` with prompts saved as a checkpoint file, so the session and
anomalib's ``Engine.predict`` build exactly the same model.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from anomalib_adaclip import AdaCLIP, AdaCLIPModel, MutualScoring
from anomalib_adaclip.components.prediction_writer import CSV_COLUMNS
from anomalib_adaclip.config import AdaCLIPConfig
from anomalib_adaclip.demo import DemoSession, ModelSpec, example_images
from anomalib_adaclip.model.prompting import sentences_text
from anomalib_adaclip.weights import (
    WeightsNotFoundError,
    download_clip_weights,
    download_released_checkpoint,
    save_checkpoint,
)
from tests.conftest import MICRO_BACKBONE, PROJECT_ROOT, TIRE_ROOT
from tests.helpers import make_engine

TIRE_IMAGES = [TIRE_ROOT / "tire" / "test" / "cut" / "000.png", TIRE_ROOT / "tire" / "test" / "good" / "001.png"]


def _prompts_checkpoint(folder: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    donor = AdaCLIPModel(backbone=MICRO_BACKBONE, backbone_weights=None, image_size=112)
    path = folder / f"prompts_{seed}.pt"
    save_checkpoint(donor.trainable_state_dict(), donor.config.to_dict(), path)
    return path


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("prompts")
    return [_prompts_checkpoint(folder, seed) for seed in (1, 2)]


@pytest.fixture(scope="module")
def spec(micro_weights: Path, checkpoints: list[Path]) -> ModelSpec:
    return ModelSpec(json.dumps(MICRO_BACKBONE), str(micro_weights), str(checkpoints[0]), 112)


@pytest.fixture(scope="module")
def session(spec: ModelSpec, tmp_path_factory: pytest.TempPathFactory) -> DemoSession:
    return DemoSession(spec, device="cpu", output_dir=tmp_path_factory.mktemp("demo_runs"))


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames or ()) == CSV_COLUMNS
        return list(reader)


@pytest.mark.parametrize("tiling", [False, True])
def test_scores_and_csv_equal_anomalib_predict_on_the_same_files(
    session: DemoSession, spec: ModelSpec, micro_weights: Path, tmp_path: Path, tiling: bool
) -> None:
    images = tmp_path / "images"
    images.mkdir()
    # tiled: the 150x200 example images (6 tiles each at 112 px; the 600x800 tire images would take 63 each)
    for source in example_images()[:2] if tiling else TIRE_IMAGES:
        shutil.copy(source, images / f"{source.parent.name}_{source.name}")
    files = sorted(images.iterdir())

    run = session.predict(files, "tire", image_threshold=0.5, pixel_threshold=0.5, tiling=tiling)
    assert [result.name for result in run.results] == [path.name for path in files]
    assert all(result.scored and not result.error for result in run.results), run.message

    model = AdaCLIP(
        backbone=MICRO_BACKBONE,
        backbone_weights=str(micro_weights),
        checkpoint=spec.checkpoint,
        image_size=112,
        class_name="tire",
        thresholding="fixed",
        tiling=tiling,
    )
    engine = make_engine(tmp_path / "engine")
    predictions = engine.predict(model, data_path=images)
    expected = {Path(item.image_path).name: item for batch in predictions for item in batch}
    for result in run.results:
        item = expected[result.name]
        assert result.score == pytest.approx(float(item.pred_score), abs=1e-6)
        assert result.decision == ("NG" if bool(item.pred_label) else "OK")

    # anomalib predict's own CSV (written by PredictionCSVWriter) against the demo's: same columns, same values
    engine_csv = next((tmp_path / "engine").rglob("predictions.csv"))
    engine_rows = {Path(row["path"]).name: row for row in _rows(engine_csv)}
    demo_rows = _rows(run.csv_path)
    assert len(demo_rows) == len(files)
    for row in demo_rows:
        reference = engine_rows[row["path"]]
        assert {key: row[key] for key in CSV_COLUMNS[1:]} == {key: reference[key] for key in CSV_COLUMNS[1:]}


def test_mutual_scoring_scores_the_uploaded_images_against_each_other(
    session: DemoSession, micro_weights: Path
) -> None:
    """Ticked: each score is the default fusion of the prompts' score and MuSc's on the same (resized) images."""
    from anomalib.data.utils.image import read_image

    files = example_images()  # three images; MuSc compares them at the model's input size
    plain = session.predict(files, "tire")
    together = session.predict(files, "tire", mutual=True)
    assert "Mutual scoring: the 3 images were also scored against each other" in together.message
    musc = MutualScoring(
        backbone=MICRO_BACKBONE, backbone_weights=str(micro_weights), image_size=112, feature_layers=[0, 1, 2, 3]
    )
    transform = AdaCLIP.configure_pre_processor(112).transform
    with torch.no_grad():
        expected = musc(torch.cat([transform(read_image(path, as_tensor=True)[None]) for path in files])).pred_score
    for result, alone, musc_score in zip(together.results, plain.results, expected.tolist(), strict=True):
        assert result.score == pytest.approx(0.5 * alone.score + 0.5 * musc_score, abs=1e-6)
        assert result.overlay is not None and 0.0 <= result.score <= 1.0

    one = session.predict(files[:1], "tire", mutual=True)
    assert "needs at least two readable images" in one.message and one.results[0].score == plain.results[0].score
    tiled = session.predict(files, "tire", mutual=True, tiling=True)
    assert not tiled.results and "cannot be combined" in tiled.message


def test_overlays_gallery_table_and_zip(session: DemoSession) -> None:
    run = session.predict(TIRE_IMAGES, "tire", image_threshold=0.0, pixel_threshold=1.0)
    assert [result.decision for result in run.results] == ["NG", "NG"]  # every score is above 0
    assert [row[4] for row in run.table()] == [0.0, 0.0]  # no pixel is above 1
    for result in run.results:
        assert result.overlay is not None
        width, height = result.overlay.size
        assert width > height  # the image and its overlay side by side
        overlay = np.asarray(result.overlay.convert("RGB"), dtype=float)
        original = np.asarray(Image.open(result.path).convert("RGB").resize((width // 2, height)), dtype=float)
        assert np.abs(overlay[:, width // 2 :] - original).mean() > 5  # the heatmap changed the right panel
    assert len(run.gallery()) == 2
    assert run.gallery()[0][1].startswith("000.png: NG ")
    with zipfile.ZipFile(run.zip_path) as archive:
        names = archive.namelist()
        assert names == ["001_000.png", "002_001.png", "predictions.csv"]
        with Image.open(archive.open(names[0])) as png:
            assert png.text["Decision"] == "NG"


def test_model_is_built_once_and_rebuilt_with_a_message_when_the_checkpoint_changes(
    spec: ModelSpec, checkpoints: list[Path], tmp_path: Path
) -> None:
    session = DemoSession(spec, device="cpu", output_dir=tmp_path)
    first = session.predict(example_images()[:1], "tire")
    assert first.messages[0].startswith("Built the model (checkpoint prompts_1.pt")
    model = session.model
    second = session.predict(example_images()[:1], "tire", tiling=True)
    assert session.model is model
    assert not any("Built" in message or "Rebuilt" in message for message in second.messages)
    assert second.results[0].score != first.results[0].score  # tiles at full resolution: another view
    other = ModelSpec(spec.backbone, spec.backbone_weights, str(checkpoints[1]), spec.image_size)
    third = session.predict(example_images()[:1], "tire", spec=other)
    assert session.model is not model
    assert third.messages[0].startswith("Rebuilt the model because its settings changed (checkpoint: ")
    assert "prompts_2.pt" in third.messages[0]


TRAIN_GOOD = sorted((TIRE_ROOT / "tire" / "train" / "good").glob("*.png"))


def _copies(paths: list[Path], folder: Path) -> list[Path]:
    folder.mkdir(parents=True)
    return [Path(shutil.copy(path, folder / path.name)) for path in paths]


def test_few_shot_run_equals_anomalib_predict_with_the_same_references(
    session: DemoSession, spec: ModelSpec, micro_weights: Path, tmp_path: Path
) -> None:
    references = _copies(TRAIN_GOOD[:2], tmp_path / "references")
    images = tmp_path / "images"
    images.mkdir()
    queries = [*TIRE_IMAGES, references[0]]  # the last query is one of the references
    for index, source in enumerate(queries):
        shutil.copy(source, images / f"{index}_{source.name}")
    files = sorted(images.iterdir())

    run = session.predict(files, "tire", references=references)
    assert run.k_shot == 2
    assert "Few-shot: 2 known-good reference(s) of 'tire'" in run.message
    assert all(result.scored for result in run.results), run.message

    model = AdaCLIP(
        backbone=MICRO_BACKBONE,
        backbone_weights=str(micro_weights),
        checkpoint=spec.checkpoint,
        image_size=112,
        class_name="tire",
        thresholding="fixed",
        k_shot=2,
        few_shot_source=str(tmp_path / "references"),
    )
    engine = make_engine(tmp_path / "engine")
    expected = {Path(item.image_path).name: item for batch in engine.predict(model, data_path=images) for item in batch}
    zero_shot = session.predict(files, "tire")
    assert zero_shot.k_shot == 0 and "Zero-shot: no known-good references" in zero_shot.message
    for result, plain in zip(run.results, zero_shot.results, strict=True):
        item = expected[result.name]
        assert result.score == pytest.approx(float(item.pred_score), abs=1e-6)
        assert result.decision == ("NG" if bool(item.pred_label) else "OK")
        assert result.score != pytest.approx(plain.score, abs=1e-6)  # the references changed the outputs

    # The query that is a reference: the few-shot map is ~0 everywhere (its patches are in the memory).
    from anomalib.data.utils.image import read_image

    few_shot = session._models[dataclasses.replace(spec, k_shot=2)]
    image = few_shot.pre_processor.transform(read_image(references[0], as_tensor=True))[None]
    with torch.no_grad():
        assert float(few_shot.model.features(image, "tire").few_shot_map.max()) < 1e-5


def test_tiled_few_shot_run_equals_anomalib_predict_and_tiling_refills_the_memory(
    session: DemoSession, spec: ModelSpec, micro_weights: Path, tmp_path: Path
) -> None:
    # the 150x200 example images: references and query cut into 6 tiles each at 112 px
    references = _copies(example_images()[:2], tmp_path / "references")
    query = _copies(example_images()[2:], tmp_path / "images")
    run = session.predict(query, "tire", references=references, tiling=True)
    assert run.k_shot == 2 and run.results[0].scored, run.message
    model = AdaCLIP(
        backbone=MICRO_BACKBONE,
        backbone_weights=str(micro_weights),
        checkpoint=spec.checkpoint,
        image_size=112,
        class_name="tire",
        thresholding="fixed",
        k_shot=2,
        few_shot_source=str(tmp_path / "references"),
        tiling=True,
    )
    engine = make_engine(tmp_path / "engine")
    (item,) = [item for batch in engine.predict(model, data_path=tmp_path / "images") for item in batch]
    assert run.results[0].score == pytest.approx(float(item.pred_score), abs=1e-6)
    untiled = session.predict(query, "tire", references=references)
    assert "(read in " in untiled.message  # whole images now: the memory is refilled


def test_references_refill_the_memory_and_only_their_number_rebuilds_the_model(spec: ModelSpec, tmp_path: Path) -> None:
    session = DemoSession(spec, device="cpu", output_dir=tmp_path / "runs")
    query = example_images()[:1]  # 150x200 queries, 600x800 references: both resized to the input size
    first = _copies(TRAIN_GOOD[:2], tmp_path / "first")
    second = _copies(TRAIN_GOOD[2:4], tmp_path / "second")

    zero = session.predict(query, "tire")
    assert zero.messages[0].startswith("Built the model (")
    few = session.predict(query, "tire", references=first)
    assert few.messages[0].startswith("Built the few-shot model (")
    assert "few-shot k_shot=2" in few.messages[0] and "the zero-shot model is kept too" in few.messages[0]
    model = session.model
    assert few.results[0].scored and few.k_shot == 2

    again = session.predict(query, "tire", references=first)
    assert session.model is model and "(kept from the previous run)" in again.messages[0]
    assert again.results[0].score == few.results[0].score
    repeated = shutil.copy(first[0], tmp_path / "same_again.png")  # the same contents twice count once
    twice = session.predict(query, "tire", references=[*first, repeated])
    assert session.model is model and twice.k_shot == 2 and "(kept from the previous run)" in twice.messages[0]
    assert "same contents as an earlier one are used once: same_again.png" in twice.message
    other = session.predict(query, "tire", references=second)  # other files: the memory is refilled
    assert session.model is model and "(read in " in other.messages[0]
    assert not any("Built" in message or "Rebuilt" in message for message in again.messages + other.messages)
    assert other.results[0].score != few.results[0].score
    renamed = session.predict(query, "tyre", references=second)  # another class name: refilled for it
    assert "(read in " in renamed.messages[0]
    assert model.model.few_shot_memory.class_names == ["tyre"]

    back = session.predict(query, "tire")  # the kept zero-shot model
    assert back.messages[0].startswith("Zero-shot") and back.results[0].score == zero.results[0].score
    one = session.predict(query, "tire", references=first[:1])  # a single reference works: k_shot=1
    assert one.messages[0].startswith("Rebuilt the model because its settings changed (k_shot: 2 -> 1)")
    assert one.k_shot == 1 and one.results[0].scored
    assert "Few-shot: 1 known-good reference(s) of 'tire'" in one.message


def test_a_model_failure_on_one_image_is_answered(
    session: DemoSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    session.load()

    def fail(*args: object, **kwargs: object) -> None:
        raise RuntimeError("CUDA out of memory. Tried to allocate 80.00 GiB")

    monkeypatch.setattr("anomalib_adaclip.demo.session.score_images", fail)
    run = session.predict(TIRE_IMAGES[:1], "tire")
    assert "the model failed on this image (RuntimeError: CUDA out of memory." in run.results[0].error


def _not_an_image(folder: Path) -> Path:
    path = folder / "notes.png"
    path.write_text("this is not an image\n")
    return path


def _truncated(folder: Path) -> Path:
    path = folder / "truncated.png"
    path.write_bytes(TIRE_IMAGES[0].read_bytes()[:5000])
    return path


def _gray16(folder: Path) -> Path:
    path = folder / "gray16.png"
    Image.fromarray(np.full((64, 64), 40000, dtype=np.uint16)).save(path)
    return path


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (_not_an_image, "not an image that PIL can read"),
        (_truncated, "truncated or damaged"),
        (_gray16, "16-bit grayscale (PIL mode I;16)"),
    ],
)
def test_bad_files_are_answered_and_the_good_ones_still_scored(
    session: DemoSession, tmp_path: Path, make: object, expected: str
) -> None:
    bad = make(tmp_path)  # type: ignore[operator]
    run = session.predict([TIRE_IMAGES[0], bad], "tire")
    good, refused = run.results
    assert good.scored
    assert not refused.scored and refused.decision == ""
    assert expected in refused.error
    assert f"{refused.name}: Not scored: " in run.message
    assert "1 image(s) not scored" in run.message
    assert len(_rows(run.csv_path)) == 1  # the CSV holds the scored images


@pytest.mark.parametrize(
    ("make", "expected"),
    [(_not_an_image, "not an image that PIL can read"), (_truncated, "truncated or damaged")],
)
def test_a_bad_reference_is_answered_and_the_session_keeps_serving(
    session: DemoSession, tmp_path: Path, make: object, expected: str
) -> None:
    bad = make(tmp_path)  # type: ignore[operator]
    run = session.predict(TIRE_IMAGES[:1], "tire", references=[TRAIN_GOOD[0], bad])
    assert "No image was scored: the known-good reference(s) below cannot be used" in run.message
    assert f"- {bad.name}: " in run.message and expected in run.message
    assert run.results == [] and run.csv_path is None
    assert session.predict(TIRE_IMAGES[:1], "tire", references=TRAIN_GOOD[:1]).results[0].scored


def test_cmyk_jpeg_is_scored(session: DemoSession, tmp_path: Path) -> None:
    path = tmp_path / "cmyk.jpg"
    Image.open(TIRE_IMAGES[0]).convert("CMYK").save(path, quality=95)
    run = session.predict([path], "tire")
    assert run.results[0].scored, run.message


def test_images_above_the_size_limit_are_refused_with_the_way_out(spec: ModelSpec, tmp_path: Path) -> None:
    session = DemoSession(spec, device="cpu", max_megapixels=0.4, output_dir=tmp_path)  # the tire images are 0.48
    run = session.predict(TIRE_IMAGES[:1], "tire")
    assert "600x800 pixels (0 megapixels) is above this demo's limit of 0.4 megapixels" in run.results[0].error
    assert "--model.tiling true" in run.results[0].error
    assert run.csv_path is None and run.zip_path is None


@pytest.mark.parametrize(
    ("images", "class_name", "expected"),
    [
        ([], "tire", "Add one or more images first"),
        (TIRE_IMAGES, "   ", "Enter a class name"),
        (TIRE_IMAGES, "tire " * 70, "is too long"),
    ],
)
def test_requests_without_images_or_class_name_are_answered(
    session: DemoSession, images: list[Path], class_name: str, expected: str
) -> None:
    run = session.predict(images, class_name)
    assert expected in run.message
    assert run.results == [] and run.csv_path is None


def test_missing_weights_offline_give_the_clis_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, session: DemoSession
) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    monkeypatch.delenv("ADACLIP_WEIGHTS_DIR", raising=False)
    with pytest.raises(WeightsNotFoundError) as clip_error:
        download_clip_weights("ViT-B-32", "openai")
    with pytest.raises(WeightsNotFoundError) as checkpoint_error:
        download_released_checkpoint("mvtec_colondb")
    offline = DemoSession(ModelSpec("ViT-B-32", "openai", "mvtec_colondb", 224), device="cpu", offline=True)
    run = offline.predict(TIRE_IMAGES[:1], "tire")
    assert "The model cannot be built: 2 weight file(s) are missing." in run.message
    assert str(clip_error.value) in run.message  # the command line's messages, word for word
    assert str(checkpoint_error.value) in run.message
    assert "ADACLIP_WEIGHTS_DIR" in run.message
    assert offline.model is None and run.results == []


def test_smoke_session_says_its_outputs_mean_nothing(tmp_path: Path) -> None:
    from anomalib_adaclip.config import SMOKE_NOTE

    run = DemoSession(smoke=True, device="cpu", output_dir=tmp_path).predict(example_images()[:1], "tire")
    assert run.messages[0] == f"**{SMOKE_NOTE}**"
    with zipfile.ZipFile(run.zip_path) as archive:
        assert archive.read("WARNING.txt").decode().strip() == SMOKE_NOTE


def test_example_images_ship_with_their_licence() -> None:
    images = example_images()
    assert len(images) == 3
    assert sum(path.stat().st_size for path in images) < 150_000
    readme = (images[0].parent / "README.md").read_text()
    assert "CC BY-NC-SA 4.0" in readme and "MVTec" in readme


def test_prompt_sentences_are_those_of_the_prompts_command(capsys: pytest.CaptureFixture) -> None:
    from anomalib_adaclip.cli.prompts import main

    assert main(["--class-name", "metal-nut"]) == 0
    assert capsys.readouterr().out.strip() == sentences_text(AdaCLIPConfig(), "metal-nut")


def test_importing_the_package_and_the_session_does_not_import_gradio() -> None:
    code = (
        "import sys, anomalib_adaclip, anomalib_adaclip.demo, anomalib_adaclip.cli.dispatch; "
        "assert 'gradio' not in sys.modules, 'gradio imported'"
    )
    env_path = str(PROJECT_ROOT)
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=False,
        env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_sessions_sharing_an_output_folder_delete_only_their_own_old_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from anomalib_adaclip.demo import session as session_module

    monkeypatch.setattr(session_module, "KEEP_RUNS", 2)
    image = example_images()[:1]
    first = DemoSession(smoke=True, device="cpu", output_dir=tmp_path)
    other = DemoSession(smoke=True, device="cpu", output_dir=tmp_path)  # another demo process on the same folder
    kept = first.predict(image, "tire")
    runs = [other.predict(image, "tire") for _ in range(3)]
    assert kept.zip_path.is_file() and kept.csv_path.is_file()  # the other session never deletes it
    assert not runs[0].zip_path.parent.exists()  # its own oldest beyond KEEP_RUNS is deleted
    assert all(run.zip_path.is_file() for run in runs[1:])
    assert len({run.zip_path.parent for run in [kept, *runs]}) == 4  # a folder of its own per run


def test_a_full_disk_while_writing_the_files_is_a_message_and_leaves_no_half_written_zip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from anomalib_adaclip.demo import session as session_module

    class FullDisk(zipfile.ZipFile):
        def write(self, *args: object, **kwargs: object) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(session_module.zipfile, "ZipFile", FullDisk)
    run = DemoSession(smoke=True, device="cpu", output_dir=tmp_path).predict(example_images()[:1], "tire")
    assert run.results[0].scored and run.csv_path is None and run.zip_path is None
    (message,) = [message for message in run.messages if "No space left on device" in message]
    assert "The results shown here are complete" in message
    assert list(tmp_path.glob("run-*")) == []
