"""Images and masks as cameras and folders hold them, through anomalib's data path and through the torch API.

Every case either works, with a result that is checked against an independent truth (the same pixels in a plain RGB
file score the same), or fails before any batch runs, with an error that names the file or argument and what was
expected. End-to-end runs use anomalib's ``Folder`` and ``PredictDataset`` through the ``Engine`` on a tiny random
CLIP (MICRO_BACKBONE at 112 px); the case files are written in a temporary folder.
"""

from __future__ import annotations

import io
import logging
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from anomalib.data import Folder
from PIL import Image, ImageFile

from anomalib_adaclip import AdaCLIP
from anomalib_adaclip.components.input_files import InputFilesError, check_image_file, validate_files
from tests.helpers import make_adaclip, make_engine

IMAGE_SIZE = 112


# ----------------------------------------------------------------------------------------------------------------------
# Case files
# ----------------------------------------------------------------------------------------------------------------------
def _photo(width: int = 160, height: int = 120, seed: int = 0) -> np.ndarray:
    """A smooth RGB image with some structure (gradients and a disc), uint8."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x / width, y / height, ((x - width / 2) ** 2 + (y - height / 2) ** 2 < (height / 4) ** 2)], -1)
    return np.clip(base * 200 + rng.integers(0, 40, (height, width, 3)), 0, 255).astype(np.uint8)


def _jpeg_with_exif_orientation(array: np.ndarray, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "JPEG", quality=95, exif=exif.tobytes())
    return buffer.getvalue()


def write_accepted(folder: Path) -> dict[str, tuple[Path, Path]]:
    """Files that work, each with a plain RGB PNG of the pixels anomalib should see (its "twin")."""
    folder.mkdir(parents=True)
    photo = _photo()
    pairs: dict[str, tuple[Path, Path]] = {}

    def add(name: str, image: Image.Image, suffix: str = ".png", **save: object) -> None:
        path = folder / f"{name}{suffix}"
        image.save(path, **save)
        twin = folder / f"{name}_twin.png"
        with Image.open(path) as reread:
            reread.convert("RGB").save(twin)  # the twin of a lossy file is its decoded pixels
        pairs[name] = (path, twin)

    gray = Image.fromarray(photo).convert("L")
    add("grayscale", gray)
    rgba = Image.fromarray(np.dstack([photo, np.full(photo.shape[:2], 90, np.uint8)]), "RGBA")
    add("rgba", rgba)
    add("palette", Image.fromarray(photo).quantize(64))
    add("cmyk", Image.fromarray(photo).convert("CMYK"), ".jpg", quality=95)
    add("progressive", Image.fromarray(photo), ".jpg", quality=90, progressive=True)
    add("nonsquare", Image.fromarray(_photo(300, 60, seed=1)))
    add("tiny", Image.fromarray(_photo(5, 5, seed=2)))  # smaller than one 14-pixel patch
    # 16-bit RGB PNG: PIL reads it as 8-bit RGB (the high bytes).
    path16 = folder / "rgb16.png"
    high = photo.astype(np.uint16) * 257
    _write_png16_rgb(path16, high)
    twin16 = folder / "rgb16_twin.png"
    Image.fromarray(photo).save(twin16)
    pairs["rgb16"] = (path16, twin16)
    # EXIF orientation 6 (rotate 90 on display): anomalib scores the stored pixels, as the same JPEG without EXIF.
    exif_path = folder / "exif_rotated.jpg"
    exif_path.write_bytes(_jpeg_with_exif_orientation(photo, 6))
    plain = folder / "exif_rotated_twin.jpg"
    Image.fromarray(photo).save(plain, quality=95)
    pairs["exif_rotated"] = (exif_path, plain)
    return pairs


def _write_png16_rgb(path: Path, array: np.ndarray) -> None:
    """A 16-bit-per-channel RGB PNG (PIL cannot write one), written chunk by chunk."""
    import struct
    import zlib

    height, width, _ = array.shape
    raw = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in array)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    )


def write_refused(folder: Path) -> dict[str, tuple[Path, str]]:
    """Files anomalib cannot read correctly, with the text the error must give for each."""
    folder.mkdir(parents=True)
    photo = _photo()
    cases: dict[str, tuple[Path, str]] = {}
    gray16 = folder / "gray16.png"
    Image.fromarray(photo[..., 0].astype(np.uint16) * 16).save(gray16)  # 12-bit data in a 16-bit PNG
    cases["gray16"] = (gray16, "16-bit grayscale")
    buffer = io.BytesIO()
    Image.fromarray(photo).save(buffer, "JPEG", quality=95)
    truncated_jpeg = folder / "truncated.jpg"
    truncated_jpeg.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    cases["truncated_jpeg"] = (truncated_jpeg, "truncated or damaged")
    buffer = io.BytesIO()
    Image.fromarray(photo).save(buffer, "PNG")
    truncated_png = folder / "truncated.png"
    truncated_png.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) * 2 // 3])
    cases["truncated_png"] = (truncated_png, "truncated or damaged")
    corrupt = folder / "corrupt.png"
    data = bytearray(buffer.getvalue())
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)  # damaged in the middle: the chunk checksum fails
    corrupt.write_bytes(bytes(data))
    cases["corrupt_png"] = (corrupt, "truncated or damaged")
    text = folder / "notes.png"
    text.write_text("not an image, despite its name\n")
    cases["not_an_image"] = (text, "not an image that PIL can read")
    return cases


@pytest.fixture(scope="module")
def accepted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    return write_accepted(tmp_path_factory.mktemp("accepted") / "images")


@pytest.fixture(scope="module")
def refused(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str]]:
    return write_refused(tmp_path_factory.mktemp("refused") / "images")


# ----------------------------------------------------------------------------------------------------------------------
# Files one by one
# ----------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name", ["grayscale", "rgba", "palette", "cmyk", "progressive", "nonsquare", "tiny", "rgb16", "exif_rotated"]
)
def test_accepted_images_pass_the_check(accepted: dict[str, tuple[Path, Path]], name: str) -> None:
    problems = check_image_file(accepted[name][0])
    assert not [problem for problem in problems if problem.fatal]
    if name == "exif_rotated":  # works, with a warning that anomalib scores the stored orientation
        assert len(problems) == 1 and "EXIF orientation is 6" in problems[0].problem
    else:
        assert problems == []


@pytest.mark.parametrize("name", ["gray16", "truncated_jpeg", "truncated_png", "corrupt_png", "not_an_image"])
def test_refused_images_name_the_problem(refused: dict[str, tuple[Path, str]], name: str) -> None:
    path, expected = refused[name]
    problems = check_image_file(path)
    assert len(problems) == 1 and problems[0].fatal
    assert problems[0].path == str(path) and expected in problems[0].problem and problems[0].remedy


def test_missing_file_and_directory(tmp_path: Path) -> None:
    assert check_image_file(tmp_path / "nope.png")[0].problem == "the file does not exist"
    assert check_image_file(tmp_path)[0].problem == "the path is a directory"


def test_truncated_images_are_tolerated_when_the_user_allows_them(
    refused: dict[str, tuple[Path, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    for name in ("truncated_jpeg", "truncated_png"):
        problems = check_image_file(refused[name][0])
        assert not [problem for problem in problems if problem.fatal], name
        assert [problem.problem for problem in problems if "LOAD_TRUNCATED_IMAGES is set" in problem.problem] == (
            [] if name == "truncated_jpeg" else [problems[0].problem]
        )


@pytest.fixture(scope="module")
def masks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("masks")
    shape = (120, 160)
    region = np.zeros(shape, np.uint8)
    region[40:80, 50:100] = 1
    paths = {"image": folder / "image.png"}
    Image.fromarray(_photo()).save(paths["image"])
    for name, array in {
        "0_1": region,
        "0_254": region * 254,
        "0_255": region * 255,
        "half_size": np.array(Image.fromarray(region * 255).resize((80, 60), Image.NEAREST)),
        "other_size": np.zeros((100, 100), np.uint8),
        "grey_levels": np.where(region, 255, 0).astype(np.uint8) // np.array([1, 2])[np.arange(160) % 2],
        "empty": np.zeros(shape, np.uint8),
    }.items():
        paths[name] = folder / f"{name}.png"
        Image.fromarray(array.astype(np.uint8)).save(paths[name])
    return paths


@pytest.mark.parametrize(
    ("name", "fatal", "expected"),
    [
        ("0_1", None, ""),
        ("0_254", None, ""),
        ("0_255", None, ""),
        ("half_size", False, "a scaled copy of its image's 160x120"),
        ("other_size", True, "100x100, but its image"),
        ("grey_levels", False, "grey levels"),
        ("empty", False, "it is empty"),
    ],
)
def test_masks(masks: dict[str, Path], name: str, fatal: bool | None, expected: str) -> None:
    pair = [(str(masks["image"]), str(masks[name]))]
    if fatal:
        with pytest.raises(InputFilesError, match=re.escape(expected)):
            validate_files(pair)
        return
    problems = validate_files(pair)
    if fatal is None:
        assert problems == []
    else:
        assert len(problems) == 1 and not problems[0].fatal and expected in problems[0].problem


# ----------------------------------------------------------------------------------------------------------------------
# Through anomalib's Engine
# ----------------------------------------------------------------------------------------------------------------------
def test_accepted_images_score_as_their_plain_rgb_twins(
    accepted: dict[str, tuple[Path, Path]], micro_weights: Path, tmp_path: Path
) -> None:
    folder = next(iter(accepted.values()))[0].parent
    model = make_adaclip(micro_weights, classes={"name": "part"})
    batches = make_engine(tmp_path).predict(model, data_path=folder)
    scores = {Path(batch.image_path[0]).name: batch.pred_score.item() for batch in batches}
    maps = {Path(batch.image_path[0]).name: batch.anomaly_map for batch in batches}
    assert len(scores) == 2 * len(accepted)
    for name, (path, twin) in accepted.items():
        assert np.isfinite(scores[path.name]) and 0.0 <= scores[path.name] <= 1.0, name
        assert scores[path.name] == scores[twin.name], name
        assert torch.equal(maps[path.name], maps[twin.name]), name
        assert maps[path.name].shape[-2:] == (IMAGE_SIZE, IMAGE_SIZE)


def test_refused_images_stop_predict_before_any_batch_and_every_file_is_listed(
    refused: dict[str, tuple[Path, str]], micro_weights: Path, tmp_path: Path
) -> None:
    folder = next(iter(refused.values()))[0].parent
    Image.fromarray(_photo()).save(folder / "fine.png")
    model = make_adaclip(micro_weights, classes={"name": "part"})
    with pytest.raises(InputFilesError) as caught:
        make_engine(tmp_path).predict(model, data_path=folder)
    message = str(caught.value)
    assert f"cannot use {len(refused)} of the {len(refused) + 1} image and mask files of the prediction data" in message
    for path, expected in refused.values():
        assert f"{path} (image): " in message and expected in message
    assert "fine.png" not in message and "documentation: Guides, Input handling" in message


def _folder_dataset(root: Path, mask: np.ndarray | None = None) -> Folder:
    for split in ("good", "bad"):
        (root / split).mkdir(parents=True)
    for index in range(2):
        Image.fromarray(_photo(seed=index)).save(root / "good" / f"{index:03d}.png")
    Image.fromarray(_photo(seed=5)).save(root / "bad" / "000.png")
    if mask is not None:
        (root / "mask").mkdir()
        Image.fromarray(mask).save(root / "mask" / "000_mask.png")
    return Folder(
        name="cases",
        root=root,
        normal_dir="good",
        normal_test_dir="good",
        abnormal_dir="bad",
        mask_dir="mask" if mask is not None else None,
        val_split_mode="same_as_test",
        num_workers=0,
    )


@pytest.mark.parametrize("high", [1, 254])
def test_masks_with_any_positive_value_are_anomalous(micro_weights: Path, tmp_path: Path, high: int) -> None:
    mask = np.zeros((120, 160), np.uint8)
    mask[40:80, 50:100] = high
    datamodule = _folder_dataset(tmp_path / "data", mask)
    datamodule.setup()
    # anomalib's reading of the mask (before any model resize): every value above 0 is anomalous.
    sample = next(item for item in datamodule.test_data if item.gt_label == 1)
    assert int(sample.gt_mask.sum()) == 40 * 50
    results = make_engine(tmp_path / "run").test(
        make_adaclip(micro_weights, classes={"name": "part"}), datamodule=datamodule
    )
    assert {"pixel_AUROC", "pixel_F1Max"} <= set(results[0])


def test_mask_of_another_size_stops_the_run(micro_weights: Path, tmp_path: Path) -> None:
    datamodule = _folder_dataset(tmp_path / "data", np.full((50, 50), 255, np.uint8))
    with pytest.raises(InputFilesError, match=r"000_mask.png \(mask\): 50x50, but its image .*000.png is 160x120"):
        make_engine(tmp_path / "run").test(make_adaclip(micro_weights, classes={"name": "part"}), datamodule=datamodule)


def test_folder_without_images_is_anomalib_error_naming_the_folder(micro_weights: Path, tmp_path: Path) -> None:
    (tmp_path / "data" / "good").mkdir(parents=True)
    datamodule = Folder(name="empty", root=tmp_path / "data", normal_dir="good", num_workers=0)
    with pytest.raises(RuntimeError, match=f"Found 0 DirType.NORMAL images in {tmp_path / 'data' / 'good'}"):
        make_engine(tmp_path / "run").test(make_adaclip(micro_weights, classes={"name": "part"}), datamodule=datamodule)
    with pytest.raises(ValueError, match=f"Found 0 images in {tmp_path / 'data' / 'good'}"):
        make_engine(tmp_path / "run").predict(
            make_adaclip(micro_weights, classes={"name": "part"}), data_path=tmp_path / "data" / "good"
        )


def test_warnings_for_files_that_work_differently_than_expected(
    accepted: dict[str, tuple[Path, Path]], micro_weights: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "exif"
    folder.mkdir()
    rotated = accepted["exif_rotated"][0]
    (folder / rotated.name).write_bytes(rotated.read_bytes())
    with caplog.at_level(logging.WARNING, logger="anomalib_adaclip.components.input_files"):
        make_engine(tmp_path / "run").predict(make_adaclip(micro_weights, classes={"name": "part"}), data_path=folder)
    assert "1 file(s) of the prediction data work with AdaCLIP" in caplog.text
    assert "EXIF orientation is 6" in caplog.text and "exif_transpose" in caplog.text


@pytest.mark.slow
def test_very_large_image_is_resized_and_scored(micro_weights: Path, tmp_path: Path) -> None:
    """An 8000x6000 photo (a JPEG, cheap to write): anomalib reads it whole, the pre-processor resizes it."""
    folder = tmp_path / "large"
    folder.mkdir()
    large = np.array(Image.fromarray(_photo(800, 600)).resize((8000, 6000), Image.BILINEAR))
    Image.fromarray(large).save(folder / "large.jpg", quality=80)
    (batch,) = make_engine(tmp_path / "run").predict(
        make_adaclip(micro_weights, classes={"name": "part"}), data_path=folder / "large.jpg"
    )
    assert batch.image.shape[-2:] == (IMAGE_SIZE, IMAGE_SIZE)
    assert torch.isfinite(batch.anomaly_map).all() and 0.0 <= batch.pred_score.item() <= 1.0


# ----------------------------------------------------------------------------------------------------------------------
# Through the torch API
# ----------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lightning_model(micro_weights: Path) -> AdaCLIP:
    return make_adaclip(micro_weights, classes={"name": "part"}).eval()


@pytest.mark.parametrize(
    ("images", "error", "message"),
    [
        (torch.rand(3, 64, 64), ValueError, r"`batch` must have shape \[B, 3, H, W\] .*got \(3, 64, 64\)"),
        (torch.rand(1, 1, 64, 64), ValueError, r"grayscale: image.expand"),
        (torch.rand(1, 4, 64, 64), ValueError, r"RGBA: image\[:, :3\]"),
        (torch.randint(0, 255, (1, 3, 64, 64), dtype=torch.uint8), TypeError, r"got dtype torch.uint8 .* / 255"),
        (torch.full((1, 3, 64, 64), float("nan")), ValueError, "12288 NaN or infinite"),
        (torch.rand(1, 3, 64, 64) * 255, ValueError, r"raw RGB values in \[0, 1\].*divide 8-bit values by 255"),
        (torch.rand(1, 3, 64, 64) - 0.5, ValueError, r"raw RGB values in \[0, 1\]"),
        (np.zeros((1, 3, 64, 64), np.float32), TypeError, "got ndarray"),
    ],
    ids=["rank-3", "1-channel", "4-channels", "uint8", "nan", "0-255", "normalised", "numpy"],
)
def test_lightning_forward_rejects_bad_tensors(
    lightning_model: AdaCLIP, images: object, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        lightning_model(images)


def test_lightning_forward_takes_any_size(lightning_model: AdaCLIP) -> None:
    """Raw images of any size, even smaller than a patch, are resized to image_size by the pre-processor."""
    generator = torch.Generator().manual_seed(0)
    for height, width in [(5, 5), (60, 300)]:
        output = lightning_model(torch.rand(2, 3, height, width, generator=generator))
        assert output.anomaly_map.shape[-2:] == (IMAGE_SIZE, IMAGE_SIZE)
        assert torch.isfinite(output.pred_score).all()


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")], ids=["nan", "inf", "-inf"])
def test_torch_model_rejects_non_finite_pixels(lightning_model: AdaCLIP, bad: float) -> None:
    images = torch.zeros(2, 3, IMAGE_SIZE, IMAGE_SIZE)
    images[1, 0, 3, 4] = bad
    with pytest.raises(ValueError, match=r"`images` holds 1 NaN or infinite value\(s\)"):
        lightning_model.model(images)
