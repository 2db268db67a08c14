"""Auxiliary training data for AdaCLIP: the annotated test splits of anomalib data sets, concatenated.

AdaCLIP is zero-shot on its target data, but its prompts, prompt generators and projections learn on *other* data
with anomaly labels and masks: the paper trains on the test splits of MVTec AD + ColonDB (to test everything else)
and of VisA + ClinicDB (to test MVTec AD and ColonDB). :class:`AuxiliaryDataModule` builds such a training set from
anomalib's own data set classes (``MVTecADDataset``, ``VisaDataset``, ``MPDDDataset``, ``BTechDataset``,
``FolderDataset``, always ``split="test"``), one :class:`DatasetSource` per data set:

- every sample carries its own class name for the prompts (the category, e.g. ``"metal_nut"``, or a Folder's
  ``class_name``); normal images get all-zero masks; an anomalous image without a mask is an error;
- optionally, with probability ``mosaic_probability``, a sample is replaced by a 2x2 mosaic of four random images of
  the same category and their masks (the reference's augmentation, used with probability 0.2 on MVTec AD);
- images and masks are resized exactly as at test time: the first ``Resize`` of the model's pre-processor (bicubic,
  antialiased; masks nearest) is applied per sample, and the pre-processor normalises the batch (as anomalib's data
  modules do).

Batches are :class:`AuxiliaryBatch` (anomalib's ``ImageBatch`` with a ``class_name`` list). The same sources can serve
as validation data (``val``); validation never uses the mosaic.

Example:
    >>> from anomalib_adaclip.data import AuxiliaryDataModule, DatasetSource
    >>> data = AuxiliaryDataModule(  # doctest: +SKIP
    ...     train=[
    ...         DatasetSource("MVTecAD", root="datasets/MVTecAD", mosaic_probability=0.2),  # all 15 categories
    ...         DatasetSource("Folder", root="datasets/ColonDB", name="ColonDB", class_name="colon",
    ...                       abnormal_dir="images", mask_dir="masks"),
    ...     ],
    ...     val=[DatasetSource("Visa", root="datasets/visa", categories=["candle"])],
    ... )
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from anomalib.data import (
    AnomalibDataset,
    BTechDataset,
    FolderDataset,
    ImageBatch,
    ImageItem,
    MPDDDataset,
    MVTecADDataset,
    VisaDataset,
)
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from torchvision.transforms.v2 import Resize, Transform
from torchvision.transforms.v2 import functional as TF  # noqa: N812
from torchvision.tv_tensors import Image, Mask

from anomalib_adaclip.compat import (
    BTECH_CATEGORIES,
    MPDD_CATEGORIES,
    MVTEC_AD_CATEGORIES,
    VISA_CATEGORIES,
    extract_transforms_by_type,
)
from anomalib_adaclip.components.pre_processing import input_resize

from .mvtec_tree import MVTecTreeDataset
from .paper_datasets import PAPER_DATASETS, missing_dataset_message

logger = logging.getLogger(__name__)

__all__ = [
    "CATEGORY_DATASETS",
    "AuxiliaryBatch",
    "AuxiliaryDataModule",
    "AuxiliaryDataset",
    "AuxiliaryItem",
    "DatasetSource",
]

# Opens the test split of one category: (root holding the category folders, category) -> data set.
SplitOpener = Callable[[Path, str], AnomalibDataset]


def _anomalib_test_split(dataset_class: type[AnomalibDataset]) -> SplitOpener:
    return lambda root, category: dataset_class(root=root, category=category, split="test")


def _paper_test_split(name: str) -> SplitOpener:
    has_masks = PAPER_DATASETS[name].has_masks
    return lambda root, category: MVTecTreeDataset(root, category, split="test", with_masks=has_masks)


# Data sets organised in categories (MVTec AD layout): how to open a category's test split, and the categories.
# anomalib's own classes where anomalib has the data set; the MVTec-style trees of the paper's other data sets.
CATEGORY_DATASETS: dict[str, tuple[SplitOpener, tuple[str, ...]]] = {
    "MVTecAD": (_anomalib_test_split(MVTecADDataset), MVTEC_AD_CATEGORIES),
    "Visa": (_anomalib_test_split(VisaDataset), VISA_CATEGORIES),
    "MPDD": (_anomalib_test_split(MPDDDataset), MPDD_CATEGORIES),
    "BTech": (_anomalib_test_split(BTechDataset), BTECH_CATEGORIES),
    **{
        name: (_paper_test_split(name), entry.categories)
        for name, entry in PAPER_DATASETS.items()
        if not entry.read_by_anomalib
    },
}
FOLDER = "Folder"
VISA_SPLIT_FOLDER = "visa_pytorch"  # where anomalib's Visa data module puts the MVTec-layout copy of VisA
MOSAIC_TILES = 4


@dataclass
class AuxiliaryItem(ImageItem):
    """anomalib's ``ImageItem`` plus the class name the prompts use for this image."""

    class_name: str | None = None


