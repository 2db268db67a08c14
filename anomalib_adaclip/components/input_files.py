"""The input files of a run: the image and mask files anomalib's data modules will feed to AdaCLIP, checked first.

anomalib reads every image with ``PIL.Image.open(path).convert("RGB")`` and every mask with ``.convert("L") > 0``
(``anomalib.data.utils.image.read_image`` / ``read_mask``), inside data-loader workers. Some files then fail late with
errors that do not name the file (a truncated JPEG: "image file is truncated"), and some silently become garbage: a
16-bit grayscale PNG turns white, because the conversion clips every value above 255. :func:`validate_dataset` looks
at every file of a data set first, cheaply (headers; PNG checksums; JPEG files that do not end in an end-of-image
marker are decoded at 1/8 scale; other formats and masks are decoded), and

- raises one :class:`InputFilesError` that lists every file AdaCLIP cannot use, what is wrong and how to fix it;
- logs one warning that lists the files that work but may not give what the user expects (EXIF orientation, masks
  of another resolution, grey-level or empty masks).

:class:`InputFileCheck`, a callback that :class:`~anomalib_adaclip.AdaCLIP` installs by default, runs it on the data
loaders at the start of every validation, test, prediction and training run (documentation:
docs/source/guides/inputs.md). A file is checked once per process (until it changes).

Example:
    >>> from anomalib_adaclip.components.input_files import check_image_file
    >>> check_image_file("does/not/exist.png")[0].problem
    'the file does not exist'
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
from lightning.pytorch import Callback
from PIL import Image, ImageFile, UnidentifiedImageError

if TYPE_CHECKING:
    from lightning.pytorch import LightningModule, Trainer

logger = logging.getLogger(__name__)

__all__ = [
    "FileProblem",
    "InputFileCheck",
    "InputFilesError",
    "check_image_file",
    "dataset_files",
    "iter_loader_datasets",
    "loader_list",
    "validate_dataset",
    "validate_files",
]

# PIL modes whose convert("RGB") clips or truncates values instead of scaling them (16/32-bit integer, float) or
# drops colour information (LAB).
_GARBAGE_IMAGE_MODES = {
    "I;16": "16-bit grayscale",
    "I;16L": "16-bit grayscale",
    "I;16B": "16-bit grayscale",
    "I;16N": "16-bit grayscale",
    "I": "32-bit integer grayscale",
    "F": "32-bit float grayscale",
}
_EXIF_ORIENTATION = 0x0112
_ROTATED_ORIENTATIONS = {5, 6, 7, 8}  # 90 or 270 degrees: the displayed photo has width and height swapped
_JPEG_END = b"\xff\xd9"
_MAX_LISTED = 25


@dataclass(frozen=True)
class FileProblem:
    """Something wrong or surprising about one file.

    Attributes:
        path: The file.
        role: ``"image"`` or ``"mask"``.
        problem: What is wrong.
        remedy: How to fix it (empty when nothing needs fixing).
        fatal: Whether AdaCLIP refuses the file (``False``: it works, with the difference the problem names).
    """

    path: str
    role: str
    problem: str
    remedy: str = ""
    fatal: bool = True

    def describe(self) -> str:
        """One entry of the error or warning list."""
        return f"{self.path} ({self.role}): {self.problem}" + (f". {self.remedy}" if self.remedy else "")


class InputFilesError(ValueError):
    """Image or mask files that AdaCLIP cannot use; the message lists every one of them."""


@dataclass(frozen=True)
class _Header:
    size: tuple[int, int]
    orientation: int


def _orientation(image: Image.Image) -> int:
    # PNG keeps EXIF in an eXIf chunk, which PIL's getexif() may only find by decoding the image: read it from the
    # chunks PIL has already parsed instead. JPEG, TIFF and WebP keep it in their header.
    try:
        if image.format == "PNG":
            raw = image.info.get("exif")
            if not raw:
                return 1
            exif = Image.Exif()
            exif.load(raw)
        else:
            exif = image.getexif()
        return int(exif.get(_EXIF_ORIENTATION, 1) or 1)
    except Exception:  # a broken EXIF block is not worth refusing an image for
        return 1


def _jpeg_is_complete(path: Path) -> bool:
    """Whether a JPEG ends with its end-of-image marker (trailing zero padding allowed), read from its last bytes."""
    with path.open("rb") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        handle.seek(max(0, size - 64))
        tail = handle.read().rstrip(b"\x00\r\n ")
    return tail.endswith(_JPEG_END)


def _decode_error(path: Path, image: Image.Image) -> str | None:
    """Decode as much as needed to know that anomalib's full decode will work; return PIL's complaint if not."""
    try:
        if image.format == "PNG":
            image.verify()  # every chunk's checksum and the end chunk: catches truncated and damaged files cheaply
        elif image.format == "JPEG" and _jpeg_is_complete(path):
            pass  # ends with its end-of-image marker: the usual sign of a complete file
        elif image.format == "JPEG":
            # No end marker at the end (truncated, or data appended after the image): decode at 1/8 scale to know.
            image.draft("RGB", (max(1, image.width // 8), max(1, image.height // 8)))
            image.load()
        else:
            image.load()
    except Exception as error:  # PIL raises OSError, SyntaxError, ValueError, ... for broken files
        return f"{type(error).__name__}: {error}"
    return None


def _open(path: Path, role: str) -> tuple[Image.Image | None, list[FileProblem]]:
    if not path.is_file():
        problem = "the path is a directory" if path.is_dir() else "the file does not exist"
        return None, [FileProblem(str(path), role, problem, "Check the data set's paths")]
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", Image.DecompressionBombWarning)
            image = Image.open(path)
    except UnidentifiedImageError:
        return None, [
            FileProblem(
                str(path),
                role,
                "not an image that PIL can read (unknown or damaged format)",
                "Remove it from the data folder or replace it with a PNG/JPEG/BMP/TIFF image",
            )
        ]
    except Image.DecompressionBombError as error:
        return None, [
            FileProblem(
                str(path),
                role,
                f"too large for PIL ({error})",
                "Downscale it, or raise PIL.Image.MAX_IMAGE_PIXELS in your script if you trust the file",
            )
        ]
    except OSError as error:
        return None, [FileProblem(str(path), role, f"cannot be opened ({error})", "Check the file's permissions")]
    problems = []
    if any(issubclass(warning.category, Image.DecompressionBombWarning) for warning in caught):
        width, height = image.size
        problems.append(
            FileProblem(
                str(path),
                role,
                f"{width}x{height} pixels: above PIL's decompression-bomb limit (Image.MAX_IMAGE_PIXELS); anomalib "
                f"reads it at full size, about {width * height * 20 / 1e9:.1f} GB of memory per loader process, "
                f"before resizing it",
                "Downscale it if memory runs short",
                fatal=False,
            )
        )
    return image, problems


def _inspect(path: Path, role: str, target_mode: str) -> tuple[_Header | None, list[FileProblem]]:
    """Open a file, check its mode and that it decodes; return its header facts and the problems found."""
    image, problems = _open(path, role)
    if image is None:
        return None, problems
    with image:
        header = _Header(image.size, _orientation(image))
        mode = image.mode
        if role == "image" and mode in _GARBAGE_IMAGE_MODES:
            problems.append(
                FileProblem(
                    str(path),
                    role,
                    f"{_GARBAGE_IMAGE_MODES[mode]} (PIL mode {mode}): anomalib reads images with PIL's "
                    f'convert("RGB"), which clips every value above 255 instead of scaling it, so the image would '
                    f"turn (nearly) white",
                    "Convert it to 8-bit first, scaling its value range to 0-255 (with numpy: "
                    "(array / array.max() * 255).astype('uint8') for 10- or 12-bit data, (array >> 8).astype('uint8') "
                    "for full-range 16-bit data)",
                )
            )
        elif mode == "LAB" and role == "image":
            problems.append(
                FileProblem(
                    str(path),
                    role,
                    'CIELAB colour (PIL mode LAB): PIL\'s convert("RGB") keeps the lightness and drops the colour',
                    "Convert it to RGB first (e.g. with PIL.ImageCms)",
                )
            )
        else:
            try:
                Image.new(mode, (1, 1)).convert(target_mode)
            except ValueError:
                problems.append(
                    FileProblem(
                        str(path),
                        role,
                        f'PIL mode {mode}, which PIL cannot convert to "{target_mode}" as anomalib does',
                        "Save it as 8-bit RGB or grayscale",
                    )
                )
        if error := _decode_error(path, image):
            # With PIL's LOAD_TRUNCATED_IMAGES set (by the user), anomalib decodes what is there and fills the rest.
            tolerated = ImageFile.LOAD_TRUNCATED_IMAGES
            problems.append(
                FileProblem(
                    str(path),
                    role,
                    f"truncated or damaged ({error})"
                    + (
                        "; PIL.ImageFile.LOAD_TRUNCATED_IMAGES is set, so the missing part is filled"
                        if tolerated
                        else ""
                    ),
                    "Replace it with a complete copy",
                    fatal=not tolerated,
                )
            )
    return header, problems


def check_image_file(path: str | Path) -> list[FileProblem]:
    """Check one image as anomalib will read it (``Image.open(path).convert("RGB")``).

    Refused: missing files, files PIL cannot identify, truncated or damaged files, 16/32-bit integer and float
    grayscale (``convert("RGB")`` clips them), CIELAB. Accepted with a warning: an EXIF orientation other than
    "normal" (anomalib ignores it, so the image is scored as stored, not as a photo viewer shows it), images above
    PIL's decompression-bomb limit. Accepted silently: 1-bit, grayscale, grayscale+alpha, palette, RGB, RGBA (alpha
    dropped), CMYK and YCbCr (converted by PIL, without colour profiles), 16-bit RGB PNG (reduced to 8 bits by PIL),
    progressive JPEG, any size and aspect ratio (the pre-processor resizes).

    Args:
        path: The image file.

    Returns:
        The problems found (empty when the image is fine).
    """
    return list(_check_image(Path(path))[1])


def _check_image(path: Path) -> tuple[_Header | None, tuple[FileProblem, ...]]:
    header, problems = _inspect(path, "image", "RGB")
    if header is not None and header.orientation != 1:
        problems.append(
            FileProblem(
                str(path),
                "image",
                f"its EXIF orientation is {header.orientation} (not 'normal'): anomalib ignores it, so AdaCLIP scores "
                f"the pixels as stored, turned or mirrored against what photo viewers show, and anomaly maps and masks "
                f"are in the stored orientation",
                "To score it upright, save it with the orientation applied (PIL.ImageOps.exif_transpose)",
                fatal=False,
            )
        )
    return header, tuple(problems)


def _mask_content(path: Path) -> list[FileProblem]:
    """Look at the mask's pixels as anomalib's ``read_mask`` sees them (``convert("L")``, then ``> 0``)."""
    with Image.open(path) as mask:
        values = np.asarray(mask.convert("L"))
    present = np.unique(values)
    if present.size == 1 and present[0] == 0:
        return [
            FileProblem(
                str(path),
                "mask",
                "it is empty (all 0) although its image is labelled anomalous: no pixel of that image counts as "
                "anomalous in the pixel metrics",
                "Check that it is the right mask",
                fatal=False,
            )
        ]
    grey = present[(present > 0) & (present < present.max())]
    if grey.size:
        share = float(((values > 0) & (values < present.max())).mean())
        return [
            FileProblem(
                str(path),
                "mask",
                f"it has {grey.size} grey levels between 0 and {int(present.max())} ({share:.2%} of its pixels; "
                f"anti-aliased or JPEG-compressed?): anomalib counts every value above 0 as anomalous, so these "
                f"pixels widen the defect region",
                "Save masks as lossless binary PNGs (0 and one other value)",
                fatal=False,
            )
        ]
    return []


def _check_mask(path: Path, image: _Header | None, image_path: str | None) -> tuple[FileProblem, ...]:
    header, problems = _inspect(path, "mask", "L")
    if header is None or any(problem.fatal for problem in problems):
        return tuple(problems)
    if image is not None and header.size != image.size:
        (mask_width, mask_height), (width, height) = header.size, image.size
        if header.size == (height, width) and image.orientation in _ROTATED_ORIENTATIONS:
            problems.append(
                FileProblem(
                    str(path),
                    "mask",
                    f"{mask_width}x{mask_height}, its image {image_path} is {width}x{height} as stored: the mask was "
                    f"drawn on the photo as displayed (EXIF orientation {image.orientation}), which anomalib ignores",
                    "Save the image with its orientation applied (PIL.ImageOps.exif_transpose), then it fits the mask",
                )
            )
        elif abs(mask_width * height - mask_height * width) <= max(width, height, mask_width, mask_height):
            problems.append(
                FileProblem(
                    str(path),
                    "mask",
                    f"{mask_width}x{mask_height}, a scaled copy of its image's {width}x{height} ({image_path}): "
                    f"anomalib resizes it with the image (nearest neighbour)",
                    fatal=False,
                )
            )
        else:
            problems.append(
                FileProblem(
                    str(path),
                    "mask",
                    f"{mask_width}x{mask_height}, but its image {image_path} is {width}x{height}: anomalib would "
                    f"stretch the mask onto the image",
                    "Give every mask its image's size",
                )
            )
    if not any(problem.fatal for problem in problems):
        problems += _mask_content(path)
    return tuple(problems)


# ----------------------------------------------------------------------------------------------------------------------
# Data sets
# ----------------------------------------------------------------------------------------------------------------------
_CACHE: dict[tuple, tuple[FileProblem, ...]] = {}


def _stamp(path: str | None) -> tuple:
    if not path:
        return (None,)
    try:
        status = os.stat(path)
    except OSError:
        return (path, None)
    return (path, status.st_size, status.st_mtime_ns)


def _check_pair(image_path: str, mask_path: str | None) -> tuple[FileProblem, ...]:
    key = (_stamp(image_path), _stamp(mask_path), ImageFile.LOAD_TRUNCATED_IMAGES)
    cached = _CACHE.get(key)
    if cached is None:
        header, problems = _check_image(Path(image_path))
        if mask_path:
            problems += _check_mask(Path(mask_path), header, image_path)
        cached = _CACHE[key] = problems
    return cached


def _is_blank(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value)) or str(value) == ""


@runtime_checkable
class ComposedDataset(Protocol):
    """A data set that reads the files of other data sets (``datasets``), like torch's ``ConcatDataset``."""

    @property
    def datasets(self) -> Sequence[Any]:
        """The data sets whose files it reads."""


