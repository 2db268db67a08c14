r"""Speed benchmark of :class:`~anomalib_adaclip.AdaCLIPModel`: throughput, latency, peak memory, time split.

The model is built with random weights (nothing is downloaded) and scores random images of one class; its numbers
mean nothing, but it does all the work of a real AdaCLIP: both vision passes, the prompted text tower, HSF, the
upsampled and blurred maps. Warm-up batches (which also fill the per-class text caches) are not timed.

Example:
    Throughput at batch 8 and at batch 1 in one run, with the time split, on the CPU in fp32::

        python -m anomalib_adaclip.benchmark.speed --backbone ViT-B-16 --image-size 224 --batch-size 8 \\
            --images 32 --device cpu --precision fp32 --compare-batch1 --profile --json speed.json

With ``--runtime torch openvino`` the same model also runs as an OpenVINO export (anomalib's ``to_openvino``, the
file ``anomalib export --export_type openvino`` writes), and both runtimes are timed side by side in one run:
the same images, the same number of threads, one batch of each runtime in turn, so that a change of the machine's
load falls on both alike.

With ``--k-shot N`` a second model with a few-shot memory of ``N`` random reference images is measured in the same
run at the same batch sizes, side by side with the zero-shot one, and the time to encode the references is reported.

With ``--mutual-group-sizes 2 4 8 16`` the cost of mutual scoring (MuSc, ``AdaCLIP(mutual_scoring=True)``) is
measured per group size, in two parts that add up to a run's cost per image:

- the CLIP passes: the timed rows are then AdaCLIP's passes that also keep MuSc's plain tokens
  (:meth:`~anomalib_adaclip.model.AdaCLIPModel.score_with_plain_tokens`), once per image whatever the group size;
- the group's mutual scoring (LNAMD, MSM, the maps, RsCIN: :func:`~anomalib_adaclip.model.mutual_scoring.score_group`)
  on random tokens of the real shapes (one tensor ``[N, h*w, C]`` per feature layer and the embeddings ``[N, D]``, as
  the CLIP pass gives them), once per group size ``N``. Its cost does not depend on the values; it grows with
  ``N^2`` per group, so with ``N`` per image.

Example:
    ViT-L-14-336 at 518 px (MuSc's and the paper's setting) on the CPU: the CLIP passes on 2 images, then groups of 2
    to 16::

        python -m anomalib_adaclip.benchmark.speed --backbone ViT-L-14-336 --image-size 518 --batch-size 1 \\
            --images 2 --warmup 0 --mutual-group-sizes 2 4 8 16 --json mutual.json

Peak memory is the peak resident set size of the process on the CPU (reset before each measurement on Linux, see
:class:`PeakMemory`) and ``torch.cuda.max_memory_allocated`` on a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any, Literal

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile, record_function

from anomalib_adaclip.config import AdaCLIPConfig, FewShotConfig, MutualScoringConfig
from anomalib_adaclip.model import AdaCLIPModel
from anomalib_adaclip.model.mutual_scoring import PlainTokens, averaged_interval, score_group
from anomalib_adaclip.quiet import quiet_loggers

__all__ = [
    "PRECISIONS",
    "RUNTIMES",
    "SECTIONS",
    "PeakMemory",
    "build_model",
    "build_parser",
    "format_report",
    "main",
    "measure",
    "measure_mutual_groups",
    "measure_runtimes",
    "mutual_feature_layers",
    "parse_args",
    "parse_backbone",
    "profile_sections",
    "run",
]

PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
Runtime = Literal["torch", "openvino"]
RUNTIMES: tuple[Runtime, ...] = ("torch", "openvino")
DEFAULTS = AdaCLIPConfig()
# The record_function ranges of AdaCLIPModel (without their "adaclip." prefix), in the order they run.
SECTIONS = ("vision_frozen", "vision_prompted", "text", "similarity", "few_shot", "hsf", "anomaly_map")
_FORWARD_RANGE = "benchmark.forward"
_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


class BenchmarkError(ValueError):
    """An argument of the benchmark that cannot work (unknown backbone, missing device, bad precision)."""


def parse_backbone(text: str) -> str | dict[str, Any]:
    """An open_clip model name, a JSON config dict (``'{"embed_dim": ...}'``) or the path of a JSON file."""
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            config = json.loads(stripped)
        except json.JSONDecodeError as error:
            msg = f"--backbone looks like a JSON config dict but does not parse: {error}."
            raise BenchmarkError(msg) from error
        if not isinstance(config, dict):
            msg = f"--backbone JSON must be an object with embed_dim, vision_cfg and text_cfg, got {config!r}."
            raise BenchmarkError(msg)
        return config
    if stripped.endswith(".json"):
        path = Path(stripped).expanduser()
        if not path.is_file():
            msg = f"--backbone {text!r}: no such JSON file."
            raise BenchmarkError(msg)
        return parse_backbone(path.read_text())
    return stripped


def _device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError as error:
        msg = f"--device {name!r} is not a torch device (use cpu, cuda or cuda:N)."
        raise BenchmarkError(msg) from error
    if device.type == "cuda" and not torch.cuda.is_available():
        msg = f"--device {name!r}: CUDA is not available on this machine; use --device cpu."
        raise BenchmarkError(msg)
    if device.type not in {"cpu", "cuda"}:
        msg = f"--device {name!r}: the benchmark supports cpu and cuda devices."
        raise BenchmarkError(msg)
    return device


def _cpu_has_native_bf16() -> bool:
    """Whether the CPU computes bf16 natively (AVX512-BF16 or AMX); elsewhere bf16 is emulated and slow."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.machine().lower() in {"arm64", "aarch64"}  # recent ARM cores have BF16; a guess
    return bool(re.search(r"\b(avx512_bf16|amx_bf16)\b", flags))


