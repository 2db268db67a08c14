"""prepare-data: generated miniatures of the public releases become trees the data modules load as the releases say."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anomalib_adaclip.data.paper_datasets import PAPER_DATASETS
from anomalib_adaclip.data.preparation import SourceLayoutError, prepare_dataset, seeded_order
from tests.data.paper_layouts import KSDD_HEIGHT, PREPARABLE, SIZE, DatasetTree, write_raw_release


def _tree(root: Path) -> dict[str, str]:
    """Every file under ``root`` with the SHA-256 of its bytes: what "nothing changed" compares."""
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def _mask(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image) > 0


@pytest.mark.parametrize("key", PREPARABLE)
def test_prepared_release_loads_as_written(tmp_path: Path, key: str) -> None:
    release = write_raw_release(key, tmp_path / "release")
    dest = tmp_path / "dest"
    prepared = prepare_dataset(key, release.source, dest)
    assert {p.category: (p.train, p.normal, p.anomalous) for p in prepared} == {
        category: (counts.train, counts.normal, counts.anomalous) for category, counts in release.counts.items()
    }
    entry = PAPER_DATASETS[key]
    tree = DatasetTree(key, dest, release.counts, entry.has_masks)
    for category, counts in release.counts.items():
        datamodule = tree.datamodule(category, eval_batch_size=1)
        datamodule.setup()
        samples = datamodule.test_data.samples
        assert len(datamodule.train_data) == counts.train
        assert (int((samples.label_index == 0).sum()), int((samples.label_index == 1).sum())) == (
            counts.normal,
            counts.anomalous,
        )
        anomalous = samples[samples.label_index == 1]
        assert set(anomalous.label) == {release.anomalous_folder}
        for _, row in anomalous.iterrows():
            name = Path(row.image_path).name
            if entry.has_masks:
                # Binary PNG named after the image, marking exactly the written defect (TN3K's JPEG masks too).
                assert Path(row.mask_path).name == f"{Path(name).stem}.png"
                np.testing.assert_array_equal(_mask(Path(row.mask_path)), release.masks[category, name])
            else:
                assert row.mask_path == ""
        for _, row in samples.iterrows():
            source = release.images.get((category, Path(row.image_path).name))
            if source is not None:  # copies are byte for byte the release's files
                assert Path(row.image_path).read_bytes() == source.read_bytes()
        assert sorted(path.name for path in dest.iterdir()) == sorted(release.counts)  # no staging folder left


def test_ksdd_thirds_and_seeded_split(tmp_path: Path) -> None:
    release = write_raw_release("KSDD", tmp_path / "release")
    first, second = tmp_path / "a", tmp_path / "b"
    prepare_dataset("KSDD", release.source, first)
    prepare_dataset("ksdd", release.source, second)  # any case
    assert _tree(first) == _tree(second)  # deterministic, byte for byte on one machine
    category = first / "SDD"
    train = {path.name for path in (category / "train" / "good").iterdir()}
    test = {path.name for path in (category / "test" / "good").iterdir()}
    defects = {path.name for path in (category / "test" / "defect").iterdir()}
    crops = {f"{sample.name}_{image.stem}_{third}.png"
             for sample in (release.source / "KolektorSDD").iterdir()
             for image in sample.glob("Part?.jpg") for third in range(3)}  # fmt: skip
    assert train | test | defects == crops and not (train & test) and not ((train | test) & defects)
    assert defects == {name for _, name in release.masks}
    normal = sorted(train | test)
    # The documented rule: sorted by SHA-256 of "42:<name>", the first quarter (rounded up) is the test split.
    by_hash = sorted(normal, key=lambda name: hashlib.sha256(f"42:{name}".encode()).hexdigest())
    assert test == set(by_hash[: math.ceil(len(normal) / 4)])
    # Each crop is its third of the image: the top, middle and bottom SIZE rows.
    with Image.open(release.source / "KolektorSDD" / "kos02" / "Part3.jpg") as image:
        pixels = np.asarray(image)
    assert pixels.shape == (KSDD_HEIGHT, SIZE)
    for third in range(3):
        name = f"kos02_Part3_{third}.png"
        (path,) = [*category.glob(f"train/*/{name}"), *category.glob(f"test/*/{name}")]
        np.testing.assert_array_equal(np.asarray(Image.open(path)), pixels[third * SIZE : (third + 1) * SIZE])


def test_ksdd_uneven_heights_give_numpy_array_split_thirds(tmp_path: Path) -> None:
    sample = tmp_path / "release" / "kos01"
    sample.mkdir(parents=True)
    Image.fromarray(np.zeros((100, 8), np.uint8)).save(sample / "Part0.jpg")
    Image.fromarray(np.zeros((100, 8), np.uint8)).save(sample / "Part0_label.bmp")
    prepare_dataset("KSDD", tmp_path / "release", tmp_path / "dest")
    heights = sorted(Image.open(path).height for path in (tmp_path / "dest").rglob("*.png"))
    assert heights == [33, 33, 34]


def test_seeded_order_depends_only_on_names_and_seed() -> None:
    names = [f"crop_{i}.png" for i in range(20)]
    assert seeded_order(names, 42) == seeded_order(names[::-1], 42)
    assert sorted(seeded_order(names, 42)) == sorted(names)
    assert seeded_order(names, 42) != seeded_order(names, 43)


# ----------------------------------------------------------------------------------------------------------------------
# Errors: nothing is written
# ----------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("key", PREPARABLE)
def test_wrong_layout_names_the_expected_layout_and_writes_nothing(tmp_path: Path, key: str) -> None:
    source = tmp_path / "download"
    (source / "unrelated").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(source / "unrelated" / "x.png")
    with pytest.raises(SourceLayoutError) as error:
        prepare_dataset(key, source, tmp_path / "dest")
    message = str(error.value)
    assert f"{source} does not look like the {PAPER_DATASETS[key].name} release" in message
    assert PAPER_DATASETS[key].raw_layout in message
    assert not (tmp_path / "dest").exists()


def test_existing_category_is_refused_and_left_unchanged(tmp_path: Path) -> None:
    release = write_raw_release("HeadCT", tmp_path / "release")
    dest = tmp_path / "dest"
    (dest / "headct" / "test" / "good").mkdir(parents=True)
    (dest / "headct" / "test" / "good" / "mine.png").write_bytes(b"not to be touched")
    before = _tree(dest)
    with pytest.raises(FileExistsError, match=r"headct already exist.*never overwrites"):
        prepare_dataset("HeadCT", release.source, dest)
    assert _tree(dest) == before
    assert sorted(path.name for path in dest.iterdir()) == ["headct"]


def test_dagm_with_one_existing_class_writes_no_class(tmp_path: Path) -> None:
    release = write_raw_release("DAGM", tmp_path / "release", ["Class1", "Class2"])
    dest = tmp_path / "dest"
    (dest / "Class2").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="Class2"):
        prepare_dataset("DAGM", release.source, dest)
    assert [path.name for path in dest.iterdir()] == ["Class2"] and not any((dest / "Class2").iterdir())


def test_mask_that_names_no_image_is_a_layout_error(tmp_path: Path) -> None:
    release = write_raw_release("ColonDB", tmp_path / "release")
    (release.source / "masks" / "10.png").rename(release.source / "masks" / "11.png")
    with pytest.raises(SourceLayoutError, match=r"have no mask in .*masks: 10\.png") as error:
        prepare_dataset("ColonDB", release.source, tmp_path / "dest")
    assert "images/N.png + <source>/masks/N.png" in str(error.value)
    assert not (tmp_path / "dest").exists()


def test_failure_half_way_leaves_nothing(tmp_path: Path) -> None:
    release = write_raw_release("TN3K", tmp_path / "release")
    (release.source / "test-mask" / "0010.jpg").write_bytes(b"not an image")  # found by name, fails when read
    with pytest.raises(Exception, match="0010"):
        prepare_dataset("TN3K", release.source, tmp_path / "dest")
    assert list((tmp_path / "dest").iterdir()) == []


@pytest.mark.parametrize("key", ["MVTecAD", "DTDSynthetic"])
def test_data_sets_without_preparation_say_so(tmp_path: Path, key: str) -> None:
    with pytest.raises(ValueError, match=rf"needs no preparation: its data module {PAPER_DATASETS[key].datamodule}"):
        prepare_dataset(key, tmp_path, tmp_path / "dest")


def test_preparable_registry_entries_are_the_converted_ones(tmp_path: Path) -> None:
    assert {key for key, entry in PAPER_DATASETS.items() if entry.preparable} == set(PREPARABLE)


def test_headct_source_may_be_the_folder_above_the_release(tmp_path: Path) -> None:
    release = write_raw_release("HeadCT", tmp_path / "download" / "head_ct")
    prepared = prepare_dataset("HeadCT", tmp_path / "download", tmp_path / "dest")
    assert [(p.normal, p.anomalous) for p in prepared] == [(c.normal, c.anomalous) for c in release.counts.values()]
