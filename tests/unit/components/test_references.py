"""Drawing and reading few-shot reference images: seeded draws, the data module's normal images, clear errors."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest
import torch
from PIL import Image

from anomalib_adaclip.components.references import (
    FewShotReferenceError,
    draw_references,
    folder_images,
    read_references,
    reference_paths,
)
from tests.helpers import make_adaclip


def write_images(folder: Path, count: int, size: tuple[int, int] = (40, 30)) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        path = folder / f"{index:03d}.png"
        Image.new("RGB", size, color=(index * 20 % 256, 100, 50)).save(path)
        paths.append(path)
    return paths


def test_the_same_seed_draws_the_same_references_whatever_the_listing_order() -> None:
    candidates = [f"good/{index:03d}.png" for index in range(20)]
    first = draw_references(candidates, k=4, seed=7)
    assert first == draw_references(list(reversed(candidates)), k=4, seed=7)
    assert len(set(first)) == 4 and set(first) <= {Path(path) for path in candidates}
    assert any(draw_references(candidates, k=4, seed=seed) != first for seed in range(8, 12))


def test_k_larger_than_the_normal_images_is_an_error() -> None:
    with pytest.raises(
        FewShotReferenceError, match="k_shot=5 needs 5 normal reference images, but the folder has only 3"
    ):
        draw_references(["a.png", "b.png", "c.png"], k=5, seed=0, where="the folder")


def test_folder_errors_name_the_folder(tmp_path: Path) -> None:
    with pytest.raises(FewShotReferenceError, match="is not a folder"):
        folder_images(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(FewShotReferenceError, match="holds no image file"):
        folder_images(tmp_path / "empty")


def test_an_unreadable_reference_is_an_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(FewShotReferenceError, match=r"broken\.png cannot be read"):
        read_references([broken], None)


def test_references_of_another_size_go_through_the_transform(tmp_path: Path) -> None:
    paths = write_images(tmp_path / "good", 2, size=(64, 48))
    images = read_references(paths, lambda image: torch.nn.functional.interpolate(image[None], size=(28, 28))[0])
    assert [tuple(image.shape) for image in images] == [(3, 28, 28)] * 2
    assert float(images[0].min()) >= 0 and float(images[0].max()) <= 1


def test_reference_paths_from_a_folder_a_mapping_and_a_data_module(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good = write_images(tmp_path / "good", 5)
    screws = write_images(tmp_path / "screws", 3)
    with caplog.at_level(logging.INFO):
        drawn = reference_paths(2, 0, str(tmp_path / "good"), None, "widget")
    assert list(drawn) == ["widget"] and len(drawn["widget"]) == 2 and set(drawn["widget"]) <= set(good)
    assert str(drawn["widget"][0]) in caplog.text  # the drawn paths are logged
    mapped = reference_paths(3, 0, {"widget": tmp_path / "good", "screw": tmp_path / "screws"}, None, "object")
    assert list(mapped) == ["widget", "screw"] and sorted(mapped["screw"]) == screws
    samples = pd.DataFrame({"image_path": [str(path) for path in good], "label_index": [0, 0, 1, 1, 0]})
    datamodule = SimpleNamespace(train_data=SimpleNamespace(samples=samples))
    from_data = reference_paths(3, 1, None, datamodule, "widget")["widget"]
    assert sorted(from_data) == [good[0], good[1], good[4]]  # the normal ones only
    with pytest.raises(FewShotReferenceError, match="k_shot=4 needs 4"):
        reference_paths(4, 1, None, datamodule, "widget")
    with pytest.raises(FewShotReferenceError, match=r"give few_shot\.source"):
        reference_paths(1, 0, None, None, "widget")
    with pytest.raises(FewShotReferenceError, match="has none"):
        reference_paths(1, 0, None, SimpleNamespace(), "widget")


def _memory(model: Any) -> dict[str, Any]:
    memory = model.model.few_shot_memory
    return {"names": memory.class_names, "patches": memory.patches.clone(), "scales": memory.scales.clone()}


def test_set_references_holds_what_the_drawn_path_of_a_run_holds(micro_weights: Path, tmp_path: Path) -> None:
    """Given references and drawn ones meet in the same memory, read the same way (with and without tiling)."""
    files = write_images(tmp_path / "good", 3, size=(60, 44))
    for tiling in (False, True):
        drawn = make_adaclip(
            micro_weights, few_shot={"k_shot": 3, "source": str(tmp_path / "good")}, classes={"name": "tire"}
        )
        given = make_adaclip(micro_weights, few_shot={"k_shot": 3}, classes={"name": "tire"})
        for model in (drawn, given):
            model.set_tiling(tiling)
        drawn.model.class_name = "tire"  # what a run's set-up does before the references are drawn
        drawn.prepare_references()
        given.set_references({"tire": list(reversed(files))})  # every file is used, in any order
        expected, got = _memory(drawn), _memory(given)
        assert got["names"] == expected["names"] == ["tire"]
        assert torch.equal(got["scales"], expected["scales"])
        # the same patches: the order of the images may differ, so compare as sorted rows
        assert torch.equal(got["patches"].flatten(1).sort(0).values, expected["patches"].flatten(1).sort(0).values)


def test_set_references_replaces_every_earlier_class_and_a_bad_file_changes_nothing(
    micro_weights: Path, tmp_path: Path
) -> None:
    first = write_images(tmp_path / "first", 2)
    second = write_images(tmp_path / "second", 3, size=(20, 20))
    model = make_adaclip(micro_weights, few_shot={"k_shot": 2})
    model.set_references({"tire": first, "bottle": second})
    assert model.model.few_shot_memory.class_names == ["tire", "bottle"]
    model.set_references({"nut": first})
    assert model.model.few_shot_memory.class_names == ["nut"]
    before = _memory(model)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(FewShotReferenceError, match=r"broken\.png cannot be read"):
        model.set_references({"tire": [*second, broken]})
    with pytest.raises(FewShotReferenceError, match="No known-good reference image was given for the class name 'x'"):
        model.set_references({"tire": second, "x": []})
    with pytest.raises(ValueError, match="class name"):
        model.set_references({" ": second})
    after = _memory(model)
    assert after["names"] == ["nut"] and torch.equal(after["patches"], before["patches"])


def test_set_references_refuses_a_zero_shot_model(micro_weights: Path, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="zero-shot"):
        make_adaclip(micro_weights).set_references({"tire": write_images(tmp_path, 1)})


def test_the_references_part_is_told_how_to_read_and_fills_only_its_model(micro_weights: Path, tmp_path: Path) -> None:
    """``ReferenceImages`` reads with the transform and tile overlap it is given; the memory is its model's."""
    from anomalib_adaclip.components.pre_processing import adaclip_transform
    from anomalib_adaclip.components.references import ReferenceImages

    model = make_adaclip(micro_weights, few_shot={"k_shot": 2}).model
    write_images(tmp_path / "good", 2, size=(112, 112))
    part = ReferenceImages(model, {"tire": str(tmp_path / "good")})
    assert part.source == {"tire": str(tmp_path / "good")}
    part.prepare(None, adaclip_transform(112), None)  # the source names the class: no data module needed
    assert model.few_shot_memory.class_names == ["tire"] and len(model.few_shot_memory) == 2 * 64  # 8 x 8 patches
    large = write_images(tmp_path / "large", 1, size=(200, 200))
    part.set({"nut": large}, adaclip_transform(112, tiling=True), 28)  # not resized: tiles of 112 px, 28 px overlap
    assert model.few_shot_memory.class_names == ["nut"] and len(model.few_shot_memory) == 9 * 64  # 3 x 3 tiles
