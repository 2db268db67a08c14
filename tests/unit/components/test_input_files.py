"""The input files of a run (``components/input_files.py``): which loaders the callback checks at each stage, and
messages that name the split, the data module and the file.

The checks of single files, case by case, are tested end to end in ``tests/integration/test_inputs.py``.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from anomalib.data import PredictDataset
from torch.utils.data import DataLoader

from anomalib_adaclip.components.input_files import InputFileCheck, InputFilesError
from tests.helpers import write_png


def loader(folder: Path) -> DataLoader:
    dataset = PredictDataset(folder)
    return DataLoader(dataset, collate_fn=dataset.collate_fn)


@pytest.fixture
def folders(tmp_path: Path) -> SimpleNamespace:
    good, bad = tmp_path / "good", tmp_path / "bad"
    write_png(good / "a.png", np.zeros((8, 8, 3), dtype=np.uint8))
    write_png(bad / "a.png", np.zeros((8, 8, 3), dtype=np.uint8))
    (bad / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return SimpleNamespace(good=loader(good), bad=loader(bad))


@pytest.mark.parametrize(
    ("hook", "attribute", "split"),
    [
        ("on_train_start", "train_dataloader", "training"),
        ("on_validation_start", "val_dataloaders", "validation"),
        ("on_test_start", "test_dataloaders", "test"),
        ("on_predict_start", "predict_dataloaders", "prediction"),
    ],
)
def test_each_stage_checks_its_own_loaders_and_names_split_data_module_and_file(
    folders: SimpleNamespace, hook: str, attribute: str, split: str
) -> None:
    datamodule = SimpleNamespace(name="parts", category="gear")
    # Every other stage's loader is broken: only the stage's own may be read.
    others = {name: folders.bad for name in ("train_dataloader", "val_dataloaders", "test_dataloaders")}
    others["predict_dataloaders"] = folders.bad
    good = SimpleNamespace(datamodule=datamodule, **{**others, attribute: folders.good})
    getattr(InputFileCheck(), hook)(good, None)
    bad = SimpleNamespace(datamodule=datamodule, **{**others, attribute: folders.bad})
    with pytest.raises(InputFilesError) as error:
        getattr(InputFileCheck(), hook)(bad, None)
    assert f"the {split} data of parts 'gear'" in str(error.value) and "broken.png" in str(error.value)


def test_without_a_data_module_the_message_names_the_split_alone(folders: SimpleNamespace) -> None:
    with pytest.raises(InputFilesError, match="the prediction data") as error:
        InputFileCheck().on_predict_start(SimpleNamespace(datamodule=None, predict_dataloaders=[folders.bad]), None)
    assert "the prediction data of" not in str(error.value)
