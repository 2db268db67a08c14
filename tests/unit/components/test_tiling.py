"""Tiled inference: tile placement, blending, coverage and seam continuity, shapes on real and huge images."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from anomalib.data import InferenceBatch
from PIL import Image
from torch import nn

from anomalib_adaclip.components.tiling import blend_weights, tile_starts, tiled_predict
from tests.conftest import TIRE_ROOT


class PositionModel(nn.Module):
    """Stand-in for AdaCLIPModel whose map is a pixel-wise function of the tile: sigmoid of channel 0.

    Every tile agrees with its neighbours where they overlap, so stitching must give the function of the full image.
    """

    def __init__(self, image_size: int) -> None:
        super().__init__()
        self.image_size = image_size
        self.class_name = "object"
        self.calls: list[int] = []

    def forward(self, images: torch.Tensor, class_names: list[str]) -> InferenceBatch:
        assert images.shape[-2:] == (self.image_size, self.image_size)
        assert len(class_names) == images.shape[0]
        self.calls.append(images.shape[0])
        anomaly_map = torch.sigmoid(images[:, 0])
        return InferenceBatch(pred_score=anomaly_map.flatten(1).amax(1), anomaly_map=anomaly_map)


class ConstantTileModel(PositionModel):
    """Each tile's map is constant with a different value per tile: the worst case for seams."""

    def forward(self, images: torch.Tensor, class_names: list[str]) -> InferenceBatch:
        values = images[:, 1, 0, 0].sigmoid()  # differs from tile to tile
        anomaly_map = values[:, None, None].expand(-1, self.image_size, self.image_size)
        return InferenceBatch(pred_score=values, anomaly_map=anomaly_map)


@pytest.mark.parametrize(
    ("length", "tile", "overlap"), [(1000, 518, 128), (4000, 224, 56), (518, 518, 0), (300, 518, 100), (3000, 224, 0)]
)
def test_tiles_cover_the_image_with_at_least_the_overlap(length: int, tile: int, overlap: int) -> None:
    starts = tile_starts(length, tile, overlap)
    assert starts[0] == 0
    if length > tile:
        assert starts[-1] + tile == length
        gaps = np.diff(starts)
        assert (gaps <= tile - overlap).all() and (gaps > 0).all()
    else:
        assert starts == [0]


def test_invalid_overlap() -> None:
    with pytest.raises(ValueError, match="overlap must be in"):
        tile_starts(100, 50, 50)


def test_blend_weights_are_positive_and_full_inside() -> None:
    weights = blend_weights(100, 20)
    assert (weights > 0).all()
    assert torch.equal(weights[20:80, 20:80], torch.ones(60, 60))
    assert weights[0, 0] < weights[10, 10] < weights[19, 19] < 1


@pytest.mark.parametrize(("height", "width"), [(3000, 4000), (600, 800), (100, 150), (518, 518)])
def test_stitching_reproduces_a_pixelwise_map_exactly(height: int, width: int) -> None:
    model = PositionModel(image_size=224)
    images = torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(0))
    output = tiled_predict(model, images, "object", overlap=56, max_batch=64)
    assert output.anomaly_map.shape == (1, height, width)
    torch.testing.assert_close(output.anomaly_map, torch.sigmoid(images[:, 0]), atol=1e-6, rtol=0)
    assert max(model.calls) <= 64


def test_no_seams_between_tiles_of_different_values() -> None:
    """Neighbouring pixels never jump by more than one blending step, even when tiles disagree completely."""
    model = ConstantTileModel(image_size=224)
    images = torch.randn(1, 3, 3000, 4000, generator=torch.Generator().manual_seed(1)) * 5
    overlap = 56
    output = tiled_predict(model, images, overlap=overlap, max_batch=128)
    anomaly_map = output.anomaly_map[0]
    step = 1.0 / overlap  # the blending weights change by 1/overlap per pixel; values differ by at most 1
    horizontal = (anomaly_map[:, 1:] - anomaly_map[:, :-1]).abs().max()
    vertical = (anomaly_map[1:] - anomaly_map[:-1]).abs().max()
    assert horizontal <= 2 * step and vertical <= 2 * step
    assert torch.isfinite(anomaly_map).all()


def test_image_score_max_over_tiles_or_whole_image() -> None:
    model = ConstantTileModel(image_size=224)
    images = torch.randn(2, 3, 500, 700, generator=torch.Generator().manual_seed(2))
    tiled = tiled_predict(model, images, score="max")
    starts = [(top, left) for top in tile_starts(500, 224, 56) for left in tile_starts(700, 224, 56)]
    expected = torch.stack([images[:, 1, top, left] for top, left in starts], dim=1).sigmoid().amax(1)
    torch.testing.assert_close(tiled.pred_score, expected)
    whole = tiled_predict(model, images, score="whole")
    assert whole.pred_score.shape == (2,)
    with pytest.raises(ValueError, match="must be one of"):
        tiled_predict(model, images, score="mean")


def _tire_image() -> torch.Tensor:
    path = TIRE_ROOT / "tire" / "test" / "cut" / "000.png"
    array = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255
    image = torch.from_numpy(array).permute(2, 0, 1)[None]
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073])[:, None, None]
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711])[:, None, None]
    return (image - mean) / std


def test_tiled_adaclip_on_the_tire_sample(make_model: Callable) -> None:
    model = make_model()
    image = _tire_image()
    assert image.shape[-2:] == (800, 600)
    output = tiled_predict(model, image, "tire", overlap=56)
    assert output.anomaly_map.shape == (1, 800, 600)
    assert torch.isfinite(output.anomaly_map).all() and torch.isfinite(output.pred_score).all()
    assert output.anomaly_map.min() >= 0 and output.anomaly_map.max() <= 1
    assert 0 <= output.pred_score.item() <= 1


def test_the_tiling_part_holds_its_settings_and_checks_them_against_the_tile() -> None:
    from anomalib_adaclip.components.tiling import Tiling
    from anomalib_adaclip.config import TilingConfig

    off = Tiling(None, 112)
    assert not off.enabled and off.overlap is None
    with pytest.raises(RuntimeError, match="Tiling is off"):
        off.predict(None, torch.zeros(1, 3, 112, 112))
    on = Tiling(TilingConfig(), 112)
    assert on.enabled and on.overlap == 28  # a quarter of the tile by default
    on.set(TilingConfig(overlap=8, score="whole"))
    assert (on.overlap, on.settings.score) == (8, "whole")
    with pytest.raises(ValueError, match=r"tiling\.overlap must be in \[0, image_size\) = \[0, 112\)"):
        on.set(TilingConfig(overlap=112))
    assert on.overlap == 8  # a refused setting leaves the part as it was
    on.set(None)
    assert not on.enabled
