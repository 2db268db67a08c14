"""The speed benchmark's mutual-scoring mode (``--mutual-group-sizes``): MuSc's cost per group size.

The CLIP passes are timed by :func:`~anomalib_adaclip.benchmark.speed.measure.measure` with :class:`PlainPass` as
the forward (AdaCLIP's passes that also keep MuSc's tokens); each group's mutual scoring is timed here, on random
tokens of the shapes those passes give.
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Sequence
from typing import Any

import torch

from anomalib_adaclip.benchmark.speed import PeakMemory
from anomalib_adaclip.benchmark.speed.measure import autocast, gigabytes, synchronize, time_runs
from anomalib_adaclip.config import MutualScoringConfig, quarter_blocks
from anomalib_adaclip.model import AdaCLIPModel
from anomalib_adaclip.model.mutual_scoring import PlainTokens, averaged_interval, musc_blocks, score_group

__all__ = ["PlainPass", "format_mutual", "measure_mutual_groups", "mutual_feature_layers", "mutual_report"]


def mutual_feature_layers(model: AdaCLIPModel) -> list[int]:
    """MuSc's feature layers for the model's tower, 1-based (:func:`~anomalib_adaclip.config.quarter_blocks`)."""
    return list(quarter_blocks(model.n_vision_blocks))


class PlainPass:
    """AdaCLIP's passes that also keep MuSc's tokens (what a run with mutual scoring computes once per image).

    The last call's tokens are kept (``last``): their shapes are those of the group measurement's random tokens.
    """

    def __init__(self, model: AdaCLIPModel, layers: list[int]) -> None:
        self.model, self.layers = model, layers
        self.last: PlainTokens | None = None

    def __call__(self, images: torch.Tensor, names: list[str]) -> PlainTokens:
        """Score ``images`` and keep their plain tokens (returned)."""
        self.last = self.model.score_with_plain_tokens(images, names, plain_layers=musc_blocks(self.layers))[1]
        return self.last


def _random_tokens(like: PlainTokens, count: int, device: torch.device, seed: int) -> PlainTokens:
    """``count`` images' worth of random tokens of ``like``'s shapes (unit embeddings, as the CLIP pass gives)."""
    generator = torch.Generator().manual_seed(seed)
    layers = [torch.randn(count, *tokens.shape[1:], generator=generator).to(device) for tokens in like.patch_tokens]
    embedding = torch.randn(count, like.embedding.shape[-1], generator=generator)
    return PlainTokens(layers, (embedding / embedding.norm(dim=-1, keepdim=True)).to(device))


def measure_mutual_groups(
    like: PlainTokens,
    group_sizes: Sequence[int],
    image_size: int,
    settings: MutualScoringConfig,
    device: torch.device,
    precision: str = "fp32",
    warmup: bool = True,
) -> list[dict[str, Any]]:
    """Time the mutual scoring of one group per size, on random tokens of the shapes of ``like`` (one image's).

    Each group's tokens are made fresh (their memory counts in the group's peak, as in a run, which holds one group's
    tokens); the model stays resident. With ``warmup`` a group of 2 is scored first, untimed.

    Returns:
        Per group size: ``group_size``, ``seconds`` (the group), ``seconds_per_image``, ``cpu_seconds_per_image``,
        ``peak_memory_bytes`` (the process, model included) and ``memory_kind``.
    """
    memory = PeakMemory(device)
    results = []
    with torch.inference_mode(), autocast(device, precision), warnings.catch_warnings():
        # Groups of 2 to 4 use the small-group rule, and say so for every layer and r: the report notes it once.
        warnings.filterwarnings("ignore", message="Mutual scoring of a group", category=UserWarning)
        if warmup:
            tokens = _random_tokens(like, 2, device, seed=1)
            score_group(tokens.patch_tokens, tokens.embedding, image_size, settings)
            del tokens
        for size in group_sizes:
            synchronize(device)
            memory.reset()
            tokens = _random_tokens(like, size, device, seed=size)
            timing = time_runs(
                lambda tokens=tokens: score_group(tokens.patch_tokens, tokens.embedding, image_size, settings)
            )
            seconds, cpu = timing.total, timing.cpu_total
            del tokens
            results.append(
                {
                    "group_size": size,
                    "seconds": seconds,
                    "seconds_per_image": seconds / size,
                    "cpu_seconds_per_image": cpu / size,
                    "peak_memory_bytes": memory.peak(),
                    "memory_kind": memory.kind,
                }
            )
    return results


def mutual_report(
    like: PlainTokens, args: argparse.Namespace, device: torch.device, settings: MutualScoringConfig,
    group_sizes: list[int], clip: dict[str, Any],
) -> dict[str, Any]:  # fmt: skip
    """The ``mutual`` part of the report: each group size's mutual scoring, with the CLIP passes' ``clip`` row.

    ``like`` is the CLIP passes' last output: the random tokens take its shapes.
    """
    groups = measure_mutual_groups(like, group_sizes, args.image_size, settings, device, args.precision)
    small = [size for size in group_sizes if averaged_interval(size - 1, settings.topmin_min, settings.topmin_max)[2]]
    for group in groups:
        group["clip_seconds_per_image"] = clip["seconds_per_image"]
        group["total_seconds_per_image"] = clip["seconds_per_image"] + group["seconds_per_image"]
        group["total_peak_memory_bytes"] = max(clip["peak_memory_bytes"], group["peak_memory_bytes"])
    return {
        "feature_layers": list(settings.feature_layers),
        "r_list": list(settings.r_list),
        "topmin_max": settings.topmin_max,
        "rscin_k": list(settings.rscin_k),
        "token_shape": [list(tokens.shape[1:]) for tokens in like.patch_tokens],
        "embedding_dim": like.embedding.shape[-1],
        "small_groups": small,
        "groups": groups,
    }


def format_mutual(mutual: dict[str, Any]) -> list[str]:
    """The report's lines of the ``mutual`` part (after the CLIP passes' rows)."""
    shape = mutual["token_shape"][0]
    lines = [
        "",
        "mutual scoring: the rows above are the CLIP passes (AdaCLIP's, keeping MuSc's plain tokens: once per image); "
        f"each group below is MuSc's LNAMD, MSM, maps and RsCIN on random tokens of the real shapes "
        f"({len(mutual['token_shape'])} layers {mutual['feature_layers']} of [N, {shape[0]}, {shape[1]}], "
        f"embeddings [N, {mutual['embedding_dim']}]; r {mutual['r_list']}, RsCIN k {mutual['rscin_k']}), one group "
        "per size",
        f"{'group':>5} {'mutual s':>9} {'mutual s/image':>14} {'mutual CPU s/image':>18} {'CLIP s/image':>12} "
        f"{'total s/image':>13} {'peak memory':>12}",
    ]
    if mutual.get("small_groups"):
        lines.insert(
            -1,
            f"groups of {mutual['small_groups']} images use the small-group rule (MuSc's lowest 30 % of the others is "
            "empty there: each patch scored by its nearest other image)",
        )
    for group in mutual["groups"]:
        lines.append(
            f"{group['group_size']:>5} {group['seconds']:>9.3f} {group['seconds_per_image']:>14.3f} "
            f"{group['cpu_seconds_per_image']:>18.3f} {group['clip_seconds_per_image']:>12.3f} "
            f"{group['total_seconds_per_image']:>13.3f} {gigabytes(group['total_peak_memory_bytes']):>12}  "
            f"(group step {gigabytes(group['peak_memory_bytes'])}, {group['memory_kind']})"
        )
    return lines