@dataclass
class AuxiliaryBatch(ImageBatch):
    """anomalib's ``ImageBatch`` plus one class name per image (``class_name``)."""

    item_class: ClassVar[type[AuxiliaryItem]] = AuxiliaryItem
    class_name: list[str] | None = None


@dataclass
class DatasetSource:
    """One auxiliary data set: the test split of some categories of an anomalib data set, or of a Folder.

    Args:
        dataset: A data set organised in categories: anomalib's ``"MVTecAD"``, ``"Visa"``, ``"MPDD"``, ``"BTech"``, or
            one of the paper's other data sets in their MVTec-style trees (``"ColonDB"``, ``"ClinicDB"``, ``"ISIC"``,
            ``"TN3K"``, ``"KSDD"``, ``"DAGM"``, ``"DTDSynthetic"``, ``"HeadCT"``, ``"BrainMRI"``, ``"Br35H"``: see
            :mod:`anomalib_adaclip.data.paper_datasets` and ``anomalib-adaclip prepare-data``); or ``"Folder"``.
        root: Folder that holds the categories (for VisA: the folder with ``visa_pytorch/`` as anomalib's Visa data
            module prepares it, or the raw VisA download, which is then prepared the same way), or the Folder data
            set's root.
        categories: Categories to use; ``None`` uses every category of the data set. Ignored for ``Folder``.
        class_names: Class name of the prompts per category, where it should differ from the category (e.g.
            ``{"pcb1": "printed circuit board"}``).
        mosaic_probability: Probability that a training sample is a 2x2 mosaic of four random images of its category.
            The paper uses 0.2 on MVTec AD and 0 elsewhere. Defaults to 0.
        name: Name of a Folder data set (used in logs).
        class_name: Class name of every image of a Folder data set. Defaults to ``name``.
        abnormal_dir: Folder: anomalous images (relative to ``root`` or absolute; one folder or a list).
        mask_dir: Folder: masks of the anomalous images (a mask's file stem must contain its image's stem).
        normal_test_dir: Folder: normal images.
        normal_dir: Folder: anomalib's training normals; not part of a test split, so not used for training. Only
            needed where anomalib requires it; defaults to ``abnormal_dir``.
        extensions: Folder: image file extensions. Defaults to anomalib's.
        missing_masks: What an anomalous image without a mask means: ``"error"`` (the default: pixel-level training
            needs masks) or ``"empty"``, an all-zero mask, so the image trains the image-level loss and counts as
            normal in the pixel losses. ``"empty"`` is what the authors' code does for the image-level-only data sets
            (HeadCT, BrainMRI, Br35H) when it trains on all 14 data sets (the released ``all`` checkpoint).
    """

    dataset: str
    root: str | Path | None = None
    categories: list[str] | None = None
    class_names: dict[str, str] | None = None
    mosaic_probability: float = 0.0
    name: str | None = None
    class_name: str | None = None
    abnormal_dir: str | list[str] | None = None
    mask_dir: str | list[str] | None = None
    normal_test_dir: str | list[str] | None = None
    normal_dir: str | list[str] | None = None
    extensions: list[str] | None = None
    missing_masks: Literal["error", "empty"] = "error"

    def __post_init__(self) -> None:
        """Check the arguments that do not need the files."""
        known = (*CATEGORY_DATASETS, FOLDER)
        if self.dataset not in known:
            msg = f"Unknown auxiliary data set {self.dataset!r}: choose one of {list(known)}."
            raise ValueError(msg)
        if not 0.0 <= float(self.mosaic_probability) <= 1.0:
            msg = f"mosaic_probability must be in [0, 1], got {self.mosaic_probability} ({self.label})."
            raise ValueError(msg)
        if self.missing_masks not in ("error", "empty"):
            msg = f"{self.label}: missing_masks must be 'error' or 'empty', got {self.missing_masks!r}."
            raise ValueError(msg)
        if self.root is None:
            msg = f"{self.label}: `root` is required (the folder that holds the data set)."
            raise ValueError(msg)
        if self.dataset == FOLDER:
            if not self.name:
                msg = f"{self.label}: a Folder data set needs a `name`."
                raise ValueError(msg)
            if not (self.abnormal_dir or self.normal_test_dir):
                msg = f"{self.label}: a Folder data set needs `abnormal_dir` and/or `normal_test_dir`."
                raise ValueError(msg)
            if self.abnormal_dir and not self.mask_dir and self.missing_masks == "error":
                msg = (
                    f"{self.label}: the anomalous images of `abnormal_dir` need masks for training: set `mask_dir`, "
                    f"or missing_masks='empty' for an image-level-only data set."
                )
                raise ValueError(msg)
        elif self.categories is not None and not self.categories:
            msg = f"{self.label}: `categories` is empty; give at least one, or null for all of them."
            raise ValueError(msg)

    @property
    def label(self) -> str:
        """Short description for messages, e.g. ``MVTecAD at datasets/MVTecAD``."""
        name = f"Folder {self.name!r}" if self.dataset == FOLDER else self.dataset
        return f"{name} at {self.root}"


