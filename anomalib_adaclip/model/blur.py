"""The Gaussian blur of AdaCLIP's test-time anomaly map, equal to ``scipy.ndimage.gaussian_filter`` (mode reflect)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

__all__ = ["GaussianBlur", "gaussian_kernel1d", "reflect_indices"]


def gaussian_kernel1d(sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """Return the normalised 1-D Gaussian kernel of ``scipy.ndimage.gaussian_filter`` (float64).

    Args:
        sigma: Standard deviation in pixels.
        truncate: The kernel reaches ``int(truncate * sigma + 0.5)`` pixels on each side.
    """
    radius = int(truncate * sigma + 0.5)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return kernel / kernel.sum()


def reflect_indices(size: int, radius: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Indices that pad a dimension of ``size`` by ``radius`` on both sides in scipy's "reflect" mode.

    "reflect" repeats the edge sample (``d c b a | a b c d | d c b a``), which torch's own padding modes do not offer;
    the indices fold any offset back into range, so it also works when ``radius`` exceeds ``size``. They are made on
    ``device`` directly (a copy from the host would make a GPU wait).
    """
    positions = torch.arange(-radius, size + radius, device=device) % (2 * size)
    return torch.where(positions >= size, 2 * size - 1 - positions, positions)


class GaussianBlur(nn.Module):
    """Separable Gaussian blur of ``[B, H, W]`` maps, equal to ``scipy.ndimage.gaussian_filter(m, sigma)`` per map.

    Args:
        sigma: Standard deviation in pixels (AdaCLIP uses 4).
        truncate: Kernel radius in standard deviations (scipy's default, 4).
    """

    def __init__(self, sigma: float = 4.0, truncate: float = 4.0) -> None:
        super().__init__()
        self.sigma = sigma
        kernel = gaussian_kernel1d(sigma, truncate)
        self.radius = (kernel.numel() - 1) // 2
        self.register_buffer("kernel", kernel.float(), persistent=False)

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        """Blur maps of shape ``[B, H, W]``; returns the same shape and dtype."""
        if self.sigma <= 0:
            return maps
        batch, height, width = maps.shape
        kernel = self.kernel.to(maps.dtype)
        rows = reflect_indices(height, self.radius, maps.device)
        cols = reflect_indices(width, self.radius, maps.device)
        blurred = F.conv1d(  # along the width
            maps[:, :, cols].reshape(batch * height, 1, -1),
            kernel.view(1, 1, -1),
        ).reshape(batch, height, width)
        blurred = F.conv1d(  # along the height
            blurred[:, rows, :].transpose(1, 2).reshape(batch * width, 1, -1),
            kernel.view(1, 1, -1),
        ).reshape(batch, width, height)
        return blurred.transpose(1, 2).contiguous()
