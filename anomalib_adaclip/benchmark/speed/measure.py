"""What every measurement of the speed benchmark shares, and the torch runtime's timing.

Devices and precisions, the model with random weights and the random images, :func:`time_runs` (the one timing
routine of every figure); then :func:`measure` (throughput, latency, peak memory of a forward) and
:func:`profile_sections` (where its time goes). The machine's description is
:func:`anomalib_adaclip.benchmark.environment.environment`.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile, record_function
from torch.utils.benchmark import timer as wall_clock

from anomalib_adaclip.benchmark.speed import BenchmarkError, PeakMemory
from anomalib_adaclip.config import FewShotConfig
from anomalib_adaclip.model import AdaCLIPModel
from anomalib_adaclip.quiet import quiet_loggers

__all__ = [
    "PRECISIONS",
    "SECTIONS",
    "Timing",
    "autocast",
    "build_model",
    "gigabytes",
    "measure",
    "parse_backbone",
    "profile_sections",
    "random_images",
    "synchronize",
    "time_runs",
    "torch_device",
]

PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
# The record_function ranges of AdaCLIPModel (without their "adaclip." prefix), in the order they run.
SECTIONS = ("vision_frozen", "vision_prompted", "text", "similarity", "few_shot", "hsf", "anomaly_map")
_FORWARD_RANGE = "benchmark.forward"


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


def torch_device(name: str) -> torch.device:
    """The torch device of ``--device``: cpu or an available cuda device, else :class:`.BenchmarkError`."""
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


def autocast(device: torch.device, precision: str) -> AbstractContextManager:
    """Autocast to the precision's dtype on ``device`` (nothing for fp32)."""
    dtype = PRECISIONS[precision]
    return nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


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


def synchronize(device: torch.device) -> None:
    """Wait for a GPU's queued kernels (timings end when the work does); nothing on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def random_images(batch_size: int, image_size: int, device: torch.device) -> torch.Tensor:
    """A batch of normalised random images, the same for a batch size (seeded with it)."""
    generator = torch.Generator().manual_seed(batch_size)
    return torch.randn(batch_size, 3, image_size, image_size, generator=generator).to(device)


@dataclass(frozen=True)
class Timing:
    """Wall-clock and CPU seconds of each timed run of a function (:func:`time_runs`)."""

    seconds: tuple[float, ...]
    cpu_seconds: tuple[float, ...]

    @property
    def total(self) -> float:
        """Wall-clock seconds of all runs."""
        return sum(self.seconds)

    @property
    def median(self) -> float:
        """The median run's wall-clock seconds."""
        return statistics.median(self.seconds)

    @property
    def cpu_total(self) -> float:
        """CPU seconds of the process over all runs (all threads)."""
        return sum(self.cpu_seconds)


def time_runs(function: Callable[[], Any], runs: int = 1) -> Timing:
    """Time ``runs`` calls of ``function`` one by one: the timing of every figure of the benchmarks.

    The clock is :func:`torch.utils.benchmark.timer`, the one of torch's ``Timer``: it waits for the accelerator's
    queued kernels, so that a run ends when its work does. ``Timer``'s own methods do not fit here: ``timeit`` runs
    its statement at least twice more untimed per call (seconds each for a large CLIP) and the ``autorange`` methods
    choose their own number of runs, where the benchmark times a fixed count (``--images``) and needs each run's time
    (the median). CPU time is the process's (:func:`time.process_time`, all threads): on a shared machine it shows
    the work done whatever the load.
    """
    seconds, cpu_seconds = [], []
    for _ in range(runs):
        cpu_start, start = time.process_time(), wall_clock()
        function()
        end = wall_clock()
        seconds.append(end - start)
        cpu_seconds.append(time.process_time() - cpu_start)
    return Timing(tuple(seconds), tuple(cpu_seconds))


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
    images = random_images(batch_size, model.image_size, device)
    names = [class_name] * batch_size
    forward = forward or model
    memory = PeakMemory(device)
    n_batches = max(1, -(-n_images // batch_size))
    with torch.inference_mode(), autocast(device, precision):
        for _ in range(warmup):
            forward(images, names)
        synchronize(device)
        memory.reset()
        timing = time_runs(lambda: forward(images, names), runs=n_batches)
    peak = memory.peak()
    seconds = timing.total
    total = n_batches * batch_size
    return {
        "batch_size": batch_size,
        "batches": n_batches,
        "images": total,
        "seconds": seconds,
        "images_per_second": total / seconds,
        "seconds_per_image": seconds / total,
        "median_seconds_per_image": timing.median / batch_size,
        "cpu_seconds_per_image": timing.cpu_total / total,
        "peak_memory_bytes": peak,
        "peak_memory_per_image_bytes": peak / batch_size,
        "memory_kind": memory.kind,
    }


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
    images = random_images(batch_size, model.image_size, device)
    names = [class_name] * batch_size
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch.inference_mode(), autocast(device, precision):
        model(images, names)  # warm
        synchronize(device)
        with profile(activities=activities) as profiler:
            for _ in range(batches):
                with record_function(_FORWARD_RANGE):
                    model(images, names)
            synchronize(device)
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


def gigabytes(value: float) -> str:
    """Bytes as gigabytes, for the report."""
    return f"{value / 1e9:.2f} GB"
