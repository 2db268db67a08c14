"""Reading an MVTec-style category folder (``data/mvtec_tree.py``): masks paired with images by name, not by order.

The data modules that read such trees (every category of the paper's data sets) are tested in
``tests/unit/data/test_paper_datamodules.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from anomalib_adaclip.data.mvtec_tree import pair_masks


def _touch(folder: Path, *names: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names:
        (folder / name).touch()
        paths.append(folder / name)
    return paths


def test_pairing_by_stem_with_suffixes_and_any_case(tmp_path: Path) -> None:
    images = _touch(tmp_path / "img", "1.png", "10.png", "9.jpg", "ISIC_0001.jpg")
    masks = _touch(tmp_path / "gt", "1_mask.png", "10.png", "9_Label.PNG", "ISIC_0001_Segmentation.png")
    pairs = pair_masks(images, masks)
    # Sorted order would pair 10.png with 1_mask.png; names pair each with its own.
    assert {image.name: mask.name for image, mask in pairs.items()} == {
        "1.png": "1_mask.png",
        "10.png": "10.png",
        "9.jpg": "9_Label.PNG",
        "ISIC_0001.jpg": "ISIC_0001_Segmentation.png",
    }


def test_pairing_errors_name_the_files(tmp_path: Path) -> None:
    images = _touch(tmp_path / "img", "a.png", "b.png")
    with pytest.raises(ValueError, match=r"1 anomalous image\(s\) in .*img have no mask in .*gt: b.png"):
        pair_masks(images, _touch(tmp_path / "gt", "a_mask.png"))
    with pytest.raises(ValueError, match=r"1 mask\(s\) in .*gt2 belong to no image: c_mask.png"):
        pair_masks(images, _touch(tmp_path / "gt2", "a.png", "b.png", "c_mask.png"))
    with pytest.raises(ValueError, match=r"a.png matches several masks \(a.png, a_mask.png\)"):
        pair_masks(images, _touch(tmp_path / "gt3", "a.png", "a_mask.png", "b.png"))
