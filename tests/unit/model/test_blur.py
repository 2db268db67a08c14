"""The torch Gaussian blur against scipy.ndimage.gaussian_filter (mode "reflect", truncate 4)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from anomalib_adaclip.model.blur import GaussianBlur, reflect_indices


@pytest.mark.parametrize("shape", [(518, 518), (224, 224), (37, 50), (10, 13), (1, 5), (3, 40)])
@pytest.mark.parametrize("sigma", [4.0, 1.5])
def test_blur_equals_scipy(shape: tuple[int, int], sigma: float) -> None:
    maps = torch.rand(2, *shape, generator=torch.Generator().manual_seed(0))
    expected = np.stack([gaussian_filter(m.double().numpy(), sigma=sigma) for m in maps])
    torch.testing.assert_close(GaussianBlur(sigma)(maps), torch.from_numpy(expected).float(), atol=1e-6, rtol=0)


def test_blur_of_a_constant_map_is_the_constant() -> None:
    maps = torch.full((1, 30, 20), 0.25)
    torch.testing.assert_close(GaussianBlur(4.0)(maps), maps)


def test_zero_sigma_is_identity() -> None:
    maps = torch.rand(1, 8, 8)
    assert torch.equal(GaussianBlur(0.0)(maps), maps)


def test_reflect_indices_follow_scipy_reflect_mode() -> None:
    # scipy "reflect" is numpy's "symmetric": d c b a | a b c d | d c b a, folded again when the pad is wider
    assert reflect_indices(4, 4).tolist() == [3, 2, 1, 0, 0, 1, 2, 3, 3, 2, 1, 0]
    for size, radius in [(2, 5), (3, 16), (1, 4), (17, 16)]:
        expected = np.pad(np.arange(size), radius, mode="symmetric").tolist()
        assert reflect_indices(size, radius).tolist() == expected
