"""MuSc's own modules, transcribed: the oracles of the tests and the baseline of ``tests/msm_speed.py``.

Direct transcriptions, in this project's words, of what MuSc's code (github.com/xrli-U/MuSc, commit b76b93d, MIT
licence) computes, step by step as it does it; deliberately slow and literal. :mod:`anomalib_adaclip.model.\
mutual_scoring` is the implementation to use.

- :func:`musc_msm_loop`: ``compute_scores_fast`` and ``MSM`` of ``models/modules/_MSM.py``: for each image ``i`` in
  turn, ``torch.cdist`` from its patches to every patch of the other images at once, the minimum per other image,
  the ``k_max`` smallest of those sorted, of them the ``k_max - k_min`` largest, and their mean. Each pair of images
  is therefore compared twice, and the distances carry cdist's float32 rounding.
- :func:`musc_lnamd`: ``LNAMD._embed`` of ``models/modules/_LNAMD.py`` for one layer: a fresh ``nn.LayerNorm`` over
  (C, h, w), ``unfold`` with zero padding, ``adaptive_avg_pool1d`` of each patch's (C, r, r) values down to C, then
  the division by the norm that ``MuSc.make_category_data`` applies.
- :func:`musc_rscin`: ``RsCIN`` and ``MMO`` of ``models/modules/_RsCIN.py``.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F  # noqa: N812

__all__ = ["musc_lnamd", "musc_msm_loop", "musc_rscin"]


def musc_msm_loop(z: torch.Tensor, topmin_min: float = 0.0, topmin_max: float = 0.3) -> torch.Tensor:
    """MuSc's MSM as its code computes it: ``[N, L, C]`` patch vectors to ``[N, L]`` float64 patch scores.

    The bounds follow MuSc: below 1 a fraction of the ``N - 1`` other images (rounded down), else a count; swapped
    when the lower one is larger. An empty interval gives NaN, as in MuSc.
    """
    count, n_patches, channels = z.shape
    rows = []
    for i in range(count):
        others = torch.cat((z[:i], z[i + 1 :]), dim=0).reshape(-1, channels)
        distances = torch.cdist(z[i : i + 1], others).reshape(n_patches, count - 1, n_patches)
        per_image = distances.min(dim=-1).values  # [L, N - 1]: nearest patch of every other image
        n_other = per_image.shape[1]
        k_max = int(n_other * topmin_max) if topmin_max < 1 else int(topmin_max)
        k_min = int(n_other * topmin_min) if topmin_min < 1 else int(topmin_min)
        if k_max < k_min:
            k_min, k_max = k_max, k_min
        smallest = torch.topk(per_image.float(), k_max, largest=False, sorted=True).values
        interval = torch.topk(smallest, k_max - k_min, largest=True, sorted=True).values
        rows.append(interval.mean(dim=1).double())
    return torch.stack(rows)


def musc_lnamd(tokens: torch.Tensor, r: int) -> torch.Tensor:
    """MuSc's LNAMD of one layer's patch tokens ``[N, h*w, C]`` (class token dropped): unit vectors, same shape."""
    count, n_patches, channels = tokens.shape
    side = int(n_patches**0.5)
    grid = tokens.reshape(count, side, side, channels).permute(0, 3, 1, 2)
    grid = torch.nn.LayerNorm([channels, side, side])(grid)
    if r == 1:
        features = grid.reshape(count, channels, -1, 1, 1).permute(0, 2, 1, 3, 4)
    else:
        unfolded = F.unfold(grid, kernel_size=r, padding=(r - 1) // 2, stride=1)  # [N, C * r * r, h * w]
        features = unfolded.reshape(count, channels, r, r, -1).permute(0, 4, 1, 2, 3)  # [N, h * w, C, r, r]
    flat = features.reshape(count * n_patches, 1, -1)
    features = F.adaptive_avg_pool1d(flat, channels).reshape(count, n_patches, channels)
    return (features / features.norm(dim=-1, keepdim=True)).detach()


def musc_rscin(scores: torch.Tensor, embeddings: torch.Tensor, k_list: list[int]) -> torch.Tensor:
    """MuSc's RsCIN of image scores ``[N]`` with unit embeddings ``[N, D]``; ``k_list`` holding 0 returns the scores."""
    if 0 in k_list:
        return scores
    normalised = (scores - scores.min()) / (scores.max() - scores.min())
    similarity = (embeddings @ embeddings.T).float()
    count = similarity.shape[0]
    rescored = []
    for k in k_list:
        dropped = torch.topk(similarity, count - k, largest=False, sorted=True).indices
        kept = similarity.clone()
        for row in range(count):
            kept[row, dropped[row]] = 0
        inverse_sums = torch.zeros_like(similarity)
        for row in range(count):
            inverse_sums[row, row] = 1 / kept[row, :].sum()
        rescored.append((inverse_sums @ kept) @ normalised.float().unsqueeze(-1))
    return torch.cat(rescored, dim=-1).mean(dim=-1)
