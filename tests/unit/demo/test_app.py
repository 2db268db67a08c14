"""The demo page's handler without a browser: every bad request comes back as text, nothing raises out of it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from anomalib_adaclip.components.prediction_writer import CSV_COLUMNS
from anomalib_adaclip.demo import DemoModelSettings, DemoSession, SessionBank, example_images

gr = pytest.importorskip("gradio")  # before the page's module, which imports gradio: skipped, not an error

from anomalib_adaclip.demo.app import CHECKPOINT_FILE_CHOICE, build_app  # noqa: E402


def handler(session: DemoSession) -> Callable[..., tuple[Any, ...]]:
    """The function behind the page's Run button."""
    app = build_app(session, class_name="tire")
    assert app.title == "AdaCLIP zero-shot anomaly detection"
    return next(function.fn for function in app.fns.values() if function.name == "predict")


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., tuple[Any, ...]]:
    predict = handler(DemoSession(smoke=True, device="cpu", output_dir=tmp_path_factory.mktemp("runs")))

    def run(files: list[str], class_name: str = "tire", references: list[str] | None = None) -> tuple[Any, ...]:
        return predict(files, class_name, "none (smoke test)", None, "", "", 0.5, 0.5, False, references)

    return run


def test_references_make_the_run_few_shot_and_a_bad_one_comes_back_as_text(
    smoke_run: Callable[..., tuple[Any, ...]], tmp_path: Path
) -> None:
    image, reference = (str(path) for path in example_images()[:2])
    status = smoke_run([image], references=[reference])[0]
    assert "Few-shot: 1 known-good reference(s) of 'tire'" in status and "Scored 1 of 1 image(s)" in status
    assert "Zero-shot: no known-good references" in smoke_run([image])[0]
    status, gallery, table, csv_path, _, _ = smoke_run([image], references=[_write_bad("text", tmp_path)])
    assert "known-good reference(s) below cannot be used" in status and "not an image that PIL can read" in status
    assert gallery == [] and table == [] and csv_path is None


def test_run_returns_status_gallery_table_and_files(smoke_run: Callable[..., tuple[Any, ...]]) -> None:
    status, gallery, table, csv_path, zip_path, bank_line = smoke_run([str(path) for path in example_images()])
    assert "Scored 3 of 3 image(s)" in status
    assert bank_line == "This session's rarity bank is empty."  # online scoring off: nothing entered a bank
    assert len(gallery) == 3 and len(table) == 3
    assert Path(csv_path).read_text().splitlines()[0] == ",".join(CSV_COLUMNS)
    assert Path(zip_path).is_file()


def _write_bad(kind: str, folder: Path) -> str:
    path = folder / f"{kind}.png"
    if kind == "text":
        path.write_text("not an image")
    elif kind == "corrupt":
        path.write_bytes(example_images()[0].read_bytes()[:3000])
    else:
        Image.fromarray(np.full((32, 32), 50000, dtype=np.uint16)).save(path)
    return str(path)


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("text", "not an image that PIL can read"),
        ("corrupt", "truncated or damaged"),
        ("gray16", "16-bit grayscale"),
    ],
)
def test_bad_files_come_back_as_text(
    smoke_run: Callable[..., tuple[Any, ...]], tmp_path: Path, kind: str, expected: str
) -> None:
    status, gallery, table, csv_path, zip_path, _ = smoke_run([_write_bad(kind, tmp_path)])
    assert expected in status and expected in table[0][-1]
    assert gallery == [] and csv_path is None and zip_path is None


@pytest.mark.parametrize(
    ("files", "class_name", "expected"),
    [([], "tire", "Add one or more images first"), (["x.png"], "", "Enter a class name")],
)
def test_missing_images_or_class_name_come_back_as_text(
    smoke_run: Callable[..., tuple[Any, ...]], files: list[str], class_name: str, expected: str
) -> None:
    assert expected in smoke_run(files, class_name)[0]


def test_missing_weights_and_missing_checkpoint_file_come_back_as_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    monkeypatch.delenv("ADACLIP_WEIGHTS_DIR", raising=False)
    session = DemoSession(DemoModelSettings("ViT-B-32", "openai", "mvtec_colondb", 224), device="cpu", offline=True)
    predict = handler(session)
    image = [str(example_images()[0])]
    status = predict(image, "tire", "mvtec_colondb", None, "ViT-B-32", "openai", 0.5, 0.5, False)[0]
    assert "2 weight file(s) are missing" in status and "ADACLIP_WEIGHTS_DIR" in status
    status = predict(image, "tire", CHECKPOINT_FILE_CHOICE, None, "ViT-B-32", "openai", 0.5, 0.5, False)[0]
    assert status == "Choose a checkpoint file first (or one of the released checkpoints)."
    status = predict(image, "tire", "mvtec_colondb", None, " ", "openai", 0.5, 0.5, False)[0]
    assert status.startswith("Name the backbone and its weights")


def test_each_browser_session_has_its_own_bank_in_gradio_state_and_the_page_counts_it(tmp_path: Path) -> None:
    """The page's bank is a gr.State (one per browser session, emptied when gradio deletes it); Run and New bank."""
    app = build_app(DemoSession(smoke=True, device="cpu", output_dir=tmp_path), class_name="tire")
    (state,) = [block for block in app.blocks.values() if isinstance(block, gr.State)]
    assert isinstance(state.value, SessionBank) and state.value.counts() == {}
    functions = {function.name: function for function in app.fns.values()}
    assert state in functions["predict"].inputs and state in functions["new_bank"].inputs
    rarity = next(block for block in app.blocks.values() if getattr(block, "elem_id", None) == "rarity")
    assert isinstance(rarity, gr.Checkbox) and rarity in functions["predict"].inputs

    def run(files: list[str], bank: SessionBank, mutual: bool = False) -> tuple[Any, ...]:
        return functions["predict"].fn(files, "tire", "", None, "", "", 0.5, 0.5, False, None, mutual, True, bank)

    images = [str(path) for path in example_images()]
    first, second = SessionBank(), SessionBank()  # two browser sessions' states
    status, *_, bank_line = run(images[:2], first)
    assert "Online (rarity) scoring: each image was also scored" in status and "Scored 2 of 2" in status
    assert bank_line == "This session's rarity bank holds 2 image(s) of 'tire'."
    assert run(images[2:], second)[-1] == "This session's rarity bank holds 1 image(s) of 'tire'."
    status, *_, bank_line = run(images[:2], first, mutual=True)
    assert "cannot be combined with mutual scoring" in status and "2 image(s) of 'tire'" in bank_line
    assert functions["new_bank"].fn(first) == "A new bank. This session's rarity bank is empty."
    assert first.counts() == {} and second.counts() == {"tire": 1}
    state.delete_callback(second)  # what gradio calls when it deletes a closed session's state
    assert second.counts() == {}
