"""``score_images``: the numbers of ``Engine.predict`` on the same files, mutual scoring as one group, bad input.

The truths are anomalib's predict loop on the same image files with the same model: a plain AdaCLIP (tiled or not)
and, for ``mutual=True``, an AdaCLIP built with mutual scoring (``mutual={}``), whose run scores the images as one
group.
The models are the micro CLIP of ``tests/conftest.py`` with a prompts checkpoint, so every build is the same model.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from anomalib.data.utils.image import read_image

from anomalib_adaclip import AdaCLIP
from anomalib_adaclip.components.image_scoring import score_images
from anomalib_adaclip.components.mutual_groups import MutualScoringError
from tests.conftest import PROJECT_ROOT, TIRE_ROOT
from tests.helpers import make_adaclip, make_engine

EXAMPLES = sorted((PROJECT_ROOT / "anomalib_adaclip" / "demo" / "examples").glob("*.png"))  # three, 200x150 (HxW)
TIRE_IMAGES = [TIRE_ROOT / "tire" / "test" / "cut" / "000.png", TIRE_ROOT / "tire" / "test" / "good" / "001.png"]


def _model(weights: Path, checkpoints: list[Path], **overrides: Any) -> AdaCLIP:
    arguments = {"checkpoint": str(checkpoints[0]), "classes": {"name": "tire"}, "thresholds": {"mode": "fixed"}}
    arguments.update(overrides)
    return make_adaclip(weights, seed=None, **arguments).eval()


def _engine_predictions(model: AdaCLIP, sources: list[Path], root: Path) -> list[Any]:
    """``Engine.predict`` on copies of ``sources`` in one folder: its items in the data set's order."""
    folder = root / "images"
    folder.mkdir(parents=True)
    for source in sources:
        shutil.copy(source, folder / f"{source.parent.name}_{source.name}")
    return [item for batch in make_engine(root / "engine").predict(model, data_path=folder) for item in batch]


def _assert_same_outputs(batch: Any, items: list[Any]) -> None:
    assert [Path(path).name for path in batch.image_path] == [Path(item.image_path).name for item in items]
    for index, item in enumerate(items):
        assert float(batch.pred_score[index]) == pytest.approx(float(item.pred_score), abs=1e-6)
        assert bool(batch.pred_label[index]) == bool(item.pred_label)
        torch.testing.assert_close(batch.anomaly_map[index].squeeze(), item.anomaly_map.squeeze(), atol=1e-6, rtol=0)


@pytest.mark.parametrize("tiling", [False, True])
def test_scores_equal_engine_predict_on_the_same_files(
    micro_weights: Path, prompt_checkpoints: list[Path], tmp_path: Path, tiling: bool
) -> None:
    model = _model(micro_weights, prompt_checkpoints, tiling=tiling)
    # tiled: the 150x200 example images as one tensor (6 tiles each at 112 px); whole images: of two sizes, a sequence
    sources = EXAMPLES[:2] if tiling else [*TIRE_IMAGES, EXAMPLES[0]]
    items = _engine_predictions(model, sources, tmp_path)
    paths = [item.image_path for item in items]
    images: Any = [read_image(path, as_tensor=True) for path in paths]
    batch = score_images(model, torch.stack(images) if tiling else images, "tire", paths)
    _assert_same_outputs(batch, items)
    assert batch.pred_mask is not None and batch.anomaly_map.shape[-2:] == batch.image.shape[-2:]


