"""Data of AdaCLIP beyond anomalib's own modules: the paper's data sets, auxiliary training data, generated images.

- :mod:`.paper_datasets`: the paper's 14 data sets (sources, licences, tasks, test counts, which module reads each);
- :mod:`.paper_datamodules`: anomalib data modules for the ten that anomalib has none for (``KSDD``, ``DAGM``,
  ``DTDSynthetic``, ``HeadCT``, ``BrainMRI``, ``Br35H``, ``ISIC``, ``ColonDB``, ``ClinicDB``, ``TN3K``), reading
  :mod:`.mvtec_tree` trees;
- :mod:`.preparation`: the public releases converted into those trees (``anomalib-adaclip prepare-data``);
- :mod:`.auxiliary`: :class:`~anomalib_adaclip.data.auxiliary.AuxiliaryDataModule`, annotated images (the test splits of
  anomalib data sets and ``Folder`` roots) to train the prompts on;
- :mod:`.synthetic`: small generated data sets with drawn defects and masks (smoke tests, notebooks, tests).
"""

from .auxiliary import AuxiliaryBatch, AuxiliaryDataModule, AuxiliaryDataset, AuxiliaryItem, DatasetSource
from .paper_datamodules import (
    DAGM,
    ISIC,
    KSDD,
    TN3K,
    Br35H,
    BrainMRI,
    ClinicDB,
    ColonDB,
    DTDSynthetic,
    HeadCT,
    PaperDataModule,
)
from .paper_datasets import PAPER_DATASETS, PaperDataset

__all__ = [
    "DAGM",
    "ISIC",
    "KSDD",
    "PAPER_DATASETS",
    "TN3K",
    "AuxiliaryBatch",
    "AuxiliaryDataModule",
    "AuxiliaryDataset",
    "AuxiliaryItem",
    "Br35H",
    "BrainMRI",
    "ClinicDB",
    "ColonDB",
    "DTDSynthetic",
    "DatasetSource",
    "HeadCT",
    "PaperDataModule",
    "PaperDataset",
]