def dataset_files(dataset: Any) -> list[tuple[str, str | None]] | None:
    """The ``(image, mask)`` paths a data set reads, or ``None`` when it keeps no file list AdaCLIP knows.

    Understands anomalib's image data sets (their ``samples`` table; masks only of anomalous samples, as anomalib
    reads them), ``PredictDataset`` (``image_filenames``), AdaCLIP's auxiliary training data, and torch's
    ``ConcatDataset`` and ``Subset`` around them.
    """
    import pandas as pd  # noqa: PLC0415
    from torch.utils.data import ConcatDataset, Subset  # noqa: PLC0415

    if isinstance(dataset, Subset):
        inner = dataset_files(dataset.dataset)
        return None if inner is None else [inner[index] for index in dataset.indices]
    if isinstance(dataset, ConcatDataset):
        parts = [dataset_files(part) for part in dataset.datasets]
        return None if any(part is None for part in parts) else [pair for part in parts for pair in part]
    samples = getattr(dataset, "samples", None)
    if isinstance(samples, pd.DataFrame) and "image_path" in samples:
        masks = samples["mask_path"] if "mask_path" in samples else [None] * len(samples)
        labels = samples["label_index"] if "label_index" in samples else [1] * len(samples)
        return [
            (str(image), None if _is_blank(mask) or label != 1 else str(mask))
            for image, mask, label in zip(samples["image_path"], masks, labels, strict=True)
        ]
    filenames = getattr(dataset, "image_filenames", None)
    if isinstance(filenames, Sequence) and not isinstance(filenames, str):
        return [(str(path), None) for path in filenames]
    if isinstance(dataset, ComposedDataset):  # e.g. anomalib_adaclip.data.AuxiliaryDataset
        files = [dataset_files(part) for part in dataset.datasets]
        return None if any(part is None for part in files) else [pair for part in files for pair in part]
    return None


