"""The quick start: zero-shot AdaCLIP on MVTec AD "bottle" with the released weights, or an offline smoke run.

``anomalib-adaclip quickstart`` tests AdaCLIP zero-shot on one MVTec AD category (default ``bottle``) with the
paper's setting for MVTec AD: the prompts trained on VisA + ClinicDB (``checkpoint="visa_clinicdb"``) on OpenAI's
CLIP ViT-L/14@336 at 518 px. The data set and the weights are downloaded and cached when missing. Before anything
heavy happens, every input is checked: when one is missing and cannot be downloaded (offline, or
``ADACLIP_OFFLINE=1``), the command stops within seconds and says which file or data set is missing and where to put
it.

``anomalib-adaclip quickstart --smoke`` runs the same pipeline offline on generated images with a tiny random
backbone. Its numbers mean nothing, and every output says so: the console table, the metrics file, each
visualisation and the Lightning checkpoint.

Example:
    >>> from anomalib_adaclip.quickstart import main
    >>> main(["--smoke", "--output", "results/smoke"])  # doctest: +SKIP
    0
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from PIL import Image, ImageDraw, ImageFont
from PIL.PngImagePlugin import PngInfo

from anomalib_adaclip.compat import MVTEC_AD_CATEGORIES, MVTEC_AD_DOWNLOAD_INFO
from anomalib_adaclip.config import SMOKE_BACKBONE, SMOKE_IMAGE_SIZE, SMOKE_NOTE, AdaCLIPConfig
from anomalib_adaclip.data.synthetic import generate_defect_dataset
from anomalib_adaclip.output_files import write_new_file
from anomalib_adaclip.weights import OFFLINE_ENV, downloads_disabled, host_reachable, locate_weights

logger = logging.getLogger(__name__)

__all__ = [
    "OFFLINE_ENV",
    "SMOKE_NOTE",
    "MissingInputsError",
    "QuickstartInputs",
    "build_parser",
    "main",
    "resolve_inputs",
]

BACKBONE = AdaCLIPConfig.backbone
BACKBONE_WEIGHTS = "openai"
CHECKPOINT = "visa_clinicdb"  # the paper's protocol for MVTec AD: prompts trained on VisA + ClinicDB
IMAGE_SIZE = AdaCLIPConfig.image_size
DEFAULT_ROOT = Path("./datasets/MVTecAD")  # anomalib's default MVTecAD root
MVTEC_PAGE = "https://www.mvtec.com/company/research/datasets/mvtec-ad"

SMOKE_KEY = "adaclip_smoke_test"


class MissingInputsError(RuntimeError):
    """Inputs of the quick start that are neither on disk nor downloadable; the message lists each one."""


@dataclass(frozen=True)
class QuickstartInputs:
    """Everything the real quick start needs, checked before the model is built.

    Attributes:
        dataset_root: Folder that holds (or will hold, after the download) ``<category>/``.
        download_dataset: Whether anomalib still has to download MVTec AD into ``dataset_root``.
        checkpoint: Local file of the released AdaCLIP checkpoint.
        backbone_weights: Local file of the CLIP weights.
    """

    dataset_root: Path
    download_dataset: bool
    checkpoint: Path
    backbone_weights: Path


# ----------------------------------------------------------------------------------------------------------------------
# Checking the inputs
# ----------------------------------------------------------------------------------------------------------------------
def _hub_reachable() -> bool:
    from huggingface_hub import constants  # noqa: PLC0415

    return not constants.HF_HUB_OFFLINE and host_reachable(constants.ENDPOINT)


def _has_images(folder: Path) -> bool:
    return folder.is_dir() and any(path.suffix.lower() in {".png", ".jpg", ".jpeg"} for path in folder.iterdir())


def _dataset_problem(root: Path, category: str, downloadable: bool) -> str | None:
    category_dir = root / category
    if category_dir.is_dir():
        if _has_images(category_dir / "test" / "good"):
            return None
        return (
            f"MVTec AD category {category!r} is incomplete: {category_dir} exists but {category_dir / 'test' / 'good'} "
            f"holds no images. Remove the folder to download it again, or extract MVTec AD there so that "
            f"{category_dir}/test, {category_dir}/train/good and {category_dir}/ground_truth exist."
        )
    if downloadable:
        return None
    return (
        f"MVTec AD category {category!r} is missing: {category_dir} does not exist and the download host "
        f"({urlparse(MVTEC_AD_DOWNLOAD_INFO.url).hostname}) cannot be reached.\n"
        f"   Download mvtec_anomaly_detection.tar.xz (4.9 GB) from {MVTEC_PAGE} and extract it into {root} so that "
        f"{category_dir}/test exists, or pass --root /folder/that/holds/{category}."
    )


def resolve_inputs(root: Path, category: str = "bottle") -> QuickstartInputs:
    """Check the data set and the weights of the real quick start; download the weights when missing.

    Nothing is downloaded when any input is unavailable, so a failure costs seconds, not gigabytes. Hosts are probed
    with one short connection each; ``ADACLIP_OFFLINE=1`` (or ``HF_HUB_OFFLINE=1`` for the weights) skips the probes
    and uses local files only.

    Args:
        root: MVTec AD root (the folder that holds ``bottle/``, ``cable/``, ...).
        category: MVTec AD category.

    Returns:
        The checked inputs.

    Raises:
        MissingInputsError: Something is neither on disk nor downloadable; the message names each missing file or
            data set and where to put it.
    """
    root = Path(root).expanduser()
    offline = downloads_disabled()
    needs_download = not (root / category).is_dir()
    problems = []
    downloadable = not offline and needs_download and host_reachable(MVTEC_AD_DOWNLOAD_INFO.url)
    if problem := _dataset_problem(root, category, downloadable):
        problems.append(problem)
    found, errors = locate_weights(BACKBONE, BACKBONE_WEIGHTS, CHECKPOINT, local_only=True)
    note = ""
    if errors and not offline and _hub_reachable():
        if problems:  # downloadable, but not worth gigabytes while the data set is missing
            note = "\nThe missing weights are downloadable: they are fetched once the data set is in place."
            errors = {}
        else:
            found, errors = locate_weights(BACKBONE, BACKBONE_WEIGHTS, CHECKPOINT, local_only=False)
    problems += [str(error).replace("\n", "\n   ") for error in errors.values()]
    if problems:
        reason = "downloads are disabled (ADACLIP_OFFLINE=1)" if offline else "they cannot be downloaded here"
        listed = "\n".join(f"{index}. {problem}" for index, problem in enumerate(problems, 1))
        msg = (
            f"The AdaCLIP quick start cannot start: {len(problems)} input(s) are missing and {reason}.\n{listed}"
            f"{note}\nNothing was downloaded or run. `anomalib-adaclip quickstart --smoke` checks the pipeline offline."
        )
        raise MissingInputsError(msg)
    return QuickstartInputs(root, needs_download, found["checkpoint"], found["backbone_weights"])


# ----------------------------------------------------------------------------------------------------------------------
# Marking the smoke run's outputs
# ----------------------------------------------------------------------------------------------------------------------
class SmokeCheckpointNote(Callback):
    """Write the smoke-test note into every Lightning checkpoint of the run."""

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        """Add the note under ``adaclip_smoke_test``."""
        del trainer, pl_module
        checkpoint[SMOKE_KEY] = SMOKE_NOTE


def _stamp_image(path: Path) -> None:
    """Put a red banner with the smoke-test note above the image and into its PNG text."""
    with Image.open(path) as original:
        image = original.convert("RGB")
    font = ImageFont.load_default(size=14)
    banner_height = 40
    stamped = Image.new("RGB", (image.width, image.height + banner_height), (170, 0, 0))
    stamped.paste(image, (0, banner_height))
    draw = ImageDraw.Draw(stamped)
    draw.text((6, 3), "SMOKE TEST - tiny random backbone on generated images.", fill=(255, 255, 255), font=font)
    draw.text((6, 21), "These maps and numbers mean nothing.", fill=(255, 255, 255), font=font)
    info = PngInfo()
    info.add_text("Warning", SMOKE_NOTE)
    stamped.save(path, pnginfo=info)


# ----------------------------------------------------------------------------------------------------------------------
# Running
# ----------------------------------------------------------------------------------------------------------------------
def _print_metrics(metrics: dict[str, float], title: str, smoke: bool) -> None:
    width = max(len(name) for name in metrics) if metrics else 10
    rule = "=" * max(len(title), width + 12)
    print(rule)
    print(title)
    if smoke:
        print(SMOKE_NOTE)
    print(rule)
    for name, value in sorted(metrics.items()):
        print(f"  {name:<{width}}  {value:.4f}" + ("  (meaningless: smoke test)" if smoke else ""))
    print(rule)


def _run(
    *,
    smoke: bool,
    root: Path,
    category: str,
    output: Path,
    device: str,
    batch_size: int,
    num_workers: int,
) -> int:
    # Check the inputs of the real run before the heavier imports and before building anything.
    inputs = None if smoke else resolve_inputs(root, category)

    from anomalib.data import MVTecAD  # noqa: PLC0415
    from anomalib.engine import Engine  # noqa: PLC0415

    from anomalib_adaclip import AdaCLIP  # noqa: PLC0415
    from anomalib_adaclip.compat import create_versioned_dir  # noqa: PLC0415

    with contextlib.ExitStack() as stack:
        if smoke:
            scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="adaclip_smoke_")))
            root = scratch / "MVTecAD"
            generate_defect_dataset(root, category, size=160)
            torch.manual_seed(0)
            model = AdaCLIP(backbone=SMOKE_BACKBONE, backbone_weights=None, image_size=SMOKE_IMAGE_SIZE)
            callbacks: list[Callback] = [SmokeCheckpointNote()]
            title = f"AdaCLIP quick start --smoke on generated '{category}' images (tiny random backbone)"
        else:
            assert inputs is not None  # for type checkers
            if inputs.download_dataset:
                print(f"Downloading MVTec AD (4.9 GB, all categories) into {inputs.dataset_root} ...", flush=True)
            model = AdaCLIP(
                backbone=BACKBONE,
                backbone_weights=str(inputs.backbone_weights),
                checkpoint=str(inputs.checkpoint),
                image_size=IMAGE_SIZE,
            )
            callbacks = []
            title = (
                f"AdaCLIP zero-shot on MVTec AD {category!r}: checkpoint {CHECKPOINT!r}, "
                f"{BACKBONE} {BACKBONE_WEIGHTS!r} weights at {IMAGE_SIZE} px"
            )
        run_root = create_versioned_dir(output)
        datamodule = MVTecAD(root=root, category=category, eval_batch_size=batch_size, num_workers=num_workers)
        engine = Engine(
            default_root_dir=run_root,
            accelerator=device,
            devices=1,
            logger=False,
            callbacks=callbacks,
        )
        results = engine.test(model, datamodule=datamodule, verbose=False)
    run_dir = Path(engine.trainer.default_root_dir)
    metrics = {name: float(value) for name, value in (results[0] if results else {}).items()}
    if smoke:
        for image in sorted(run_dir.rglob("*.png")):
            _stamp_image(image)
    summary: dict[str, Any] = {
        "metrics": metrics,
        "dataset": "generated images" if smoke else f"MVTec AD {category} ({root})",
        "model": {
            "backbone": "tiny random CLIP" if smoke else BACKBONE,
            "backbone_weights": None if smoke else BACKBONE_WEIGHTS,
            "checkpoint": None if smoke else CHECKPOINT,
            "image_size": SMOKE_IMAGE_SIZE if smoke else IMAGE_SIZE,
        },
    }
    if smoke:
        summary = {"WARNING": SMOKE_NOTE, **summary}
    metrics_file = write_new_file(run_dir / "metrics.json", json.dumps(summary, indent=2) + "\n")
    _print_metrics(metrics, title, smoke)
    print(f"Visualisations: {run_dir / 'images'}")
    print(f"Metrics:        {metrics_file}")
    if not smoke:
        print("The paper reports image AUROC 89.2 and pixel AUROC 88.7 for MVTec AD, averaged over its 15 categories.")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``anomalib-adaclip quickstart`` parser."""
    parser = argparse.ArgumentParser(
        prog="anomalib-adaclip quickstart",
        description=(
            "Zero-shot AdaCLIP on an MVTec AD category with the released weights (checkpoint 'visa_clinicdb', "
            "ViT-L-14-336 'openai', 518 px). The data set and the weights are downloaded and cached when missing; "
            "offline, the command stops at once and names what is missing."
        ),
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="run the same pipeline offline on generated images with a tiny random backbone (meaningless numbers)",
    )
    parser.add_argument(
        "--root", type=Path, default=DEFAULT_ROOT, help="MVTec AD root, the folder that holds bottle/ (download target)"
    )
    parser.add_argument("--category", default="bottle", choices=MVTEC_AD_CATEGORIES, help="MVTec AD category")
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="results root (default results/quickstart, or results/quickstart-smoke)",
    )
    parser.add_argument("--device", default="auto", help="Lightning accelerator: auto, cpu, gpu, ... (default auto)")
    parser.add_argument("--batch-size", type=int, default=8, help="test batch size (default 8)")
    parser.add_argument(
        "--num-workers", type=int, default=min(4, os.cpu_count() or 1), help="data loader workers (default up to 4)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the quick start; returns the exit code (2 when an input is missing).

    Args:
        argv: Arguments after ``quickstart``. Defaults to ``sys.argv[1:]``.
    """
    arguments = build_parser().parse_args(argv)
    output = arguments.output or Path("results") / ("quickstart-smoke" if arguments.smoke else "quickstart")
    try:
        return _run(
            smoke=arguments.smoke,
            root=arguments.root,
            category=arguments.category,
            output=output,
            device=arguments.device,
            batch_size=arguments.batch_size,
            num_workers=arguments.num_workers,
        )
    except MissingInputsError as error:
        print(error, file=sys.stderr)
        return 2
