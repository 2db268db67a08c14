"""Hybrid Semantic Fusion (HSF): an image-level feature from the most abnormal patches.

As the reference code does it (it differs from the paper): take the ``5 * k`` patches with the highest abnormal
probability, cluster their projected tokens (all feature layers concatenated) with k-means into ``k`` clusters,
average each cluster's member tokens over members and layers, and return the L2-normalised mean of the cluster
centres.

The reference clusters with scikit-learn on the CPU without a seed, so its scores change from run to run. Here the
k-means runs in torch on the model's device, batched over images, with a fixed seed: every image gets the same
clusters alone or inside any batch, on every run.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.nn import functional as F  # noqa: N812

from .blocks import is_tracing, per_image

__all__ = ["hybrid_semantic_fusion", "kmeans", "kmeans_inertia"]

KMEANS_SEED = 0
_MAX_ITERATIONS = 50
_DRAWS: dict[tuple, torch.Tensor] = {}


def _uniform_draws(n_init: int, k: int, n_trials: int, seed: int, device: torch.device) -> torch.Tensor:
    """The uniform numbers scikit-learn's k-means++ draws from ``RandomState(seed)``: ``[n_init, 1 + (k - 1) * T]``.

    Each seeding consumes one number for its first centre and ``T`` for each later centre, in this order, as
    ``KMeans(random_state=seed)`` does. They depend on nothing else, so an image's clusters do not depend on its
    batch. They are kept per device: copying them from the host at every call would make a GPU wait.
    """
    key = (n_init, k, n_trials, seed, device)
    draws = _DRAWS.get(key)
    if draws is None:
        numbers = np.random.RandomState(seed).random_sample(n_init * (1 + (k - 1) * n_trials))
        draws = torch.from_numpy(numbers).reshape(n_init, -1).to(device)
        if not is_tracing():
            _DRAWS[key] = draws
    return draws


def _squared_distances(
    points: torch.Tensor,
    centres: torch.Tensor,
    point_norms: torch.Tensor | None = None,
) -> torch.Tensor:
    """Squared Euclidean distances ``[B, N, K]`` between points ``[B, N, D]`` and centres ``[B, K, D]``.

    ``point_norms`` ``[B, N, 1]`` are the points' squared norms, when the caller has them already.
    """
    if point_norms is None:
        point_norms = points.square().sum(-1, keepdim=True)
    distances = point_norms - 2 * points @ centres.transpose(1, 2) + centres.square().sum(-1).unsqueeze(1)
    return distances.clamp_min_(0)


def _kmeans_plus_plus(points: torch.Tensor, k: int, draws: torch.Tensor, point_norms: torch.Tensor) -> torch.Tensor:
    """Greedy k-means++ seeding exactly as scikit-learn does it, batched; returns centres ``[B, K, D]``.

    Args:
        points: Points ``[B, N, D]``.
        k: Number of centres.
        draws: Uniform numbers ``[1 + (K - 1) * T]`` in [0, 1): the first picks the first centre, each following
            group of ``T`` the candidates of the next centre, which is the candidate that lowers the potential most.
        point_norms: Squared norms of the points, ``[B, N, 1]``.
    """
    batch, n_points, _ = points.shape
    n_trials = (draws.numel() - 1) // max(k - 1, 1)
    batch_index = torch.arange(batch, device=points.device)
    first = (draws[0] * n_points).long().clamp_max(n_points - 1).expand(batch)
    centres = [points[batch_index, first]]
    closest = _squared_distances(points, centres[0].unsqueeze(1), point_norms).squeeze(-1)  # [B, N]
    for step in range(1, k):
        cumulative = closest.double().cumsum(-1)
        targets = draws[1 + (step - 1) * n_trials : 1 + step * n_trials].unsqueeze(0) * cumulative[:, -1:]
        # The number of cumulative sums below a target is torch.searchsorted's left insertion point (the sums never
        # decrease); unlike searchsorted, the comparison exports to ONNX.
        candidates = (cumulative.unsqueeze(1) < targets.unsqueeze(-1)).sum(-1).clamp_max(n_points - 1)  # [B, T]
        candidate_points = points[batch_index.unsqueeze(1), candidates]  # [B, T, D]
        candidate_distances = _squared_distances(points, candidate_points, point_norms)  # [B, N, T]
        potentials = torch.minimum(closest.unsqueeze(-1), candidate_distances).sum(1)  # [B, T]
        best = potentials.argmin(-1)
        centres.append(candidate_points[batch_index, best])
        closest = torch.minimum(closest, candidate_distances[batch_index, :, best])
    return torch.stack(centres, dim=1)


def _can_stop_early(points: torch.Tensor) -> bool:
    """Whether Lloyd may look at its labels to stop: on the CPU (no device to wait for) and outside tracing."""
    return points.device.type == "cpu" and not is_tracing()


def _lloyd(points: torch.Tensor, centres: torch.Tensor, iterations: int, point_norms: torch.Tensor) -> torch.Tensor:
    """Run up to ``iterations`` Lloyd iterations; a centre that loses all its points stays where it was.

    When no label changes, the next centres equal the current ones bit for bit, and so would every further
    iteration: stopping there returns exactly what all iterations return. Only the CPU checks this; on an
    accelerator the check would make the host wait, so all iterations run there.
    """
    k = centres.shape[1]
    check = _can_stop_early(points)
    previous = None
    for _ in range(iterations):
        labels = _squared_distances(points, centres, point_norms).argmin(-1)
        if check and previous is not None and torch.equal(labels, previous):
            break  # exact: the same labels give the same centres bit for bit, a fixed point
        one_hot = F.one_hot(labels, k).to(points.dtype)  # [B, N, K]
        counts = one_hot.sum(1).unsqueeze(-1)  # [B, K, 1]
        sums = one_hot.transpose(1, 2) @ points
        centres = torch.where(counts > 0, sums / counts.clamp_min(1), centres)
        previous = labels
    return centres


def kmeans_inertia(points: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """Sum of squared distances of the points ``[B, N, D]`` to the mean of their cluster; returns ``[B]``."""
    one_hot = F.one_hot(labels, k).to(points.dtype)
    counts = one_hot.sum(1).unsqueeze(-1)
    centres = (one_hot.transpose(1, 2) @ points) / counts.clamp_min(1)
    return (points - centres.gather(1, labels.unsqueeze(-1).expand_as(points))).square().sum((1, 2))


def kmeans(
    points: torch.Tensor,
    k: int,
    n_init: int = 1,
    iterations: int = _MAX_ITERATIONS,
    seed: int = KMEANS_SEED,
) -> torch.Tensor:
    """Cluster each image's points with k-means (greedy k-means++ seeding, then Lloyd), deterministically.

    The seeding draws the random numbers of scikit-learn's ``KMeans(n_clusters=k, random_state=seed)``, so on the
    same points both find the same clusters (up to float rounding). All images and the ``n_init`` seedings run as
    one batch; each image keeps its seeding with the lowest inertia. Nothing depends on the batch but the rounding
    of the batched products (:func:`hybrid_semantic_fusion` clusters one image at a time on the CPU). On an accelerator
    there is no data-dependent control flow, so nothing waits on the device; on the CPU, Lloyd stops as soon as no
    label changes, with the same result as running every iteration.

    Args:
        points: Points ``[B, N, D]``.
        k: Number of clusters, at most ``N``.
        n_init: Number of seedings per image (scikit-learn's ``n_init="auto"`` makes one for k-means++).
        iterations: Most Lloyd iterations; k-means on a hundred points converges in far fewer, and further
            iterations leave a converged clustering as it is.
        seed: Seed of the k-means++ sampling.

    Returns:
        Cluster labels ``[B, N]`` in ``[0, k)``.
    """
    if points.ndim != 3:
        msg = f"`points` must have shape [B, N, D], got {tuple(points.shape)}."
        raise ValueError(msg)
    batch, n_points, _ = points.shape
    if not 1 <= k <= n_points:
        msg = f"k-means needs 1 <= k <= number of points, got k={k} for {n_points} points."
        raise ValueError(msg)
    points = points.float()
    point_norms = points.square().sum(-1, keepdim=True)  # the same in every distance computation: once
    draws = _uniform_draws(n_init, k, 2 + int(math.log(k)), seed, points.device)
    centres = torch.cat([_kmeans_plus_plus(points, k, run_draws, point_norms) for run_draws in draws])
    runs, run_norms = points.repeat(n_init, 1, 1), point_norms.repeat(n_init, 1, 1)  # [n_init * B, ...]
    centres = _lloyd(runs, centres, iterations, run_norms)
    labels = _squared_distances(runs, centres, run_norms).argmin(-1)
    inertia = kmeans_inertia(runs, labels, k).reshape(n_init, batch)
    best = inertia.argmin(0)  # the first seeding wins ties
    return labels.reshape(n_init, batch, n_points)[best, torch.arange(batch, device=points.device)]


def hybrid_semantic_fusion(
    patch_scores: torch.Tensor,
    layer_tokens: torch.Tensor,
    k_clusters: int,
    labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """Fuse the tokens of the most abnormal patches into one normalised feature per image.

    Args:
        patch_scores: Abnormal probability of each patch, ``[B, L]``.
        layer_tokens: Projected, normalised patch tokens of every feature layer, ``[B, n_layers, L, D]``.
        k_clusters: Number of clusters; the ``5 * k_clusters`` most abnormal patches are clustered. When an image
            has fewer patches, all of them are used and ``k`` is capped at their number.
        labels: Cluster labels ``[B, 5 * k]`` of the selected patches in descending score order, to reuse a given
            clustering (e.g. the reference's) instead of running k-means.

    Returns:
        The fused feature ``[B, D]``, L2-normalised.
    """
    batch, n_layers, n_patches, dim = layer_tokens.shape
    n_top = min(5 * k_clusters, n_patches)
    k = min(k_clusters, n_top)
    top = patch_scores.topk(n_top, dim=-1).indices  # [B, n_top]
    selected = layer_tokens.gather(2, top[:, None, :, None].expand(-1, n_layers, -1, dim))  # [B, layers, n_top, D]
    if labels is None:
        with torch.no_grad():
            points = selected.detach().transpose(1, 2).reshape(batch, n_top, n_layers * dim)
            # Per image on the CPU: the batched distance products round differently for other batch sizes, and a
            # near-tie may then move a point to another cluster.
            labels = per_image(lambda image_points: kmeans(image_points, k), points)
    elif labels.shape != (batch, n_top) or labels.min() < 0 or labels.max() >= k:
        msg = f"`labels` must have shape {(batch, n_top)} with values in [0, {k}), got {tuple(labels.shape)}."
        raise ValueError(msg)
    one_hot = F.one_hot(labels.long(), k).to(selected.dtype)  # [B, n_top, k]
    counts = one_hot.sum(1)  # [B, k]
    centres = (one_hot.transpose(1, 2) @ selected.mean(1)) / counts.clamp_min(1).unsqueeze(-1)  # [B, k, D]
    occupied = (counts > 0).to(selected.dtype).unsqueeze(-1)
    fused = (centres * occupied).sum(1) / occupied.sum(1)
    return F.normalize(fused, dim=-1)
