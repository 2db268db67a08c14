"""The speed benchmark's command line: the arguments, their checks, :func:`run` and :func:`main`.

A new option is parsed in :func:`build_parser`, checked in ``_check_args`` (with the combinations it cannot measure) and
handed by :func:`run` to the module that measures it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from anomalib_adaclip.benchmark.environment import cpu_has_native_bf16, environment, load_average
from anomalib_adaclip.benchmark.speed import BenchmarkError, current_memory
from anomalib_adaclip.benchmark.speed.few_shot import measure_few_shot
from anomalib_adaclip.benchmark.speed.measure import (
    PRECISIONS,
    build_model,
    measure,
    parse_backbone,
    profile_sections,
    torch_device,
)
from anomalib_adaclip.benchmark.speed.mutual import PlainPass, mutual_feature_layers, mutual_report
from anomalib_adaclip.benchmark.speed.online import run_online
from anomalib_adaclip.benchmark.speed.report import format_report
from anomalib_adaclip.benchmark.speed.runtimes import RUNTIMES, Runtime, run_runtimes
from anomalib_adaclip.config import AdaCLIPConfig, MutualScoringConfig
from anomalib_adaclip.output_files import write_new_file

__all__ = ["DEFAULTS", "build_parser", "main", "parse_args", "run"]

DEFAULTS = AdaCLIPConfig()


def _check_args(args: argparse.Namespace) -> tuple[torch.device, list[int], list[Runtime]]:
    """The device, the mutual group sizes and the runtimes of valid arguments.

    Raises:
        BenchmarkError: An argument, or a combination of them, that cannot work.
    """
    device = torch_device(args.device)
    if args.precision == "fp16" and device.type == "cpu":
        msg = "--precision fp16 is for GPUs (fp16 autocast on the CPU is emulated); use bf16 or fp32 on the CPU."
        raise BenchmarkError(msg)
    if args.batch_size < 1 or args.images < 1 or args.warmup < 0 or args.k_shot < 0:
        msg = "--batch-size and --images must be at least 1, --warmup and --k-shot at least 0."
        raise BenchmarkError(msg)
    group_sizes = list(dict.fromkeys(args.mutual_group_sizes or []))
    if any(size < 2 for size in group_sizes):
        msg = f"--mutual-group-sizes: each group needs at least 2 images (one cannot be scored), got {group_sizes}."
        raise BenchmarkError(msg)
    runtimes = list(dict.fromkeys(args.runtime))
    if group_sizes and (args.k_shot or runtimes != ["torch"]):
        msg = "--mutual-group-sizes measures the torch runtime zero-shot: leave out --k-shot and --runtime openvino."
        raise BenchmarkError(msg)
    return device, group_sizes, runtimes


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark described by parsed arguments and return the report (see :func:`.report.format_report`)."""
    device, group_sizes, runtimes = _check_args(args)
    if args.online_banks or args.online_memory_images:
        return run_online(args, device)
    if runtimes != ["torch"]:
        return run_runtimes(args, runtimes, device)
    if args.threads:
        torch.set_num_threads(args.threads)
    backbone = parse_backbone(args.backbone)
    memory_before_model = current_memory(device)
    try:
        model = build_model(backbone, args.image_size, device, use_hsf=not args.no_hsf)
    except (ValueError, TypeError) as error:
        msg = f"Cannot build AdaCLIP with --backbone {args.backbone!r} --image-size {args.image_size}: {error}"
        raise BenchmarkError(msg) from error
    notes = []
    if args.precision == "bf16" and device.type == "cpu" and not cpu_has_native_bf16():
        notes.append("this CPU has no native bf16 (AVX512-BF16/AMX): bf16 is emulated and slower than fp32")
    report: dict[str, Any] = {
        "backbone": args.backbone if isinstance(backbone, str) else backbone,
        "image_size": args.image_size,
        "device": str(device),
        "precision": args.precision,
        "hsf": not args.no_hsf,
        "warmup_batches": args.warmup,
        "memory_before_model_bytes": memory_before_model,
        "memory_with_model_bytes": current_memory(device),
        **environment(device),
        "notes": notes,
    }
    measure_kwargs: dict[str, Any] = {"device": device, "precision": args.precision, "warmup": args.warmup}
    if group_sizes:
        settings = MutualScoringConfig(feature_layers=mutual_feature_layers(model))
        measure_kwargs["forward"] = PlainPass(model, list(settings.feature_layers))
    report["results"] = [measure(model, args.batch_size, args.images, **measure_kwargs)]
    if args.compare_batch1 and args.batch_size != 1:
        report["results"].append(measure(model, 1, args.images, **measure_kwargs))
        report["speedup_over_batch1"] = (
            report["results"][0]["images_per_second"] / report["results"][1]["images_per_second"]
        )
    if group_sizes:
        like = measure_kwargs["forward"].last
        report["mutual"] = mutual_report(like, args, device, settings, group_sizes, report["results"][0])
    profiled = model
    if args.k_shot:
        profiled = model = None  # one model at a time: the few-shot one has the same CLIP, prompts and projections
        report["few_shot"], profiled = measure_few_shot(backbone, args, device, report["results"], measure_kwargs)
    if args.profile:
        report["profile_batch_size"] = args.batch_size
        report["profile_seconds_per_batch"] = profile_sections(
            profiled, args.batch_size, device, args.precision, batches=args.profile_batches
        )
    report["load_average_after"] = load_average()
    return report


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m anomalib_adaclip.benchmark.speed``."""
    parser = argparse.ArgumentParser(
        prog="python -m anomalib_adaclip.benchmark.speed",
        description="Speed of AdaCLIP on random weights: images/s, s/image, peak memory, time split.",
    )
    parser.add_argument(
        "--backbone",
        default=DEFAULTS.backbone,
        help=f"open_clip ViT name, JSON config dict or JSON file (default: {DEFAULTS.backbone})",
    )
    parser.add_argument(
        "--image-size",
        type=int,
        default=DEFAULTS.image_size,
        help=f"input side length (default: {DEFAULTS.image_size})",
    )
    parser.add_argument("--batch-size", type=int, default=8, help="images per forward (default: 8)")
    parser.add_argument("--images", type=int, default=32, help="timed images, rounded up to full batches (default: 32)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed warm-up batches (default: 1)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    parser.add_argument(
        "--precision",
        choices=tuple(PRECISIONS),
        default="fp32",
        help="fp32, or bf16/fp16 autocast (fp16 on GPUs only) (default: fp32)",
    )
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--no-hsf", action="store_true", help="switch Hybrid Semantic Fusion off")
    parser.add_argument(
        "--runtime",
        nargs="+",
        choices=RUNTIMES,
        default=["torch"],
        help="torch, openvino or both, timed side by side in one run (openvino: CPU, fp32) (default: torch)",
    )
    parser.add_argument(
        "--compare-batch1",
        action="store_true",
        help="also measure batch size 1 and print the speed-up",
    )
    parser.add_argument(
        "--k-shot",
        type=int,
        default=0,
        help="also measure a few-shot model with this many random reference images, side by side (default: 0)",
    )
    parser.add_argument(
        "--mutual-group-sizes",
        type=int,
        nargs="+",
        default=None,
        metavar="N",
        help="also measure mutual scoring (MuSc) per group size: the CLIP passes keep MuSc's tokens, and one group of "
        "each size N is scored on random tokens of the real shapes (e.g. 2 4 8 16)",
    )
    parser.add_argument(
        "--online-banks",
        type=int,
        nargs="+",
        default=None,
        metavar="N",
        help="measure RareCLIP's online rarity scoring instead: the plain CLIP pass and the rarity step (score + bank "
        "update) on banks of N earlier images, one image at a time, --images timed runs each (e.g. 10 100 1000)",
    )
    parser.add_argument(
        "--online-memory-images",
        type=int,
        default=0,
        metavar="N",
        help="online mode: also step N images of random tokens through an empty bank and report the memory "
        "(e.g. 2000) (default: 0)",
    )
    parser.add_argument(
        "--online-memory-every", type=int, default=100, help="online mode: images between memory rows (default: 100)"
    )
    parser.add_argument(
        "--online-keep-inum",
        type=int,
        default=0,
        help="online mode: remembered earlier images (RareCLIP's keep_inum; default: 0, the authors' 1000)",
    )
    parser.add_argument("--profile", action="store_true", help="report how the time splits between the parts")
    parser.add_argument("--profile-batches", type=int, default=1, help="batches profiled (default: 1)")
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        help="also write the report to this JSON file (an existing file is kept: then <name>-v1.json, ...)",
    )
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    return build_parser().parse_args(argv)


def main(argv: Sequence[str] | None = None, print_fn: Callable[[str], Any] = print) -> int:
    """Run the benchmark from the command line; returns the exit status."""
    args = parse_args(argv)
    try:
        report = run(args)
    except BenchmarkError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print_fn(format_report(report))
    if args.json is not None:
        written = write_new_file(args.json, json.dumps(report, indent=2) + "\n")
        print_fn(f"\nreport written to {written}")
    return 0
