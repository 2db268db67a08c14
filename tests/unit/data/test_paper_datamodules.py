"""The paper's 14 data sets load through their anomalib data modules, as the generated copies were written."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from anomalib.data import AnomalibDataModule
from anomalib.data.utils import TestSplitMode as SplitMode  # not collected as a test class
from PIL import Image

from anomalib_adaclip.data import DAGM, KSDD, PAPER_DATASETS, ColonDB, HeadCT, PaperDataModule
from tests.data.paper_layouts import SIZE, DatasetTree, write_all_dataset_trees, write_dataset_tree

OWN = ("KSDD", "DAGM", "DTDSynthetic", "HeadCT", "BrainMRI", "Br35H", "ISIC", "ColonDB", "ClinicDB", "TN3K")


@pytest.fixture(scope="module")
def trees(tmp_path_factory: pytest.TempPathFactory) -> dict[str, DatasetTree]:
    return write_all_dataset_trees(tmp_path_factory.mktemp("paper"))


@pytest.mark.parametrize("key", OWN)
def test_own_modules_are_importable_by_class_path_with_their_defaults(key: str) -> None:
    import anomalib_adaclip.data as data

    entry = PAPER_DATASETS[key]
    assert entry.datamodule == f"anomalib_adaclip.data.{key}"
    datamodule = getattr(data, key)()
    assert isinstance(datamodule, AnomalibDataModule)
    assert datamodule.category == entry.default_category
    assert datamodule.root == Path(entry.default_root)
    assert datamodule.val_split_mode.value == "same_as_test"


def _check_split(batches: list, counts: tuple[int, int], has_masks: bool, own: bool) -> None:
    labels = [int(label) for batch in batches for label in batch.gt_label]
    assert (labels.count(0), labels.count(1)) == counts
    for batch in batches:
        if not has_masks:
            assert batch.gt_mask is None
            continue
        for label, mask in zip(batch.gt_label, batch.gt_mask, strict=True):
            assert mask.shape[-2:] == (SIZE, SIZE)
            # Normal images get an empty mask; anomalous ones their own file, which marks a 6 x 6 square.
            assert int(mask.sum()) == (36 if label else 0)
        if own:  # anomalib's modules give None for normal images (and the batch None if its first has none)
            assert [Path(path).is_file() for path in batch.mask_path] == [bool(label) for label in batch.gt_label]


@pytest.mark.parametrize("key", list(PAPER_DATASETS))
def test_every_category_loads_as_written(trees: dict[str, DatasetTree], key: str) -> None:
    tree = trees[key]
    assert tree.categories == PAPER_DATASETS[key].categories
    for category, written in tree.counts.items():
        datamodule = tree.datamodule(category, eval_batch_size=4)
        datamodule.prepare_data()  # offline: finds the copy (anomalib's Visa splits it here)
        datamodule.setup()
        assert len(datamodule.train_data) == written.train
        _check_split(
            list(datamodule.test_dataloader()), (written.normal, written.anomalous), tree.has_masks, key in OWN
        )
        _check_split(list(datamodule.val_dataloader()), (written.normal, written.anomalous), tree.has_masks, key in OWN)
        assert datamodule.task.value == ("segmentation" if tree.has_masks else "classification")


def test_image_only_samples_have_no_mask_path(trees: dict[str, DatasetTree]) -> None:
    datamodule = trees["HeadCT"].datamodule("headct")
    datamodule.setup()
    assert set(datamodule.test_data.samples.mask_path) == {""}


def test_missing_train_folder_is_an_empty_training_split(tmp_path: Path) -> None:
    tree = write_dataset_tree("BrainMRI", tmp_path)
    shutil.rmtree(tree.root / "brain_mri" / "train")
    datamodule = tree.datamodule("brain_mri")
    datamodule.setup()
    assert len(datamodule.train_data) == 0 and len(datamodule.test_data) == 4


def test_pixel_only_set_with_synthetic_test_split_and_no_normal_images_is_refused(tmp_path: Path) -> None:
    tree = write_dataset_tree("TN3K", tmp_path)
    with pytest.raises(ValueError, match=r"synthetic.*has none in train/good or test/good"):
        tree.datamodule("tn3k", test_split_mode=SplitMode.SYNTHETIC).setup()


@pytest.mark.parametrize("module", [KSDD, HeadCT, ColonDB])
def test_missing_data_set_says_where_to_get_and_put_it(tmp_path: Path, module: type[PaperDataModule]) -> None:
    entry = module.paper_dataset()
    datamodule = module(root=tmp_path / "nowhere")
    for call in (datamodule.prepare_data, datamodule.setup):
        with pytest.raises(FileNotFoundError) as error:
            call()
        message = str(error.value)
        assert str(tmp_path / "nowhere" / entry.default_category) in message
        assert entry.source in message
        assert f"anomalib-adaclip prepare-data {entry.key} --source" in message
        assert "<root>/<category>/test/<folder>/" in message
    assert not (tmp_path / "nowhere").exists()  # nothing downloaded, nothing created


def test_unknown_category_names_the_categories() -> None:
    with pytest.raises(ValueError, match=r"'class1' is not one of DAGM 2007's categories: Class1, Class2"):
        DAGM(category="class1")


def test_setup_fails_on_a_renamed_mask_and_on_missing_masks(tmp_path: Path) -> None:
    tree = write_dataset_tree("ColonDB", tmp_path)
    masks = tree.root / "ColonDB" / "ground_truth" / "polyp"
    (masks / "001.png").rename(masks / "mask_001.png")
    with pytest.raises(ValueError, match=r"001\.png"):
        tree.datamodule("ColonDB").setup()
    shutil.rmtree(masks)
    with pytest.raises(FileNotFoundError, match=r"masks are missing: expected .*ground_truth/polyp"):
        tree.datamodule("ColonDB").setup()


def test_empty_test_folder_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "SDD" / "test" / "good").mkdir(parents=True)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "SDD" / "notes.png")  # not in a split: ignored
    with pytest.raises(FileNotFoundError, match=r"no test images in .*SDD/test"):
        KSDD(root=tmp_path).setup()


def test_defect_folder_in_train_is_an_error(tmp_path: Path) -> None:
    tree = write_dataset_tree("KSDD", tmp_path)
    (tree.root / "SDD" / "test" / "defect").rename(tree.root / "SDD" / "train" / "defect")
    with pytest.raises(ValueError, match=r"train/defect holds images, but train/ may only hold good/"):
        tree.datamodule("SDD").setup()


def test_the_base_names_no_data_set() -> None:
    with pytest.raises(TypeError, match="use one of its data modules"):
        PaperDataModule()