def _autocast(device: torch.device, precision: str) -> AbstractContextManager:
    dtype = PRECISIONS[precision]
    return nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


class PeakMemory:
    """Peak memory of the process since :meth:`reset`.

    On a GPU, ``torch.cuda.max_memory_allocated``. On the CPU, the peak resident set size (``VmHWM``): on Linux it
    is reset by writing 5 to ``/proc/self/clear_refs``; elsewhere ``ru_maxrss`` counts since the process started
    (``since_start`` then says so).
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.since_start = False

    @property
    def kind(self) -> str:
        """What is measured."""
        if self.device.type == "cuda":
            return "cuda_max_memory_allocated"
        return "peak_rss_since_start" if self.since_start else "peak_rss"

    def reset(self) -> None:
        """Start a new measurement."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        try:
            _CLEAR_REFS.write_text("5")
        except OSError:
            self.since_start = True

    def peak(self) -> int:
        """Peak bytes since the last reset."""
        if self.device.type == "cuda":
            return int(torch.cuda.max_memory_allocated(self.device))
        if not self.since_start:
            try:
                match = re.search(r"VmHWM:\s+(\d+)\s+kB", _STATUS.read_text())
            except OSError:
                match = None
            if match:
                return int(match.group(1)) * 1024
            self.since_start = True
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(peak if sys.platform == "darwin" else peak * 1024)  # bytes on macOS, KiB elsewhere


def _current_memory(device: torch.device) -> int | None:
    """Memory in use now: the resident set size on the CPU (Linux only, else None), allocated memory on a GPU."""
    if device.type == "cuda":
        return int(torch.cuda.memory_allocated(device))
    try:
        match = re.search(r"VmRSS:\s+(\d+)\s+kB", _STATUS.read_text())
    except OSError:
        return None
    return int(match.group(1)) * 1024 if match else None


def build_model(
    backbone: str | dict[str, Any],
    image_size: int,
    device: torch.device,
    use_hsf: bool = True,
    k_shot: int = 0,
) -> AdaCLIPModel:
    """AdaCLIPModel with random CLIP weights and prompts, in eval mode on ``device`` (few-shot with ``k_shot``)."""
    with quiet_loggers("anomalib_adaclip.model.backbone"):  # the random-weights warning is expected here
        torch.manual_seed(0)
        model = AdaCLIPModel(
            backbone=backbone,
            backbone_weights=None,
            image_size=image_size,
            use_hsf=use_hsf,
            few_shot=FewShotConfig(k_shot=k_shot),
        )
    return model.eval().to(device)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _images(batch_size: int, image_size: int, device: torch.device) -> torch.Tensor:
    generator = torch.Generator().manual_seed(batch_size)
    return torch.randn(batch_size, 3, image_size, image_size, generator=generator).to(device)


