"""Tiled inference through anomalib: Engine.predict/test and the CLI deliver full-resolution maps.

``tests/test_tiling.py`` covers the stitching arithmetic with stand-in models; these tests cover the integration:
the pre-processor keeps the full resolution (it only normalises), AdaCLIP's steps tile, the maps, masks and CSV
come back at the original size, anomalib's metrics and visualiser work on them, and the stitched maps of a real
(tiny, random) AdaCLIP have no seams where tiles meet.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from anomalib.cli import AnomalibCLI
from anomalib.data import InferenceBatch, MVTecAD
from anomalib.data.utils import read_image
from lightning.pytorch import Callback
from open_clip.constants import OPENAI_DATASET_MEAN as OPENAI_MEAN
from open_clip.constants import OPENAI_DATASET_STD as OPENAI_STD
from open_clip.model import CLIP
from PIL import Image
from torchvision.transforms.v2 import Normalize, Resize
from torchvision.transforms.v2 import functional as TF  # noqa: N812

from anomalib_adaclip import AdaCLIP
from anomalib_adaclip.components.tiling import tile_starts
from anomalib_adaclip.data.synthetic import generate_defect_dataset
from tests.conftest import MICRO_BACKBONE, TIRE_ROOT
from tests.helpers import make_engine

# A still smaller CLIP for the 4000x3000 image: 28 px patches, 2 blocks, so a 448 px tile has 256 tokens.
TILE_BACKBONE = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 224, "layers": 2, "width": 32, "head_width": 32, "patch_size": 28},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 1, "layers": 2},
}


def save_clip(config: dict, path: Path) -> Path:
    torch.manual_seed(0)
    torch.save(CLIP(**config).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("weights")
    return {
        "micro": save_clip(MICRO_BACKBONE, folder / "micro.pt"),
        "nano": save_clip(TILE_BACKBONE, folder / "nano.pt"),
    }


def normalised(path: Path) -> torch.Tensor:
    """The image at full resolution, normalised with the CLIP mean and std (what tiling must feed the tiles)."""
    image = read_image(path, as_tensor=True)
    return TF.normalize(image, mean=list(OPENAI_MEAN), std=list(OPENAI_STD)).unsqueeze(0)


def seam_and_interior_jumps(anomaly_map: torch.Tensor, tile: int, overlap: int) -> tuple[float, float]:
    """Largest jump between neighbouring pixels across the lines where a tile begins or ends, and elsewhere."""
    height, width = anomaly_map.shape
    jumps = []
    for axis, length in ((1, width), (0, height)):
        starts = tile_starts(length, tile, overlap)
        edges = {start for start in starts[1:]} | {start + tile for start in starts[:-1]}
        differences = anomaly_map.diff(dim=axis).abs()  # index i: between pixel i and i + 1
        on_edge = torch.zeros(length - 1, dtype=torch.bool)
        on_edge[[edge - 1 for edge in edges]] = True  # a tile's first pixel e differs from the pixel e - 1
        shape = (1, -1) if axis == 1 else (-1, 1)
        on_edge = on_edge.view(shape).expand_as(differences)
        jumps.append((differences[on_edge].max(), differences[~on_edge].max()))
    return max(float(seam) for seam, _ in jumps), max(float(interior) for _, interior in jumps)


def score_tiles(model: torch.nn.Module, image: torch.Tensor, overlap: int) -> list[tuple[int, int, InferenceBatch]]:
    """Each tile's position and AdaCLIP's output for it, one tile at a time."""
    tile = model.image_size
    height, width = image.shape[-2:]
    with torch.no_grad():
        return [
            (top, left, model(image[:, :, top : top + tile, left : left + tile]))
            for top in tile_starts(height, tile, overlap)
            for left in tile_starts(width, tile, overlap)
        ]


def plainly_averaged(tiles: list[tuple[int, int, InferenceBatch]], size: tuple[int, int], tile: int) -> torch.Tensor:
    """The tiles stitched without blending: overlapping maps averaged with equal weights (seams show)."""
    total, count = torch.zeros(size), torch.zeros(size)
    for top, left, output in tiles:
        total[top : top + tile, left : left + tile] += output.anomaly_map[0]
        count[top : top + tile, left : left + tile] += 1
    return total / count


# ----------------------------------------------------------------------------------------------------------------------
# The tire sample (800x600) through Engine.predict
# ----------------------------------------------------------------------------------------------------------------------
def test_tiled_predict_on_the_tire_sample_gives_full_resolution_maps_without_seams(
    weights: dict[str, Path], tmp_path: Path
) -> None:
    image_path = TIRE_ROOT / "tire" / "test" / "cut" / "000.png"
    overlap = 32  # 4 x 3 tiles of 224 px
    torch.manual_seed(0)
    model = AdaCLIP(
        backbone=MICRO_BACKBONE,
        backbone_weights=str(weights["micro"]),
        image_size=224,
        # fewer text-tower passes per tile: the prompts are not what is tested here
        prompts={"branch": "V", "use_hsf": False},
        tiling={"overlap": overlap},
    )
    assert not any(isinstance(step, Resize) for step in model.pre_processor.transform.transforms)
    engine = make_engine(tmp_path)
    (batch,) = engine.predict(model, data_path=image_path)

    full = normalised(image_path)
    assert full.shape[-2:] == (800, 600)
    torch.testing.assert_close(batch.image, full, rtol=0, atol=1e-6)  # only normalised: no resize
    anomaly_map = batch.anomaly_map.reshape(800, 600)
    assert batch.pred_mask.reshape(800, 600).shape == (800, 600)
    # Coverage: every pixel has a probability.
    assert torch.isfinite(anomaly_map).all() and anomaly_map.min() >= 0 and anomaly_map.max() <= 1
    tiles = score_tiles(model.model.eval(), full, overlap)
    # Where one tile alone covers the image, the stitched map is that tile's map; the score is the highest tile score.
    second_top = sorted({top for top, _, _ in tiles})[1]
    second_left = sorted({left for _, left, _ in tiles})[1]
    torch.testing.assert_close(
        anomaly_map[:second_top, :second_left], tiles[0][2].anomaly_map[0, :second_top, :second_left], rtol=0, atol=1e-6
    )
    torch.testing.assert_close(
        batch.pred_score, torch.stack([out.pred_score for *_, out in tiles]).amax(0), rtol=0, atol=1e-5
    )

    # No seams: across tile borders the map changes no more than inside tiles; averaging the same tiles plainly
    # (without blending) gives jumps there, so the check does see seams.
    seam, interior = seam_and_interior_jumps(anomaly_map, 224, overlap)
    assert seam <= interior
    plain_seam, plain_interior = seam_and_interior_jumps(plainly_averaged(tiles, (800, 600), 224), 224, overlap)
    assert plain_seam > 2 * plain_interior, "the check would not see seams"

    # The CSV's anomalous-area fraction is taken on the full-resolution map.
    run_dir = tmp_path / "AdaCLIP" / "latest"
    with (run_dir / "predictions.csv").open() as handle:
        (row,) = list(csv.DictReader(handle))
    assert float(row["anomalous_area_fraction"]) == pytest.approx(float((anomaly_map > 0.5).float().mean()), abs=1e-6)
    assert (run_dir / "images" / "cut" / "000.png").is_file()


# ----------------------------------------------------------------------------------------------------------------------
# A generated 4000x3000 image through the anomalib CLI
# ----------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def huge_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4000x3000 photo-like texture with a defect of 4x4 pixels."""
    rng = np.random.default_rng(0)
    coarse = rng.integers(60, 200, size=(30, 40, 3), dtype=np.uint8)
    image = Image.fromarray(coarse).resize((4000, 3000), Image.Resampling.BICUBIC)
    array = np.asarray(image).copy()
    array[1500:1504, 2000:2004] = (255, 0, 0)
    path = tmp_path_factory.mktemp("huge") / "board.jpg"  # JPEG: 12 megapixels encode and decode quickly
    Image.fromarray(array).save(path, quality=95)
    return path


