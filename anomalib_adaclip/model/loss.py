"""AdaCLIP's training loss: focal loss on the image and on every layer's map, Dice loss on both map channels.

For one image with mask ``g`` (1 = anomalous pixel) and label ``y``::

    loss = Focal(image_probs, y) + sum over feature layers l of
           [Focal(map_l, g) + Dice(map_l[abnormal], g) + Dice(map_l[normal], 1 - g)]

as the authors' code computes it (github.com/caoyunkang/AdaCLIP; Cao et al., ECCV 2024): the focal loss uses
``gamma = 2``, ``alpha = 1`` and a label smoothing of ``1e-5`` (one-hot targets clamped to ``[1e-5, 1 - 1e-5]``,
``1e-5`` added to the target probability before the log and the focal weight); the Dice loss is
``1 - (2 * sum(p * g) + 1) / (sum(p) + sum(g) + 1)``. Every term is computed per image; a batch's loss is the mean of
its images' losses, so any batch size trains the same objective as the reference's batch size 1 (whose Dice is a
per-image Dice too).

All terms are computed in float32, also under mixed precision.

Example:
    >>> import torch
    >>> from anomalib_adaclip.loss import dice_loss, focal_loss
    >>> probabilities = torch.tensor([[0.9, 0.1], [0.2, 0.8]])
    >>> focal_loss(probabilities, torch.tensor([0, 1])).shape
    torch.Size([2])
    >>> float(dice_loss(torch.ones(1, 4, 4), torch.ones(1, 4, 4)))
    0.0
"""

from __future__ import annotations

import torch
from torch.nn import functional as F  # noqa: N812

__all__ = ["FOCAL_ALPHA", "FOCAL_GAMMA", "FOCAL_SMOOTHING", "adaclip_loss", "dice_loss", "focal_loss"]

FOCAL_GAMMA = 2.0
FOCAL_ALPHA = 1.0
FOCAL_SMOOTHING = 1e-5
DICE_SMOOTHING = 1.0


def focal_loss(
    probabilities: torch.Tensor,
    targets: torch.Tensor,
    gamma: float = FOCAL_GAMMA,
    alpha: float = FOCAL_ALPHA,
    smoothing: float = FOCAL_SMOOTHING,
) -> torch.Tensor:
    """Focal loss of class probabilities, averaged over the positions of each sample.

    Args:
        probabilities: Class probabilities ``[B, C]`` or ``[B, C, *spatial]`` (they sum to 1 over ``C``).
        targets: Class indices ``[B]`` or ``[B, *spatial]``.
        gamma: Focusing exponent. Defaults to 2.
        alpha: Weight of every class. Defaults to 1.
        smoothing: Label smoothing: the one-hot targets are clamped to ``[s / (C - 1), 1 - s]`` and ``s`` is added to
            the target probability. Defaults to ``1e-5``.

    Returns:
        The loss of each sample, ``[B]``.
    """
    n_classes = probabilities.shape[1]
    if targets.shape != probabilities.shape[:1] + probabilities.shape[2:]:
        msg = (
            f"focal_loss: targets of shape {tuple(targets.shape)} do not fit probabilities of shape "
            f"{tuple(probabilities.shape)} (expected {tuple(probabilities.shape[:1] + probabilities.shape[2:])})."
        )
        raise ValueError(msg)
    probabilities = probabilities.float().reshape(probabilities.shape[0], n_classes, -1)  # [B, C, N]
    one_hot = F.one_hot(targets.long().reshape(targets.shape[0], -1), n_classes).transpose(1, 2).float()
    one_hot = one_hot.clamp(smoothing / (n_classes - 1), 1.0 - smoothing)
    target_probability = (one_hot * probabilities).sum(1) + smoothing  # [B, N]
    loss = -alpha * (1.0 - target_probability).pow(gamma) * target_probability.log()
    return loss.mean(-1)


def dice_loss(probabilities: torch.Tensor, targets: torch.Tensor, smoothing: float = DICE_SMOOTHING) -> torch.Tensor:
    """Soft Dice loss of each sample: ``1 - (2 * sum(p * g) + s) / (sum(p) + sum(g) + s)``.

    Args:
        probabilities: Probabilities ``[B, *spatial]``.
        targets: Targets in [0, 1] of the same shape.
        smoothing: Added to numerator and denominator. Defaults to 1.

    Returns:
        The loss of each sample, ``[B]``.
    """
    if targets.shape != probabilities.shape:
        msg = f"dice_loss: targets {tuple(targets.shape)} and probabilities {tuple(probabilities.shape)} differ."
        raise ValueError(msg)
    probabilities = probabilities.float().flatten(1)
    targets = targets.float().flatten(1)
    overlap = (probabilities * targets).sum(1)
    return 1.0 - (2.0 * overlap + smoothing) / (probabilities.sum(1) + targets.sum(1) + smoothing)


def adaclip_loss(
    layer_maps: torch.Tensor,
    image_probabilities: torch.Tensor,
    masks: torch.Tensor,
    labels: torch.Tensor,
) -> torch.Tensor:
    """AdaCLIP's loss of each image.

    Args:
        layer_maps: Softmax maps of every feature layer, ``[B, n_layers, 2, H, W]`` (channel 1 = abnormal).
        image_probabilities: Normal/abnormal probabilities of each image, ``[B, 2]``.
        masks: Binary ground-truth masks ``[B, H, W]`` (1 = anomalous pixel).
        labels: Binary image labels ``[B]`` (1 = anomalous).

    Returns:
        The loss of each image, ``[B]``.
    """
    masks = masks.float()
    loss = focal_loss(image_probabilities, labels)
    for layer_map in layer_maps.unbind(1):
        loss = loss + focal_loss(layer_map, masks)
        loss = loss + dice_loss(layer_map[:, 1], masks) + dice_loss(layer_map[:, 0], 1.0 - masks)
    return loss