def test_mutual_scoring_equals_the_run_of_a_model_built_with_it(
    micro_weights: Path, prompt_checkpoints: list[Path], tmp_path: Path
) -> None:
    """A model without mutual scoring scores the images as one group, as a model built with it does in a run."""
    built_with_it = _model(micro_weights, prompt_checkpoints, mutual={})
    items = _engine_predictions(built_with_it, [*EXAMPLES, *TIRE_IMAGES], tmp_path)  # one group of 5, two sizes
    paths = [item.image_path for item in items]
    images = [read_image(path, as_tensor=True) for path in paths]
    plain = _model(micro_weights, prompt_checkpoints)

    together = score_images(plain, images, "tire", paths, mutual=True)
    _assert_same_outputs(together, items)
    alone = score_images(plain, images, "tire", paths)
    assert not torch.allclose(alone.pred_score, together.pred_score, atol=1e-3)  # the group changed every score
    own = score_images(built_with_it, images, "tire", paths, mutual=True)
    assert torch.equal(own.pred_score, together.pred_score) and torch.equal(own.anomaly_map, together.anomaly_map)

    # A model with its own stage keeps its own weight: 0 gives AdaCLIP's outputs alone.
    weight_zero = _model(micro_weights, prompt_checkpoints, mutual={"weight": 0.0})
    for mutual in (True, False):
        outputs = score_images(weight_zero, images, "tire", paths, mutual=mutual)
        torch.testing.assert_close(outputs.pred_score, alone.pred_score, atol=1e-6, rtol=0)


def test_bad_input_is_refused_with_what_to_do(micro_weights: Path, prompt_checkpoints: list[Path]) -> None:
    model = _model(micro_weights, prompt_checkpoints)
    image = read_image(EXAMPLES[0], as_tensor=True)
    with pytest.raises(MutualScoringError, match="single image"):
        score_images(model, [image], "tire", mutual=True)
    with pytest.raises(ValueError, match="Got 1 class names for 2 images"):
        score_images(model, [image, image], ["tire"])
    with pytest.raises(TypeError, match="a sequence of tensors"):
        score_images(model, "image.png", "tire")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="empty sequence"):
        score_images(model, [], "tire")
    with pytest.raises(ValueError, match=r"images\[1\]` must be one raw image \[3, H, W\], got \(1, 3, 200, 150\)"):
        score_images(model, [image, image[None]], "tire")
    with pytest.raises(ValueError, match=r"raw RGB values in \[0, 1\]"):
        score_images(model, image[None] * 255, "tire")
    model.set_tiling(True)
    with pytest.raises(ValueError, match="cannot be combined with tiling"):
        score_images(model, [image, image], "tire", mutual=True)
    with pytest.raises(ValueError, match=r"several sizes after pre-processing \(200x150, 800x600\)"):
        score_images(model, [image, read_image(TIRE_IMAGES[0], as_tensor=True)], "tire")


def test_lent_rarity_banks_score_as_a_model_built_with_the_group(
    micro_weights: Path, prompt_checkpoints: list[Path]
) -> None:
    """A plain model with lent banks gives the outputs of a model with its own rarity group, and fills the banks."""
    from anomalib_adaclip.components.rarity import RarityBanks
    from anomalib_adaclip.config import RarityGroupConfig

    group = RarityGroupConfig(text_branch="adaclip", scoring={"text_layers": [2, 4], "rarity_layers": [1, 3]})
    built_with_it = _model(micro_weights, prompt_checkpoints, rarity=group)
    plain = _model(micro_weights, prompt_checkpoints)
    images = [read_image(path, as_tensor=True) for path in EXAMPLES]
    own = score_images(built_with_it, images, "tire")
    banks = RarityBanks(group, plain.model)
    lent = score_images(plain, images, "tire", rarity=banks)
    assert torch.equal(own.pred_score, lent.pred_score) and torch.equal(own.anomaly_map, lent.anomaly_map)
    assert banks.banks["tire"].seen == 3 and plain.rarity is None
    alone = score_images(plain, images, "tire")
    assert not torch.allclose(alone.pred_score[1:], lent.pred_score[1:], atol=1e-4)  # the bank is in the scores
    with pytest.raises(ValueError, match="rarity cannot be combined with mutual"):
        score_images(plain, images, "tire", mutual=True, rarity=banks)
    plain.set_tiling(True)
    with pytest.raises(ValueError, match="rarity cannot be combined with tiling"):
        score_images(plain, images, "tire", rarity=banks)
    assert banks.banks["tire"].seen == 3  # nothing was scored
