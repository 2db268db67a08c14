"""AdaCLIP's image transform: resize to the model's input (bicubic, aspect ratio not kept), normalise like CLIP.

The reference resizes to 518 x 518 with bicubic interpolation and normalises with OpenAI CLIP's mean and standard
deviation. Masks go through the same resize (nearest, as torchvision does for masks). With tiled inference the images
reach the model at full resolution, so the transform only normalises.
"""

from __future__ import annotations

from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from torchvision.transforms.v2 import Compose, InterpolationMode, Normalize, Resize

from anomalib_adaclip.config import AdaCLIPConfig

__all__ = ["adaclip_transform", "input_resize"]


def input_resize(image_size: int | tuple[int, int] | None = None) -> Resize:
    """The resize to the model's input: ``image_size`` (side or ``(height, width)``; default 518), bicubic."""
    size = image_size or AdaCLIPConfig.image_size
    size = (size, size) if isinstance(size, int) else tuple(size)
    return Resize(size, interpolation=InterpolationMode.BICUBIC, antialias=True)


def adaclip_transform(image_size: int | tuple[int, int] | None = None, tiling: bool = False) -> Compose:
    """Resize (unless ``tiling``) and normalise with OpenAI CLIP's mean and standard deviation."""
    normalize = Normalize(mean=OPENAI_DATASET_MEAN, std=OPENAI_DATASET_STD)
    return Compose([normalize] if tiling else [input_resize(image_size), normalize])
