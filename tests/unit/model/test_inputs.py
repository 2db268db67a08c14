"""Checks of the images and class names handed to AdaCLIP (``model/inputs.py``): each bad input is refused with a
message that says what was expected and how to fix it; good inputs pass unchanged."""

from __future__ import annotations

import pytest
import torch

from anomalib_adaclip.model.inputs import check_images, image_class_names


@pytest.mark.parametrize(
    ("images", "raw", "error", "message"),
    [
        ([[0.0]], False, TypeError, r"`batch` must be a torch.Tensor \[B, 3, H, W\] of normalised RGB, got list"),
        (torch.zeros(3, 8, 8), True, ValueError, r"got \(3, 8, 8\) \(one image: image.unsqueeze\(0\)"),
        (torch.zeros(1, 4, 8, 8), True, ValueError, r"RGBA: image\[:, :3\]"),
        (torch.zeros(1, 3, 8, 8, dtype=torch.uint8), True, TypeError, r"for uint8 images: images.float\(\) / 255"),
        (torch.zeros(0, 3, 8, 8), False, ValueError, r"`batch` is empty: shape \(0, 3, 8, 8\)"),
        (torch.full((1, 3, 2, 2), float("nan")), False, ValueError, r"holds 12 NaN or infinite value\(s\)"),
        (torch.full((1, 3, 2, 2), 2.0), True, ValueError, r"got values in \[2, 2\] \(divide 8-bit values by 255\)"),
        (torch.full((1, 3, 2, 2), -0.5), True, ValueError, r"got values in \[-0.5, -0.5\]\.$"),
    ],
)
def test_bad_images_are_refused_with_what_was_expected(
    images: object, raw: bool, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        check_images(images, "batch", raw=raw)


def test_good_images_pass_and_the_size_is_checked_only_when_given() -> None:
    check_images(torch.rand(2, 3, 5, 7), raw=True)
    check_images(torch.randn(1, 3, 5, 7) * 10)  # normalised values have no range
    check_images(torch.randn(1, 3, 8, 8), image_size=8)
    with pytest.raises(ValueError, match=r"must be 8x8 \(the model's image_size\), got 5x7"):
        check_images(torch.randn(1, 3, 5, 7), image_size=8)


def test_class_names_one_per_image_or_one_for_all() -> None:
    assert image_class_names(None, 3) is None
    assert image_class_names("bottle", 3) == "bottle"  # one string stays one string (exports keep any batch size)
    assert image_class_names(("a", "b"), 2) == ["a", "b"]
    with pytest.raises(ValueError, match="Got 1 class names for 2 images; give one per image"):
        image_class_names(["a"], 2)
    with pytest.raises(TypeError, match="Every class name must be a string"):
        image_class_names(["a", 3], 2)
