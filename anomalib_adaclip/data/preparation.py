"""The public releases of the paper's data sets converted into the MVTec-style trees of the paper's data modules.

:func:`prepare_dataset` (``anomalib-adaclip prepare-data NAME --source SRC --dest DEST``) reads a release as it is
unpacked from its source (the layouts are the ``raw_layout`` of
:class:`~anomalib_adaclip.data.paper_datasets.PaperDataset`) and writes ``DEST/<category>/`` as
:data:`~anomalib_adaclip.data.paper_datasets.PROCESSED_LAYOUT` describes, for the data module whose ``root`` is
``DEST``. The authors' processed copies already have that layout and need no preparation.

What every conversion does:

- **Never overwrites.** If ``DEST/<category>`` exists (for DAGM: any of the class folders), nothing is written.
  Each category is written into a fresh hidden folder in ``DEST`` and renamed into place when complete, so an error
  half-way leaves no partial category behind.
- **Checks the layout first.** A source that does not match is an error naming the expected layout and what is
  missing, before anything is written.
- **Is deterministic.** Files are read in sorted order; the only random choice (KSDD's train/test split of normal
  crops) is a documented seeded order (:func:`seeded_order`) that needs no library's random-number stream. The same
  release gives the same files with the same pixels on every machine; PNG bytes may differ between Pillow versions.
- **Copies images unchanged** (same bytes, same names), except KSDD's crops, written as PNG.
- **Writes masks as binary PNG** (0 and 255) named ``<image stem>.png``: a pixel is defective when it is above half
  the mask's maximum. That keeps JPEG masks (TN3K) binary, where anomalib, which reads any non-zero pixel as
  defective, would take the compression noise for defects.
- **Leaves ``train/good/`` empty** where the release has no separate normal training images (the medical sets):
  the paper's protocol is zero-shot.
"""

from __future__ import annotations

import csv
import hashlib
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import numpy as np
from PIL import Image
from torchvision.datasets.folder import IMG_EXTENSIONS

from .mvtec_tree import NORMAL_FOLDER, pair_masks
from .paper_datasets import PROCESSED_LAYOUT, PaperDataset, paper_dataset

__all__ = [
    "KSDD_SEED",
    "KSDD_TEST_SHARE",
    "PreparedCategory",
    "SourceLayoutError",
    "prepare_dataset",
    "seeded_order",
]

KSDD_SEED = 42
"""The seed of KSDD's train/test split of normal crops (the authors' ``random_state``)."""

KSDD_TEST_SHARE = 0.25
"""The share of KSDD's normal crops that go to the test split (rounded up, as scikit-learn's ``test_size`` does)."""


class SourceLayoutError(ValueError):
    """The source folder is not laid out as the data set's release is."""


@dataclass(frozen=True)
class PreparedCategory:
    """One category written by :func:`prepare_dataset`: where, and how many images of each kind.

    Attributes:
        category: The category folder's name.
        path: The category folder.
        train: Normal training images.
        normal: Normal test images.
        anomalous: Anomalous test images (each with its mask where the data set has masks).
    """

    category: str
    path: Path
    train: int
    normal: int
    anomalous: int


def seeded_order(names: list[str], seed: int) -> list[str]:
    """``names`` in a seeded pseudo-random order: sorted by the SHA-256 of ``"<seed>:<name>"``.

    Unlike a shuffle by a random-number generator, the order depends on nothing but the names and the seed, so it is
    the same with every Python, NumPy or scikit-learn version. It is not the order of scikit-learn's
    ``train_test_split(random_state=42)``, which the authors used; no order without scikit-learn's would be.
    """
    return sorted(names, key=lambda name: hashlib.sha256(f"{seed}:{name}".encode()).hexdigest())


# ----------------------------------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------------------------------
def _images(folder: Path) -> list[Path]:
    return sorted(path for path in folder.iterdir() if path.is_file() and path.suffix.lower() in IMG_EXTENSIONS)


def _binary(mask: np.ndarray) -> np.ndarray:
    """Defective where above half the mask's maximum (an empty mask stays empty)."""
    mask = mask.astype(np.float64)
    peak = mask.max(initial=0.0)
    return mask > peak / 2 if peak > 0 else np.zeros(mask.shape, dtype=bool)


