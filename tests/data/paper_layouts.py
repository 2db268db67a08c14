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
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from anomalib_adaclip.data.paper_datasets import PAPER_DATASETS, paper_dataset

__all__ = [
    "KSDD_HEIGHT",
    "PREPARABLE",
    "SIZE",
    "CategoryCounts",
    "DatasetTree",
    "RawRelease",
    "write_all_dataset_trees",
    "write_dataset_tree",
    "write_raw_release",
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
        datamodule_class = PAPER_DATASETS[self.key].datamodule_class()
        return datamodule_class(root=self.root, category=category, **{"num_workers": 0, **arguments})


@dataclass(frozen=True)
class RawRelease:
    """A written public release of one data set, with what ``prepare-data`` must make of it.

    Attributes:
        key: The registry key.
        source: The folder to pass as ``--source``.
        counts: Per category, what the converted tree must hold.
        anomalous_folder: The anomalous test folder the conversion writes (``defect``, ``tumor``, ``polyp``, ...).
        masks: The expected binary mask of each anomalous image, by (category, image file name in the tree).
        images: The source file of each copied image, by (category, image file name in the tree); KSDD's crops are
            not copies and are not listed.
    """

    key: str
    source: Path
    counts: dict[str, CategoryCounts]
    anomalous_folder: str
    masks: dict[tuple[str, str], np.ndarray] = field(default_factory=dict, repr=False)
    images: dict[tuple[str, str], Path] = field(default_factory=dict, repr=False)


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


# ----------------------------------------------------------------------------------------------------------------------
# Public releases, as prepare-data reads them
# ----------------------------------------------------------------------------------------------------------------------
KSDD_HEIGHT = 3 * SIZE
"""Height of the generated KolektorSDD images (their width is SIZE): thirds of SIZE rows."""

# KolektorSDD: (sample, part) -> the rows of its defect (None: defect-free). The second defect crosses the border
# between the top and the middle third, so both thirds are anomalous.
_KSDD_DEFECTS: dict[tuple[str, int], tuple[int, int] | None] = {
    ("kos01", 0): (40, 46),
    ("kos01", 1): None,
    ("kos02", 3): (28, 36),
    ("kos02", 5): None,
    ("kos10", 2): None,
    ("kos10", 7): None,
}


def _square_mask(index: int) -> np.ndarray:
    mask = np.zeros((SIZE, SIZE), bool)
    mask[_square(index)] = True
    return mask


def _write_ksdd(source: Path) -> RawRelease:
    root = source / "KolektorSDD"
    masks: dict[tuple[str, str], np.ndarray] = {}
    normal = anomalous = 0
    for (sample, part), rows in _KSDD_DEFECTS.items():
        pixels = _pixels(_rng(sample, part), KSDD_HEIGHT, SIZE, grey=True)
        label = np.zeros((KSDD_HEIGHT, SIZE), np.uint8)
        if rows is not None:
            label[rows[0] : rows[1], 8:14] = 255
            pixels[rows[0] : rows[1], 8:14] = 250
        _save(root / sample / f"Part{part}.jpg", pixels)
        _save(root / sample / f"Part{part}_label.bmp", label)
        for third in range(3):
            crop = label[third * SIZE : (third + 1) * SIZE] > 0
            if crop.any():
                masks["SDD", f"{sample}_Part{part}_{third}.png"] = crop
                anomalous += 1
            else:
                normal += 1
    test = -(-normal // 4)  # a quarter, rounded up
    return RawRelease("KSDD", source, {"SDD": CategoryCounts(normal - test, test, anomalous)}, "defect", masks)


def _write_dagm(source: Path, categories: tuple[str, ...]) -> RawRelease:
    masks: dict[tuple[str, str], np.ndarray] = {}
    images: dict[tuple[str, str], Path] = {}
    # Per split: normal images, then defective ones (each with a label).
    layout = {"Train": (3, 1), "Test": (2, 2)}
    for category in categories:
        number = 0
        for split, (n_normal, n_defective) in layout.items():
            folder = source / category / split
            (folder / "Label").mkdir(parents=True, exist_ok=True)
            (folder / "Label" / "Labels.txt").write_text("the release's label list; not read\n", encoding="utf-8")
            for i in range(n_normal + n_defective):
                number += 1
                image = folder / f"{number:04d}.PNG"
                if i < n_normal:
                    _normal(image, grey=True)
                    if split == "Test":
                        images[category, image.name] = image
                    continue
                _anomalous(image, i, folder / "Label" / f"{number:04d}_label.PNG", grey=True)
                if split == "Test":
                    images[category, image.name] = image
                    masks[category, image.name] = _square_mask(i)
    counts = dict.fromkeys(categories, CategoryCounts(layout["Train"][0], *layout["Test"]))  # Train defects unused
    return RawRelease("DAGM", source, counts, "defect", masks, images)


def _write_headct(source: Path) -> RawRelease:
    hemorrhage = [1, 0, 1, 0]
    images = {}
    for i, flag in enumerate(hemorrhage):
        path = source / "head_ct" / f"{i:03d}.png"
        _normal(path) if not flag else _anomalous(path, i, None)
        images["headct", path.name] = path
    rows = "".join(f"{i:03d}, {flag}\n" for i, flag in enumerate(hemorrhage))
    (source / "labels.csv").write_text("id, hemorrhage\n" + rows, encoding="utf-8")
    return RawRelease("HeadCT", source, {"headct": CategoryCounts(0, 2, 2)}, "hemorrhage", images=images)


def _write_no_yes(key: str, source: Path, normal: list[str], tumour: list[str], extra: str | None) -> RawRelease:
    (category,) = paper_dataset(key).categories
    images = {}
    for name in normal:
        _normal(source / "no" / name)
        images[category, name] = source / "no" / name
    for i, name in enumerate(tumour):
        _anomalous(source / "yes" / name, i, None)
        images[category, name] = source / "yes" / name
    if extra:
        _normal(source / "pred" / extra)  # Br35H's unlabelled images: not converted
    counts = {category: CategoryCounts(0, len(normal), len(tumour))}
    return RawRelease(key, source, counts, "tumor", images=images)


# Segmentation releases: image folder, mask folder, image names, mask name pattern, anomalous folder in the tree.
_SEGMENTATION: dict[str, tuple[str, str, tuple[str, ...], str, str]] = {
    "ISIC": (
        "ISBI2016_ISIC_Part1_Test_Data",
        "ISBI2016_ISIC_Part1_Test_GroundTruth",
        ("ISIC_0000003.jpg", "ISIC_0000012.jpg", "ISIC_0000130.jpg"),
        "{stem}_Segmentation.png",
        "lesion",
    ),
    "ColonDB": ("images", "masks", ("1.png", "2.png", "10.png"), "{stem}.png", "polyp"),
    "ClinicDB": ("Original", "Ground Truth", ("1.tif", "2.tif", "10.tif"), "{stem}.tif", "polyp"),
    "TN3K": ("test-image", "test-mask", ("0000.jpg", "0003.jpg", "0010.jpg"), "{stem}.jpg", "nodule"),
}


def _write_segmentation(key: str, source: Path) -> RawRelease:
    image_folder, mask_folder, names, pattern, defect = _SEGMENTATION[key]
    (category,) = paper_dataset(key).categories
    masks, images = {}, {}
    for i, name in enumerate(names):
        image = source / image_folder / name
        _anomalous(image, i, source / mask_folder / pattern.format(stem=Path(name).stem))
        masks[category, name] = _square_mask(i)
        images[category, name] = image
    if key == "TN3K":
        _normal(source / "trainval-image" / "0001.jpg")  # the training half: not converted
    return RawRelease(key, source, {category: CategoryCounts(0, 0, len(names))}, defect, masks, images)


PREPARABLE = ("KSDD", "DAGM", "HeadCT", "BrainMRI", "Br35H", "ISIC", "ColonDB", "ClinicDB", "TN3K")
"""The data sets whose public release ``prepare-data`` converts."""


def write_raw_release(key: str, source: Path, categories: Iterable[str] | None = None) -> RawRelease:
    """Write a miniature of a data set's public release into ``source``, as ``prepare-data`` expects it.

    Args:
        key: One of :data:`PREPARABLE`.
        source: The folder to write (the release's top folder, passed as ``--source``).
        categories: DAGM only: which classes to write; ``None``: Class1 and Class2.

    Returns:
        Where it is and what the conversion must write.
    """
    source = Path(source)
    if key == "KSDD":
        return _write_ksdd(source)
    if key == "DAGM":
        return _write_dagm(source, tuple(categories or ("Class1", "Class2")))
    if key == "HeadCT":
        return _write_headct(source)
    if key == "BrainMRI":
        return _write_no_yes(key, source, ["N1.jpg", "No12.jpg"], ["Y1.jpg", "Y2.JPG", "Y3.jpeg"], None)
    if key == "Br35H":
        return _write_no_yes(key, source, ["no0.jpg", "no1.jpg"], ["y0.jpg", "y1.jpg"], "pred0.jpg")
    if key in _SEGMENTATION:
        return _write_segmentation(key, source)
    msg = f"{key} has no release to prepare; the preparable ones are {', '.join(PREPARABLE)}"
    raise ValueError(msg)
