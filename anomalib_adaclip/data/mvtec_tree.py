"""Reading an MVTec-style tree with masks paired by file name: the samples of the paper's own data modules.

The tree is ``<category>/{train,test}/<folder>/`` with images, plus ``<category>/ground_truth/<folder>/`` with one
mask per anomalous test image. A folder named ``good`` holds normal images; every other folder holds anomalous ones.

Masks are paired with images by file-name stem: the mask of ``test/polyp/12.png`` is ``ground_truth/polyp/12.*`` or
``12_mask.*``, ``12_label.*``, ``12_segmentation.*`` (any case, any image extension). The authors' scripts pair by
sorted order instead, which silently mispairs as soon as one file is missing or names sort differently (``10.png``
before ``9.png``); here a name that does not match is an error naming the files. anomalib's ``MVTecADDataset`` also
pairs by sorted order (and then checks names), and needs masks for every anomalous image, so it cannot read the
image-only sets; this module reads all three kinds of tree.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from anomalib.data import AnomalibDataset
from anomalib.data.utils import LabelName, Split
from pandas import DataFrame
from torchvision.datasets.folder import IMG_EXTENSIONS
from torchvision.transforms.v2 import Transform

__all__ = ["MASK_SUFFIXES", "NORMAL_FOLDER", "MVTecTreeDataset", "make_mvtec_tree_samples", "pair_masks"]

NORMAL_FOLDER = "good"
"""The folder of normal images; every other folder under ``train/`` or ``test/`` is anomalous."""

MASK_SUFFIXES = ("_mask", "_label", "_segmentation")
"""What may follow an image's stem in its mask's name (compared case-insensitively)."""

_COLUMNS = ["path", "split", "label", "image_path", "mask_path", "label_index"]
_SHOWN = 5  # file names listed in an error before "and N more"


def _images(folder: Path) -> list[Path]:
    """The image files directly in ``folder``, sorted by name (other files, such as ``Thumbs.db``, are skipped)."""
    return sorted(path for path in folder.iterdir() if path.is_file() and path.suffix.lower() in IMG_EXTENSIONS)


def _listing(paths: Iterable[Path]) -> str:
    names = sorted(path.name for path in paths)
    more = f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
    return ", ".join(names[:_SHOWN]) + more


def pair_masks(images: list[Path], masks: list[Path]) -> dict[Path, Path]:
    """Pair each image with the mask named after it.

    The mask of ``<stem>.<ext>`` is named ``<stem>`` or ``<stem>`` followed by one of :data:`MASK_SUFFIXES`, with
    any image extension; names are compared case-insensitively (``Label``, ``.PNG``).

    Args:
        images: The anomalous images of one folder.
        masks: The files of the matching ``ground_truth`` folder.

    Returns:
        The mask of each image.

    Raises:
        ValueError: An image has no mask or several, or a mask belongs to no image; the message names the files.
    """
    by_stem: dict[str, list[Path]] = {}
    for mask in masks:
        by_stem.setdefault(mask.stem.lower(), []).append(mask)
    pairs: dict[Path, Path] = {}
    unpaired: list[Path] = []
    for image in images:
        stem = image.stem.lower()
        candidates = [
            mask for name in (stem, *(stem + suffix for suffix in MASK_SUFFIXES)) for mask in by_stem.get(name, [])
        ]
        if len(candidates) > 1:
            msg = f"image {image} matches several masks ({_listing(candidates)}); keep one mask per image."
            raise ValueError(msg)
        if candidates:
            pairs[image] = candidates[0]
        else:
            unpaired.append(image)
    if unpaired:
        folder = masks[0].parent if masks else "the ground_truth folder"
        msg = (
            f"{len(unpaired)} anomalous image(s) in {unpaired[0].parent} have no mask in {folder}: "
            f"{_listing(unpaired)}. "
            f"A mask is named after its image's stem, optionally followed by {', '.join(MASK_SUFFIXES)} "
            "(masks are paired by name, not by sorted order)."
        )
        raise ValueError(msg)
    orphans = sorted(set(masks) - set(pairs.values()))
    if orphans:
        msg = (
            f"{len(orphans)} mask(s) in {orphans[0].parent} belong to no image: {_listing(orphans)}. A mask is named "
            f"after its image's stem, optionally followed by {', '.join(MASK_SUFFIXES)}."
        )
        raise ValueError(msg)
    return pairs


def make_mvtec_tree_samples(category_root: str | Path, split: str | Split, with_masks: bool) -> DataFrame:
    """The samples of one split of an MVTec-style category folder, in anomalib's sample format.

    Args:
        category_root: The category folder (it holds ``train/``, ``test/`` and possibly ``ground_truth/``).
        split: ``"train"`` or ``"test"``. A missing or empty ``train/`` gives no samples (zero-shot copies have
            none); ``test/`` must hold images.
        with_masks: Whether the anomalous test images have masks in ``ground_truth/<folder>/``. Without, every
            sample's ``mask_path`` is ``""`` and the samples' task is classification.

    Returns:
        Columns ``path, split, label, image_path, mask_path, label_index``, sorted by ``image_path``; ``mask_path``
        is ``""`` where an image has no mask. ``attrs["task"]`` is ``"segmentation"`` with masks, else
        ``"classification"``.

    Raises:
        FileNotFoundError: ``test/`` is missing or holds no images, or ``ground_truth/<folder>/`` is missing.
        ValueError: Images and masks do not pair by name (see :func:`pair_masks`), or ``train/`` has a folder of
            images other than ``good/``.
    """
    category_root = Path(category_root)
    split = Split(split)
    split_root = category_root / split.value
    rows: list[tuple[str, str, str, str, str, int]] = []
    folders = sorted(path for path in split_root.iterdir() if path.is_dir()) if split_root.is_dir() else []
    for folder in folders:
        images = _images(folder)
        normal = folder.name == NORMAL_FOLDER
        if split == Split.TRAIN and not normal and images:
            # The anomaly data sets train on normal images only; a defect folder here is a misplaced test folder.
            msg = f"{folder} holds images, but train/ may only hold {NORMAL_FOLDER}/ (normal images)."
            raise ValueError(msg)
        masks: dict[Path, Path] = {}
        if with_masks and not normal and split == Split.TEST and images:
            mask_folder = category_root / "ground_truth" / folder.name
            if not mask_folder.is_dir():
                msg = (
                    f"{folder} holds anomalous images but their masks are missing: expected {mask_folder} with one "
                    "mask per image, named after it."
                )
                raise FileNotFoundError(msg)
            masks = pair_masks(images, _images(mask_folder))
        rows += [
            (
                str(category_root),
                split.value,
                folder.name,
                str(image),
                str(masks.get(image, "")),
                int(LabelName.NORMAL if normal else LabelName.ABNORMAL),
            )
            for image in images
        ]
    if split == Split.TEST and not rows:
        msg = (
            f"no test images in {split_root}: expected test/good/ (normal) and test/<folder>/ (anomalous) folders of "
            "images in it."
        )
        raise FileNotFoundError(msg)
    samples = DataFrame(rows, columns=_COLUMNS).sort_values(by="image_path", ignore_index=True)
    samples["label_index"] = samples["label_index"].astype(int)
    samples.attrs["task"] = "segmentation" if with_masks else "classification"
    return samples


class MVTecTreeDataset(AnomalibDataset):
    """One split of one category of an MVTec-style tree, with masks paired by name (or without masks).

    Args:
        root: The folder holding the category folders.
        category: The category folder's name.
        split: ``"train"`` or ``"test"``.
        with_masks: Whether anomalous test images have masks in ``ground_truth/`` (see
            :func:`make_mvtec_tree_samples`).
        augmentations: anomalib's augmentations of the images (and masks).
    """

    def __init__(
        self,
        root: str | Path,
        category: str,
        split: str | Split,
        with_masks: bool,
        augmentations: Transform | None = None,
    ) -> None:
        super().__init__(augmentations=augmentations)
        self.root_category = Path(root) / category
        self.category = category
        self.split = Split(split)
        self.samples = make_mvtec_tree_samples(self.root_category, self.split, with_masks=with_masks)
