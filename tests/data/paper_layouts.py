"""Tiny generated copies of the paper's 14 data sets, in the layouts their data modules read and their releases have.

Two kinds of copy, both written from scratch in a temporary folder (nothing is read from outside the repository):

- :func:`write_dataset_tree` / :func:`write_all_dataset_trees`: what a data module reads, ready to load. For the ten
  data sets of this package, the MVTec-style tree of the authors' processed copies; for anomalib's four, their
  official layouts (``MVTecAD``, ``MPDD``: MVTec tree with ``_mask`` masks; ``BTech``: ``ok``/``ko`` folders;
  ``Visa``: the raw ``VisA_20220922`` tree with ``split_csv/1cls.csv``, which anomalib's ``Visa`` splits itself).
  Each :class:`DatasetTree` says what was written: per category, the number of training images and of normal and
  anomalous test images. These are the tests' truth; the benchmark-grid test uses the same function.
- :func:`write_raw_release`: the public release of a data set that ``anomalib-adaclip prepare-data`` converts
  (KolektorSDD's ``kosNN/PartK.jpg``, DAGM's ``ClassK/{Train,Test}``, ...), with what the conversion must give.

Images are 32 px (KSDD: 32 x 96, cut into thirds): normal images are flat grey with noise, anomalous ones carry a
bright square, and their masks mark exactly that square. Mask names vary between data sets (``_mask``, ``_label``,
``_Segmentation``, the image's own name) as in the real copies, so the pairing by name is exercised.
"""

from __future__ import annotations

import csv
import importlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from anomalib_adaclip.data.paper_datasets import PAPER_DATASETS, paper_dataset

__all__ = [
    "SIZE",
    "CategoryCounts",
    "DatasetTree",
    "RawRelease",
    "write_all_dataset_trees",
    "write_dataset_tree",
]

SIZE = 32
"""Side of the generated images (pixels)."""


@dataclass(frozen=True)
class CategoryCounts:
    """What was written for one category: training images, normal and anomalous test images."""

    train: int
    normal: int
    anomalous: int


@dataclass(frozen=True)
class DatasetTree:
    """A written copy of one data set, ready for its data module.

    Attributes:
        key: The registry key (``"KSDD"``, ``"MVTecAD"``).
        root: The data module's ``root``.
        counts: Per category written, what was written.
        has_masks: Whether the anomalous test images have masks.
    """

    key: str
    root: Path
    counts: dict[str, CategoryCounts]
    has_masks: bool

    @property
    def categories(self) -> tuple[str, ...]:
        return tuple(self.counts)

    def datamodule(self, category: str, **arguments: Any) -> Any:
        """The data module of the registry's class path for ``category`` (``num_workers=0`` unless given)."""
        module_name, class_name = PAPER_DATASETS[self.key].datamodule.rsplit(".", 1)
        datamodule_class = getattr(importlib.import_module(module_name), class_name)
        return datamodule_class(root=self.root, category=category, **{"num_workers": 0, **arguments})


@dataclass(frozen=True)
class RawRelease:
    """A written public release of one data set, with what ``prepare-data`` must make of it.

    Attributes:
        key: The registry key.
        source: The folder to pass as ``--source``.
        counts: Per category, what the converted tree must hold.
        anomalous_folder: The name of the anomalous test folder the conversion writes.
    """

    key: str
    source: Path
    counts: dict[str, CategoryCounts]
    anomalous_folder: str
    masks: dict[str, np.ndarray] = field(default_factory=dict, repr=False)


# ----------------------------------------------------------------------------------------------------------------------
# Pixels
# ----------------------------------------------------------------------------------------------------------------------
def _rng(*parts: object) -> np.random.Generator:
    """A generator seeded by the file's identity, so every copy is the same whatever is written before it."""
    seed = sum((i + 1) * ord(c) for i, c in enumerate("/".join(map(str, parts))))
    return np.random.default_rng(seed)


