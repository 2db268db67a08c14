"""The machine a figure was measured on: host CPU, its instruction set, threads, versions, load average.

One report for every benchmark: the speed benchmark's header, the side-by-side timings and each record of the accuracy
benchmark carry the same fields, so that a number is never read without the host, the threads and the load it was
measured under.
"""

from __future__ import annotations

import importlib
import os
import platform
import re
from pathlib import Path
from typing import Any

import torch

__all__ = ["PACKAGES", "cpu_has_native_bf16", "cpu_name", "environment", "load_average", "package_versions"]

#: The packages whose versions a figure depends on, in the order they are reported.
PACKAGES = ("anomalib", "torch", "open_clip", "lightning", "anomalib_adaclip")
_CPUINFO = Path("/proc/cpuinfo")


def _cpuinfo() -> str:
    try:
        return _CPUINFO.read_text()
    except OSError:
        return ""


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else what :mod:`platform` knows)."""
    match = re.search(r"model name\s*:\s*(.+)", _cpuinfo())
    return match.group(1).strip() if match else platform.processor() or platform.machine()


def cpu_has_native_bf16() -> bool:
    """Whether the CPU computes bf16 natively (AVX512-BF16 or AMX); elsewhere bf16 is emulated and slow."""
    flags = _cpuinfo()
    if not flags:
        return platform.machine().lower() in {"arm64", "aarch64"}  # recent ARM cores have BF16; a guess
    return bool(re.search(r"\b(avx512_bf16|amx_bf16)\b", flags))


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages of the host (``None`` where the system has none)."""
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def package_versions() -> dict[str, str]:
    """The installed version of each of :data:`PACKAGES` (a package that is missing is left out)."""
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = str(importlib.import_module(package).__version__)
        except (ImportError, AttributeError):
            continue
    return versions


def environment(device: torch.device | str = "cpu") -> dict[str, Any]:
    """The report: where, with what and under which load a figure was measured.

    Args:
        device: The device measured; its name is ``device_name`` (the GPU's, or the CPU's).

    Returns:
        ``device_name``, ``cpu_name``, ``cpu_capability`` (the instruction set torch's CPU kernels use: ``AVX2``,
        ``AVX512``, ...), ``cpu_count``, ``torch_threads``, ``torch_version``, ``versions`` (see
        :func:`package_versions`) and ``load_average`` (now: take :func:`load_average` again after the measurement).
    """
    device = torch.device(device)
    host_cpu = cpu_name()
    return {
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else host_cpu,
        "cpu_name": host_cpu,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "versions": package_versions(),
        "load_average": load_average(),
    }