def test_tiled_predict_through_the_cli_on_a_4000x3000_image(
    weights: dict[str, Path], huge_image: Path, tmp_path: Path
) -> None:
    tile, overlap = 448, 64
    arguments = {
        "backbone": json.dumps(TILE_BACKBONE),
        "backbone_weights": str(weights["nano"]),
        "image_size": str(tile),
        "prompts.depth": "1",
        "prompts.branch": "V",
        "prompts.use_hsf": "false",
        "prompts.blur_sigma": "0",
        "tiling.overlap": str(overlap),
        "tiling.score": "whole",
    }
    flags = [item for key, value in arguments.items() for item in (f"--model.{key}", value)]
    cli = AnomalibCLI(
        [
            *("predict", "--model", "anomalib_adaclip.AdaCLIP", *flags, "--data", str(huge_image)),
            *("--trainer.accelerator", "cpu", "--default_root_dir", str(tmp_path)),
        ]
    )
    (batch,) = cli.engine.trainer.predict_loop.predictions
    anomaly_map = batch.anomaly_map.reshape(batch.anomaly_map.shape[-2:])
    assert anomaly_map.shape == (3000, 4000)
    assert batch.pred_mask.shape[-2:] == (3000, 4000)
    assert torch.isfinite(anomaly_map).all() and anomaly_map.min() >= 0 and anomaly_map.max() <= 1
    seam, interior = seam_and_interior_jumps(anomaly_map, tile, overlap)
    assert seam <= interior
    # "whole": the score of the whole image resized to one tile, not the maximum over tiles.
    model = cli.model.model.eval()
    with torch.no_grad():
        whole = TF.resize(batch.image, [tile, tile], interpolation=TF.InterpolationMode.BICUBIC, antialias=True)
        expected_score = model(whole).pred_score
    torch.testing.assert_close(batch.pred_score, expected_score, rtol=0, atol=1e-5)
    run_dir = tmp_path / "AdaCLIP" / "latest"
    assert (run_dir / "predictions.csv").is_file()
    with Image.open(next((run_dir / "images").rglob("board.jpg"))) as visualisation:
        assert visualisation.width == 3 * visualisation.height


