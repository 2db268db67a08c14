"""Normal reference images for few-shot AdaCLIP: where they come from, which ``k`` are drawn, how they are read.

The ``k_shot`` references of a class are drawn, seeded, from

- the normal images of the data module's training split (its category is the class name), or
- ``few_shot_source``: a folder (the run's class name), or a mapping of class name to folder (many classes in one
  run, with per-image class names).

The candidates are sorted by path before the seeded draw, so the same seed and the same files draw the same
references on any host; the drawn paths are logged. References go through the model's own transform, so a reference
of another size than the queries is resized to ``image_size`` like them (with tiling, where the transform does not
resize, references are cut into tiles like the queries).

Example:
    >>> from anomalib_adaclip.components.references import draw_references
    >>> draw_references(["c.png", "a.png", "b.png"], k=2, seed=0)
    [PosixPath('c.png'), PosixPath('a.png')]
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from anomalib.data.utils import read_image
from torchvision.datasets.folder import IMG_EXTENSIONS

logger = logging.getLogger(__name__)

__all__ = ["FewShotSource", "ReferenceError", "draw_references", "folder_images", "read_references", "reference_paths"]

FewShotSource = str | Path | Mapping[str, str | Path]


class ReferenceError(ValueError):
    """Few-shot reference images that cannot be used: too few, an empty or missing folder, an unreadable file."""


def folder_images(folder: str | Path) -> list[Path]:
    """The image files of a folder and its subfolders, sorted.

    Raises:
        ReferenceError: The folder does not exist or holds no image file.
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        msg = f"few_shot_source {folder} is not a folder of reference images."
        raise ReferenceError(msg)
    images = sorted(path for path in folder.rglob("*") if path.is_file() and path.suffix.lower() in IMG_EXTENSIONS)
    if not images:
        msg = f"few_shot_source {folder} holds no image file ({', '.join(sorted(IMG_EXTENSIONS))})."
        raise ReferenceError(msg)
    return images


def draw_references(candidates: Sequence[str | Path], k: int, seed: int, where: str = "the candidates") -> list[Path]:
    """Draw ``k`` references from candidate paths: sorted, then a seeded sample (the same seed, the same draw).

    Raises:
        ReferenceError: Fewer than ``k`` candidates.
    """
    paths = sorted(Path(path) for path in dict.fromkeys(str(path) for path in candidates))
    if k > len(paths):
        msg = f"k_shot={k} needs {k} normal reference images, but {where} has only {len(paths)}."
        raise ReferenceError(msg)
    return random.Random(seed).sample(paths, k)


def _normal_training_images(datamodule: Any) -> list[Path]:
    train = getattr(datamodule, "train_data", None)
    samples = getattr(train, "samples", None)
    if samples is None or "image_path" not in samples:
        msg = (
            f"k_shot > 0 draws the reference images from the data module's training split, but "
            f"{type(datamodule).__name__} has none. Give few_shot_source (a folder of normal images)."
        )
        raise ReferenceError(msg)
    if "label_index" in samples:
        samples = samples[samples.label_index == 0]
    return [Path(path) for path in samples.image_path]


def reference_paths(
    k: int,
    seed: int,
    source: FewShotSource | None,
    datamodule: Any,
    class_name: str,
) -> dict[str, list[Path]]:
    """The drawn reference images of every class name: from ``source`` if given, else the data module's training split.

    Args:
        k: References per class.
        seed: Seed of the draw.
        source: A folder (for ``class_name``), a mapping of class name to folder, or ``None``.
        datamodule: The run's data module (used without ``source``), or ``None``.
        class_name: The run's class name (the class of a single folder or of the data module's images).

    Raises:
        ReferenceError: No source of references, too few images, an empty or missing folder.
    """
    if source is None:
        if datamodule is None:
            msg = (
                "k_shot > 0 needs normal reference images: give few_shot_source (a folder, or a mapping of class name "
                "to folder) or run with a data module that has a training split."
            )
            raise ReferenceError(msg)
        where = f"the training split of {type(datamodule).__name__}"
        folders = {class_name: draw_references(_normal_training_images(datamodule), k, seed, where)}
    elif isinstance(source, Mapping):
        if not source:
            msg = "few_shot_source is an empty mapping: give at least one class name and its folder."
            raise ReferenceError(msg)
        folders = {
            name: draw_references(folder_images(folder), k, seed, f"few_shot_source {folder}")
            for name, folder in source.items()
        }
    else:
        folders = {class_name: draw_references(folder_images(source), k, seed, f"few_shot_source {source}")}
    for name, paths in folders.items():
        logger.info("AdaCLIP few-shot references of %r (seed %d): %s", name, seed, [str(path) for path in paths])
    return folders


def read_references(
    paths: Sequence[Path], transform: Callable[[torch.Tensor], torch.Tensor] | None
) -> list[torch.Tensor]:
    """Read reference images as float tensors in [0, 1] and apply the model's transform to each.

    Raises:
        ReferenceError: A file that cannot be read as an image.
    """
    images = []
    for path in paths:
        try:
            image = read_image(path, as_tensor=True)
        except Exception as error:  # PIL raises many kinds of errors for a broken file
            msg = f"Few-shot reference image {path} cannot be read as an image: {error}"
            raise ReferenceError(msg) from error
        images.append(transform(image) if transform is not None else image)
    return images
