"""Small generated data sets: objects with drawn defects and their masks, in MVTec AD layout.

They run the whole pipeline offline (the quick start's ``--smoke`` run, the notebooks' tiny mode, the tests); a
random backbone's numbers on them mean nothing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

__all__ = ["generate_defect_dataset"]


# ----------------------------------------------------------------------------------------------------------------------
# Generated images for the smoke run (and the tests)
# ----------------------------------------------------------------------------------------------------------------------
def _object_image(rng: np.random.Generator, size: int) -> Image.Image:
    """A grey disc with a soft rim on a textured background, roughly a bottle seen from above."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    background = 0.25 + 0.05 * np.sin(8 * np.pi * xx) + 0.03 * rng.standard_normal((size, size))
    radius = np.hypot(xx - 0.5, yy - 0.5)
    disc = np.clip((0.38 - radius) * 40, 0, 1)
    rim = np.exp(-(((radius - 0.3) / 0.03) ** 2))
    grey = background * (1 - disc) + (0.55 + 0.25 * rim) * disc + 0.02 * rng.standard_normal((size, size))
    tint = np.array([1.0, 0.95, 0.85], dtype=np.float32)
    pixels = np.clip(grey[..., None] * tint * 255, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, mode="RGB")


def _draw_defect(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Draw a dark blob or a bright scratch on the object; return the binary mask (0/255) of the defect."""
    size = image.width
    mask = Image.new("L", image.size, 0)
    draw, mask_draw = ImageDraw.Draw(image), ImageDraw.Draw(mask)
    cx, cy = rng.uniform(0.3, 0.7, size=2) * size
    if rng.random() < 0.5:
        rx, ry = rng.uniform(0.05, 0.12, size=2) * size
        box = (cx - rx, cy - ry, cx + rx, cy + ry)
        draw.ellipse(box, fill=tuple(int(v) for v in rng.integers(10, 60, size=3)))
        mask_draw.ellipse(box, fill=255)
    else:
        angle = rng.uniform(0, np.pi)
        length = rng.uniform(0.15, 0.3) * size
        dx, dy = np.cos(angle) * length / 2, np.sin(angle) * length / 2
        line = [(cx - dx, cy - dy), (cx + dx, cy + dy)]
        width = max(2, size // 40)
        draw.line(line, fill=(235, 235, 225), width=width)
        mask_draw.line(line, fill=255, width=width)
    return mask


def generate_defect_dataset(
    root: Path | str,
    category: str = "bottle",
    n_train: int = 4,
    n_good: int = 4,
    n_defect: int = 4,
    size: int = 128,
    seed: int = 0,
) -> Path:
    """Write a small data set in MVTec AD layout: objects without and with drawn defects, and the defect masks.

    Layout: ``<root>/<category>/train/good/NNN.png``, ``test/good/NNN.png``, ``test/defect/NNN.png`` and
    ``ground_truth/defect/NNN_mask.png`` (0/255). ``MVTecAD(root=root, category=category)`` reads it, and so does
    ``Folder`` with ``normal_dir="train/good"``, ``abnormal_dir="test/defect"``, ``mask_dir="ground_truth/defect"``.

    Args:
        root: Target root; an existing ``<root>/<category>`` is an error (nothing is overwritten).
        category: Category folder name.
        n_train: Normal training images.
        n_good: Normal test images.
        n_defect: Test images with a defect.
        size: Side length in pixels.
        seed: Seed of the generator.

    Returns:
        The category folder.
    """
    category_dir = Path(root) / category
    if category_dir.exists():
        msg = f"{category_dir} already exists; choose an empty root for the generated data set."
        raise FileExistsError(msg)
    rng = np.random.default_rng(seed)
    folders = {name: category_dir / name for name in ("train/good", "test/good", "test/defect", "ground_truth/defect")}
    for folder in folders.values():
        folder.mkdir(parents=True)
    for index in range(n_train):
        _object_image(rng, size).save(folders["train/good"] / f"{index:03d}.png")
    for index in range(n_good):
        _object_image(rng, size).save(folders["test/good"] / f"{index:03d}.png")
    for index in range(n_defect):
        image = _object_image(rng, size)
        mask = _draw_defect(image, rng)
        image.filter(ImageFilter.SMOOTH).save(folders["test/defect"] / f"{index:03d}.png")
        mask.save(folders["ground_truth/defect"] / f"{index:03d}_mask.png")
    return category_dir
