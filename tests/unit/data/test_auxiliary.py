"""Auxiliary training data: anomalib's test splits concatenated, class names, zero masks, mosaic, clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from anomalib.data.datasets import MVTecADDataset
from torchvision.transforms.v2 import InterpolationMode, Resize

from anomalib_adaclip.data import AuxiliaryBatch, AuxiliaryDataModule, AuxiliaryDataset, DatasetSource
from tests.conftest import TIRE_ROOT
from tests.helpers import make_folder_dataset, write_png

RESIZE = Resize((112, 112), interpolation=InterpolationMode.BICUBIC, antialias=True)


def make_mvtec_category(root: Path, category: str, n_good: int = 2, n_bad: int = 2, size: int = 32) -> Path:
    """A category in MVTec AD layout: test/good, test/defect and ground_truth/defect/<stem>_mask.png."""
    for index in range(n_good):
        write_png(root / category / "train" / "good" / f"{index:03d}.png", np.zeros((size, size, 3), dtype=np.uint8))
        write_png(root / category / "test" / "good" / f"{index:03d}.png", np.full((size, size, 3), 40, dtype=np.uint8))
    for index in range(n_bad):
        mask = np.zeros((size, size), dtype=np.uint8)
        mask[: size // 2, : size // 2] = 255
        write_png(
            root / category / "test" / "defect" / f"{index:03d}.png", np.full((size, size, 3), 200, dtype=np.uint8)
        )
        write_png(root / category / "ground_truth" / "defect" / f"{index:03d}_mask.png", mask)
    return root


@pytest.fixture(scope="module")
def folder_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_folder_dataset(tmp_path_factory.mktemp("folder"))


def _folder_source(root: Path, **overrides: object) -> DatasetSource:
    arguments = {
        "dataset": "Folder",
        "root": root,
        "name": "widgets",
        "abnormal_dir": "bad",
        "mask_dir": "masks",
        "normal_test_dir": "good",
    }
    arguments.update(overrides)
    return DatasetSource(**arguments)


@pytest.fixture(scope="module")
def tire_dataset() -> AuxiliaryDataset:
    return AuxiliaryDataset([DatasetSource("MVTecAD", root=TIRE_ROOT, categories=["tire"])], RESIZE)


def test_test_split_of_a_category_with_labels_masks_and_class_names(tire_dataset: AuxiliaryDataset) -> None:
    assert len(tire_dataset) == 15
    items = [tire_dataset[index] for index in range(len(tire_dataset))]
    assert sum(bool(item.gt_label) for item in items) == 9
    for item in items:
        assert item.class_name == "tire"
        assert item.image.shape == (3, 112, 112) and item.gt_mask.shape == (112, 112)
        assert item.gt_mask.dtype == torch.bool
        # Normal images get all-zero masks; every anomalous one has its (small) defect.
        assert bool(item.gt_mask.any()) == bool(item.gt_label), item.image_path
        assert "/test/" in item.image_path


def test_images_and_masks_are_resized_as_at_test_time(tire_dataset: AuxiliaryDataset) -> None:
    """The same resize anomalib's data module applies with AdaCLIP's pre-processor (and no normalisation yet)."""
    reference = MVTecADDataset(root=TIRE_ROOT, category="tire", split="test", augmentations=RESIZE)
    for index in (0, 7, 14):
        item, expected = tire_dataset[index], reference[index]
        assert item.image_path == expected.image_path
        torch.testing.assert_close(item.image, expected.image, rtol=0, atol=0)
        assert torch.equal(item.gt_mask, expected.gt_mask)


def test_class_names_can_be_renamed_per_category() -> None:
    source = DatasetSource("MVTecAD", root=TIRE_ROOT, categories=["tire"], class_names={"tire": "rubber tyre"})
    dataset = AuxiliaryDataset([source], RESIZE)
    assert set(dataset.class_names) == {"rubber tyre"}


def test_folder_sources_and_concatenation(folder_root: Path, tmp_path: Path) -> None:
    second = make_folder_dataset(tmp_path / "second", n_good=0, n_bad=2, seed=3)
    dataset = AuxiliaryDataset(
        [
            _folder_source(folder_root, class_name="metal widget"),
            # Only anomalous images (like ColonDB): no normal folder needed; the class name defaults to the name.
            DatasetSource("Folder", root=second, name="ColonDB", abnormal_dir="bad", mask_dir="masks"),
        ],
        Resize((64, 64)),
    )
    assert len(dataset) == 6 + 2
    assert dataset.class_names == ["metal widget"] * 6 + ["ColonDB"] * 2
    labels = [bool(dataset[index].gt_label) for index in range(len(dataset))]
    assert labels.count(True) == 5
    for index in range(len(dataset)):
        item = dataset[index]
        assert bool(item.gt_mask.any()) == bool(item.gt_label)
    batch = AuxiliaryBatch.collate([dataset[index] for index in (0, 7)])
    assert batch.class_name == ["metal widget", "ColonDB"] and batch.image.shape == (2, 3, 64, 64)


def test_mosaic_tiles_four_images_of_the_category_and_their_masks(folder_root: Path) -> None:
    # 32 px tiles make a 64 px mosaic: resizing to 64 keeps it exact, so every quadrant can be checked.
    dataset = AuxiliaryDataset([_folder_source(folder_root, mosaic_probability=1.0)], Resize((64, 64)), mosaic=True)
    originals = AuxiliaryDataset([_folder_source(folder_root)], Resize((32, 32)))
    by_path = {originals[index].image_path: originals[index] for index in range(len(originals))}
    torch.manual_seed(0)
    for index in range(len(dataset)):
        item = dataset[index]
        paths = item.image_path.removeprefix("mosaic:").split("|")
        assert len(paths) == 4 and len(set(paths)) == 4  # four distinct images of the category
        for tile, path in enumerate(paths):
            rows, cols = slice(32 * (tile // 2), 32 * (tile // 2 + 1)), slice(32 * (tile % 2), 32 * (tile % 2 + 1))
            torch.testing.assert_close(item.image[:, rows, cols], by_path[path].image, rtol=0, atol=0)
            assert torch.equal(item.gt_mask[rows, cols], by_path[path].gt_mask)
        assert bool(item.gt_label) == bool(item.gt_mask.any())
        assert item.class_name == "widgets"


def test_mosaic_probability_and_reproducibility(folder_root: Path) -> None:
    source = _folder_source(folder_root, mosaic_probability=0.5)
    dataset = AuxiliaryDataset([source], Resize((64, 64)), mosaic=True)

    def draw() -> list[str]:
        torch.manual_seed(5)
        return [dataset[index % len(dataset)].image_path for index in range(60)]

    first = draw()
    assert draw() == first  # seeded: the same samples again
    share = sum(path.startswith("mosaic:") for path in first) / len(first)
    assert 0.25 < share < 0.75
    # Validation data never use the mosaic, whatever the source says.
    plain = AuxiliaryDataset([source], Resize((64, 64)), mosaic=False)
    assert not any(plain[index].image_path.startswith("mosaic:") for index in range(len(plain)))


def test_data_module_batches(folder_root: Path) -> None:
    data = AuxiliaryDataModule(
        train=[_folder_source(folder_root)],
        val=[{"dataset": "Folder", "root": folder_root, "name": "val", "abnormal_dir": "bad", "mask_dir": "masks"}],
        batch_size=4,
        eval_batch_size=2,
        num_workers=0,
        image_size=112,
    )
    data.setup("fit")
    batches = list(data.train_dataloader())
    assert [len(batch) for batch in batches] == [4, 2]
    assert all(isinstance(batch, AuxiliaryBatch) for batch in batches)
    assert batches[0].image.shape == (4, 3, 112, 112) and batches[0].gt_mask.shape == (4, 112, 112)
    assert [len(batch) for batch in data.val_dataloader()] == [2, 1]
    assert AuxiliaryDataModule(train=[_folder_source(folder_root)]).val_dataloader() == []


def test_visa_layout_prepared_by_anomalib_is_found(tmp_path: Path) -> None:
    make_mvtec_category(tmp_path / "visa" / "visa_pytorch", "candle")
    dataset = AuxiliaryDataset([DatasetSource("Visa", root=tmp_path / "visa", categories=["candle"])], RESIZE)
    assert len(dataset) == 4 and set(dataset.class_names) == {"candle"}


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"dataset": "MVTec"}, ValueError, r"Unknown auxiliary data set 'MVTec'.*MVTecAD"),
        ({"dataset": "MVTecAD"}, ValueError, r"`root` is required"),
        ({"dataset": "MVTecAD", "root": ".", "mosaic_probability": 1.5}, ValueError, r"mosaic_probability"),
        ({"dataset": "MVTecAD", "root": ".", "categories": []}, ValueError, r"`categories` is empty"),
        ({"dataset": "Folder", "root": "."}, ValueError, r"needs a `name`"),
        ({"dataset": "Folder", "root": ".", "name": "x"}, ValueError, r"abnormal_dir` and/or `normal_test_dir"),
        ({"dataset": "Folder", "root": ".", "name": "x", "abnormal_dir": "bad"}, ValueError, r"set `mask_dir`"),
    ],
)
def test_invalid_sources_are_clear_errors(arguments: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        DatasetSource(**arguments)


def test_missing_root_and_category_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"root folder not found: .*nowhere.*prepare_data"):
        AuxiliaryDataset([DatasetSource("MVTecAD", root=tmp_path / "nowhere")], RESIZE)
    make_mvtec_category(tmp_path / "mvtec", "bottle")
    with pytest.raises(FileNotFoundError, match=r"categories \['cable'\] not found.*folders present in .*\['bottle'\]"):
        AuxiliaryDataset([DatasetSource("MVTecAD", root=tmp_path / "mvtec", categories=["bottle", "cable"])], RESIZE)
    with pytest.raises(FileNotFoundError, match=r"categories \['cable', 'capsule', 'carpet', .*'zipper'\] not found"):
        AuxiliaryDataset([DatasetSource("MVTecAD", root=tmp_path / "mvtec")], RESIZE)  # all 15 categories
    source = DatasetSource("MVTecAD", root=tmp_path / "mvtec", categories=["bottle"], class_names={"cable": "x"})
    with pytest.raises(ValueError, match=r"class_names for categories that are not used: \['cable'\]"):
        AuxiliaryDataset([source], RESIZE)


def test_folder_errors_name_the_source(folder_root: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"Folder 'widgets' at .*: anomalib cannot read.*does not exist.*nope"):
        AuxiliaryDataset([_folder_source(folder_root, abnormal_dir="nope")], RESIZE)


def test_anomalous_image_without_mask_is_an_error(tmp_path: Path) -> None:
    root = make_mvtec_category(tmp_path, "bottle")
    (root / "bottle" / "ground_truth" / "defect" / "001_mask.png").unlink()
    with pytest.raises(ValueError, match=r"category 'bottle' at .*: anomalib cannot read its test split.*_mask"):
        AuxiliaryDataset([DatasetSource("MVTecAD", root=root, categories=["bottle"])], RESIZE)


def test_image_size_must_match_the_model(folder_root: Path) -> None:
    from anomalib_adaclip import AdaCLIP
    from tests.conftest import MICRO_BACKBONE

    model = AdaCLIP(backbone=MICRO_BACKBONE, backbone_weights=None, image_size=112)
    data = AuxiliaryDataModule(train=[_folder_source(folder_root)], image_size=224, num_workers=0)
    data.trainer = type("FakeTrainer", (), {"lightning_module": model})()
    with pytest.raises(ValueError, match=r"image_size=224\) differs from the model's input size \(112, 112\)"):
        data.setup("fit")


def test_image_level_only_data_trains_with_empty_masks_when_asked(folder_root: Path) -> None:
    # HeadCT, BrainMRI and Br35H have no masks; the authors' code trains on them with all-zero masks.
    with pytest.raises(ValueError, match=r"set `mask_dir`, or missing_masks='empty'"):
        _folder_source(folder_root, mask_dir=None)
    dataset = AuxiliaryDataset([_folder_source(folder_root, mask_dir=None, missing_masks="empty")], RESIZE)
    labels = [bool(dataset[index].gt_label) for index in range(len(dataset))]
    assert sorted(labels) == [False] * 3 + [True] * 3  # 3 good/ and 3 bad/ images of make_folder_dataset
    for index in range(len(dataset)):
        assert not dataset[index].gt_mask.any()
    with pytest.raises(ValueError, match=r"missing_masks must be 'error' or 'empty', got 'zeros'"):
        _folder_source(folder_root, missing_masks="zeros")


def test_the_papers_other_data_sets_are_auxiliary_sources(tmp_path: Path) -> None:
    from tests.data.paper_layouts import write_dataset_tree

    write_dataset_tree("ColonDB", tmp_path)
    write_dataset_tree("HeadCT", tmp_path)
    colondb = AuxiliaryDataset([DatasetSource("ColonDB", root=tmp_path / "ColonDB")], RESIZE)
    assert set(colondb.class_names) == {"ColonDB"}
    assert all(bool(colondb[index].gt_label) for index in range(len(colondb)))  # polyp frames only
    assert any(colondb[index].gt_mask.any() for index in range(len(colondb)))
    with pytest.raises(ValueError, match=r"have no mask.*missing_masks='empty'"):
        AuxiliaryDataset([DatasetSource("HeadCT", root=tmp_path / "HeadCT")], RESIZE)
    headct = AuxiliaryDataset([DatasetSource("HeadCT", root=tmp_path / "HeadCT", missing_masks="empty")], RESIZE)
    assert {bool(headct[index].gt_label) for index in range(len(headct))} == {False, True}
    with pytest.raises(FileNotFoundError, match=r"(?s)ClinicDB .*not found.*Get it from .*prepare-data ClinicDB"):
        AuxiliaryDataset([DatasetSource("ClinicDB", root=tmp_path / "nowhere")], RESIZE)
