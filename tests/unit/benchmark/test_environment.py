"""The environment report: the host, its instruction set, threads, versions and load, checked against the sources."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from anomalib_adaclip.benchmark import environment as env


def test_the_report_names_the_host_threads_versions_and_load() -> None:
    report = env.environment("cpu")
    assert report["device_name"] == report["cpu_name"] == env.cpu_name() and report["cpu_name"]
    assert report["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert report["cpu_count"] == os.cpu_count()
    assert report["torch_threads"] == torch.get_num_threads()
    assert report["torch_version"] == report["versions"]["torch"] == torch.__version__
    assert set(report["versions"]) == set(env.PACKAGES)  # every one of them is installed here
    assert len(report["load_average"]) == 3 and all(value >= 0 for value in report["load_average"])


def test_the_cpu_is_read_from_cpuinfo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Test CPU 9000\nflags\t\t: fpu avx2 avx512_bf16\n")
    monkeypatch.setattr(env, "_CPUINFO", cpuinfo)
    assert env.cpu_name() == "Test CPU 9000"
    assert env.cpu_has_native_bf16()
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Old CPU\nflags\t\t: fpu avx2\n")
    assert not env.cpu_has_native_bf16()
