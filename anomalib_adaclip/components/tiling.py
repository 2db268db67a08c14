"""Tiled inference for images far larger than AdaCLIP's input.

Resizing a 4000x3000 photo to 518x518 shrinks a defect of a few pixels below one patch. Tiled inference instead cuts
the full-resolution image into overlapping tiles of the model's input size, scores every tile, and stitches the tile
maps back into one full-resolution map. In the overlaps the maps are blended with weights that fall off towards
each tile's border, so no seam appears where tiles meet. The image score is either the maximum over the tiles
(small defects count) or the score of the whole image resized to the input size (the model's usual view).

Example:
    >>> import torch
    >>> from anomalib_adaclip.components.tiling import tile_starts
    >>> tile_starts(1000, tile=518, overlap=128)
    [0, 241, 482]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, get_args

import torch
from anomalib.data import InferenceBatch
from torch.nn import functional as F  # noqa: N812

from anomalib_adaclip.config import TileScore
from anomalib_adaclip.model import AdaCLIPModel
from anomalib_adaclip.model.inputs import check_images, image_class_names

if TYPE_CHECKING:
    from anomalib_adaclip.config import TilingConfig

__all__ = [
    "TILE_SCORES",
    "TileScore",
    "Tiling",
    "blend_weights",
    "check_tiling",
    "cut_tiles",
    "tile_starts",
    "tiled_predict",
]

TILE_SCORES: tuple[str, ...] = get_args(TileScore)


def check_tiling(tile: int, overlap: int | None, score: str = "max") -> None:
    """Check tiling settings: an overlap in ``[0, tile)`` pixels (``None``: the default) and a known image score.

    Raises:
        ValueError: An overlap outside ``[0, tile)`` or an unknown score.
    """
    if score not in TILE_SCORES:
        msg = f"tiling.score must be one of {TILE_SCORES}, got {score!r}."
        raise ValueError(msg)
    if overlap is not None and not 0 <= overlap < tile:
        msg = f"tiling.overlap must be in [0, image_size) = [0, {tile}) pixels, got {overlap}."
        raise ValueError(msg)


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of size ``tile`` that cover ``[0, length)``, overlapping by at least ``overlap``.

    Tiles are spread evenly; the last one ends exactly at ``length``. A length up to one tile gets one tile at 0.

    Args:
        length: Image side length in pixels.
        tile: Tile side length.
        overlap: Minimum overlap of neighbouring tiles, in ``[0, tile)``.
    """
    check_tiling(tile, overlap)
    if length <= tile:
        return [0]
    stride = tile - overlap
    count = -(-(length - tile) // stride) + 1  # ceil: enough tiles that no gap exceeds the stride
    return [round(index * (length - tile) / (count - 1)) for index in range(count)]


def blend_weights(tile: int, overlap: int, device: torch.device | None = None) -> torch.Tensor:
    """Blending weights ``[tile, tile]`` of one tile: 1 inside, falling linearly to near 0 across the overlap band.

    The weights never reach 0, so an image border covered by a single tile keeps that tile's values.
    """
    ramp = torch.ones(tile, device=device)
    if overlap > 0:
        edge = (torch.arange(overlap, device=device, dtype=torch.float32) + 0.5) / overlap
        ramp[:overlap] = edge
        ramp[tile - overlap :] = torch.minimum(ramp[tile - overlap :], edge.flip(0))
    return ramp[:, None] * ramp[None, :]


def _pad_to_tile(images: torch.Tensor, tile: int) -> torch.Tensor:
    """Pad images smaller than a tile (reflecting where possible) so every tile is full."""
    height, width = images.shape[-2:]
    pad_bottom, pad_right = max(0, tile - height), max(0, tile - width)
    if not (pad_bottom or pad_right):
        return images
    mode = "reflect" if pad_bottom < height and pad_right < width else "replicate"
    return F.pad(images, (0, pad_right, 0, pad_bottom), mode=mode)


def cut_tiles(
    images: torch.Tensor, tile: int, overlap: int
) -> tuple[torch.Tensor, list[tuple[int, int]], tuple[int, int]]:
    """Cut images into the overlapping tiles :func:`tiled_predict` scores (few-shot references are cut the same way).

    Args:
        images: Images ``[B, 3, H, W]`` of one size.
        tile: Tile side length (the model's ``image_size``).
        overlap: Minimum overlap of neighbouring tiles, in ``[0, tile)``.

    Returns:
        The tiles ``[B * n_tiles, 3, tile, tile]`` (image-major), the tiles' ``(top, left)`` offsets, and the size of
        the padded image they cover (images smaller than a tile are padded).
    """
    padded = _pad_to_tile(images, tile)
    rows = tile_starts(padded.shape[-2], tile, overlap)
    cols = tile_starts(padded.shape[-1], tile, overlap)
    offsets = [(top, left) for top in rows for left in cols]
    tiles = torch.stack([padded[:, :, top : top + tile, left : left + tile] for top, left in offsets], dim=1)
    return tiles.flatten(0, 1), offsets, (padded.shape[-2], padded.shape[-1])


@torch.no_grad()
def tiled_predict(
    model: AdaCLIPModel,
    images: torch.Tensor,
    class_names: Sequence[str] | str | None = None,
    overlap: int | None = None,
    score: TileScore = "max",
    max_batch: int = 16,
) -> InferenceBatch:
    """Score full-resolution images tile by tile and stitch the maps.

    Args:
        model: An AdaCLIP model in eval mode; its ``image_size`` is the tile size.
        images: Normalised images ``[B, 3, H, W]`` of any size (one size per call).
        class_names: One class name per image, one for all, or ``None`` for ``model.class_name``.
        overlap: Overlap of neighbouring tiles in pixels. Defaults to a quarter of the tile.
        score: ``"max"``: the image score is the highest tile score; ``"whole"``: the score of the whole image
            resized to the model's input.
        max_batch: Most tiles scored at once (bounds memory).

    Returns:
        ``InferenceBatch(pred_score [B], anomaly_map [B, H, W])`` at the input resolution.
    """
    tile = model.image_size
    check_tiling(tile, overlap, score)
    check_images(images)
    overlap = tile // 4 if overlap is None else overlap
    batch, _, height, width = images.shape
    names = image_class_names(class_names, batch)
    names = [names] * batch if names is None or isinstance(names, str) else names
    tiles, offsets, padded_size = cut_tiles(images, tile, overlap)
    tile_names = [name for name in names for _ in offsets]
    resolved = [model.class_name if name is None else name for name in tile_names]

    scores, maps = [], []
    for start in range(0, tiles.shape[0], max_batch):
        output = model(tiles[start : start + max_batch], resolved[start : start + max_batch])
        scores.append(output.pred_score)
        maps.append(output.anomaly_map)
    tile_scores = torch.cat(scores).view(batch, len(offsets))
    tile_maps = torch.cat(maps).view(batch, len(offsets), tile, tile)

    weights = blend_weights(tile, overlap, device=images.device)
    stitched = torch.zeros(batch, *padded_size, device=images.device)
    total = torch.zeros(padded_size, device=images.device)
    for index, (top, left) in enumerate(offsets):
        stitched[:, top : top + tile, left : left + tile] += tile_maps[:, index] * weights
        total[top : top + tile, left : left + tile] += weights
    anomaly_map = (stitched / total)[:, :height, :width]

    if score == "max":
        pred_score = tile_scores.amax(dim=1)
    else:
        whole = F.interpolate(images, size=(tile, tile), mode="bicubic", align_corners=False, antialias=True)
        pred_score = model(whole, [model.class_name if name is None else name for name in names]).pred_score
    return InferenceBatch(pred_score=pred_score, anomaly_map=anomaly_map)


class Tiling:
    """Tiled inference of one AdaCLIP model: whether it is on, its settings, and the scoring (AdaCLIP owns one).

    Args:
        settings: The tiling settings, ``None`` for off.
        tile: The model's input size (``image_size``), which is the tile size.

    Raises:
        ValueError: An overlap outside ``[0, tile)``.
    """

    def __init__(self, settings: TilingConfig | None, tile: int) -> None:
        self.tile = tile
        self.settings: TilingConfig | None = None
        self.set(settings)

    def set(self, settings: TilingConfig | None) -> None:
        """Switch tiling on (with these settings) or off (``None``).

        Raises:
            ValueError: An overlap outside ``[0, tile)``.
        """
        if settings is not None:
            check_tiling(self.tile, settings.overlap, settings.score)
        self.settings = settings

    @property
    def enabled(self) -> bool:
        """Whether images are scored in tiles."""
        return self.settings is not None

    @property
    def overlap(self) -> int | None:
        """The overlap of neighbouring tiles in pixels (a quarter of the tile by default), ``None`` when off."""
        if self.settings is None:
            return None
        return self.tile // 4 if self.settings.overlap is None else self.settings.overlap

    def predict(
        self, model: AdaCLIPModel, images: torch.Tensor, class_names: Sequence[str] | str | None = None
    ) -> InferenceBatch:
        """Score images in tiles with these settings (:func:`tiled_predict`); tiling must be on."""
        if self.settings is None:
            msg = "Tiling is off: score the images with the model itself."
            raise RuntimeError(msg)
        return tiled_predict(model, images, class_names, overlap=self.settings.overlap, score=self.settings.score)