@dataclass
class _Part:
    """One category of one source: an anomalib data set (test split, original resolution) and its class name."""

    dataset: AnomalibDataset
    class_name: str
    mosaic_probability: float
    description: str


def _check_samples(dataset: AnomalibDataset, description: str, missing_masks: str) -> None:
    samples = dataset.samples
    if len(samples) == 0:
        msg = f"{description}: the test split holds no images."
        raise ValueError(msg)
    if missing_masks == "empty":
        return
    anomalous = samples[samples.label_index == 1]
    without_mask = anomalous[anomalous.mask_path.fillna("").astype(str) == ""]
    if len(without_mask):
        examples = ", ".join(str(path) for path in without_mask.image_path.head(3))
        msg = (
            f"{description}: {len(without_mask)} anomalous image(s) have no mask (e.g. {examples}); AdaCLIP's training "
            f"needs a mask for every anomalous image (or missing_masks='empty' for an image-level-only data set)."
        )
        raise ValueError(msg)


def _category_root(source: DatasetSource, root: Path, category: str) -> Path | None:
    """The folder whose ``<category>/test`` holds the category (``None`` if none does).

    A raw VisA download is prepared into anomalib's MVTec-layout copy first, as anomalib's Visa data module does.
    """
    candidates = [root / VISA_SPLIT_FOLDER, root] if source.dataset == "Visa" else [root]
    for candidate in candidates:
        if (candidate / category / "test").is_dir():
            return candidate
    if source.dataset == "Visa" and (root / category / "Data").is_dir():
        from anomalib.data import Visa  # noqa: PLC0415

        logger.info("Preparing VisA's MVTec-layout split in %s (anomalib's Visa.prepare_data).", root / "visa_pytorch")
        Visa(root=root, category=category).prepare_data()
        return root / VISA_SPLIT_FOLDER
    return None


