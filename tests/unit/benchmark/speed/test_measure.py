"""What every speed measurement shares (``benchmark/speed/measure.py``): arguments, the timing's arithmetic.

:func:`measure` is timed here on a clock of the test's own (each forward advances it by a known duration), so its
figures are worked out by hand; the real model's runs are in ``test_cli.py``.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from anomalib_adaclip.benchmark.speed import BenchmarkError
from tests.conftest import MICRO_BACKBONE

# The module itself: the package re-exports its function ``measure`` under the module's name.
measure = importlib.import_module("anomalib_adaclip.benchmark.speed.measure")


class FakeClocks:
    """A wall clock and a CPU clock that move only when a forward runs: by its scheduled seconds, and 0.5 s CPU."""

    def __init__(self, durations: list[float]) -> None:
        self.durations = list(durations)
        self.wall = self.cpu = 0.0
        self.calls: list[tuple[tuple[int, ...], list[str]]] = []
        self.images: list[torch.Tensor] = []

    def perf_counter(self) -> float:
        return self.wall

    def process_time(self) -> float:
        return self.cpu

    def forward(self, images: torch.Tensor, names: list[str]) -> None:
        self.calls.append((tuple(images.shape), names))
        self.images.append(images)
        self.wall += self.durations.pop(0)
        self.cpu += 0.5


def test_measure_times_the_batches_after_the_warm_up(monkeypatch: pytest.MonkeyPatch) -> None:
    clocks = FakeClocks([100.0, 1.0, 2.0, 4.0])  # one warm-up batch, then three timed ones
    monkeypatch.setattr(measure, "wall_clock", clocks.perf_counter)  # torch.utils.benchmark's clock
    monkeypatch.setattr(measure, "time", SimpleNamespace(process_time=clocks.process_time))
    model = SimpleNamespace(image_size=8)
    result = measure.measure(model, 2, 5, torch.device("cpu"), warmup=1, class_name="gear", forward=clocks.forward)
    assert clocks.calls == [((2, 3, 8, 8), ["gear", "gear"])] * 4  # ceil(5 / 2) = 3 timed batches, after 1
    assert all(torch.equal(images, clocks.images[0]) for images in clocks.images)  # the same images every time
    assert (result["batch_size"], result["batches"], result["images"]) == (2, 3, 6)
    assert result["seconds"] == 7.0  # 1 + 2 + 4: the warm-up's 100 s are not counted
    assert result["images_per_second"] == pytest.approx(6 / 7)
    assert result["seconds_per_image"] == pytest.approx(7 / 6)
    assert result["median_seconds_per_image"] == 1.0  # the median batch (2 s) over its 2 images
    assert result["cpu_seconds_per_image"] == 0.25  # 3 x 0.5 s over 6 images
    assert result["peak_memory_per_image_bytes"] == result["peak_memory_bytes"] / 2 > 0


def test_time_runs_times_each_run_on_torch_benchmarks_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    clocks = FakeClocks([3.0, 1.0, 2.0])
    monkeypatch.setattr(measure, "wall_clock", clocks.perf_counter)
    monkeypatch.setattr(measure, "time", SimpleNamespace(process_time=clocks.process_time))
    timing = measure.time_runs(lambda: clocks.forward(torch.zeros(1), ["x"]), runs=3)
    assert timing.seconds == (3.0, 1.0, 2.0) and timing.cpu_seconds == (0.5, 0.5, 0.5)
    assert (timing.total, timing.median, timing.cpu_total) == (6.0, 2.0, 1.5)
    from torch.utils import benchmark

    monkeypatch.undo()
    assert measure.wall_clock is benchmark.timer  # the clock of torch's Timer: it waits for the accelerator


def test_random_images_are_the_same_for_a_batch_size_and_differ_between_them() -> None:
    first = measure.random_images(3, 16, torch.device("cpu"))
    assert first.shape == (3, 3, 16, 16) and torch.equal(first, measure.random_images(3, 16, torch.device("cpu")))
    assert not torch.equal(first[:2], measure.random_images(2, 16, torch.device("cpu")))


def test_backbones_are_names_json_dicts_or_json_files(tmp_path: Path) -> None:
    assert measure.parse_backbone("  ViT-B-16 ") == "ViT-B-16"
    assert measure.parse_backbone(json.dumps(MICRO_BACKBONE)) == MICRO_BACKBONE
    path = tmp_path / "micro.json"
    path.write_text(json.dumps(MICRO_BACKBONE))
    assert measure.parse_backbone(str(path)) == MICRO_BACKBONE
    with pytest.raises(BenchmarkError, match="no such JSON file"):
        measure.parse_backbone(str(tmp_path / "absent.json"))
    with pytest.raises(BenchmarkError, match="looks like a JSON config dict but does not parse"):
        measure.parse_backbone('{"embed_dim": }')


def test_devices_are_the_cpu_or_an_available_gpu() -> None:
    assert measure.torch_device("cpu") == torch.device("cpu")
    with pytest.raises(BenchmarkError, match="is not a torch device"):
        measure.torch_device("gpu0")
    with pytest.raises(BenchmarkError, match="supports cpu and cuda devices"):
        measure.torch_device("meta")
    if not torch.cuda.is_available():
        with pytest.raises(BenchmarkError, match="CUDA is not available on this machine"):
            measure.torch_device("cuda:0")


def test_autocast_gives_the_precisions_dtype_and_fp32_leaves_it_alone() -> None:
    a, b = torch.ones(2, 2), torch.ones(2, 2)
    with measure.autocast(torch.device("cpu"), "fp32"):
        assert (a @ b).dtype == torch.float32
    with measure.autocast(torch.device("cpu"), "bf16"):
        assert (a @ b).dtype == torch.bfloat16


def test_gigabytes_are_decimal() -> None:
    assert measure.gigabytes(1.5e9) == "1.50 GB" and measure.gigabytes(2**30) == "1.07 GB"
