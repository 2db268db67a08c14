"""MuSc's own mutual-scoring loop, transcribed: the oracle of the tests and the baseline of the speed benchmark.

A direct transcription, in this project's words, of what ``compute_scores_fast`` and ``MSM`` of MuSc's
``models/modules/_MSM.py`` (github.com/xrli-U/MuSc, commit b76b93d, MIT licence) compute: for each image ``i`` in
turn, ``torch.cdist`` from its patches to every patch of the other images at once, the minimum per other image, the
``k_max`` smallest of those sorted, of them the ``k_max - k_min`` largest, and their mean. Each pair of images is
therefore compared twice, and the distances carry cdist's float32 rounding. It is deliberately slow and literal;
:func:`anomalib_adaclip.model.mutual_patch_scores` is the implementation to use.
"""

from __future__ import annotations

import torch

__all__ = ["musc_msm_loop"]


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
