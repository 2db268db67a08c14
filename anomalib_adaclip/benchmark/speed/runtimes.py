"""Runtimes besides torch's, timed side by side with it (``--runtime torch openvino``), and their report lines.

A runtime is a function scoring a batch of raw images (``runners`` of :func:`measure_runtimes`): the Lightning
model's forward for torch, the compiled export for OpenVINO. One model is built and exported once; the runtimes then
take turns on the same images, at the same thread count.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any, Literal

import torch
from torch import nn

from anomalib_adaclip.benchmark.environment import environment, load_average
from anomalib_adaclip.benchmark.speed import BenchmarkError, PeakMemory
from anomalib_adaclip.benchmark.speed.measure import Timing, gigabytes, parse_backbone, time_runs
from anomalib_adaclip.quiet import quiet_loggers

__all__ = ["RUNTIMES", "Runtime", "build_exported_model", "format_runtimes", "measure_runtimes", "run_runtimes"]

Runtime = Literal["torch", "openvino"]
RUNTIMES: tuple[Runtime, ...] = ("torch", "openvino")


def _import_openvino() -> Any:
    try:
        import openvino  # noqa: PLC0415  (an optional extra)
    except ImportError as error:
        msg = (
            '--runtime openvino needs OpenVINO, which is not installed: pip install "anomalib-adaclip[openvino]" '
            '(in a checkout: pip install -e ".[openvino]").'
        )
        raise BenchmarkError(msg) from error
    return openvino


def build_exported_model(
    backbone: str | dict[str, Any], image_size: int, use_hsf: bool, folder: Path
) -> tuple[nn.Module, Path, float]:
    """The Lightning AdaCLIP with random weights (seed 0) and its OpenVINO export in ``folder``.

    The export is anomalib's ``to_openvino`` (through ONNX), the file ``anomalib export --export_type openvino``
    writes: raw images in [0, 1] -> resize and CLIP normalisation -> AdaCLIP -> post-processing.

    Returns:
        The model in eval mode, the ``.xml`` file and the seconds the export took.
    """
    from anomalib_adaclip.lightning_model import AdaCLIP  # noqa: PLC0415  (Lightning only for exports)

    # random weights, no checkpoint, the exporter's progress: all expected here
    with quiet_loggers("anomalib_adaclip", "anomalib", "torch.onnx"):
        torch.manual_seed(0)
        model = AdaCLIP(
            backbone=backbone,
            backbone_weights=None,
            image_size=image_size,
            evaluator=False,
            visualizer=False,
            prompts={"use_hsf": use_hsf},
            classes={"name": "bottle"},
        ).eval()
        paths: list[Path] = []
        timing = time_runs(lambda: paths.append(model.to_openvino(folder)))
    return model, paths[0], timing.total


def measure_runtimes(
    runners: dict[str, Callable[[torch.Tensor], Any]],
    images: torch.Tensor,
    n_batches: int,
    warmup: int = 1,
) -> list[dict[str, Any]]:
    """Time several runtimes on the same images, one batch of each in turn (fair under a changing load).

    Args:
        runners: Runtime name -> a function scoring a batch of raw images.
        images: The batch, raw ``[B, 3, H, W]`` in [0, 1].
        n_batches: Timed batches per runtime.
        warmup: Untimed batches per runtime first.

    Returns:
        Per runtime: ``runtime``, ``batch_size``, ``batches``, ``images``, ``seconds``, ``images_per_second``,
        ``seconds_per_image``, ``median_seconds_per_image`` and ``cpu_seconds_per_image`` (CPU time of the process
        during that runtime's batches, all threads).
    """
    for _ in range(warmup):
        for runner in runners.values():
            runner(images)
    timings: dict[str, list[Timing]] = {name: [] for name in runners}
    for index in range(n_batches):
        # Alternate which runtime goes first, so that neither always follows the other's cache state.
        order = list(runners) if index % 2 == 0 else list(reversed(runners))
        for name in order:
            timings[name].append(time_runs(lambda runner=runners[name]: runner(images)))
    batch_size = images.shape[0]
    results = []
    for name in runners:
        timing = Timing(
            tuple(run.seconds[0] for run in timings[name]), tuple(run.cpu_seconds[0] for run in timings[name])
        )
        total, seconds = n_batches * batch_size, timing.total
        results.append(
            {
                "runtime": name,
                "batch_size": batch_size,
                "batches": n_batches,
                "images": total,
                "seconds": seconds,
                "images_per_second": total / seconds,
                "seconds_per_image": seconds / total,
                "median_seconds_per_image": timing.median / batch_size,
                "cpu_seconds_per_image": timing.cpu_total / total,
            }
        )
    return results


def run_runtimes(args: argparse.Namespace, runtimes: list[Runtime], device: torch.device) -> dict[str, Any]:
    """Export once, then time every runtime of ``--runtime`` side by side at each batch size (fp32, CPU)."""
    if device.type != "cpu" or args.precision != "fp32" or args.k_shot or args.profile:
        msg = (
            f"--runtime {' '.join(runtimes)} measures the CPU in fp32, zero-shot: it cannot be combined with "
            f"--device {args.device}, --precision {args.precision}, --k-shot or --profile."
        )
        raise BenchmarkError(msg)
    openvino = _import_openvino()  # before the model is built: a missing package is the first thing to hear about
    if args.threads:
        torch.set_num_threads(args.threads)
    backbone = parse_backbone(args.backbone)
    report: dict[str, Any] = {
        "backbone": args.backbone if isinstance(backbone, str) else backbone,
        "image_size": args.image_size,
        "device": str(device),
        "precision": args.precision,
        "hsf": not args.no_hsf,
        "warmup_batches": args.warmup,
        "runtimes": runtimes,
        **environment(device),
        "notes": [],
    }
    with TemporaryDirectory(prefix="adaclip-speed-") as folder:
        try:
            model, path, export_seconds = build_exported_model(backbone, args.image_size, not args.no_hsf, Path(folder))
        except (ValueError, TypeError) as error:
            msg = f"Cannot build AdaCLIP with --backbone {args.backbone!r} --image-size {args.image_size}: {error}"
            raise BenchmarkError(msg) from error
        core = openvino.Core()
        # fp32 like the torch runtime (OpenVINO would pick bf16 on CPUs with native bf16); the same thread count.
        compiled = core.compile_model(
            str(path),
            "CPU",
            {"INFERENCE_NUM_THREADS": torch.get_num_threads(), "INFERENCE_PRECISION_HINT": "f32"},
        )
    report["openvino_version"] = openvino.get_version()
    report["export_seconds"] = export_seconds

    def run_torch(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.inference_mode():
            output = model(images)
        return output.pred_score, output.anomaly_map

    def run_openvino(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        outputs = compiled(images.numpy())
        return torch.from_numpy(outputs["pred_score"]), torch.from_numpy(outputs["anomaly_map"])

    runners = {name: {"torch": run_torch, "openvino": run_openvino}[name] for name in runtimes}
    batch_sizes = [args.batch_size] + ([1] if args.compare_batch1 and args.batch_size != 1 else [])
    report["results"], report["runtime_agreement"] = [], []
    memory = PeakMemory(torch.device("cpu"))
    memory.reset()
    for batch_size in batch_sizes:
        images = torch.rand(batch_size, 3, args.image_size, args.image_size, generator=torch.Generator().manual_seed(0))
        n_batches = max(1, -(-args.images // batch_size))
        report["results"].extend(measure_runtimes(runners, images, n_batches, args.warmup))
        if len(runners) > 1:
            (torch_score, torch_map), (ov_score, ov_map) = run_torch(images), run_openvino(images)
            report["runtime_agreement"].append(
                {
                    "batch_size": batch_size,
                    "max_score_difference": float((torch_score - ov_score).abs().max()),
                    "max_map_difference": float((torch_map - ov_map).abs().max()),
                }
            )
    report["peak_memory_bytes"] = memory.peak()
    report["memory_kind"] = memory.kind
    report["load_average_after"] = load_average()
    return report


def format_runtimes(report: dict[str, Any]) -> list[str]:
    """The report's lines of a run of several runtimes: each one's rows, their ratios and agreement, the memory."""
    lines = [
        f"runtimes {', '.join(report['runtimes'])} side by side (one batch of each in turn; the Lightning model's "
        f"forward, the exported computation: resize, normalisation, AdaCLIP, post-processing); OpenVINO "
        f"{report['openvino_version']}, export took {report['export_seconds']:.1f} s",
        "",
        f"{'runtime':>8} {'batch':>5} {'images':>6} {'images/s':>9} {'s/image':>8} {'median s/image':>14} "
        f"{'CPU s/image':>11}",
    ]
    for result in report["results"]:
        lines.append(
            f"{result['runtime']:>8} {result['batch_size']:>5} {result['images']:>6} "
            f"{result['images_per_second']:>9.3f} {result['seconds_per_image']:>8.3f} "
            f"{result['median_seconds_per_image']:>14.3f} {result['cpu_seconds_per_image']:>11.3f}"
        )
    by_batch: dict[int, dict[str, dict[str, Any]]] = {}
    for result in report["results"]:
        by_batch.setdefault(result["batch_size"], {})[result["runtime"]] = result
    for batch_size, results in by_batch.items():
        if {"torch", "openvino"} <= results.keys():
            ratio = results["openvino"]["images_per_second"] / results["torch"]["images_per_second"]
            cpu_ratio = results["torch"]["cpu_seconds_per_image"] / results["openvino"]["cpu_seconds_per_image"]
            lines.append(
                f"batch {batch_size}: openvino is {ratio:.2f}x torch's images/s ({cpu_ratio:.2f}x in CPU s/image)"
            )
    for agreement in report.get("runtime_agreement", []):
        lines.append(
            f"batch {agreement['batch_size']}: openvino vs torch, max |score diff| "
            f"{agreement['max_score_difference']:.2e}, max |map diff| {agreement['max_map_difference']:.2e}"
        )
    lines.append(f"peak memory of the process (both runtimes): {gigabytes(report['peak_memory_bytes'])}")
    return lines
