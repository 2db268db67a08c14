"""Data of AdaCLIP beyond anomalib's own modules: auxiliary training data, generated defect images.

- :mod:`.auxiliary`: :class:`AuxiliaryDataModule`, annotated images (the test splits of anomalib data sets and
  ``Folder`` roots) to train the prompts on;
- :mod:`.synthetic`: small generated data sets with drawn defects and masks (smoke tests, notebooks, tests).
"""

from .auxiliary import AuxiliaryBatch, AuxiliaryDataModule, AuxiliaryDataset, AuxiliaryItem, DatasetSource

__all__ = ["AuxiliaryBatch", "AuxiliaryDataModule", "AuxiliaryDataset", "AuxiliaryItem", "DatasetSource"]