def _read_mask(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return _binary(np.asarray(image.convert("L")))


def _save_png(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("xb") as file:  # "x": the folder is new, a second write of one name is a bug
        Image.fromarray(array).save(file, format="PNG")


def _save_mask(mask: np.ndarray, path: Path) -> None:
    _save_png(mask.astype(np.uint8) * 255, path)


def _copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with source.open("rb") as reader, target.open("xb") as writer:
        shutil.copyfileobj(reader, writer)


class _Category:
    """A category folder under construction: files are added to it, counted, and it is moved into place at the end."""

    def __init__(self, folder: Path, name: str) -> None:
        self.folder, self.name = folder, name
        (folder / "train" / NORMAL_FOLDER).mkdir(parents=True)  # kept even when empty: the authors' loaders need it
        (folder / "test").mkdir()
        self.train = self.normal = self.anomalous = 0

    def add_train(self, image: Path) -> None:
        _copy(image, self.folder / "train" / NORMAL_FOLDER / image.name)
        self.train += 1

    def add_normal(self, image: Path) -> None:
        _copy(image, self.folder / "test" / NORMAL_FOLDER / image.name)
        self.normal += 1

    def add_anomalous(self, image: Path, defect: str, mask: Path | None) -> None:
        _copy(image, self.folder / "test" / defect / image.name)
        if mask is not None:
            _save_mask(_read_mask(mask), self.folder / "ground_truth" / defect / f"{image.stem}.png")
        self.anomalous += 1


@contextmanager
def _new_categories(dest: Path, names: list[str]) -> Iterator[dict[str, _Category]]:
    """Fresh category folders, moved to ``dest/<name>`` when the block succeeds; nothing is left if it fails.

    Raises:
        FileExistsError: One of ``dest/<name>`` exists (checked before anything is written, and again before each
            move).
    """
    existing = [dest / name for name in names if (dest / name).exists() or (dest / name).is_symlink()]
    if existing:
        msg = (
            f"{', '.join(map(str, existing))} already exist(s); prepare-data never overwrites. Choose another --dest "
            "or move the existing folder away."
        )
        raise FileExistsError(msg)
    dest.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".prepare-data-", dir=dest))
    try:
        categories = {name: _Category(staging / name, name) for name in names}
        yield categories
        for name in names:
            target = dest / name
            if target.exists() or target.is_symlink():
                msg = f"{target} appeared while preparing; prepare-data never overwrites."
                raise FileExistsError(msg)
            os.rename(staging / name, target)  # a non-empty target makes this fail rather than be replaced
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# ----------------------------------------------------------------------------------------------------------------------
# Layout checks
# ----------------------------------------------------------------------------------------------------------------------
def _layout_error(dataset: PaperDataset, source: Path, problem: str) -> SourceLayoutError:
    return SourceLayoutError(
        f"{source} does not look like the {dataset.name} release: {problem}.\n"
        f"Expected: {dataset.raw_layout}\n"
        f"Get it from {dataset.source}; or pass the authors' processed copy to the data module directly (no "
        f"preparation), laid out as:\n{PROCESSED_LAYOUT}"
    )


def _folder_with_images(dataset: PaperDataset, source: Path, *names: str) -> Path:
    """The first of ``source/<name>`` that exists, which must hold images."""
    for name in names:
        folder = source / name
        if folder.is_dir():
            if not _images(folder):
                raise _layout_error(dataset, source, f"{folder} holds no images")
            return folder
    raise _layout_error(dataset, source, f"no {' or '.join(f'{name}/' for name in names)} folder")


# ----------------------------------------------------------------------------------------------------------------------
# The conversions
# ----------------------------------------------------------------------------------------------------------------------
_KSDD_PART = re.compile(r"Part(\d+)\.jpg", re.IGNORECASE)


def _ksdd_parts(dataset: PaperDataset, source: Path) -> list[tuple[Path, Path]]:
    """The (image, label) pairs of KolektorSDD, by sample folder and part number."""
    root = source / "KolektorSDD" if (source / "KolektorSDD").is_dir() else source
    samples = sorted(path for path in root.glob("kos*") if path.is_dir())
    if not samples:
        raise _layout_error(dataset, source, f"no kosNN/ sample folders in {root}")
    parts = []
    for sample in samples:
        images = sorted(
            (path for path in sample.iterdir() if _KSDD_PART.fullmatch(path.name)),
            key=lambda path: int(_KSDD_PART.fullmatch(path.name).group(1)),
        )
        if not images:
            raise _layout_error(dataset, source, f"{sample} holds no PartK.jpg images")
        for image in images:
            label = image.with_name(f"{image.stem}_label.bmp")
            if not label.is_file():
                raise _layout_error(dataset, source, f"{image} has no label {label.name}")
            parts.append((image, label))
    return parts


def _thirds(height: int) -> list[slice]:
    """Three row ranges covering ``height``; the first ``height % 3`` are one row taller (NumPy's array_split)."""
    bounds = np.cumsum([0] + [len(part) for part in np.array_split(np.arange(height), 3)])
    return [slice(int(start), int(stop)) for start, stop in pairwise(bounds)]