# ----------------------------------------------------------------------------------------------------------------------
# Engine.test on a data module: full-resolution masks, anomalib's metrics
# ----------------------------------------------------------------------------------------------------------------------
class _KeepShapes(Callback):
    def __init__(self) -> None:
        self.shapes: list[tuple] = []

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        del trainer, pl_module, batch, batch_idx, dataloader_idx
        self.shapes.append((tuple(outputs.image.shape), tuple(outputs.anomaly_map.shape), tuple(outputs.gt_mask.shape)))


def test_tiled_test_on_a_data_module_computes_metrics_at_full_resolution(
    weights: dict[str, Path], tmp_path: Path
) -> None:
    root = generate_defect_dataset(tmp_path / "data", "widget", n_train=1, n_good=2, n_defect=2, size=160)
    torch.manual_seed(0)
    model = AdaCLIP(
        backbone=MICRO_BACKBONE,
        backbone_weights=str(weights["micro"]),
        image_size=112,
        tiling=True,
        prompts={"branch": "V", "use_hsf": False},
    )
    shapes = _KeepShapes()
    engine = make_engine(tmp_path / "results", callbacks=[shapes])
    datamodule = MVTecAD(root=root.parent, category="widget", num_workers=0, eval_batch_size=4)
    (metrics,) = engine.test(model, datamodule=datamodule)
    assert {"image_AUROC", "pixel_AUROC", "pixel_AUPRO"} <= set(metrics)
    # The data module copies no resize from a model transform without one: images, maps and masks stay 160x160.
    assert shapes.shapes and all(image[-2:] == (160, 160) for image, _, _ in shapes.shapes)
    assert all(anomaly_map[-2:] == (160, 160) and mask[-2:] == (160, 160) for _, anomaly_map, mask in shapes.shapes)


# ----------------------------------------------------------------------------------------------------------------------
# Arguments, checkpoints and export
# ----------------------------------------------------------------------------------------------------------------------
def test_tiling_arguments_are_checked(weights: dict[str, Path]) -> None:
    common = {"backbone": MICRO_BACKBONE, "backbone_weights": str(weights["micro"]), "image_size": 112}
    with pytest.raises(ValueError, match=r"tiling.overlap must be in \[0, image_size\) = \[0, 112\)"):
        AdaCLIP(**common, tiling={"overlap": 112})
    with pytest.raises(ValueError, match=r"tiling\.score must be one of"):
        AdaCLIP(**common, tiling={"score": "mean"})


def test_tiling_survives_a_checkpoint_without_it_and_refuses_export(weights: dict[str, Path], tmp_path: Path) -> None:
    common = {"backbone": MICRO_BACKBONE, "backbone_weights": str(weights["micro"]), "image_size": 112}
    tiled, resized = AdaCLIP(**common, tiling=True), AdaCLIP(**common)
    # What Lightning calls when a checkpoint saved by a resizing model is restored into a tiling one (--ckpt_path).
    tiled.on_load_checkpoint({"anomalib_pre_processor_config": resized.pre_processor.checkpoint_config()})
    assert [type(step) for step in tiled.pre_processor.transform.transforms] == [Normalize]
    resized.on_load_checkpoint({"anomalib_pre_processor_config": tiled.pre_processor.checkpoint_config()})
    assert [type(step) for step in resized.pre_processor.transform.transforms] == [Resize, Normalize]
    with pytest.raises(NotImplementedError, match="Tiled inference cannot be exported"):
        make_engine(tmp_path).export(tiled, export_type="torch", export_root=tmp_path)
