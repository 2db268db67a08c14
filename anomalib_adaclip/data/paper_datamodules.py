"""anomalib data modules for the ten data sets of the AdaCLIP paper that anomalib has no module for.

``KSDD``, ``DAGM``, ``DTDSynthetic`` (industrial; images and masks), ``HeadCT``, ``BrainMRI``, ``Br35H`` (medical,
image-level only: no masks) and ``ISIC``, ``ColonDB``, ``ClinicDB``, ``TN3K`` (medical, pixel-level only: no normal
test images). Each reads ``<root>/<category>/`` laid out as the authors' processed copies are (see
:data:`~anomalib_adaclip.data.paper_datasets.PROCESSED_LAYOUT`), which ``anomalib-adaclip prepare-data`` also writes
from the public releases. Their sources, licences and the paper's test counts are in
:data:`~anomalib_adaclip.data.paper_datasets.PAPER_DATASETS`.

Unlike anomalib's ``Folder``, they need no normal test folder (the pixel-only sets have none: their test split is
the folder as it is) and accept an empty or missing ``train/`` (the paper's protocol is zero-shot). With the default
``val_split_mode="same_as_test"`` the validation split is a copy of the test split, as in the paper's benchmark.
Nothing is ever downloaded: a missing data set is an error saying where to get it and where to put it.

Example:
    >>> from anomalib_adaclip.data import ColonDB
    >>> datamodule = ColonDB(root="datasets/ColonDB", num_workers=0)  # reads datasets/ColonDB/ColonDB/
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import ClassVar

from anomalib.data.utils import Split, TestSplitMode, ValSplitMode
from torchvision.transforms.v2 import Transform

from anomalib_adaclip.compat import TestSplitHook

from .mvtec_tree import MVTecTreeDataset
from .paper_datasets import PaperDataset, paper_dataset, require_dataset

__all__ = [
    "DAGM",
    "ISIC",
    "KSDD",
    "TN3K",
    "Br35H",
    "BrainMRI",
    "ClinicDB",
    "ColonDB",
    "DTDSynthetic",
    "HeadCT",
    "PaperDataModule",
]

logger = logging.getLogger(__name__)


class PaperDataModule(TestSplitHook):
    """An anomalib data module for one category of one of the paper's MVTec-style data sets.

    A subclass names its data set through ``DATASET`` (a key of
    :data:`~anomalib_adaclip.data.paper_datasets.PAPER_DATASETS`), which gives its categories, its default category
    and root, whether it has masks, and what to say when it is missing.

    Args:
        root: The folder holding the category folders (like anomalib's ``MVTecAD`` root). ``None``: the data set's
            default, ``./datasets/<Name>``.
        category: The category folder, one of the data set's categories. ``None``: the data set's default category.
        train_batch_size: Training batch size.
        eval_batch_size: Validation and test batch size.
        num_workers: Data-loader workers.
        train_augmentations: Augmentations of the training images.
        val_augmentations: Augmentations of the validation images.
        test_augmentations: Augmentations of the test images.
        augmentations: Augmentations of every split without its own.
        test_split_mode: anomalib's test-split mode. ``"from_dir"`` (default): the test folder as it is, also when
            it has no normal images (where anomalib would move training images into it). ``"synthetic"``: anomalib's
            synthetic anomalies made from the normal images. ``"none"``: no test split.
        test_split_ratio: anomalib's share of normal training images for a synthetic test split.
        val_split_mode: anomalib's validation-split mode; ``"same_as_test"`` (default) as the paper's benchmark.
        val_split_ratio: anomalib's share for ``"from_test"``, ``"from_train"`` or ``"synthetic"`` validation splits.
        seed: Seed of anomalib's random splits.

    Raises:
        ValueError: ``category`` is not one of the data set's categories.
        TypeError: ``PaperDataModule`` itself is instantiated (it names no data set).
    """

    DATASET: ClassVar[str] = ""

    def __init__(
        self,
        root: Path | str | None = None,
        category: str | None = None,
        train_batch_size: int = 32,
        eval_batch_size: int = 32,
        num_workers: int = 8,
        train_augmentations: Transform | None = None,
        val_augmentations: Transform | None = None,
        test_augmentations: Transform | None = None,
        augmentations: Transform | None = None,
        test_split_mode: TestSplitMode | str = TestSplitMode.FROM_DIR,
        test_split_ratio: float = 0.2,
        val_split_mode: ValSplitMode | str = ValSplitMode.SAME_AS_TEST,
        val_split_ratio: float = 0.5,
        seed: int | None = None,
    ) -> None:
        super().__init__(
            train_batch_size=train_batch_size,
            eval_batch_size=eval_batch_size,
            num_workers=num_workers,
            train_augmentations=train_augmentations,
            val_augmentations=val_augmentations,
            test_augmentations=test_augmentations,
            augmentations=augmentations,
            test_split_mode=test_split_mode,
            test_split_ratio=test_split_ratio,
            val_split_mode=val_split_mode,
            val_split_ratio=val_split_ratio,
            seed=seed,
        )
        if not self.DATASET:
            msg = "PaperDataModule is the common base; use one of its data modules (KSDD, DAGM, ..., TN3K)."
            raise TypeError(msg)
        entry = self.paper_dataset()
        category = entry.default_category if category is None else category
        if category not in entry.categories:
            msg = (
                f"{type(self).__name__}: category {category!r} is not one of {entry.name}'s categories: "
                f"{', '.join(entry.categories)}."
            )
            raise ValueError(msg)
        self.root = Path(entry.default_root if root is None else root)
        self.category = category

    @classmethod
    def paper_dataset(cls) -> PaperDataset:
        """The registry entry of this module's data set."""
        return paper_dataset(cls.DATASET)

    def prepare_data(self) -> None:
        """Check that the data set is on disk (Lightning calls this first); nothing is downloaded.

        Raises:
            FileNotFoundError: ``root/category`` is missing; the message says where to get the data set, how to
                convert it and where to put it.
        """
        require_dataset(self.DATASET, self.root, self.category)

    def _setup(self, _stage: str | None = None) -> None:
        require_dataset(self.DATASET, self.root, self.category)
        with_masks = self.paper_dataset().has_masks
        self.train_data = MVTecTreeDataset(self.root, self.category, Split.TRAIN, with_masks=with_masks)
        self.test_data = MVTecTreeDataset(self.root, self.category, Split.TEST, with_masks=with_masks)

    def create_test_split(self) -> None:
        """The test split of anomalib, except for a test folder without normal images (used as it is)."""
        if self.test_split_mode == TestSplitMode.FROM_DIR and not self.test_data.has_normal:
            # The pixel-only sets have no normal test images and the paper tests on the folder as it is; anomalib
            # would move training images into the test split (and fail on the empty train/ of zero-shot copies).
            logger.info("%s/%s: the test split has no normal images; it is used as it is.", self.name, self.category)
            return
        if self.test_split_mode == TestSplitMode.SYNTHETIC and not (
            self.test_data.has_normal or self.train_data.has_normal
        ):
            msg = (
                f"{self.name}: test_split_mode='synthetic' makes anomalies from normal images, but "
                f"{self.root / self.category} has none in train/good or test/good."
            )
            raise ValueError(msg)
        super().create_test_split()


class KSDD(PaperDataModule):
    """KolektorSDD (v1) as the paper uses it: image thirds, category ``SDD`` (see :class:`PaperDataModule`)."""

    DATASET = "KSDD"


class DAGM(PaperDataModule):
    """DAGM 2007, categories ``Class1`` ... ``Class10`` (see :class:`PaperDataModule`)."""

    DATASET = "DAGM"


class DTDSynthetic(PaperDataModule):
    """DTD-Synthetic, 12 texture categories such as ``Woven_001`` (see :class:`PaperDataModule`)."""

    DATASET = "DTDSynthetic"


class HeadCT(PaperDataModule):
    """Head CT (hemorrhage), category ``headct``; image-level only, no masks (see :class:`PaperDataModule`)."""

    DATASET = "HeadCT"


class BrainMRI(PaperDataModule):
    """Brain MRI (tumour), category ``brain_mri``; image-level only, no masks (see :class:`PaperDataModule`)."""

    DATASET = "BrainMRI"


class Br35H(PaperDataModule):
    """Br35H (brain tumour), category ``br35h``; image-level only, no masks (see :class:`PaperDataModule`)."""

    DATASET = "Br35H"


class ISIC(PaperDataModule):
    """ISIC 2016 skin lesions, category ``isic``; pixel-level only, no normal images (see :class:`PaperDataModule`)."""

    DATASET = "ISIC"


class ColonDB(PaperDataModule):
    """CVC-ColonDB polyps, category ``ColonDB``; pixel-level only, no normal images (see :class:`PaperDataModule`)."""

    DATASET = "ColonDB"


class ClinicDB(PaperDataModule):
    """CVC-ClinicDB polyps, category ``ClinicDB``; pixel-level only, no normal images (see :class:`PaperDataModule`)."""

    DATASET = "ClinicDB"


class TN3K(PaperDataModule):
    """TN3K thyroid nodules, category ``tn3k``; pixel-level only, no normal images (see :class:`PaperDataModule`)."""

    DATASET = "TN3K"
