"""AdaCLIP's image transform (``components/pre_processing.py``): bicubic resize to the input size, CLIP normalisation.

The truth is OpenAI CLIP's published mean and standard deviation, written out, and invariants of resizing.
"""

from __future__ import annotations

import torch
from torchvision import tv_tensors
from torchvision.transforms.v2 import InterpolationMode

from anomalib_adaclip.components.pre_processing import adaclip_transform, input_resize

CLIP_MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(3, 1, 1)
CLIP_STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(3, 1, 1)


def test_the_resize_is_bicubic_to_a_square_or_to_height_and_width() -> None:
    resize = input_resize(112)
    assert resize.size == [112, 112] and resize.interpolation == InterpolationMode.BICUBIC and resize.antialias
    assert input_resize((64, 96)).size == [64, 96]
    assert input_resize().size == [518, 518]  # the paper's input size


def test_a_constant_image_becomes_clips_normalised_constant() -> None:
    grey = torch.full((3, 40, 70), 0.5)
    out = adaclip_transform(32)(grey)
    assert out.shape == (3, 32, 32)  # the aspect ratio is not kept
    torch.testing.assert_close(out, ((0.5 - CLIP_MEAN) / CLIP_STD).expand(3, 32, 32))


def test_with_tiling_only_the_normalisation_is_applied() -> None:
    image = torch.rand(3, 40, 70, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(adaclip_transform(32, tiling=True)(image), (image - CLIP_MEAN) / CLIP_STD)


def test_masks_are_resized_with_nearest_neighbours_and_stay_binary() -> None:
    mask = torch.zeros(1, 40, 40, dtype=torch.bool)
    mask[:, :20] = True
    image, resized = adaclip_transform(16)(torch.rand(3, 40, 40), tv_tensors.Mask(mask))
    assert image.shape == (3, 16, 16) and resized.shape == (1, 16, 16)
    assert resized.dtype == torch.bool and resized[:, :8].all() and not resized[:, 8:].any()
