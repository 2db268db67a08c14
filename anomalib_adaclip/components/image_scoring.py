"""Scoring raw images without a Trainer, through the same steps as a ``predict`` run (the browser demo uses it).

:func:`score_images` runs the module's pre-processor, :meth:`AdaCLIP.score_batch <anomalib_adaclip.AdaCLIP.score_batch>`
(tiled with ``tiling``) with the given class names, and the post-processor's normalisation and thresholds: the
numbers of ``Engine.predict`` on the same image files, without a second inference path. With ``mutual`` the images of
each class name are scored against each other as one group (mutual scoring, MuSc), also by a model built without
``mutual_scoring``: :class:`~anomalib_adaclip.components.mutual_groups.MutualGroupStage`'s own path, with MuSc's
default settings for the backbone and the default ``mutual.weight``. With ``rarity`` the images are scored in order,
each against the bank of its class name and then admitted (online rarity scoring, RareCLIP), with the given
:class:`~anomalib_adaclip.components.rarity.RarityBanks`, also by a model built without ``rarity`` (the demo lends
each browser session's banks this way).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from anomalib.data import ImageBatch

from anomalib_adaclip.config import MutualGroupConfig
from anomalib_adaclip.model.inputs import check_images, image_class_names

from .mutual_groups import MutualGroupStage, check_mutual_scoring, mutual_settings
from .rarity import RarityBanks, check_rarity_scoring

__all__ = ["score_images"]


@torch.no_grad()
def score_images(
    module: Any,
    images: torch.Tensor | Sequence[torch.Tensor],
    class_names: str | Sequence[str],
    image_paths: Sequence[str] | None = None,
    *,
    mutual: bool = False,
    rarity: RarityBanks | None = None,
) -> ImageBatch:
    """Score raw images as a ``predict`` run does: pre-processor, model (tiled with ``tiling``), post-processor.

    Args:
        module: An :class:`~anomalib_adaclip.AdaCLIP` in eval mode on the images' device.
        images: Raw RGB images ``[B, 3, H, W]`` in [0, 1] (as anomalib's ``read_image`` gives them), or a sequence of
            raw images ``[3, H, W]`` of any sizes, each pre-processed on its own (the pre-processor resizes each to
            the input size; with tiling they must have one size).
        class_names: One class name for every image, or one per image.
        image_paths: The images' files, kept in the batch (the visualiser reads the original image from them).
        mutual: Score the images of each class name against each other as one group (mutual scoring, fused with
            AdaCLIP's outputs), as a model built with ``mutual={...}`` does outside a run: with the model's own
            settings when it has them, else MuSc's defaults for the backbone and the default ``mutual.weight``. Needs
            at least two images of each class name and no tiling. Defaults to ``False`` (a model built with
            ``mutual`` scores its groups anyway).
        rarity: Score the images in the order given, each against the bank of its class name in these banks and then
            admitted into it (online rarity scoring, fused with AdaCLIP's outputs with ``rarity.config.weight``), as a
            model built with ``rarity={...}`` does with its own (:meth:`RarityBanks.score_images
            <anomalib_adaclip.components.rarity.RarityBanks.score_images>`; the banks must have been made for
            ``module``'s torch model). Not with ``mutual`` or tiling. Defaults to ``None`` (a model built with
            ``rarity`` uses its own banks anyway).

    Returns:
        The post-processed batch: ``pred_score``, ``pred_label``, ``anomaly_map``, ``pred_mask``.

    Raises:
        TypeError: ``images`` is not a floating-point tensor (or a sequence of them).
        ValueError: Bad shape or values, images of several sizes after pre-processing, an empty or too long class
            name, or ``mutual`` with tiling or with a class name of a single image
            (:class:`~anomalib_adaclip.components.mutual_groups.MutualScoringError`), or ``rarity`` with mutual scoring
            or tiling.
    """
    if mutual:
        check_mutual_scoring(mutual, module.tiling.enabled)
    if rarity is not None:
        check_rarity_scoring(True, mutual or module.mutual_groups is not None, module.tiling.enabled)
    batch = _pre_processed(module, images, image_paths)
    names = image_class_names(class_names, len(batch.image))  # each name is checked by the model when it scores
    names = [names] * len(batch.image) if isinstance(names, str) else names
    if mutual:
        batch.update(**_mutual_stage(module).score_tensors(module.model, batch.image, names)._asdict())
    elif rarity is not None:
        batch.update(**rarity.score_images(module.model, batch.image, names)._asdict())
    else:
        batch = module.score_batch(batch, names)
    if module.post_processor is not None:
        module.post_processor.post_process_batch(batch)
    return batch


def _pre_processed(
    module: Any, images: torch.Tensor | Sequence[torch.Tensor], image_paths: Sequence[str] | None
) -> ImageBatch:
    """The images in a batch after the module's pre-processor, as a run's batches."""
    paths = list(image_paths) if image_paths is not None else None
    if isinstance(images, torch.Tensor):
        check_images(images, "images", raw=True)
        return ImageBatch(image=_transformed(module, images), image_path=paths)
    if not isinstance(images, Sequence) or isinstance(images, str):
        msg = f"`images` must be a tensor [B, 3, H, W] or a sequence of tensors [3, H, W], got {type(images).__name__}."
        raise TypeError(msg)
    if not images:
        msg = "`images` is an empty sequence: give at least one image."
        raise ValueError(msg)
    single = []
    for index, image in enumerate(images):
        if not isinstance(image, torch.Tensor) or image.ndim != 3:
            shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
            msg = f"`images[{index}]` must be one raw image [3, H, W], got {shape}."
            raise ValueError(msg)
        check_images(image[None], f"images[{index}]", raw=True)
        single.append(_transformed(module, image[None]))
    sizes = sorted({tuple(image.shape[-2:]) for image in single})
    if len(sizes) > 1:
        msg = (
            f"The images have several sizes after pre-processing ({', '.join(f'{h}x{w}' for h, w in sizes)}): the "
            "pre-processor resizes them only without tiling. Score images of different sizes one at a time."
        )
        raise ValueError(msg)
    return ImageBatch(image=torch.cat(single), image_path=paths)


def _transformed(module: Any, images: torch.Tensor) -> torch.Tensor:
    """The pre-processor's ``transform`` of raw images: what its ``on_*_batch_start`` hooks apply in a run.

    Not ``pre_processor(images)``: anomalib's ``PreProcessor.forward`` applies the *exportable* transform, whose resize
    drops antialiasing (for ONNX/OpenVINO), so downscaled images would differ from a run's.
    """
    return module.pre_processor.transform(images) if module.pre_processor is not None else images


def _mutual_stage(module: Any) -> MutualGroupStage:
    """The module's own group stage, or one with MuSc's defaults for its backbone and the default ``mutual.weight``."""
    if module.mutual_groups is not None:
        return module.mutual_groups
    return MutualGroupStage(MutualGroupConfig(), mutual_settings(module.model), lambda path: module.model.class_name)
