"""The speed benchmark package's own names (``benchmark/speed/__init__.py``): peak and current memory.

The package's modules have their tests in ``tests/unit/benchmark/speed/``.
"""

from __future__ import annotations

import resource
from pathlib import Path

import pytest
import torch

from anomalib_adaclip.benchmark import speed


def resident_bytes() -> int:
    """The process's current resident size, read independently of PeakMemory (Linux's /proc/self/statm)."""
    statm = Path("/proc/self/statm")
    if not statm.is_file():
        pytest.skip("needs /proc/self/statm (Linux) for the resident size")
    return int(statm.read_text().split()[1]) * resource.getpagesize()


# The kernel's resident-size counters are approximate (per-thread caches, synchronised every few page faults).
COUNTER_SLACK = 8 * 2**20


def test_peak_memory_is_measured_after_a_reset() -> None:
    memory = speed.PeakMemory(torch.device("cpu"))
    memory.reset()
    baseline = memory.peak()
    block = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
    peak = memory.peak()
    assert peak >= resident_bytes() - COUNTER_SLACK  # never below what is resident now, block included
    if not memory.since_start:  # /proc/self/clear_refs was writable: the reset started a new measurement
        assert memory.kind == "peak_rss" and peak >= baseline + 60 * 2**20
    del block


def test_peak_memory_since_start_where_it_cannot_be_reset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a writable clear_refs the peak counts from the process start, says so, and is in bytes."""
    monkeypatch.setattr(speed, "_CLEAR_REFS", tmp_path)  # a folder: writing to it fails like a read-only clear_refs
    memory = speed.PeakMemory(torch.device("cpu"))
    memory.reset()
    assert memory.since_start and memory.kind == "peak_rss_since_start"
    block = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
    resident = resident_bytes()
    assert resident - COUNTER_SLACK <= memory.peak() < 64 * resident  # bytes: KiB taken as bytes is 1024x less
    del block


STATUS = "Name:\tpython\nVmPeak:\t 999999 kB\nVmHWM:\t    1500 kB\nVmRSS:\t    1200 kB\n"


def test_peak_and_current_memory_read_their_lines_of_proc_status(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """VmHWM is the peak and VmRSS the current size, in KiB (not VmPeak, the virtual size); reset writes 5."""
    status, clear_refs = tmp_path / "status", tmp_path / "clear_refs"
    status.write_text(STATUS)
    monkeypatch.setattr(speed, "_STATUS", status)
    monkeypatch.setattr(speed, "_CLEAR_REFS", clear_refs)
    memory = speed.PeakMemory(torch.device("cpu"))
    memory.reset()
    assert clear_refs.read_text() == "5"  # the kernel's "reset the peak resident size"
    assert memory.peak() == 1500 * 1024 and memory.kind == "peak_rss" and not memory.since_start
    assert speed.current_memory(torch.device("cpu")) == 1200 * 1024


def test_without_proc_status_current_memory_is_unknown_and_the_peak_counts_since_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(speed, "_STATUS", tmp_path / "absent")
    monkeypatch.setattr(speed, "_CLEAR_REFS", tmp_path / "clear_refs")
    assert speed.current_memory(torch.device("cpu")) is None
    memory = speed.PeakMemory(torch.device("cpu"))
    memory.reset()
    assert memory.peak() > 0  # ru_maxrss instead
    assert memory.since_start and memory.kind == "peak_rss_since_start"