def build_parts(source: DatasetSource) -> list[_Part]:
    """Open the test split of every category of a source with anomalib's data set classes (images at full size).

    Raises:
        FileNotFoundError: The root or a category folder does not exist.
        ValueError: A test split is empty, or an anomalous image has no mask.
    """
    root = Path(source.root).expanduser()
    if not root.is_dir():
        entry = PAPER_DATASETS.get(source.dataset)
        if entry is not None and not entry.read_by_anomalib:
            msg = f"{source.label}: {missing_dataset_message(entry, root, entry.default_category)}"
            raise FileNotFoundError(msg)
        hint = ""
        if source.dataset in CATEGORY_DATASETS:
            hint = (
                f" anomalib's data module downloads it where the licence allows, e.g. "
                f"anomalib.data.{source.dataset}(root='{root}', category=...).prepare_data()."
            )
        msg = f"{source.label}: root folder not found: {root}.{hint}"
        raise FileNotFoundError(msg)
    if source.dataset == FOLDER:
        abnormal = source.abnormal_dir
        try:
            dataset = FolderDataset(
                name=str(source.name),
                root=root,
                # Folder's normal_dir is its training split, which auxiliary data do not use; anomalib requires one.
                normal_dir=source.normal_dir or abnormal or source.normal_test_dir,
                abnormal_dir=abnormal,
                normal_test_dir=source.normal_test_dir,
                mask_dir=source.mask_dir,
                split="test",
                extensions=tuple(source.extensions) if source.extensions else None,
            )
        except Exception as error:  # anomalib: missing folders, no images, masks that do not match the images
            msg = f"{source.label}: anomalib cannot read the Folder data set: {error}"
            raise (FileNotFoundError if isinstance(error, FileNotFoundError) else ValueError)(msg) from error
        _check_samples(dataset, source.label, source.missing_masks)
        return [_Part(dataset, source.class_name or str(source.name), source.mosaic_probability, source.label)]
    open_test_split, known = CATEGORY_DATASETS[source.dataset]
    categories = list(source.categories) if source.categories is not None else list(known)
    unknown = set(source.class_names or {}) - set(categories)
    if unknown:
        msg = f"{source.label}: class_names for categories that are not used: {sorted(unknown)}."
        raise ValueError(msg)
    category_roots = {category: _category_root(source, root, category) for category in categories}
    missing = [category for category, category_root in category_roots.items() if category_root is None]
    if missing:
        present = sorted(path.name for path in root.iterdir() if path.is_dir())
        msg = (
            f"{source.label}: categories {missing} not found (no folder <root>/<category>/test). Known categories "
            f"of {source.dataset}: {list(known)}; folders present in {root}: {present}. Set `categories` to the ones "
            f"you have."
        )
        raise FileNotFoundError(msg)
    parts = []
    for category, category_root in category_roots.items():
        description = f"{source.dataset} category {category!r} at {category_root / category}"
        try:
            dataset = open_test_split(category_root, category)
        except Exception as error:  # anomalib raises pandas / OS errors for incomplete folders
            msg = (
                f"{description}: anomalib cannot read its test split ({type(error).__name__}: {error}). Expected the "
                f"MVTec AD layout: test/<defect type>/<image>, with one ground_truth/<defect type>/<image stem>_mask "
                f"file per anomalous image."
            )
            raise ValueError(msg) from error
        _check_samples(dataset, description, source.missing_masks)
        class_name = (source.class_names or {}).get(category, category)
        parts.append(_Part(dataset, class_name, source.mosaic_probability, description))
    return parts