def measure(
    model: AdaCLIPModel,
    batch_size: int,
    n_images: int,
    device: torch.device,
    precision: str = "fp32",
    warmup: int = 1,
    class_name: str = "bottle",
    forward: Callable[[torch.Tensor, list[str]], Any] | None = None,
) -> dict[str, Any]:
    """Time ``ceil(n_images / batch_size)`` batches after ``warmup`` untimed ones.

    ``forward(images, class_names)`` is what is timed; it defaults to the model's forward.

    Returns:
        ``batch_size``, ``batches``, ``images``, ``seconds`` (all timed batches), ``images_per_second``,
        ``seconds_per_image`` (their ratio), ``median_seconds_per_image`` (median over the batches),
        ``cpu_seconds_per_image`` (CPU time of the process, all threads: on a shared machine it shows the work
        done whatever the load), ``peak_memory_bytes``, ``peak_memory_per_image_bytes`` (divided by the batch
        size) and ``memory_kind``.
    """
    images = _images(batch_size, model.image_size, device)
    names = [class_name] * batch_size
    forward = forward or model
    memory = PeakMemory(device)
    n_batches = max(1, -(-n_images // batch_size))
    durations = []
    with torch.inference_mode(), _autocast(device, precision):
        for _ in range(warmup):
            forward(images, names)
        _synchronize(device)
        memory.reset()
        cpu_start = time.process_time()
        for _ in range(n_batches):
            start = time.perf_counter()
            forward(images, names)
            _synchronize(device)
            durations.append(time.perf_counter() - start)
        cpu_seconds = time.process_time() - cpu_start
    peak = memory.peak()
    seconds = sum(durations)
    total = n_batches * batch_size
    return {
        "batch_size": batch_size,
        "batches": n_batches,
        "images": total,
        "seconds": seconds,
        "images_per_second": total / seconds,
        "seconds_per_image": seconds / total,
        "median_seconds_per_image": statistics.median(durations) / batch_size,
        "cpu_seconds_per_image": cpu_seconds / total,
        "peak_memory_bytes": peak,
        "peak_memory_per_image_bytes": peak / batch_size,
        "memory_kind": memory.kind,
    }


def mutual_feature_layers(model: AdaCLIPModel) -> list[int]:
    """MuSc's feature layers for the model's tower: the last block of each quarter (``[5, 11, 17, 23]`` of 24)."""
    n_blocks = len(model.clip.visual.transformer.resblocks)
    return [n_blocks * quarter // 4 - 1 for quarter in (1, 2, 3, 4)]


class _PlainPass:
    """AdaCLIP's passes that also keep MuSc's tokens (what a run with mutual scoring computes once per image).

    The last call's tokens are kept (``last``): their shapes are those of the group measurement's random tokens.
    """

    def __init__(self, model: AdaCLIPModel, layers: list[int]) -> None:
        self.model, self.layers = model, layers
        self.last: PlainTokens | None = None

    def __call__(self, images: torch.Tensor, names: list[str]) -> PlainTokens:
        self.last = self.model.score_with_plain_tokens(images, names, plain_layers=self.layers)[1]
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
    with torch.inference_mode(), _autocast(device, precision), warnings.catch_warnings():
        # Groups of 2 to 4 use the small-group rule, and say so for every layer and r: the report notes it once.
        warnings.filterwarnings("ignore", message="Mutual scoring of a group", category=UserWarning)
        if warmup:
            tokens = _random_tokens(like, 2, device, seed=1)
            score_group(tokens.patch_tokens, tokens.embedding, image_size, settings)
            del tokens
        for size in group_sizes:
            _synchronize(device)
            memory.reset()
            tokens = _random_tokens(like, size, device, seed=size)
            cpu_start, start = time.process_time(), time.perf_counter()
            score_group(tokens.patch_tokens, tokens.embedding, image_size, settings)
            _synchronize(device)
            seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
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
            use_hsf=use_hsf,
            class_name="bottle",
            evaluator=False,
            visualizer=False,
        ).eval()
        start = time.perf_counter()
        path = model.to_openvino(folder)
        seconds = time.perf_counter() - start
    return model, path, seconds


def _time_call(function: Callable[[], Any]) -> tuple[Any, float, float]:
    cpu_start, start = time.process_time(), time.perf_counter()
    output = function()
    return output, time.perf_counter() - start, time.process_time() - cpu_start


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
    durations: dict[str, list[float]] = {name: [] for name in runners}
    cpu_seconds = dict.fromkeys(runners, 0.0)
    for index in range(n_batches):
        # Alternate which runtime goes first, so that neither always follows the other's cache state.
        order = list(runners) if index % 2 == 0 else list(reversed(runners))
        for name in order:
            _, seconds, cpu = _time_call(lambda runner=runners[name]: runner(images))
            durations[name].append(seconds)
            cpu_seconds[name] += cpu
    batch_size = images.shape[0]
    results = []
    for name in runners:
        total, seconds = n_batches * batch_size, sum(durations[name])
        results.append(
            {
                "runtime": name,
                "batch_size": batch_size,
                "batches": n_batches,
                "images": total,
                "seconds": seconds,
                "images_per_second": total / seconds,
                "seconds_per_image": seconds / total,
                "median_seconds_per_image": statistics.median(durations[name]) / batch_size,
                "cpu_seconds_per_image": cpu_seconds[name] / total,
            }
        )
    return results


def _run_runtimes(args: argparse.Namespace, runtimes: list[Runtime], device: torch.device) -> dict[str, Any]:
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
        **_environment(device),
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
    report["load_average_after"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    return report


def profile_sections(
    model: AdaCLIPModel,
    batch_size: int,
    device: torch.device,
    precision: str = "fp32",
    batches: int = 1,
    class_name: str = "bottle",
) -> dict[str, float]:
    """Seconds per batch spent in each part of the forward (the model's ``adaclip.*`` record_function ranges).

    Runs ``batches`` warm batches under :mod:`torch.profiler` (not the timed ones: profiling costs time). On the CPU
    the ranges' CPU time is reported, on a GPU the time of the kernels they launched. ``other`` is the rest of the
    forward, ``total`` the whole forward.
    """
    images = _images(batch_size, model.image_size, device)
    names = [class_name] * batch_size
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch.inference_mode(), _autocast(device, precision):
        model(images, names)  # warm
        _synchronize(device)
        with profile(activities=activities) as profiler:
            for _ in range(batches):
                with record_function(_FORWARD_RANGE):
                    model(images, names)
            _synchronize(device)
    times = {section: 0.0 for section in (*SECTIONS, "other", "total")}
    for event in profiler.key_averages():
        name = event.key.removeprefix("adaclip.")
        if name in SECTIONS or event.key == _FORWARD_RANGE:
            microseconds = event.device_time_total if device.type == "cuda" else event.cpu_time_total
            times["total" if event.key == _FORWARD_RANGE else name] += microseconds / 1e6 / batches
    if times["total"] == 0.0:  # no kernel time attributed to the forward's own range: the sum of its parts
        times["total"] = sum(times[section] for section in SECTIONS)
    times["other"] = max(0.0, times["total"] - sum(times[section] for section in SECTIONS))
    return times


def _environment(device: torch.device) -> dict[str, Any]:
    if device.type == "cuda":
        device_name = torch.cuda.get_device_name(device)
    else:
        device_name = platform.processor() or platform.machine()
        try:
            match = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
            device_name = match.group(1).strip() if match else device_name
        except OSError:
            pass
    return {
        "device_name": device_name,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def _check_args(args: argparse.Namespace) -> tuple[torch.device, list[int], list[Runtime]]:
    """The device, the mutual group sizes and the runtimes of valid arguments.

    Raises:
        BenchmarkError: An argument, or a combination of them, that cannot work.
    """
    if args.json is not None and args.json.exists():
        msg = f"--json {args.json} exists already; choose another path (the benchmark never overwrites a file)."
        raise BenchmarkError(msg)
    device = _device(args.device)
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


def _measure_mutual(
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


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark described by parsed arguments and return the report (see :func:`format_report`)."""
    device, group_sizes, runtimes = _check_args(args)
    if runtimes != ["torch"]:
        return _run_runtimes(args, runtimes, device)
    if args.threads:
        torch.set_num_threads(args.threads)
    backbone = parse_backbone(args.backbone)
    memory_before_model = _current_memory(device)
    try:
        model = build_model(backbone, args.image_size, device, use_hsf=not args.no_hsf)
    except (ValueError, TypeError) as error:
        msg = f"Cannot build AdaCLIP with --backbone {args.backbone!r} --image-size {args.image_size}: {error}"
        raise BenchmarkError(msg) from error
    notes = []
    if args.precision == "bf16" and device.type == "cpu" and not _cpu_has_native_bf16():
        notes.append("this CPU has no native bf16 (AVX512-BF16/AMX): bf16 is emulated and slower than fp32")
    report: dict[str, Any] = {
        "backbone": args.backbone if isinstance(backbone, str) else backbone,
        "image_size": args.image_size,
        "device": str(device),
        "precision": args.precision,
        "hsf": not args.no_hsf,
        "warmup_batches": args.warmup,
        "memory_before_model_bytes": memory_before_model,
        "memory_with_model_bytes": _current_memory(device),
        **_environment(device),
        "notes": notes,
    }
    measure_kwargs: dict[str, Any] = {"device": device, "precision": args.precision, "warmup": args.warmup}
    if group_sizes:
        settings = MutualScoringConfig(feature_layers=mutual_feature_layers(model))
        measure_kwargs["forward"] = _PlainPass(model, list(settings.feature_layers))
    report["results"] = [measure(model, args.batch_size, args.images, **measure_kwargs)]
    if args.compare_batch1 and args.batch_size != 1:
        report["results"].append(measure(model, 1, args.images, **measure_kwargs))
        report["speedup_over_batch1"] = (
            report["results"][0]["images_per_second"] / report["results"][1]["images_per_second"]
        )
    if group_sizes:
        like = measure_kwargs["forward"].last
        report["mutual"] = _measure_mutual(like, args, device, settings, group_sizes, report["results"][0])
    profiled = model
    if args.k_shot:
        profiled = model = None  # one model at a time: the few-shot one has the same CLIP, prompts and projections
        few_shot_model = build_model(backbone, args.image_size, device, use_hsf=not args.no_hsf, k_shot=args.k_shot)
        references = _images(args.k_shot, args.image_size, device).flip(0)  # other images than the queries
        _synchronize(device)
        start = time.perf_counter()
        with _autocast(device, args.precision):
            few_shot_model.add_references(references, "bottle")
        _synchronize(device)
        report["few_shot"] = {
            "k_shot": args.k_shot,
            "reference_seconds": time.perf_counter() - start,
            "memory_bytes": few_shot_model.few_shot_memory.nbytes(),
            "results": [
                measure(few_shot_model, result["batch_size"], args.images, **measure_kwargs)
                for result in report["results"]
            ],
        }
        profiled = few_shot_model
    if args.profile:
        report["profile_batch_size"] = args.batch_size
        report["profile_seconds_per_batch"] = profile_sections(
            profiled, args.batch_size, device, args.precision, batches=args.profile_batches
        )
    report["load_average_after"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    return report


def _gigabytes(value: float) -> str:
    return f"{value / 1e9:.2f} GB"


def _format_runtimes(report: dict[str, Any]) -> list[str]:
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
    lines.append(f"peak memory of the process (both runtimes): {_gigabytes(report['peak_memory_bytes'])}")
    return lines


def _format_mutual(mutual: dict[str, Any]) -> list[str]:
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
            f"{group['total_seconds_per_image']:>13.3f} {_gigabytes(group['total_peak_memory_bytes']):>12}  "
            f"(group step {_gigabytes(group['peak_memory_bytes'])}, {group['memory_kind']})"
        )
    return lines


def format_report(report: dict[str, Any]) -> str:
    """The report as text."""
    backbone = report["backbone"] if isinstance(report["backbone"], str) else "custom config"
    lines = [
        f"AdaCLIP speed: {backbone} @ {report['image_size']} px, {report['precision']}, HSF "
        f"{'on' if report['hsf'] else 'off'}, random weights",
        f"device: {report['device']} ({report['device_name']}), {report['torch_threads']} torch threads, "
        f"torch {report['torch_version']}",
    ]
    if report.get("load_average"):
        before = ", ".join(f"{value:.2f}" for value in report["load_average"])
        after = ", ".join(f"{value:.2f}" for value in report.get("load_average_after") or [])
        lines.append(f"load average (1, 5, 15 min): {before} before, {after} after ({report['cpu_count']} CPUs)")
    if report.get("memory_before_model_bytes") is not None:
        kind = "allocated" if report["device"].startswith("cuda") else "resident"
        lines.append(
            f"memory {kind}: {_gigabytes(report['memory_before_model_bytes'])} before building the model, "
            f"{_gigabytes(report['memory_with_model_bytes'])} with it"
        )
    lines.extend(f"note: {note}" for note in report.get("notes", []))
    lines.append("")
    if "runtimes" in report:
        lines.extend(_format_runtimes(report))
        return "\n".join(lines)
    lines.append(
        f"{'batch':>5} {'images':>6} {'images/s':>9} {'s/image':>8} {'median s/image':>14} {'CPU s/image':>11} "
        f"{'peak memory':>12}"
    )
    for result in report["results"]:
        lines.append(
            f"{result['batch_size']:>5} {result['images']:>6} {result['images_per_second']:>9.3f} "
            f"{result['seconds_per_image']:>8.3f} {result['median_seconds_per_image']:>14.3f} "
            f"{result['cpu_seconds_per_image']:>11.3f} "
            f"{_gigabytes(result['peak_memory_bytes']):>12}  ({_gigabytes(result['peak_memory_per_image_bytes'])}"
            f" per image, {result['memory_kind']})"
        )
    if "speedup_over_batch1" in report:
        lines.append(f"batch {report['results'][0]['batch_size']} vs batch 1: {report['speedup_over_batch1']:.2f}x")
    if "mutual" in report:
        lines.extend(_format_mutual(report["mutual"]))
    if "few_shot" in report:
        few_shot = report["few_shot"]
        lines.append("")
        lines.append(
            f"with k_shot={few_shot['k_shot']} references (measured after the zero-shot rows above, same run): "
            f"references encoded in {few_shot['reference_seconds']:.3f} s, "
            f"memory {few_shot['memory_bytes'] / 1e6:.1f} MB"
        )
        for result, zero_shot in zip(few_shot["results"], report["results"], strict=True):
            lines.append(
                f"{result['batch_size']:>5} {result['images']:>6} {result['images_per_second']:>9.3f} "
                f"{result['seconds_per_image']:>8.3f} {result['median_seconds_per_image']:>14.3f} "
                f"{result['cpu_seconds_per_image']:>11.3f} {_gigabytes(result['peak_memory_bytes']):>12}  "
                f"({result['seconds_per_image'] / zero_shot['seconds_per_image']:.2f}x the zero-shot s/image)"
            )
    if "profile_seconds_per_batch" in report:
        times = report["profile_seconds_per_batch"]
        total = times["total"] or 1.0
        lines.append("")
        profiled = f", k_shot={report['few_shot']['k_shot']}" if "few_shot" in report else ""
        lines.append(f"time per batch of {report['profile_batch_size']}{profiled} (under the profiler):")
        for section in (*SECTIONS, "other", "total"):
            lines.append(f"  {section:<16} {times[section]:>9.3f} s  {100 * times[section] / total:>5.1f}%")
    return "\n".join(lines)


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
    parser.add_argument("--profile", action="store_true", help="report how the time splits between the parts")
    parser.add_argument("--profile-batches", type=int, default=1, help="batches profiled (default: 1)")
    parser.add_argument("--json", type=Path, default=None, help="also write the report to this JSON file")
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
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print_fn(f"\nreport written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