def _prepare_ksdd(dataset: PaperDataset, source: Path, dest: Path) -> list[PreparedCategory]:
    """KolektorSDD: each image cut into its top, middle and bottom third; thirds with defect pixels are anomalous.

    Normal thirds are split 75/25 into train/good and test/good in :func:`seeded_order` with :data:`KSDD_SEED`
    (the test share rounded up); anomalous thirds go to test/defect with their label crop as mask. Crops are named
    ``kosNN_PartK_T.png``, ``T`` = 0 (top), 1, 2 (bottom).
    """
    parts = _ksdd_parts(dataset, source)
    (category,) = dataset.categories
    with _new_categories(dest, [category]) as categories:
        target = categories[category]
        normal: dict[str, np.ndarray] = {}
        for image_path, label_path in parts:
            with Image.open(image_path) as image:
                pixels = np.asarray(image)
            label = _read_mask(label_path)
            if label.shape != pixels.shape[:2]:
                msg = (
                    f"{label_path} is {label.shape[1]}x{label.shape[0]} px but {image_path} is "
                    f"{pixels.shape[1]}x{pixels.shape[0]} px; a label must have its image's size."
                )
                raise SourceLayoutError(msg)
            for third, rows in enumerate(_thirds(pixels.shape[0])):
                name = f"{image_path.parent.name}_{image_path.stem}_{third}.png"
                if label[rows].any():
                    _save_png(pixels[rows], target.folder / "test" / "defect" / name)
                    _save_mask(label[rows], target.folder / "ground_truth" / "defect" / name)
                    target.anomalous += 1
                else:
                    normal[name] = pixels[rows]
        order = seeded_order(sorted(normal), KSDD_SEED)
        n_test = math.ceil(KSDD_TEST_SHARE * len(order))
        for index, name in enumerate(order):
            split = "test" if index < n_test else "train"
            _save_png(normal[name], target.folder / split / NORMAL_FOLDER / name)
        target.normal, target.train = n_test, len(order) - n_test
    return _summaries(dest, categories)


def _dagm_split(dataset: PaperDataset, source: Path, name: str, split: str) -> list[tuple[str, Path, Path | None]]:
    """(kind, image, label) of one DAGM split: "train" or "normal" without a label, "anomalous" (Test only) with."""
    folder = _folder_with_images(dataset, source / name, split)
    labels = folder / "Label"
    if not labels.is_dir():
        raise _layout_error(dataset, source, f"{folder} has no Label/ folder")
    plan: list[tuple[str, Path, Path | None]] = []
    for image in _images(folder):
        label = next(iter(sorted(labels.glob(f"{image.stem}_label.*"))), None)
        if label is None:
            plan.append(("train" if split == "Train" else "normal", image, None))
        elif split == "Test":
            plan.append(("anomalous", image, label))
    return plan


def _prepare_dagm(dataset: PaperDataset, source: Path, dest: Path) -> list[PreparedCategory]:
    """DAGM 2007 with the release's own split.

    Train normals go to train/good; Test normals to test/good, Test defectives (those with a
    ``Label/<stem>_label.PNG``) to test/defect with that label as mask. Train defectives are not used.
    """
    classes = [name for name in dataset.categories if (source / name).is_dir()]
    if not classes:
        raise _layout_error(dataset, source, f"no Class1/ ... Class10/ folders in {source}")
    plans = {
        name: [item for split in ("Train", "Test") for item in _dagm_split(dataset, source, name, split)]
        for name in classes
    }
    with _new_categories(dest, classes) as categories:
        for name, plan in plans.items():
            for kind, image, label in plan:
                if kind == "train":
                    categories[name].add_train(image)
                elif kind == "normal":
                    categories[name].add_normal(image)
                else:
                    categories[name].add_anomalous(image, "defect", label)
    return _summaries(dest, categories)


def _prepare_headct(dataset: PaperDataset, source: Path, dest: Path) -> list[PreparedCategory]:
    """Head CT: ``labels.csv`` (``id``, ``hemorrhage``) sorts ``head_ct/NNN.png`` into test/good, test/hemorrhage.

    No masks; train/good stays empty.
    """
    if not (source / "labels.csv").is_file() and (source / "head_ct" / "labels.csv").is_file():
        source = source / "head_ct"  # the folder above the release's top folder
    table = source / "labels.csv"
    if not table.is_file():
        raise _layout_error(dataset, source, "no labels.csv")
    images = {path.stem: path for path in _images(_folder_with_images(dataset, source, "head_ct"))}
    with table.open(newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file, skipinitialspace=True))
    columns = {key.strip() for key in (rows[0] if rows else {})}
    if not {"id", "hemorrhage"} <= columns:
        raise _layout_error(dataset, source, f"labels.csv has columns {sorted(columns)}, not id and hemorrhage")
    plan = []
    for raw_row in rows:
        row = {key.strip(): value.strip() for key, value in raw_row.items()}
        stem = f"{int(row['id']):03d}"
        if stem not in images:
            raise _layout_error(dataset, source, f"labels.csv names id {row['id']} but head_ct/{stem}.png is missing")
        plan.append((images[stem], row["hemorrhage"] == "1"))
    (category,) = dataset.categories
    with _new_categories(dest, [category]) as categories:
        for image, hemorrhage in plan:
            if hemorrhage:
                categories[category].add_anomalous(image, "hemorrhage", None)
            else:
                categories[category].add_normal(image)
    return _summaries(dest, categories)