def _square(index: int, height: int = SIZE, width: int = SIZE) -> tuple[slice, slice]:
    """Where anomalous image ``index`` has its defect: a different 6 x 6 square for each index."""
    top = 4 + (index * 5) % (height - 12)
    left = 4 + (index * 7) % (width - 12)
    return slice(top, top + 6), slice(left, left + 6)


def _pixels(rng: np.random.Generator, height: int = SIZE, width: int = SIZE, grey: bool = False) -> np.ndarray:
    shape = (height, width) if grey else (height, width, 3)
    return np.clip(90 + 20 * rng.standard_normal(shape), 0, 255).astype(np.uint8)


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _normal(path: Path, grey: bool = False) -> None:
    _save(path, _pixels(_rng(path.name, path.parent.name), grey=grey))


def _anomalous(path: Path, index: int, mask_path: Path | None, grey: bool = False) -> None:
    pixels = _pixels(_rng(path.name, path.parent.name), grey=grey)
    rows, cols = _square(index)
    pixels[rows, cols] = 250
    _save(path, pixels)
    if mask_path is not None:
        mask = np.zeros((SIZE, SIZE), np.uint8)
        mask[rows, cols] = 255
        _save(mask_path, mask)


# ----------------------------------------------------------------------------------------------------------------------
# Loadable trees
# ----------------------------------------------------------------------------------------------------------------------
# Per data set: (anomalous folder, image extension, mask name pattern, training images, normal and anomalous test
# images per category). Patterns follow the copies: MVTec's "_mask", DAGM's "_label", ISIC's "_Segmentation", the
# image's own name for the polyp and thyroid sets. Image-only sets have no mask pattern.
_TREES: dict[str, tuple[str, str, str | None, CategoryCounts]] = {
    "MVTecAD": ("crack", ".png", "{stem}_mask.png", CategoryCounts(2, 2, 2)),
    "MPDD": ("hole", ".png", "{stem}_mask.png", CategoryCounts(2, 2, 2)),
    "KSDD": ("defect", ".png", "{stem}.png", CategoryCounts(2, 2, 2)),
    "DAGM": ("defect", ".PNG", "{stem}_label.PNG", CategoryCounts(2, 2, 2)),
    "DTDSynthetic": ("bad", ".png", "{stem}_mask.png", CategoryCounts(2, 2, 2)),
    "HeadCT": ("hemorrhage", ".png", None, CategoryCounts(0, 2, 2)),
    "BrainMRI": ("tumor", ".jpg", None, CategoryCounts(0, 2, 2)),
    "Br35H": ("tumor", ".jpg", None, CategoryCounts(0, 2, 2)),
    "ISIC": ("lesion", ".jpg", "{stem}_Segmentation.png", CategoryCounts(0, 0, 3)),
    "ColonDB": ("polyp", ".png", "{stem}.png", CategoryCounts(0, 0, 3)),
    "ClinicDB": ("polyp", ".png", "{stem}.png", CategoryCounts(0, 0, 3)),
    "TN3K": ("nodule", ".jpg", "{stem}.png", CategoryCounts(0, 0, 3)),  # JPEG masks would not stay binary
}
_BTECH = CategoryCounts(2, 2, 2)
_VISA = CategoryCounts(2, 2, 2)


def _write_mvtec_category(
    category_root: Path, anomalous_folder: str, extension: str, mask_pattern: str | None, counts: CategoryCounts
) -> None:
    (category_root / "train" / "good").mkdir(parents=True, exist_ok=True)  # kept even when empty, as in the copies
    for i in range(counts.train):
        _normal(category_root / "train" / "good" / f"{i:03d}{extension}")
    for i in range(counts.normal):
        _normal(category_root / "test" / "good" / f"{i:03d}{extension}")
    for i in range(counts.anomalous):
        stem = f"{i:03d}"
        mask = None if mask_pattern is None else category_root / "ground_truth" / anomalous_folder
        _anomalous(
            category_root / "test" / anomalous_folder / f"{stem}{extension}",
            i,
            None if mask is None else mask / mask_pattern.format(stem=stem),
        )


