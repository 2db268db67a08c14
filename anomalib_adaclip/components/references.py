"""Normal reference images for few-shot AdaCLIP: where they come from, which ``k`` are drawn, how they are read.

The ``k_shot`` references of a class are drawn, seeded, from

- the normal images of the data module's training split (its category is the class name), or
- ``few_shot.source``: a folder (the run's class name), or a mapping of class name to folder (many classes in one
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
from lightning.pytorch import Callback, LightningModule, Trainer
from torchvision.datasets.folder import IMG_EXTENSIONS

from anomalib_adaclip.model import AdaCLIPModel

from .tiling import cut_tiles

logger = logging.getLogger(__name__)

__all__ = [
    "FewShotReferenceError",
    "FewShotReferences",
    "FewShotSource",
    "ReferenceImages",
    "draw_references",
    "encode_references",
    "fill_memory",
    "folder_images",
    "read_references",
    "reference_paths",
]

FewShotSource = str | Path | Mapping[str, str | Path]


class FewShotReferenceError(ValueError):
    """Few-shot reference images that cannot be used: too few, an empty or missing folder, an unreadable file."""


def folder_images(folder: str | Path) -> list[Path]:
    """The image files of a folder and its subfolders, sorted.

    Raises:
        FewShotReferenceError: The folder does not exist or holds no image file.
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        msg = f"few_shot.source {folder} is not a folder of reference images."
        raise FewShotReferenceError(msg)
    images = sorted(path for path in folder.rglob("*") if path.is_file() and path.suffix.lower() in IMG_EXTENSIONS)
    if not images:
        msg = f"few_shot.source {folder} holds no image file ({', '.join(sorted(IMG_EXTENSIONS))})."
        raise FewShotReferenceError(msg)
    return images


def draw_references(candidates: Sequence[str | Path], k: int, seed: int, where: str = "the candidates") -> list[Path]:
    """Draw ``k`` references from candidate paths: sorted, then a seeded sample (the same seed, the same draw).

    Raises:
        FewShotReferenceError: Fewer than ``k`` candidates.
    """
    paths = sorted(Path(path) for path in dict.fromkeys(str(path) for path in candidates))
    if k > len(paths):
        msg = f"k_shot={k} needs {k} normal reference images, but {where} has only {len(paths)}."
        raise FewShotReferenceError(msg)
    return random.Random(seed).sample(paths, k)


