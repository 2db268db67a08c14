"""Does the rarity branch localise the tire sample's real defects? Pixel AUROC of each defective image's map.

RareCLIP's online scoring (:class:`anomalib_adaclip.RarityScoring`) on a random 12-block CLIP (the tire benchmark's,
``configs/benchmark/tire.yaml``), the 15 test images streamed in a seeded order. For each defective image: its place in
the stream, the images in the bank before it, and the pixel AUROC of its map against its mask (0.5 is chance), once
with an empty bank at the start (the benchmark's protocol) and once after RareCLIP's ``k_shot`` warm start on the 4
good training images; then the pixel AUROC over every pixel of the 15 test images at once (the benchmark's pixel
AUROC, which also asks that maps of different images be on one scale). Prints a Markdown table per seed.

    python tools/tire_rarity_localisation.py [--seeds 0 1]
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import numpy as np
import torch
import yaml
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from PIL import Image
from sklearn.metrics import roc_auc_score
from torchvision.transforms.v2 import functional as TF  # noqa: N812

from anomalib_adaclip import RarityScoring

PROJECT = Path(__file__).resolve().parents[1]
ROOT = PROJECT / "tests" / "data" / "mvtec3d_tire_sample" / "tire"
# The tire benchmark's random CLIP and its rarity-alone model's settings, read from the benchmark's own file.
_MODELS = {model["name"]: model["init_args"] for model in yaml.safe_load(
    (PROJECT / "configs" / "benchmark" / "tire.yaml").read_text())["models"]}  # fmt: skip
BACKBONE = _MODELS["AdaCLIP-rarity"]["backbone"]
SIZE = _MODELS["AdaCLIP-rarity"]["image_size"]
SETTINGS = _MODELS["AdaCLIP-rarity"]["rarity"]["scoring"]


def _image(path: Path) -> torch.Tensor:
    image = TF.to_image(Image.open(path).convert("RGB"))
    image = TF.resize(TF.to_dtype(image, torch.float32, scale=True), [SIZE, SIZE], antialias=True)
    return TF.normalize(image, OPENAI_DATASET_MEAN, OPENAI_DATASET_STD)[None]


def _mask(path: Path) -> np.ndarray:
    mask = Image.open(path).convert("L").resize((SIZE, SIZE), Image.NEAREST)
    return (np.asarray(mask) > 0).ravel()


def _run(seed: int, warm: bool) -> tuple[list[tuple[int, str, float]], float]:
    """Each defective image's place, name and pixel AUROC, and the pixel AUROC over all test images' pixels."""
    torch.manual_seed(seed)
    scorer = RarityScoring(BACKBONE, None, SIZE, k_shot=4 if warm else 0, **SETTINGS).eval()
    tests = sorted((ROOT / "test").glob("*/*.png"))
    random.Random(seed).shuffle(tests)
    stream = (sorted((ROOT / "train" / "good").glob("*.png")) if warm else []) + tests
    rows, masks, maps = [], [], []
    scorer.reset()
    with torch.no_grad():
        for position, path in enumerate(stream):
            output = scorer.step(_image(path))
            if output is None:
                continue
            amap = output.anomaly_map.reshape(-1).numpy()
            maps.append(amap)
            if path.parent.name == "good":
                masks.append(np.zeros_like(amap, dtype=bool))
                continue
            mask = _mask(ROOT / "ground_truth" / path.parent.name / f"{path.stem}_mask.png")
            masks.append(mask)
            rows.append((position, f"{path.parent.name}/{path.name}", float(roc_auc_score(mask, amap))))
    return rows, float(roc_auc_score(np.concatenate(masks), np.concatenate(maps)))


def main() -> None:
    """Print the tables of the seeds asked for."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = parser.parse_args()
    for seed in args.seeds:
        (cold, cold_pooled), (warm, warm_pooled) = _run(seed, warm=False), _run(seed, warm=True)
        print(f"\nSeed {seed}: pixel AUROC of each defective image's rarity map (percent)\n")
        print("| image | images before it | empty bank at start | after 4 good training images |")
        print("| --- | ---: | ---: | ---: |")
        for (position, name, auroc), (_, _, warm_auroc) in zip(cold, warm, strict=True):
            print(f"| {name} | {position} | {100 * auroc:.1f} | {100 * warm_auroc:.1f} |")
        print(
            f"| **mean** | | **{100 * np.mean([r[2] for r in cold]):.1f}** | "
            f"**{100 * np.mean([r[2] for r in warm]):.1f}** |"
        )
        pooled = f"**{100 * cold_pooled:.1f}** | **{100 * warm_pooled:.1f}**"
        print(f"| **all 15 test images' pixels at once** | | {pooled} |")


if __name__ == "__main__":
    main()
