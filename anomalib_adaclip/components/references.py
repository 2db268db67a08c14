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
from anomalib.data import AnomalibDataModule
from anomalib.data.utils import read_image
from anomalib.pre_processing import PreProcessor
from lightning.pytorch import Callback, LightningModule, Trainer
from torchvision.datasets.folder import IMG_EXTENSIONS

from anomalib_adaclip.model import AdaCLIPModel

from .attached import attached_datamodule
from .pre_processing import adaclip_transform
from .tiling import cut_tiles

logger = logging.getLogger(__name__)

__all__ = [
    "FewShotReferenceError",
    "FewShotReferences",
    "FewShotSource",
    "ReferencePreparation",
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
        msg = f"few_shot_source {folder} is not a folder of reference images."
        raise FewShotReferenceError(msg)
    images = sorted(path for path in folder.rglob("*") if path.is_file() and path.suffix.lower() in IMG_EXTENSIONS)
    if not images:
        msg = f"few_shot_source {folder} holds no image file ({', '.join(sorted(IMG_EXTENSIONS))})."
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
            f"{type(datamodule).__name__} has none. Give few_shot_source (a folder of normal images)."
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
                "k_shot > 0 needs normal reference images: give few_shot_source (a folder, or a mapping of class name "
                "to folder) or run with a data module that has a training split."
            )
            raise FewShotReferenceError(msg)
        where = f"the training split of {type(datamodule).__name__}"
        folders = {class_name: draw_references(_normal_training_images(datamodule), k, seed, where)}
    elif isinstance(source, Mapping):
        if not source:
            msg = "few_shot_source is an empty mapping: give at least one class name and its folder."
            raise FewShotReferenceError(msg)
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
        source: ``few_shot_source``: a folder, a mapping of class name to folder, or ``None`` for ``datamodule``.
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
    paths = reference_paths(settings.k_shot, settings.few_shot_seed, source, datamodule, model.class_name)
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

    AdaCLIP installs it when ``k_shot > 0``. The memory is filled after the model is on its device (validation, test
    and predict start), from the run's data module or ``few_shot_source``; at the end of a test or predict run, the
    references of class names that no image of the run had are named in a warning.
    """

    def __init__(self) -> None:
        self._queried: set[str] = set()

    def _prepare(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._queried = set()
        pl_module.prepare_references(getattr(trainer, "datamodule", None))

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Fill the memory before the first validation batch."""
        self._prepare(trainer, pl_module)

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Fill the memory before the first test batch."""
        self._prepare(trainer, pl_module)

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Fill the memory before the first prediction batch."""
        self._prepare(trainer, pl_module)

    def on_test_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, *args: Any
    ) -> None:
        """Note the class names of the batch's images."""
        del trainer, outputs, args
        self._queried.update(pl_module.image_class_names(batch))

    def on_predict_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, *args: Any
    ) -> None:
        """Note the class names of the batch's images."""
        del trainer, outputs, args
        self._queried.update(pl_module.image_class_names(batch))

    def _warn_unused(self, pl_module: LightningModule) -> None:
        memory = pl_module.model.few_shot_memory
        unused = [name for name in memory.class_names if name not in self._queried] if self._queried else []
        if unused:
            logger.warning(
                "Few-shot references of %s were never used: no image of this run had that class name (class names "
                "used: %s). Check few_shot_source's keys against the class names of the images.",
                unused, sorted(self._queried),
            )  # fmt: skip
        self._queried = set()

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Warn about references of class names no test image had."""
        del trainer
        self._warn_unused(pl_module)

    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Warn about references of class names no image had."""
        del trainer
        self._warn_unused(pl_module)


class ReferencePreparation:
    """Mixin of AdaCLIP's Lightning module: its few-shot memory filled with references, and sized by checkpoints.

    The host sets ``model`` (an :class:`~anomalib_adaclip.model.AdaCLIPModel`), ``few_shot_source``,
    ``pre_processor``, ``tiling`` and ``tile_overlap``.
    """

    def prepare_references(self, datamodule: AnomalibDataModule | None = None) -> None:
        """Draw, read and encode the few-shot references of every class name the memory lacks (nothing if zero-shot).

        The classes are those of a ``few_shot_source`` mapping, else the run's class name; the references come from
        ``few_shot_source``, else the normal images of ``datamodule``'s training split (the run's data module by
        default). Classes already in the memory (from an earlier run or a checkpoint) keep their references. Runs
        call it through :class:`~anomalib_adaclip.components.references.FewShotReferences` before the first batch.

        Raises:
            ~anomalib_adaclip.components.references.FewShotReferenceError: No source of references, too few images, an
                empty or missing folder, or an unreadable image.
        """
        if datamodule is None:
            datamodule = attached_datamodule(self)
        fill_memory(self.model, self.few_shot_source, datamodule, *self._reference_reading())

    def set_references(self, references: Mapping[str, Sequence[str | Path]]) -> None:
        """Make the few-shot memory hold exactly these known-good images: ``{class name: image files}``.

        Every file given is used (nothing is drawn; ``k_shot`` is only the number :meth:`prepare_references` draws),
        read as :meth:`prepare_references` reads the drawn ones. Earlier references of every class name are forgotten,
        but only once every file has been read, so a bad file leaves the memory as it was. A run then uses them: it
        fills only the class names the memory lacks.

        Raises:
            RuntimeError: The model is zero-shot (``k_shot=0``).
            ~anomalib_adaclip.components.references.FewShotReferenceError: A class name without images, or a file
                that cannot be read as an image.
            ValueError: An empty or too long class name.
        """
        memory = self.model.reference_memory()
        transform, tile_overlap = self._reference_reading()
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

    def _reference_reading(self) -> tuple[Callable[[torch.Tensor], torch.Tensor], int | None]:
        """How references are read: the model's transform, and the tile overlap with tiling (else ``None``)."""
        transform = self.pre_processor.transform if isinstance(self.pre_processor, PreProcessor) else None
        overlap = self.model.image_size // 4 if self.tile_overlap is None else self.tile_overlap
        return transform or adaclip_transform(self.model.image_size, self.tiling), overlap if self.tiling else None

    def load_state_dict(self, state_dict: dict[str, Any], strict: bool = True, assign: bool = False) -> Any:
        """Load a state dict; the few-shot memory takes the size of the saved one (it is kept in checkpoints)."""
        if self.model.few_shot_memory is not None:
            self.model.few_shot_memory.prepare_load(state_dict, "model.few_shot_memory.")
        return super().load_state_dict(state_dict, strict=strict, assign=assign)
