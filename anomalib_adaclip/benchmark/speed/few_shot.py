"""The speed benchmark's few-shot mode (``--k-shot N``): a model with ``N`` references, beside the zero-shot rows."""

from __future__ import annotations

import argparse
from typing import Any

import torch

from anomalib_adaclip.benchmark.speed.measure import (
    autocast,
    build_model,
    gigabytes,
    measure,
    random_images,
    synchronize,
    time_runs,
)
from anomalib_adaclip.model import AdaCLIPModel

__all__ = ["format_few_shot", "measure_few_shot"]


def measure_few_shot(
    backbone: str | dict[str, Any],
    args: argparse.Namespace,
    device: torch.device,
    zero_shot_results: list[dict[str, Any]],
    measure_kwargs: dict[str, Any],
) -> tuple[dict[str, Any], AdaCLIPModel]:
    """Build the few-shot model, time its references and each batch size of ``zero_shot_results``.

    The caller lets go of the zero-shot model first: one model at a time (the few-shot one has the same CLIP, prompts
    and projections).

    Returns:
        The report's ``few_shot`` part (``k_shot``, ``reference_seconds``, ``memory_bytes``, ``results``) and the
        model (the one profiled then).
    """
    few_shot_model = build_model(backbone, args.image_size, device, use_hsf=not args.no_hsf, k_shot=args.k_shot)
    references = random_images(args.k_shot, args.image_size, device).flip(0)  # other images than the queries
    synchronize(device)
    with autocast(device, args.precision):
        timing = time_runs(lambda: few_shot_model.add_references(references, "bottle"))
    few_shot = {
        "k_shot": args.k_shot,
        "reference_seconds": timing.total,
        "memory_bytes": few_shot_model.few_shot_memory.nbytes(),
        "results": [
            measure(few_shot_model, result["batch_size"], args.images, **measure_kwargs) for result in zero_shot_results
        ],
    }
    return few_shot, few_shot_model


def format_few_shot(report: dict[str, Any]) -> list[str]:
    """The report's lines of the ``few_shot`` part, each row against the zero-shot one of its batch size."""
    few_shot = report["few_shot"]
    lines = [
        "",
        f"with k_shot={few_shot['k_shot']} references (measured after the zero-shot rows above, same run): "
        f"references encoded in {few_shot['reference_seconds']:.3f} s, "
        f"memory {few_shot['memory_bytes'] / 1e6:.1f} MB",
    ]
    for result, zero_shot in zip(few_shot["results"], report["results"], strict=True):
        lines.append(
            f"{result['batch_size']:>5} {result['images']:>6} {result['images_per_second']:>9.3f} "
            f"{result['seconds_per_image']:>8.3f} {result['median_seconds_per_image']:>14.3f} "
            f"{result['cpu_seconds_per_image']:>11.3f} {gigabytes(result['peak_memory_bytes']):>12}  "
            f"({result['seconds_per_image'] / zero_shot['seconds_per_image']:.2f}x the zero-shot s/image)"
        )
    return lines
