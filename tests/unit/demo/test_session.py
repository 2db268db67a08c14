"""The demo's session without a browser: the same numbers as ``anomalib predict``, its messages, and bad input answered.

The model is the micro CLIP of ``tests/conftest.py`` with prompts saved as a checkpoint file (``demo_settings``), so
the session and anomalib's ``Engine.predict`` build exactly the same model. The kept models are tested in
``test_models.py``, the run folders in ``test_run_files.py``, and ``score_images`` against ``Engine.predict`` in
``tests/unit/components/test_image_scoring.py``.
"""

from __future__ import annotations

import csv
import dataclasses
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from anomalib_adaclip import AdaCLIP, MutualScoring
from anomalib_adaclip.components.prediction_table import CSV_COLUMNS
from anomalib_adaclip.config import AdaCLIPConfig
from anomalib_adaclip.demo import DemoModelSettings, DemoSession, example_images
from anomalib_adaclip.model.prompting import sentences_text
from tests.conftest import MICRO_BACKBONE, PROJECT_ROOT, TIRE_ROOT
from tests.helpers import demo_twin, make_engine

TIRE_IMAGES = [TIRE_ROOT / "tire" / "test" / "cut" / "000.png", TIRE_ROOT / "tire" / "test" / "good" / "001.png"]


@pytest.fixture(scope="module")
def session(demo_settings: DemoModelSettings, tmp_path_factory: pytest.TempPathFactory) -> DemoSession:
    return DemoSession(demo_settings, device="cpu", output_dir=tmp_path_factory.mktemp("demo_runs"))


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames or ()) == CSV_COLUMNS
        return list(reader)


def test_scores_and_csv_equal_anomalib_predict_on_the_same_files(
    session: DemoSession, demo_settings: DemoModelSettings, micro_weights: Path, tmp_path: Path
) -> None:
    images = tmp_path / "images"
    images.mkdir()
    for source in TIRE_IMAGES:
        shutil.copy(source, images / f"{source.parent.name}_{source.name}")
    files = sorted(images.iterdir())

    run = session.predict(files, "tire", image_threshold=0.5, pixel_threshold=0.5)
    assert [result.name for result in run.results] == [path.name for path in files]
    assert all(result.scored and not result.error for result in run.results), run.message

    model = demo_twin(micro_weights, demo_settings.checkpoint)
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
        backbone=MICRO_BACKBONE, backbone_weights=str(micro_weights), image_size=112, feature_layers=[1, 2, 3, 4]
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


def test_overlays_gallery_and_table(session: DemoSession) -> None:
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
    assert run.zip_path.is_file() and run.csv_path.is_file()  # their contents: test_run_files.py


def test_model_is_built_once_and_rebuilt_with_a_message_when_the_checkpoint_changes(
    demo_settings: DemoModelSettings, prompt_checkpoints: list[Path], tmp_path: Path
) -> None:
    session = DemoSession(demo_settings, device="cpu", output_dir=tmp_path)
    first = session.predict(example_images()[:1], "tire")
    assert first.messages[0].startswith("Built the model (checkpoint prompts_1.pt")
    model = session.model
    second = session.predict(example_images()[:1], "tire", tiling=True)
    assert session.model is model
    assert not any("Built" in message or "Rebuilt" in message for message in second.messages)
    assert second.results[0].score != first.results[0].score  # tiles at full resolution: another view
    other = dataclasses.replace(demo_settings, checkpoint=str(prompt_checkpoints[1]))
    third = session.predict(example_images()[:1], "tire", settings=other)
    assert session.model is not model
    assert third.messages[0].startswith("Rebuilt the model because its settings changed (checkpoint: ")
    assert "prompts_2.pt" in third.messages[0]


TRAIN_GOOD = sorted((TIRE_ROOT / "tire" / "train" / "good").glob("*.png"))


def _copies(paths: list[Path], folder: Path) -> list[Path]:
    folder.mkdir(parents=True)
    return [Path(shutil.copy(path, folder / path.name)) for path in paths]