class AuxiliaryDataset(Dataset):
    """The concatenated test splits of several sources, resized as at test time, with class names.

    Args:
        sources: The data sets.
        resize: The model's resize (its pre-processor's first ``Resize``); applied to image and mask together.
        mosaic: Whether to apply the sources' mosaic augmentation (training only).
    """

    def __init__(self, sources: Sequence[DatasetSource], resize: Transform, mosaic: bool = False) -> None:
        super().__init__()
        if not sources:
            msg = "AuxiliaryDataset needs at least one DatasetSource."
            raise ValueError(msg)
        self.parts = [part for source in sources for part in build_parts(source)]
        self.resize = resize
        self.mosaic = mosaic
        self._ends = []
        total = 0
        for part in self.parts:
            total += len(part.dataset)
            self._ends.append(total)

    @property
    def datasets(self) -> list[AnomalibDataset]:
        """The anomalib data sets whose images this data set reads, in order (the input-file checks list them)."""
        return [part.dataset for part in self.parts]

    def __len__(self) -> int:
        """Number of images over all sources and categories."""
        return self._ends[-1]

    @property
    def class_names(self) -> list[str]:
        """Class name of every sample, in order."""
        return [part.class_name for part in self.parts for _ in range(len(part.dataset))]

    def summary(self) -> str:
        """One line per category: images, anomalous images, class name, mosaic probability."""
        lines = []
        for part in self.parts:
            labels = part.dataset.samples.label_index
            lines.append(
                f"{part.description}: {len(labels)} images ({int((labels == 1).sum())} anomalous), class name "
                f"{part.class_name!r}" + (f", mosaic p={part.mosaic_probability}" if self.mosaic else "")
            )
        return "\n".join(lines)

    def __getitem__(self, index: int) -> AuxiliaryItem:
        """Sample ``index``: an image (or a mosaic) resized to the model's input size, its mask, label and class."""
        if not 0 <= index < len(self):
            msg = f"index {index} out of range for {len(self)} samples"
            raise IndexError(msg)
        part_index = bisect.bisect_right(self._ends, index)
        part = self.parts[part_index]
        local = index - (self._ends[part_index - 1] if part_index else 0)
        # The global torch generator: seeded by Lightning's seed_everything (per worker with workers=True).
        if self.mosaic and part.mosaic_probability > 0 and float(torch.rand(())) < part.mosaic_probability:
            image, mask, image_path = self._mosaic(part)
            label = bool(mask.any())  # anomalous when any tile is
        else:
            item = part.dataset[local]
            image, mask, image_path, label = item.image, item.gt_mask, item.image_path, bool(item.gt_label)
        if mask is None:  # a split without any mask (only normal images): all zeros
            mask = torch.zeros(image.shape[-2:], dtype=torch.uint8)
        image, mask = self.resize(Image(image), Mask(mask))
        return AuxiliaryItem(
            image=image,
            gt_mask=mask,
            gt_label=torch.tensor(label),
            image_path=image_path,
            class_name=part.class_name,
        )

    @staticmethod
    def _mosaic(part: _Part) -> tuple[torch.Tensor, torch.Tensor, str]:
        """A 2x2 mosaic of four random images of a category (distinct where it has four) and of their masks."""
        n_images = len(part.dataset)
        if n_images >= MOSAIC_TILES:
            indices = torch.randperm(n_images)[:MOSAIC_TILES].tolist()
        else:
            indices = torch.randint(n_images, (MOSAIC_TILES,)).tolist()
        tiles = [part.dataset[index] for index in indices]
        height, width = tiles[0].image.shape[-2:]
        images, masks = [], []
        for tile in tiles:
            image = tile.image
            mask = tile.gt_mask if tile.gt_mask is not None else torch.zeros(image.shape[-2:], dtype=torch.uint8)
            if tuple(image.shape[-2:]) != (height, width):
                image = TF.resize(image, [height, width], interpolation=TF.InterpolationMode.BICUBIC, antialias=True)
                mask = TF.resize(Mask(mask), [height, width], interpolation=TF.InterpolationMode.NEAREST)
            images.append(torch.as_tensor(image))
            masks.append(torch.as_tensor(mask).to(torch.uint8))
        image = torch.cat([torch.cat(images[:2], dim=-1), torch.cat(images[2:], dim=-1)], dim=-2)
        mask = torch.cat([torch.cat(masks[:2], dim=-1), torch.cat(masks[2:], dim=-1)], dim=-2)
        return image, mask, "mosaic:" + "|".join(str(tile.image_path) for tile in tiles)


def _as_sources(sources: Sequence[DatasetSource | Mapping[str, Any]] | None, argument: str) -> list[DatasetSource]:
    if sources is None:
        return []
    if isinstance(sources, DatasetSource | Mapping):
        sources = [sources]
    converted = []
    for source in sources:
        converted_source = DatasetSource(**source) if isinstance(source, Mapping) else source
        if not isinstance(converted_source, DatasetSource):
            msg = f"`{argument}` must hold DatasetSource objects or mappings, got {type(source).__name__}."
            raise TypeError(msg)
        converted.append(converted_source)
    return converted