def _write_btech_category(category_root: Path, counts: CategoryCounts) -> None:
    for i in range(counts.train):
        _normal(category_root / "train" / "ok" / f"{i:04d}.png")
    for i in range(counts.normal):
        _normal(category_root / "test" / "ok" / f"{i:04d}.png")
    for i in range(counts.anomalous):
        _anomalous(
            category_root / "test" / "ko" / f"{i:04d}.png", i, category_root / "ground_truth" / "ko" / f"{i:04d}.png"
        )


def _write_visa(root: Path, categories: Iterable[str], counts: CategoryCounts) -> None:
    """The raw VisA release: ``<category>/Data/{Images,Masks}/...`` and ``split_csv/1cls.csv``."""
    rows = []
    for category in categories:
        data = root / category / "Data"
        for i in range(counts.train + counts.normal):
            name = f"Data/Images/Normal/{i:04d}.JPG"
            _normal(root / category / name)
            rows.append([category, "train" if i < counts.train else "test", "normal", f"{category}/{name}", ""])
        for i in range(counts.anomalous):
            image, mask = f"Data/Images/Anomaly/{i:03d}.JPG", f"Data/Masks/Anomaly/{i:03d}.png"
            _anomalous(root / category / image, i, data / "Masks" / "Anomaly" / f"{i:03d}.png")
            rows.append([category, "test", "anomaly", f"{category}/{image}", f"{category}/{mask}"])
    (root / "split_csv").mkdir(parents=True, exist_ok=True)
    with (root / "split_csv" / "1cls.csv").open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["object", "split", "label", "image", "mask"])
        writer.writerows(rows)


def write_dataset_tree(key: str, root: Path, categories: Iterable[str] | None = None) -> DatasetTree:
    """Write one data set, ready for its data module, under ``root / key``.

    Args:
        key: The registry key (``"KSDD"``, ``"Visa"``, ...).
        root: The folder to write into; the data set goes to ``root / key``.
        categories: Which categories to write; ``None``: all of them.

    Returns:
        Where it is and what was written.
    """
    entry = paper_dataset(key)
    chosen = tuple(entry.categories if categories is None else categories)
    unknown = set(chosen) - set(entry.categories)
    if unknown:
        msg = f"{key} has no categories {sorted(unknown)}"
        raise ValueError(msg)
    dataset_root = Path(root) / entry.key
    if entry.key == "BTech":
        for category in chosen:
            _write_btech_category(dataset_root / category, _BTECH)
        counts = dict.fromkeys(chosen, _BTECH)
    elif entry.key == "Visa":
        _write_visa(dataset_root, chosen, _VISA)
        counts = dict.fromkeys(chosen, _VISA)
    else:
        anomalous_folder, extension, mask_pattern, category_counts = _TREES[entry.key]
        for category in chosen:
            _write_mvtec_category(dataset_root / category, anomalous_folder, extension, mask_pattern, category_counts)
        counts = dict.fromkeys(chosen, category_counts)
    return DatasetTree(key=entry.key, root=dataset_root, counts=counts, has_masks=entry.has_masks)


def write_all_dataset_trees(
    root: Path, datasets: Iterable[str] | None = None, max_categories: int | None = None
) -> dict[str, DatasetTree]:
    """Write every data set (or those named), ready for their data modules, under ``root``.

    Args:
        root: The folder to write into (one subfolder per data set).
        datasets: Registry keys to write; ``None``: all 14.
        max_categories: Write only the first this many categories of each data set; ``None``: all (66 in all).

    Returns:
        Per registry key, where the copy is and what was written.
    """
    keys = list(PAPER_DATASETS) if datasets is None else [paper_dataset(name).key for name in datasets]
    trees = {}
    for key in keys:
        categories = PAPER_DATASETS[key].categories[:max_categories]
        trees[key] = write_dataset_tree(key, root, categories)
    return trees
