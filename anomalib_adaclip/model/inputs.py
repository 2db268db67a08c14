"""Checks of the tensors and class names handed to AdaCLIP, with errors that say what was expected and how to fix it.

Two kinds of image tensors reach AdaCLIP: *raw* RGB images in [0, 1] of any size (``AdaCLIP.forward``, exports,
``TorchInferencer``), which the pre-processor resizes and normalises, and *normalised* images at the model's input
size (``AdaCLIPModel``, tiled inference). :func:`check_images` checks both; :func:`image_class_names` checks the
class names that go with them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .blocks import is_tracing

__all__ = ["check_images", "image_class_names"]


def check_images(images: Any, argument: str = "images", *, raw: bool = False, image_size: int | None = None) -> None:
    """Check a batch of images ``[B, 3, H, W]``: a finite floating-point tensor, raw in [0, 1] or normalised.

    Args:
        images: The tensor to check.
        argument: Its name in the messages.
        raw: Raw RGB values in [0, 1] (the pre-processor normalises them) rather than normalised values.
        image_size: The side length the images must have, or ``None`` for any size.

    Raises:
        TypeError: Not a floating-point tensor.
        ValueError: Wrong rank, channels or size, no pixels, NaN/inf values, or raw values outside [0, 1].
    """
    kind = "RGB values in [0, 1]" if raw else "normalised RGB"
    if not isinstance(images, torch.Tensor):
        msg = f"`{argument}` must be a torch.Tensor [B, 3, H, W] of {kind}, got {type(images).__name__}."
        raise TypeError(msg)
    if images.ndim != 4 or images.shape[1] != 3:
        msg = (
            f"`{argument}` must have shape [B, 3, H, W] ({kind}), got {tuple(images.shape)} (one image: "
            f"image.unsqueeze(0); grayscale: image.expand(-1, 3, -1, -1); RGBA: image[:, :3])."
        )
        raise ValueError(msg)
    if not images.is_floating_point():
        hint = " (for uint8 images: images.float() / 255)" if raw else ""
        msg = f"`{argument}` must be a floating-point tensor of {kind}, got dtype {images.dtype}{hint}."
        raise TypeError(msg)
    if images.numel() == 0:
        msg = f"`{argument}` is empty: shape {tuple(images.shape)}."
        raise ValueError(msg)
    if image_size is not None and tuple(images.shape[-2:]) != (image_size, image_size):
        msg = (
            f"`{argument}` must be {image_size}x{image_size} (the model's image_size), got "
            f"{images.shape[-2]}x{images.shape[-1]}; resize them first (AdaCLIP's pre-processor does)."
        )
        raise ValueError(msg)
    if is_tracing():  # values are not known while a graph is traced
        return
    finite = torch.isfinite(images)
    if not bool(finite.all()):
        msg = (
            f"`{argument}` holds {int((~finite).sum())} NaN or infinite value(s); AdaCLIP needs finite pixels (a NaN "
            f"would spread through attention to every score of its image)."
        )
        raise ValueError(msg)
    if raw:
        low, high = float(images.min()), float(images.max())
        if low < 0.0 or high > 1.0:
            msg = (
                f"`{argument}` must hold raw RGB values in [0, 1] (AdaCLIP normalises them itself), got values in "
                f"[{low:.4g}, {high:.4g}]" + (" (divide 8-bit values by 255)." if high > 1.0 else ".")
            )
            raise ValueError(msg)


def image_class_names(class_names: Sequence[str] | str | None, n_images: int) -> list[str] | str | None:
    """Check class names given for ``n_images`` images: one per image, one string for all, or ``None``.

    One name for all images stays a single string: a per-image list would fix the batch size of an export.

    Raises:
        ValueError: A list whose length is not ``n_images``.
        TypeError: A list entry that is not a string.
    """
    if class_names is None or isinstance(class_names, str):
        return class_names
    names = list(class_names)
    if len(names) != n_images:
        msg = f"Got {len(names)} class names for {n_images} images; give one per image."
        raise ValueError(msg)
    if not all(isinstance(name, str) for name in names):
        msg = f"Every class name must be a string, got {names!r}."
        raise TypeError(msg)
    return names
