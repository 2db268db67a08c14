"""Record what the model computes, as SHA-256 digests of its output tensors: run before and after a redesign.

A redesign that must not change the numbers (issue 27: grouped settings, owned parts, groups as the unit of work) is
checked by running this script on main before the change and after it and comparing the two outputs line by line
(``diff``). Every line is ``case  tensor  shape  dtype  sha256``, so equal lines mean bitwise-equal tensors.

What it covers (all on CPU, fp32, the tests' tiny random CLIPs, so it runs anywhere in about a minute):

- the four reference fixtures of the authors' AdaCLIP code through :class:`~anomalib_adaclip.AdaCLIPModel`
  (its signature is the parity API and does not change), per image and as one batch, in eval and train mode;
- :meth:`AdaCLIP.forward <anomalib_adaclip.AdaCLIP.forward>` on raw tire images: zero-shot with and without HSF,
  few-shot (two references), and mutual scoring in eager mode;
- the demo's path, ``components.image_scoring.score_images``: zero-shot, tiling (``forward`` does not tile) and one
  mutual group;
- mutual scoring through anomalib's ``Engine.predict`` on the 15 tire test images, group sizes 4 and 15.

The only part that may change between the runs is :func:`adaclip`, the one place that turns a case's settings into
the ``AdaCLIP`` constructor call.

Usage (from the repository root)::

    python tools/record_outputs.py /tmp/after.txt && diff tools/record_outputs_before.txt /tmp/after.txt
"""

from __future__ import annotations

import hashlib
import logging
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from anomalib.data import PredictDataset
from anomalib.data.utils import read_image
from anomalib.engine import Engine
from open_clip.model import CLIP
from torch.utils.data import DataLoader
from torchvision.transforms.v2 import functional as TF  # noqa: N812

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the tests' fixtures and tiny CLIPs

from anomalib_adaclip import AdaCLIP  # noqa: E402
from anomalib_adaclip.components.image_scoring import score_images  # noqa: E402
from tests.conftest import (  # noqa: E402
    MICRO_BACKBONE,
    REFERENCE_FILE,
    TIRE_ROOT,
    VARIANT_FILES,
    load_reference,
    reference_model,
)

IMAGE_SIZE = 112
TEST_IMAGES = TIRE_ROOT / "tire" / "test"
GOOD_TRAIN = sorted((TIRE_ROOT / "tire" / "train" / "good").glob("*.png"))


def digest(tensor: torch.Tensor) -> str:
    """SHA-256 of the tensor's bytes."""
    return hashlib.sha256(tensor.detach().cpu().numpy().tobytes()).hexdigest()  # C order whatever the strides


LINES: list[str] = []  # the record; written at the end, apart from what the runs themselves print


def emit(case: str, name: str, tensor: torch.Tensor | None) -> None:
    """Record one tensor: its case, name, shape, dtype and digest."""
    if tensor is None:
        LINES.append(f"{case}  {name}  None")
        return
    LINES.append(f"{case}  {name}  {tuple(tensor.shape)}  {str(tensor.dtype).removeprefix('torch.')}  {digest(tensor)}")


def adaclip(weights: Path, settings: dict[str, Any]) -> Any:
    """The one place that turns a case's settings into an ``AdaCLIP`` (seeded: random prompts).

    ``settings`` use the names of main before issue 27: ``use_hsf``, ``k_shot``, ``tiling``, ``mutual_scoring``,
    ``mutual_weight``, ``mutual_group_size``, ``thresholding``, ``class_name``.
    """
    torch.manual_seed(0)
    return AdaCLIP(backbone=MICRO_BACKBONE, backbone_weights=str(weights), image_size=IMAGE_SIZE, **settings)


def fixtures() -> None:
    """The reference fixtures through ``AdaCLIPModel``: batch, each image, without HSF, train mode."""
    for name in (REFERENCE_FILE, *VARIANT_FILES):
        data = load_reference(name)
        model = reference_model(data)
        images, classes = data["images"], data["classes"]
        with torch.no_grad():
            batch = model(images, classes)
            emit(name, "batch.anomaly_map", batch.anomaly_map)
            emit(name, "batch.pred_score", batch.pred_score)
            for index in range(len(classes)):
                single = model(images[index : index + 1], classes[index : index + 1])
                emit(name, f"image{index}.anomaly_map", single.anomaly_map)
                emit(name, f"image{index}.pred_score", single.pred_score)
            model.use_hsf = False
            emit(name, "no_hsf.pred_score", model(images, classes).pred_score)
            model.use_hsf = data["settings"]["use_hsf"]
            model.train()
            train = model(images, classes)
            model.eval()
        for key, value in sorted(train._asdict().items() if hasattr(train, "_asdict") else {"out": train}.items()):
            if isinstance(value, torch.Tensor):
                emit(name, f"train.{key}", value)