def _prepare_no_yes(dataset: PaperDataset, source: Path, dest: Path) -> list[PreparedCategory]:
    """Brain MRI and Br35H: ``no/`` to test/good, ``yes/`` to test/tumor; no masks, train/good empty."""
    normal = _folder_with_images(dataset, source, "no")
    tumour = _folder_with_images(dataset, source, "yes")
    (category,) = dataset.categories
    with _new_categories(dest, [category]) as categories:
        for image in _images(normal):
            categories[category].add_normal(image)
        for image in _images(tumour):
            categories[category].add_anomalous(image, "tumor", None)
    return _summaries(dest, categories)


def _segmentation_converter(
    defect: str, image_folders: tuple[str, ...], mask_folders: tuple[str, ...]
) -> Callable[[PaperDataset, Path, Path], list[PreparedCategory]]:
    """A conversion of an image folder and a mask folder (masks named after their images) to test/<defect>."""

    def convert(dataset: PaperDataset, source: Path, dest: Path) -> list[PreparedCategory]:
        images = _images(_folder_with_images(dataset, source, *image_folders))
        masks = _images(_folder_with_images(dataset, source, *mask_folders))
        try:
            pairs = pair_masks(images, masks)
        except ValueError as error:
            raise _layout_error(dataset, source, str(error)) from error
        (category,) = dataset.categories
        with _new_categories(dest, [category]) as categories:
            for image in images:
                categories[category].add_anomalous(image, defect, pairs[image])
        return _summaries(dest, categories)

    convert.__doc__ = f"Images of {'/'.join(image_folders)} with their masks to test/{defect}; train/good empty."
    return convert


def _summaries(dest: Path, categories: dict[str, _Category]) -> list[PreparedCategory]:
    return [
        PreparedCategory(name, dest / name, category.train, category.normal, category.anomalous)
        for name, category in categories.items()
    ]


_CONVERTERS: dict[str, Callable[[PaperDataset, Path, Path], list[PreparedCategory]]] = {
    "KSDD": _prepare_ksdd,
    "DAGM": _prepare_dagm,
    "HeadCT": _prepare_headct,
    "BrainMRI": _prepare_no_yes,
    "Br35H": _prepare_no_yes,
    "ISIC": _segmentation_converter(
        "lesion", ("ISBI2016_ISIC_Part1_Test_Data",), ("ISBI2016_ISIC_Part1_Test_GroundTruth",)
    ),
    "ColonDB": _segmentation_converter("polyp", ("images",), ("masks",)),
    "ClinicDB": _segmentation_converter("polyp", ("images", "Original"), ("masks", "Ground Truth")),
    "TN3K": _segmentation_converter("nodule", ("test-image",), ("test-mask",)),
}


def prepare_dataset(name: str, source: str | Path, dest: str | Path) -> list[PreparedCategory]:
    """Convert a data set's public release into the tree its data module reads.

    Args:
        name: The data set, as in :data:`~anomalib_adaclip.data.paper_datasets.PAPER_DATASETS` (``"KSDD"``,
            ``"HeadCT"``, ...; any case).
        source: The unpacked release (its layout: the data set's ``raw_layout``).
        dest: The data module's ``root``; ``dest/<category>`` is written and must not exist.

    Returns:
        What was written, per category.

    Raises:
        KeyError: ``name`` is not one of the paper's data sets.
        ValueError: The data set needs no preparation (anomalib reads its release, or it is released in the
            data module's layout).
        FileNotFoundError: ``source`` is not a folder.
        SourceLayoutError: ``source`` is not laid out as the release (nothing was written).
        FileExistsError: ``dest/<category>`` exists (nothing was written).
    """
    dataset = paper_dataset(name)
    if dataset.key not in _CONVERTERS:
        msg = (
            f"{dataset.name} needs no preparation: its data module {dataset.datamodule} reads the release (or the "
            f"authors' copy) as it is. Put it in {dataset.default_root} or pass its folder as the data module's root."
        )
        raise ValueError(msg)
    source, dest = Path(source), Path(dest)
    if not source.is_dir():
        msg = f"--source {source} is not a folder; expected the unpacked {dataset.name} release: {dataset.raw_layout}"
        raise FileNotFoundError(msg)
    return _CONVERTERS[dataset.key](dataset, source, dest)