def test_few_shot_run_equals_anomalib_predict_with_the_same_references(
    session: DemoSession, demo_settings: DemoModelSettings, micro_weights: Path, tmp_path: Path
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

    model = demo_twin(
        micro_weights, demo_settings.checkpoint, few_shot={"k_shot": 2, "source": str(tmp_path / "references")}
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


def test_tiled_few_shot_run_equals_anomalib_predict_and_tiling_refills_the_memory(
    session: DemoSession, demo_settings: DemoModelSettings, micro_weights: Path, tmp_path: Path
) -> None:
    # the 150x200 example images: references and query cut into 6 tiles each at 112 px
    references = _copies(example_images()[:2], tmp_path / "references")
    query = _copies(example_images()[2:], tmp_path / "images")
    run = session.predict(query, "tire", references=references, tiling=True)
    assert run.k_shot == 2 and run.results[0].scored, run.message
    model = demo_twin(
        micro_weights,
        demo_settings.checkpoint,
        tiling=True,
        few_shot={"k_shot": 2, "source": str(tmp_path / "references")},
    )
    engine = make_engine(tmp_path / "engine")
    (item,) = [item for batch in engine.predict(model, data_path=tmp_path / "images") for item in batch]
    assert run.results[0].score == pytest.approx(float(item.pred_score), abs=1e-6)
    untiled = session.predict(query, "tire", references=references)
    assert "(read in " in untiled.message  # whole images now: the memory is refilled


def test_references_make_a_run_few_shot_and_say_whether_they_were_read_or_kept(
    demo_settings: DemoModelSettings, tmp_path: Path
) -> None:
    session = DemoSession(demo_settings, device="cpu", output_dir=tmp_path / "runs")
    query = example_images()[:1]  # 150x200 queries, 600x800 references: both resized to the input size
    first = _copies(TRAIN_GOOD[:2], tmp_path / "first")

    zero = session.predict(query, "tire")
    assert zero.messages[0].startswith("Built the model (") and zero.k_shot == 0
    few = session.predict(query, "tire", references=first)
    assert few.messages[0].startswith("Built the few-shot model (")
    assert few.messages[1].startswith("Few-shot: 2 known-good reference(s) of 'tire' (read in ")
    assert few.messages[1].endswith("s); each image is compared with them as well as with the prompts.")
    model = session.model
    assert few.results[0].scored and few.k_shot == 2 and few.results[0].score != zero.results[0].score

    repeated = shutil.copy(first[0], tmp_path / "same_again.png")  # the same contents twice count once
    twice = session.predict(query, "tire", references=[*first, repeated])
    assert session.model is model and twice.k_shot == 2
    assert "Few-shot: 2 known-good reference(s) of 'tire' (kept from the previous run)" in twice.messages[0]
    assert "same contents as an earlier one are used once: same_again.png" in twice.message
    assert twice.results[0].score == few.results[0].score

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


def test_images_above_the_size_limit_are_refused_with_the_way_out(
    demo_settings: DemoModelSettings, tmp_path: Path
) -> None:
    session = DemoSession(
        demo_settings, device="cpu", max_megapixels=0.4, output_dir=tmp_path
    )  # the tire images are 0.48
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


def test_missing_weights_offline_are_answered_as_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    monkeypatch.delenv("ADACLIP_WEIGHTS_DIR", raising=False)
    released = DemoModelSettings("ViT-B-32", "openai", "mvtec_colondb", 224)
    offline = DemoSession(released, device="cpu", offline=True, output_dir=tmp_path / "runs")
    run = offline.predict(TIRE_IMAGES[:1], "tire")
    assert run.messages[0].startswith("The model cannot be built: 2 weight file(s) are missing.\n\n```text\n")
    assert "ADACLIP_WEIGHTS_DIR" in run.message and "ViT-B-32" in run.message and "mvtec_colondb" in run.message
    assert offline.model is None and run.results == [] and run.csv_path is None


def test_smoke_session_says_its_outputs_mean_nothing(tmp_path: Path) -> None:
    from anomalib_adaclip.config import SMOKE_NOTE

    run = DemoSession(smoke=True, device="cpu", output_dir=tmp_path).predict(example_images()[:1], "tire")
    assert run.messages[0] == f"**{SMOKE_NOTE}**" and run.smoke
    assert run.results[0].scored and run.zip_path.is_file()  # the zip's warning: test_run_files.py


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