class AuxiliaryDataModule(LightningDataModule):
    """Training (and optionally validation) data for AdaCLIP's prompts: annotated test splits of anomalib data sets.

    Args:
        train: The training sources (at least one).
        val: Validation sources (the target data whose metrics select the best checkpoint), or ``None``.
        batch_size: Training batch size. The reference trains with 1. Defaults to 1.
        eval_batch_size: Validation batch size. Defaults to 8.
        num_workers: Data loader workers. Defaults to 4.
        shuffle: Shuffle the training data every epoch (seeded). ``False`` keeps the order, also across devices (each
            process takes every N-th sample). Defaults to ``True``.
        image_size: Input size when the data module is used without a model; with a model, the model's
            pre-processor decides (a different value here is an error).
    """

    def __init__(
        self,
        train: list[DatasetSource],
        val: list[DatasetSource] | None = None,
        batch_size: int = 1,
        eval_batch_size: int = 8,
        num_workers: int = 4,
        shuffle: bool = True,
        image_size: int | None = None,
    ) -> None:
        super().__init__()
        self.train_sources = _as_sources(train, "train")
        self.val_sources = _as_sources(val, "val")
        if not self.train_sources:
            msg = "AuxiliaryDataModule needs at least one training source (`train`)."
            raise ValueError(msg)
        for name, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            if int(value) < 1:
                msg = f"{name} must be at least 1, got {value}."
                raise ValueError(msg)
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size)
        self.num_workers = int(num_workers)
        self.shuffle = bool(shuffle)
        self.image_size = image_size
        self.train_data: AuxiliaryDataset | None = None
        self.val_data: AuxiliaryDataset | None = None

    def _resize(self) -> Transform:
        """The first ``Resize`` of the attached model's pre-processor, else AdaCLIP's input resize."""
        model = self.trainer.lightning_module if self.trainer is not None else None
        transform = getattr(getattr(model, "pre_processor", None), "transform", None)
        resizes = extract_transforms_by_type(transform, Resize)
        if not resizes:
            return input_resize(self.image_size)
        resize = resizes[0]
        if self.image_size is not None and tuple(resize.size) != (self.image_size, self.image_size):
            msg = (
                f"AuxiliaryDataModule(image_size={self.image_size}) differs from the model's input size "
                f"{tuple(resize.size)}; leave image_size unset to follow the model."
            )
            raise ValueError(msg)
        return resize

    def prepare_data(self) -> None:
        """Check every source's folders (and prepare a raw VisA download) once, before any process reads them."""
        for source in (*self.train_sources, *self.val_sources):
            build_parts(source)

    def setup(self, stage: str | None = None) -> None:
        """Open the training and validation data."""
        resize = self._resize()
        if stage in (None, "fit") and self.train_data is None:
            self.train_data = AuxiliaryDataset(self.train_sources, resize, mosaic=True)
            logger.info("Auxiliary training data, %d images:\n%s", len(self.train_data), self.train_data.summary())
        if stage in (None, "fit", "validate") and self.val_data is None and self.val_sources:
            self.val_data = AuxiliaryDataset(self.val_sources, resize, mosaic=False)
            logger.info("Validation data, %d images:\n%s", len(self.val_data), self.val_data.summary())

    def train_dataloader(self) -> DataLoader:
        """Shuffled training batches of :class:`AuxiliaryBatch`."""
        if self.train_data is None:
            self.setup("fit")
        sampler = None
        trainer = self.trainer
        if not self.shuffle and trainer is not None and trainer.world_size > 1:
            # Lightning's automatic distributed sampler always shuffles training data: keep the order when asked to.
            sampler = DistributedSampler(
                self.train_data, num_replicas=trainer.world_size, rank=trainer.global_rank, shuffle=False
            )
        return DataLoader(
            self.train_data,
            batch_size=self.batch_size,
            shuffle=self.shuffle if sampler is None else False,
            sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=AuxiliaryBatch.collate,
            persistent_workers=self.num_workers > 0,
        )

    def val_dataloader(self) -> DataLoader | list:
        """Validation batches, or an empty list (no validation) when there are no validation sources."""
        if not self.val_sources:
            return []
        if self.val_data is None:
            self.setup("validate")
        return DataLoader(
            self.val_data,
            batch_size=self.eval_batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            collate_fn=AuxiliaryBatch.collate,
            persistent_workers=self.num_workers > 0,
        )
