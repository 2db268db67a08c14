"""Generated defect data sets (``data/synthetic.py``): MVTec AD's layout, one binary mask per defect, seeded, and
nothing overwritten."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anomalib_adaclip.data.synthetic import generate_defect_dataset


def files(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def test_the_layout_counts_and_masks(tmp_path: Path) -> None:
    category = generate_defect_dataset(tmp_path, "widget", n_train=2, n_good=1, n_defect=3, size=40, seed=5)
    assert category == tmp_path / "widget"
    assert files(category / "train" / "good") == ["000.png", "001.png"]
    assert files(category / "test" / "good") == ["000.png"]
    assert files(category / "test" / "defect") == ["000.png", "001.png", "002.png"]
    assert files(category / "ground_truth" / "defect") == ["000_mask.png", "001_mask.png", "002_mask.png"]
    for index in range(3):
        with Image.open(category / "test" / "defect" / f"{index:03d}.png") as image:
            assert image.mode == "RGB" and image.size == (40, 40)
        mask = np.asarray(Image.open(category / "ground_truth" / "defect" / f"{index:03d}_mask.png"))
        assert mask.shape == (40, 40) and set(np.unique(mask)) == {0, 255}
        assert 0 < (mask > 0).mean() < 0.5  # a defect, smaller than the object


def test_the_same_seed_gives_the_same_bytes_and_another_seed_other_images(tmp_path: Path) -> None:
    first = generate_defect_dataset(tmp_path / "a", n_train=1, n_good=0, n_defect=1, size=32, seed=1)
    second = generate_defect_dataset(tmp_path / "b", n_train=1, n_good=0, n_defect=1, size=32, seed=1)
    other = generate_defect_dataset(tmp_path / "c", n_train=1, n_good=0, n_defect=1, size=32, seed=2)
    for relative in ("train/good/000.png", "test/defect/000.png", "ground_truth/defect/000_mask.png"):
        assert (first / relative).read_bytes() == (second / relative).read_bytes(), relative
    assert (first / "train/good/000.png").read_bytes() != (other / "train/good/000.png").read_bytes()


def test_an_existing_category_is_refused_and_kept(tmp_path: Path) -> None:
    (tmp_path / "bottle").mkdir()
    (tmp_path / "bottle" / "mine.txt").write_text("keep")
    with pytest.raises(FileExistsError, match=f"{tmp_path / 'bottle'} already exists"):
        generate_defect_dataset(tmp_path)
    assert files(tmp_path / "bottle") == ["mine.txt"]
