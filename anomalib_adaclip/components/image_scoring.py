"""Scoring raw images without a Trainer, through the same steps as a ``predict`` run (the browser demo uses it).

:func:`score_images` runs the module's pre-processor, :meth:`AdaCLIP.score_batch <anomalib_adaclip.AdaCLIP.score_batch>`
(tiled with ``tiling``) with the given class names, and the post-processor's normalisation and thresholds: the
numbers of ``Engine.predict`` on the same image files, without a second inference path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from anomalib.data import ImageBatch

from anomalib_adaclip.model.inputs import check_images, image_class_names

__all__ = ["score_images"]


@torch.no_grad()
def score_images(
    module: Any,
    images: torch.Tensor,
    class_names: str | Sequence[str],
    image_paths: Sequence[str] | None = None,
) -> ImageBatch:
    """Score raw images as a ``predict`` run does: pre-processor, model (tiled with ``tiling``), post-processor.

    Args:
        module: An :class:`~anomalib_adaclip.AdaCLIP` in eval mode on the images' device.
        images: Raw RGB images ``[B, 3, H, W]`` in [0, 1] (as anomalib's ``read_image`` gives them).
        class_names: One class name for every image, or one per image.
        image_paths: The images' files, kept in the batch (the visualiser reads the original image from them).

    Returns:
        The post-processed batch: ``pred_score``, ``pred_label``, ``anomaly_map``, ``pred_mask``.

    Raises:
        TypeError: ``images`` is not a floating-point tensor.
        ValueError: Bad shape or values, or an empty or too long class name.
    """
    check_images(images, "images", raw=True)
    names = image_class_names(class_names, len(images))  # each name is checked by the model when it scores
    names = [names] * len(images) if isinstance(names, str) else names
    batch = ImageBatch(image=images, image_path=list(image_paths) if image_paths is not None else None)
    # The components' predict hooks read neither the Trainer nor the batch index.
    if module.pre_processor is not None:
        module.pre_processor.on_predict_batch_start(None, module, batch, 0)
    batch = module.score_batch(batch, names)
    if module.post_processor is not None:
        module.post_processor.on_predict_batch_end(None, module, batch, batch, 0)
    return batch