def _normal_training_images(datamodule: Any) -> list[Path]:
    train = getattr(datamodule, "train_data", None)
    samples = getattr(train, "samples", None)
    if samples is None or "image_path" not in samples:
        msg = (
            f"k_shot > 0 draws the reference images from the data module's training split, but "
            f"{type(datamodule).__name__} has none. Give few_shot.source (a folder of normal images)."
        )
        raise FewShotReferenceError(msg)
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
        FewShotReferenceError: No source of references, too few images, an empty or missing folder.
    """
    if source is None:
        if datamodule is None:
            msg = (
                "k_shot > 0 needs normal reference images: give few_shot.source (a folder, or a mapping of class name "
                "to folder) or run with a data module that has a training split."
            )
            raise FewShotReferenceError(msg)
        where = f"the training split of {type(datamodule).__name__}"
        folders = {class_name: draw_references(_normal_training_images(datamodule), k, seed, where)}
    elif isinstance(source, Mapping):
        if not source:
            msg = "few_shot.source is an empty mapping: give at least one class name and its folder."
            raise FewShotReferenceError(msg)
        folders = {
            name: draw_references(folder_images(folder), k, seed, f"few_shot.source {folder}")
            for name, folder in source.items()
        }
    else:
        folders = {class_name: draw_references(folder_images(source), k, seed, f"few_shot.source {source}")}
    for name, paths in folders.items():
        logger.info("AdaCLIP few-shot references of %r (seed %d): %s", name, seed, [str(path) for path in paths])
    return folders


def read_references(
    paths: Sequence[Path], transform: Callable[[torch.Tensor], torch.Tensor] | None
) -> list[torch.Tensor]:
    """Read reference images as float tensors in [0, 1] and apply the model's transform to each.

    Raises:
        FewShotReferenceError: A file that cannot be read as an image.
    """
    images = []
    for path in paths:
        try:
            image = read_image(path, as_tensor=True)
        except Exception as error:  # PIL raises many kinds of errors for a broken file
            msg = f"Few-shot reference image {path} cannot be read as an image: {error}"
            raise FewShotReferenceError(msg) from error
        images.append(transform(image) if transform is not None else image)
    return images


def fill_memory(
    model: AdaCLIPModel,
    source: FewShotSource | None,
    datamodule: Any,
    transform: Callable[[torch.Tensor], torch.Tensor],
    tile_overlap: int | None = None,
) -> None:
    """Draw, read and encode the references of every class name ``model``'s few-shot memory lacks.

    Args:
        model: A few-shot model (a zero-shot one has no memory: nothing happens).
        source: ``few_shot.source``: a folder, a mapping of class name to folder, or ``None`` for ``datamodule``.
        datamodule: The run's data module (its training split's normal images), or ``None``.
        transform: The model's pre-processing transform (references are read like queries).
        tile_overlap: With tiled inference, the tile overlap: references are cut into tiles like the queries.

    Raises:
        FewShotReferenceError: No source of references, too few images, an empty or missing folder, or an unreadable
            image.
    """
    memory = model.few_shot_memory
    if memory is None:
        return
    needed = list(source) if isinstance(source, Mapping) else [model.class_name]
    if all(name in memory for name in needed):
        return
    settings = model.few_shot
    paths = reference_paths(settings.k_shot, settings.seed, source, datamodule, model.class_name)
    for name, files in paths.items():
        if name not in memory:
            encode_references(model, name, read_references(files, transform), tile_overlap)


def encode_references(
    model: AdaCLIPModel, class_name: str, images: Sequence[torch.Tensor], tile_overlap: int | None = None
) -> None:
    """Encode read reference images into ``model``'s few-shot memory as ``class_name``'s (replacing earlier ones).

    Args:
        model: A few-shot model.
        class_name: The class name of the references.
        images: The references after the model's transform (:func:`read_references`).
        tile_overlap: With tiled inference, the tile overlap: references are cut into tiles like the queries.
    """
    device = next(model.parameters()).device
    images = [image.to(device) for image in images]
    if tile_overlap is not None:
        tiles = [cut_tiles(image[None], model.image_size, tile_overlap)[0] for image in images]
        groups = [index for index, image_tiles in enumerate(tiles) for _ in range(image_tiles.shape[0])]
        model.add_references(torch.cat(tiles), class_name, groups)
    else:
        model.add_references(torch.stack(images), class_name)
    memory = model.few_shot_memory
    logger.info(
        "AdaCLIP few-shot memory of %r: %d references, scale %.4g; memory %.1f MB in all.",
        class_name, len(images), memory.scale(class_name), memory.nbytes() / 1e6,
    )  # fmt: skip


class FewShotReferences(Callback):
    """Fill a few-shot AdaCLIP's memory before a run's first batch; warn about references no image used.

    AdaCLIP installs it when ``k_shot > 0``, with its :class:`ReferenceImages` and how it names a batch's images. The
    memory is filled after the model is on its device (validation, test and predict start), from the run's data module
    or ``few_shot.source``; at the end of a test or predict run, the references of class names that no image of the
    run had are named in a warning.

    Args:
        prepare: Fills the memory for a run with the given data module (``AdaCLIP.prepare_references``).
        references: The references of the model (their memory is read at the end of a run).
        class_names: The class name of every image of a batch.
    """

    def __init__(
        self,
        prepare: Callable[[Any], None],
        references: ReferenceImages,
        class_names: Callable[[Any], Sequence[str]],
    ) -> None:
        self._fill = prepare
        self._references = references
        self._class_names = class_names
        self._queried: set[str] = set()

    def _prepare(self, trainer: Trainer) -> None:
        self._queried = set()
        self._fill(getattr(trainer, "datamodule", None))

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Fill the memory before the first validation batch."""
        del pl_module
        self._prepare(trainer)

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Fill the memory before the first test batch."""
        del pl_module
        self._prepare(trainer)

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Fill the memory before the first prediction batch."""
        del pl_module
        self._prepare(trainer)

    def on_test_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, *args: Any
    ) -> None:
        """Note the class names of the batch's images."""
        del trainer, pl_module, outputs, args
        self._queried.update(self._class_names(batch))

    def on_predict_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, *args: Any
    ) -> None:
        """Note the class names of the batch's images."""
        del trainer, pl_module, outputs, args
        self._queried.update(self._class_names(batch))

    def _warn_unused(self) -> None:
        memory = self._references.model.few_shot_memory
        unused = [name for name in memory.class_names if name not in self._queried] if self._queried else []
        if unused:
            logger.warning(
                "Few-shot references of %s were never used: no image of this run had that class name (class names "
                "used: %s). Check few_shot.source's keys against the class names of the images.",
                unused, sorted(self._queried),
            )  # fmt: skip
        self._queried = set()

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Warn about references of class names no test image had."""
        del trainer, pl_module
        self._warn_unused()

    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Warn about references of class names no image had."""
        del trainer, pl_module
        self._warn_unused()


class ReferenceImages:
    """The few-shot references of one AdaCLIP model: drawn from a source, or given (AdaCLIP owns one).

    The caller tells it how references are read (the model's transform, and the tile overlap with tiling), which
    depends on the pre-processor and the tiling of the moment.

    Args:
        model: The torch model whose few-shot memory holds the references.
        source: ``few_shot.source``: a folder, a mapping of class name to folder, or ``None`` (the run's data module).
    """

    def __init__(self, model: AdaCLIPModel, source: FewShotSource | None) -> None:
        self.model = model
        self.source = dict(source) if isinstance(source, Mapping) else source

    def prepare(
        self, datamodule: Any, transform: Callable[[torch.Tensor], torch.Tensor], tile_overlap: int | None
    ) -> None:
        """Draw, read and encode the references of every class name the memory lacks (:func:`fill_memory`)."""
        fill_memory(self.model, self.source, datamodule, transform, tile_overlap)

    def set(
        self,
        references: Mapping[str, Sequence[str | Path]],
        transform: Callable[[torch.Tensor], torch.Tensor],
        tile_overlap: int | None,
    ) -> None:
        """Make the memory hold exactly these images, ``{class name: files}``; a bad file leaves it as it was.

        Raises:
            RuntimeError: The model is zero-shot.
            FewShotReferenceError: A class name without images, or a file that cannot be read as an image.
            ValueError: An empty or too long class name.
        """
        memory = self.model.reference_memory()
        read = {}
        for name, files in references.items():
            self.model.check_class_name(name)
            if not files:
                msg = f"No known-good reference image was given for the class name {name!r}."
                raise FewShotReferenceError(msg)
            read[name] = read_references([Path(file) for file in files], transform)
        memory.clear()
        for name, images in read.items():
            encode_references(self.model, name, images, tile_overlap)

    def prepare_load(self, state_dict: Mapping[str, Any], prefix: str) -> None:
        """Size the memory like the one a state dict holds under ``prefix`` (the memory is kept in checkpoints)."""
        if self.model.few_shot_memory is not None:
            self.model.few_shot_memory.prepare_load(state_dict, prefix)
