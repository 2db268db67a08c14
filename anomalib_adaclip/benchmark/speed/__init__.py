r"""Speed benchmark of :class:`~anomalib_adaclip.model.AdaCLIPModel`: throughput, latency, peak memory, time split.

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

With ``--mutual-group-sizes 2 4 8 16`` the cost of mutual scoring (MuSc, ``AdaCLIP(mutual={...})``) is
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

With ``--online-banks 10 100 1000`` RareCLIP's online rarity scoring
(:class:`~anomalib_adaclip.model.rarity.RarityScoring`) is measured instead, one image at a time: the plain CLIP pass
and the rarity step (score and bank update) on banks that hold that many earlier images, side by side, p50 and p95 per
image over ``--images`` runs, with the bank's bytes; ``--online-memory-images 2000`` follows the memory over that many
steps (:mod:`.online`).

Example:
    RareCLIP's setting on the CPU, 3 timed runs::

        python -m anomalib_adaclip.benchmark.speed --backbone ViT-L-14-336 --image-size 518 --images 3 \\
            --online-banks 10 100 1000 --json online.json

Peak memory is the peak resident set size of the process on the CPU (reset before each measurement on Linux, see
:class:`PeakMemory`) and ``torch.cuda.max_memory_allocated`` on a GPU.

The package, one concern per module (every name is importable from here, as from the single module it was):

- this module: :class:`PeakMemory`, :class:`BenchmarkError` and the re-exports;
- :mod:`.measure`: what every measurement shares (devices, precisions, the random model and images) and the torch
  runtime's timing (:func:`~anomalib_adaclip.benchmark.speed.measure.measure`,
  :func:`~anomalib_adaclip.benchmark.speed.measure.profile_sections`);
- :mod:`.runtimes`: the other runtimes (the OpenVINO export) timed side by side with torch, and their report lines;
- :mod:`.few_shot`, :mod:`.mutual` and :mod:`.online`: the measured modes besides zero-shot (``--k-shot``,
  ``--mutual-group-sizes``, ``--online-banks``), each with its report lines;
- :mod:`.report`: the report as text; :mod:`.cli`: the arguments, their checks,
  :func:`~anomalib_adaclip.benchmark.speed.cli.run` and :func:`~anomalib_adaclip.benchmark.speed.cli.main`
  (``__main__`` calls it).
"""

from __future__ import annotations

import re
import resource
import sys
from pathlib import Path

import torch

__all__ = [
    "DEFAULTS",
    "PRECISIONS",
    "RUNTIMES",
    "SECTIONS",
    "BenchmarkError",
    "PeakMemory",
    "Runtime",
    "build_exported_model",
    "build_model",
    "build_parser",
    "format_report",
    "main",
    "measure",
    "measure_mutual_groups",
    "measure_online",
    "measure_online_memory",
    "measure_runtimes",
    "mutual_feature_layers",
    "parse_args",
    "parse_backbone",
    "profile_sections",
    "run",
    "synthetic_bank",
]

# Read when measuring, so that a test can point them elsewhere (``monkeypatch.setattr(speed, "_CLEAR_REFS", ...)``).
_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


class BenchmarkError(ValueError):
    """An argument of the benchmark that cannot work (unknown backbone, missing device, bad precision)."""


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


def current_memory(device: torch.device) -> int | None:
    """Memory in use now: the resident set size on the CPU (Linux only, else None), allocated memory on a GPU."""
    if device.type == "cuda":
        return int(torch.cuda.memory_allocated(device))
    try:
        match = re.search(r"VmRSS:\s+(\d+)\s+kB", _STATUS.read_text())
    except OSError:
        return None
    return int(match.group(1)) * 1024 if match else None


# The modules below import the names above from this package, so they are re-exported after them.
from .cli import DEFAULTS, build_parser, main, parse_args, run  # noqa: E402
from .measure import PRECISIONS, SECTIONS, build_model, measure, parse_backbone, profile_sections  # noqa: E402
from .mutual import measure_mutual_groups, mutual_feature_layers  # noqa: E402
from .online import measure_online, measure_online_memory, synthetic_bank  # noqa: E402
from .report import format_report  # noqa: E402
from .runtimes import RUNTIMES, Runtime, build_exported_model, measure_runtimes  # noqa: E402
