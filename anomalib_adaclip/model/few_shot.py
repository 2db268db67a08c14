"""The few-shot memory of AdaCLIP: normal reference patches per class name, and the few-shot map of a query.

Which features. A query's patch is compared with the references' patches of the same class name, per feature layer.
The features are the frozen, un-prompted vision pass's patch tokens of the feature layers, projected by the trained
patch projections and L2-normalised. They are the same function of the image for a reference and a query: the
prompted pass is not, because AdaCLIP's dynamic prompts are generated from each image, so the same defect-free
surface would get different tokens in two images. The projections are the ones the zero-shot map compares with the
text, so both maps look at the same embedding space (APRIL-GAN's memory uses projected CLIP patch tokens too).

The map. Per layer, the distance of a query patch is ``1 - max cos`` over the class's memory (APRIL-GAN, WinCLIP+);
the distances are averaged over the layers on the patch grid.

Scaling. Distances are not probabilities: their size depends on the backbone, the layer and the object. Each class
therefore keeps the distance its own normal references get: every reference is scored against the memory without
its own image (leave-one-out; with one reference, against its own patches outside a 3 x 3 neighbourhood), and the
largest patch distance is the class's ``scale``. A distance ``d`` becomes ``1 - 2 ** (-d / scale)``: 0 for a patch
seen among the references, 0.5 for the largest distance a normal reference got, approaching 1 beyond it. It is
monotone, so it ranks patches like the raw distance, and it lies in [0, 1) like the zero-shot probabilities it is
fused with, so a threshold of 0.5 keeps its meaning (above the normal references' worst patch) and ``calibrate``
works on the fused values as before. Leave-one-out distances are measured against ``k - 1`` references, so they are
a little larger than a normal query gets against all ``k``: the scale errs on the side of calling patches normal.

State. The memory is a set of buffers (the patches ``[M, n_layers, D]`` in float32, the patches per class, the
scales, the class names as UTF-8 bytes), so it is saved in ``state_dict`` and Lightning checkpoints and baked into
exports. Its size is ``M * n_layers * D * 4`` bytes: for ViT-L-14-336 at 518 (1369 patches, 4 layers, 768
dimensions) 16.8 MB per reference image (8 times that with ``few_shot.augment``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from anomalib.models.components import KCenterGreedy
from torch import nn

__all__ = ["FewShotMemory", "nearest_distances", "reference_scale", "scaled_distances"]

# The smallest scale: identical references would otherwise divide by zero.
MIN_SCALE = 1e-6


def nearest_distances(query: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
    """``1 - max cos`` of every query patch to a memory, averaged over the layers.

    Args:
        query: Normalised patch tokens of one image ``[n_layers, L, D]``, or of a batch ``[B, n_layers, L, D]``.
        memory: Normalised memory patches, ``[M, n_layers, D]``.

    Returns:
        The distance of every patch, ``[L]`` (or ``[B, L]``), in [0, 2]. Each image's product has many rows, so the
        numbers do not depend on the batch size.
    """
    layers = query.shape[-3]
    distances = [
        1 - (query[..., layer, :, :].float() @ memory[:, layer].float().T).amax(dim=-1) for layer in range(layers)
    ]
    return torch.stack(distances, dim=-2).mean(-2).clamp_min(0)


def scaled_distances(distances: torch.Tensor, scale: torch.Tensor | float) -> torch.Tensor:
    """Distances mapped to [0, 1): ``1 - 2 ** (-d / scale)`` (0.5 at the references' own largest distance)."""
    return 1 - torch.exp2(-distances / scale)


def _neighbourhood_mask(grid: int, device: torch.device) -> torch.Tensor:
    """``[L, L]``: True where two patches of one grid are within one patch of each other (Chebyshev distance)."""
    rows, cols = (
        torch.arange(grid, device=device).repeat_interleave(grid),
        torch.arange(grid, device=device).repeat(grid),
    )
    return ((rows[:, None] - rows[None]).abs() <= 1) & ((cols[:, None] - cols[None]).abs() <= 1)


def reference_scale(
    tokens: torch.Tensor, groups: torch.Tensor, patches: torch.Tensor, patch_groups: torch.Tensor
) -> float:
    """The largest leave-one-out distance of a class's references: what a normal image gets.

    Args:
        tokens: The references' patch tokens, ``[N, n_layers, L, D]`` (N views: images, tiles, augmentations).
        groups: The reference image of every view, ``[N]``; views of one image are left out together.
        patches: The class's memory, ``[M, n_layers, D]`` (all patches of ``tokens``, or a coreset of them).
        patch_groups: The reference image of every memory patch, ``[M]``.
    """
    largest = 0.0
    single = bool((groups == groups[0]).all())
    for view in range(tokens.shape[0]):
        query = tokens[view]
        if single:
            # One reference image: its own patches, except the patch itself and its 8 neighbours.
            grid = math.isqrt(query.shape[1])
            similarity = torch.stack([query[layer].float() @ query[layer].float().T for layer in range(query.shape[0])])
            similarity = similarity.masked_fill(_neighbourhood_mask(grid, query.device), -math.inf)
            distances = (1 - similarity.amax(dim=2)).mean(0).clamp_min(0)
        else:
            distances = nearest_distances(query, patches[patch_groups != groups[view]])
        largest = max(largest, float(distances.max()))
    return max(largest, MIN_SCALE)


class FewShotMemory(nn.Module):
    """Normal reference patches per class name, their scales, and the few-shot distances of queries.

    Args:
        n_layers: Feature layers per patch.
        embed_dim: Dimension of the projected patch tokens.
        coreset_ratio: Fraction of each class's patches kept (greedy k-center coreset); 1 keeps all.
    """

    def __init__(self, n_layers: int, embed_dim: int, coreset_ratio: float = 1.0) -> None:
        super().__init__()
        self.coreset_ratio = coreset_ratio
        self.register_buffer("patches", torch.zeros(0, n_layers, embed_dim))
        self.register_buffer("class_sizes", torch.zeros(0, dtype=torch.long))
        self.register_buffer("scales", torch.zeros(0))
        self.register_buffer("class_names_utf8", torch.zeros(0, dtype=torch.uint8))
        self._index: dict[str, tuple[int, int, int]] = {}
        # Loading a state dict resizes the buffers first (their size is the references') and re-reads the index after.
        self.register_load_state_dict_pre_hook(self._before_load)
        self.register_load_state_dict_post_hook(self._after_load)

    # ----------------------------------------------------------------------------------------------------------------
    # Contents
    # ----------------------------------------------------------------------------------------------------------------
    @property
    def class_names(self) -> list[str]:
        """The class names that have references, in the order they were added."""
        return list(self._index)

    def __contains__(self, class_name: object) -> bool:
        """Whether a class name has references."""
        return class_name in self._index

    def __len__(self) -> int:
        """Patches in the memory (all classes)."""
        return self.patches.shape[0]

    def scale(self, class_name: str) -> float:
        """The largest leave-one-out distance of the class's references (what maps to 0.5)."""
        return float(self.scales[self._index[class_name][2]])

    def nbytes(self) -> int:
        """Bytes of the memory's patches."""
        return self.patches.numel() * self.patches.element_size()

    def _refresh_index(self) -> None:
        names = json.loads(bytes(self.class_names_utf8.tolist()).decode("utf-8")) if len(self.class_names_utf8) else []
        sizes = self.class_sizes.tolist()
        if len(names) != len(sizes) or sum(sizes) != self.patches.shape[0] or len(self.scales) != len(names):
            msg = "The few-shot memory's buffers do not fit together (class names, sizes, scales and patches)."
            raise RuntimeError(msg)
        starts = [0, *torch.tensor(sizes, dtype=torch.long).cumsum(0).tolist()]
        self._index = {name: (starts[i], starts[i + 1], i) for i, name in enumerate(names)}

    def _coreset(self, patches: torch.Tensor) -> torch.Tensor:
        """Indices of the patches kept by greedy k-center subsampling (all of them with a ratio of 1)."""
        if self.coreset_ratio >= 1:
            return torch.arange(patches.shape[0], device=patches.device)
        sampler = KCenterGreedy(patches.flatten(1), sampling_ratio=self.coreset_ratio)
        return torch.tensor(sorted(sampler.select_coreset_idxs()), dtype=torch.long, device=patches.device)

    @torch.no_grad()
    def add(self, class_name: str, tokens: torch.Tensor, groups: Sequence[int] | torch.Tensor | None = None) -> None:
        """Store a class's reference patches (replacing earlier ones of that class) and compute its scale.

        Args:
            class_name: The class name the references belong to.
            tokens: Normalised patch tokens of the references, ``[N, n_layers, L, D]``.
            groups: The reference image of every row of ``tokens`` (tiles and augmented views of one image share
                it). Defaults to one image per row.

        Raises:
            ValueError: No reference, or tokens of another shape than the memory's.
        """
        if tokens.ndim != 4 or tokens.shape[0] == 0 or tuple(tokens.shape[1::2]) != tuple(self.patches.shape[1:]):
            msg = (
                f"Reference tokens must have shape [N >= 1, {self.patches.shape[1]}, L, {self.patches.shape[2]}], got "
                f"{tuple(tokens.shape)}."
            )
            raise ValueError(msg)
        tokens = tokens.detach().float().to(self.patches.device)
        groups = torch.arange(tokens.shape[0]) if groups is None else torch.as_tensor(groups, dtype=torch.long)
        groups = groups.to(tokens.device)
        patches = tokens.transpose(1, 2).flatten(0, 1)  # [N * L, n_layers, D]
        patch_groups = groups.repeat_interleave(tokens.shape[2])
        kept = self._coreset(patches)
        patches, patch_groups = patches[kept], patch_groups[kept]
        scale = reference_scale(tokens, groups, patches, patch_groups)

        entries = {name: self.patches[start:stop] for name, (start, stop, _) in self._index.items()}
        scales = {name: self.scales[index] for name, (_, _, index) in self._index.items()}
        entries[class_name], scales[class_name] = patches, torch.tensor(scale, device=tokens.device)
        names = list(entries)
        self.patches = torch.cat([entries[name] for name in names])
        self.class_sizes = torch.tensor([entries[name].shape[0] for name in names], device=tokens.device)
        self.scales = torch.stack([scales[name].float() for name in names])
        encoded = json.dumps(names).encode("utf-8")
        self.class_names_utf8 = torch.tensor(list(encoded), dtype=torch.uint8, device=tokens.device)
        self._refresh_index()

    def clear(self) -> None:
        """Forget every reference."""
        self.patches = self.patches[:0]
        self.class_sizes, self.scales = self.class_sizes[:0], self.scales[:0]
        self.class_names_utf8 = self.class_names_utf8[:0]
        self._index = {}

    # ----------------------------------------------------------------------------------------------------------------
    # Checkpoints: the buffers take the saved shapes
    # ----------------------------------------------------------------------------------------------------------------
    def prepare_load(self, state_dict: Mapping[str, Any], prefix: str = "") -> None:
        """Resize the buffers to those of a state dict about to be loaded (the memory's size is not fixed)."""
        for name, buffer in list(self.named_buffers(recurse=False)):
            saved = state_dict.get(prefix + name)
            if isinstance(saved, torch.Tensor) and saved.shape != buffer.shape:
                self.register_buffer(name, torch.zeros(saved.shape, dtype=buffer.dtype, device=buffer.device))

    @staticmethod
    def _before_load(module: FewShotMemory, state_dict: Mapping[str, Any], prefix: str, *_: Any) -> None:
        module.prepare_load(state_dict, prefix)

    @staticmethod
    def _after_load(module: FewShotMemory, _incompatible_keys: Any) -> None:
        module._refresh_index()

    # ----------------------------------------------------------------------------------------------------------------
    # Queries
    # ----------------------------------------------------------------------------------------------------------------
    def check_classes(self, class_names: Sequence[str]) -> None:
        """Refuse class names without references.

        Raises:
            KeyError: A class name has no references.
        """
        missing = sorted(set(class_names) - set(self._index))
        if missing:
            have = self.class_names or "none"
            msg = (
                f"The few-shot memory has no reference images of the class name(s) {missing} (it has {have}). Give "
                "references of every class name the images use (few_shot.source as a mapping of class name to "
                "folder, or a data module of that category)."
            )
            raise KeyError(msg)

    def forward(self, tokens: torch.Tensor, class_names: Sequence[str] | str) -> torch.Tensor:
        """Scaled few-shot values of every query patch on the patch grid, ``[B, g, g]`` in [0, 1).

        Args:
            tokens: Normalised patch tokens of the queries (the frozen pass's, projected), ``[B, n_layers, L, D]``.
            class_names: One class name per query, or one for all (then the batch size stays symbolic in exports).
        """
        grid = math.isqrt(tokens.shape[2])
        if isinstance(class_names, str):
            self.check_classes([class_names])
            start, stop, index = self._index[class_names]
            distances = nearest_distances(tokens, self.patches[start:stop])
            return scaled_distances(distances, self.scales[index]).view(-1, grid, grid)
        self.check_classes(class_names)
        maps = []
        for query, name in zip(tokens, class_names, strict=True):
            start, stop, index = self._index[name]
            distances = nearest_distances(query, self.patches[start:stop])
            maps.append(scaled_distances(distances, self.scales[index]))
        return torch.stack(maps).view(-1, grid, grid)