def raw_images(count: int, size: int) -> torch.Tensor:
    """The first ``count`` tire test images, in [0, 1], resized to ``size`` (a batch needs one size)."""
    paths = sorted(TEST_IMAGES.glob("*/*.png"))[:count]
    images = [TF.resize(read_image(path, as_tensor=True), [size, size], antialias=True) for path in paths]
    return torch.stack(images)


def eager(weights: Path) -> None:
    """``AdaCLIP.forward`` on raw images (pre-processor, model, post-processor)."""
    images = raw_images(6, 160)
    cases: dict[str, dict[str, Any]] = {
        "zero_shot": {},
        "no_hsf": {"use_hsf": False},
        "few_shot": {"k_shot": 2},
        "mutual": {"mutual_scoring": True, "mutual_group_size": 4},
    }
    for case, settings in cases.items():
        model = adaclip(weights, {"class_name": "tire", **settings}).eval()
        if case == "few_shot":
            model.set_references({"tire": GOOD_TRAIN[:2]})
        with torch.no_grad():
            out = model(images)
        for key in ("pred_score", "anomaly_map", "pred_label", "pred_mask"):
            emit(f"forward.{case}", key, getattr(out, key, None))


def demo_path(weights: Path) -> None:
    """The demo's one scoring path (``score_images``): tiling (``forward`` does not tile) and a mutual group."""
    images = raw_images(6, 160)
    cases: dict[str, tuple[dict[str, Any], bool]] = {
        "zero_shot": ({}, False),
        "tiling": ({"tiling": True}, False),
        "mutual": ({}, True),
    }
    for case, (settings, mutual) in cases.items():
        model = adaclip(weights, {"class_name": "tire", **settings}).eval()
        out = score_images(model, images, "tire", mutual=mutual)
        for key in ("pred_score", "anomaly_map", "pred_label", "pred_mask"):
            emit(f"score_images.{case}", key, getattr(out, key, None))


def engine_mutual(weights: Path, root: Path) -> None:
    """Mutual scoring through ``Engine.predict`` on the tire test images, batch size 5."""
    for group_size in (4, 15):
        engine = Engine(
            default_root_dir=root / f"g{group_size}",
            accelerator="cpu",
            devices=1,
            logger=False,
            enable_progress_bar=False,
        )
        dataset = PredictDataset(TEST_IMAGES)
        loader = DataLoader(dataset, batch_size=5, collate_fn=dataset.collate_fn)
        settings = {"thresholding": "fixed", "mutual_scoring": True, "mutual_group_size": group_size}
        batches = engine.predict(adaclip(weights, settings), dataloaders=loader, return_predictions=True)
        paths = [Path(path).relative_to(TIRE_ROOT).as_posix() for batch in batches for path in batch.image_path]
        LINES.append(f"engine.mutual{group_size}  order  {' '.join(paths)}")
        emit(f"engine.mutual{group_size}", "pred_score", torch.cat([batch.pred_score for batch in batches]))
        emit(f"engine.mutual{group_size}", "anomaly_map", torch.cat([batch.anomaly_map for batch in batches]))


def main() -> None:
    """Record every case into the file named by the first argument."""
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    torch.set_num_threads(1)  # thread count changes float sums on some kernels: pin it for a bitwise comparison
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        torch.manual_seed(0)
        weights = root / "micro_clip.pt"
        torch.save(CLIP(**MICRO_BACKBONE).state_dict(), weights)
        fixtures()
        eager(weights)
        demo_path(weights)
        engine_mutual(weights, root)
    output = Path(sys.argv[1])
    output.write_text("\n".join(LINES) + "\n")
    print(f"{len(LINES)} lines written to {output}")


if __name__ == "__main__":
    main()