def _listed(problems: Sequence[FileProblem]) -> str:
    lines = [f"  - {problem.describe()}" for problem in problems[:_MAX_LISTED]]
    if len(problems) > _MAX_LISTED:
        lines.append(f"  ... and {len(problems) - _MAX_LISTED} more")
    return "\n".join(lines)


def validate_files(pairs: Iterable[tuple[str, str | None]], description: str = "the data") -> list[FileProblem]:
    """Check image files and their masks; raise for files AdaCLIP cannot use, warn about the others.

    Args:
        pairs: ``(image path, mask path or None)`` per sample.
        description: Names the data in the messages (e.g. ``"the test data of MVTecAD 'bottle'"``).

    Returns:
        The non-fatal problems (already logged as one warning).

    Raises:
        InputFilesError: One or more files cannot be used; the message lists each with what to do.
    """
    pairs = list(dict.fromkeys(pairs))
    problems = [problem for image, mask in pairs for problem in _check_pair(image, mask)]
    problems = list(dict.fromkeys(problems))  # an image shared by two samples is listed once
    fatal = [problem for problem in problems if problem.fatal]
    notes = [problem for problem in problems if not problem.fatal]
    if notes:
        logger.warning(
            "%d file(s) of %s work with AdaCLIP, but differ from what you may expect:\n%s",
            len(notes),
            description,
            _listed(notes),
        )
    if fatal:
        n_files = len({path for pair in pairs for path in pair if path})
        msg = (
            f"AdaCLIP cannot use {len({problem.path for problem in fatal})} of the {n_files} image and mask files of "
            f"{description}:\n{_listed(fatal)}\nNothing was run. Fix or remove these files "
            "(documentation: Guides, Input handling)."
        )
        raise InputFilesError(msg)
    return notes


def validate_dataset(dataset: Any, description: str) -> list[FileProblem] | None:
    """Check every file of a data set (see :func:`dataset_files`); ``None`` when the data set keeps no file list.

    Raises:
        InputFilesError: One or more files cannot be used, or the data set is empty.
    """
    pairs = dataset_files(dataset)
    if pairs is None:
        return None
    if not pairs:
        msg = f"{description} hold no images."
        raise InputFilesError(msg)
    return validate_files(pairs, description)


def loader_list(loaders: Any) -> list[Any]:
    """A trainer's data loaders as a list, in Lightning's order (one loader, a list or a dict of them; ``None``)."""
    if loaders is None:
        return []
    if isinstance(loaders, dict):
        return list(loaders.values())
    if isinstance(loaders, list | tuple):
        return list(loaders)
    return [loaders]


def iter_loader_datasets(loaders: Any) -> Iterator[Any]:
    """The data sets behind a trainer's data loaders (one loader, a list or a dict of them)."""
    for loader in loader_list(loaders):
        dataset = getattr(loader, "dataset", None)
        if dataset is not None:
            yield dataset


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
