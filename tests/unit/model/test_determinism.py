"""Determinism on the CPU: the same image gives bitwise the same map and score across runs, batch sizes, rebuilt models
and processes with the same thread count; across thread counts only within a tolerance (documentation: Determinism).

A matrix product with one row (one image) runs through another kernel than one with several rows, so AdaCLIP computes
its per-image rows (embedding projections, prompt generators, the CLS-only last block) one image at a time on the
CPU (:func:`anomalib_adaclip.model.blocks.per_image`); k-means uses fixed random draws that do not depend on the batch.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from anomalib_adaclip import AdaCLIPModel
from tests.conftest import MICRO_BACKBONE, PROJECT_ROOT

IMAGE_SIZE = 112
NAMES = ["bottle", "metal_nut", "bottle"]


def make_model(**overrides: object) -> AdaCLIPModel:
    torch.manual_seed(0)  # the CLIP's random weights, the prompts and the projections
    return AdaCLIPModel(backbone=MICRO_BACKBONE, backbone_weights=None, image_size=IMAGE_SIZE, **overrides).eval()


def images() -> torch.Tensor:
    return torch.randn(3, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(1))


def outputs(model: AdaCLIPModel, batch: torch.Tensor, names: list[str] | str) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        result = model(batch, names)
    return result.pred_score, result.anomaly_map


@pytest.mark.parametrize(
    "setting",
    [{}, {"prompting_branch": "V"}, {"prompting_type": "S"}, {"use_hsf": False, "blur_sigma": 0.0}],
    ids=["SD-VL-hsf", "vision-only", "static", "no-hsf-no-blur"],
)
def test_batch_of_three_equals_each_image_alone_bitwise(setting: dict) -> None:
    model = make_model(**setting)
    batch = images()
    scores, maps = outputs(model, batch, NAMES)
    for index in range(len(batch)):
        score, anomaly_map = outputs(model, batch[index : index + 1], [NAMES[index]])
        assert torch.equal(score, scores[index : index + 1]), index
        assert torch.equal(anomaly_map, maps[index : index + 1]), index


def test_same_input_same_outputs_across_calls_and_rebuilt_models() -> None:
    batch = images()
    first = outputs(make_model(), batch, NAMES)
    model = make_model()
    for _ in range(2):  # the second call reads the text caches
        again = outputs(model, batch, NAMES)
        assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))


CHILD = textwrap.dedent(
    """
    import sys
    import torch
    sys.path.insert(0, {root!r})
    from tests.unit.model.test_determinism import NAMES, images, make_model, outputs
    torch.set_num_threads({threads})
    torch.save(outputs(make_model(), images(), NAMES), {target!r})
    """
)


# PyTorch does not promise the same bits for another thread count: its CPU kernels may split a reduction (and so
# the order of its additions) by the number of threads. Measured on AMD EPYC (AVX-512, and with
# ATEN_CPU_CAPABILITY=avx2), 1 to 8 threads: maps differ by up to 1.5e-6, scores by up to 1.4e-8 between any two
# thread counts or instruction sets; the tolerance leaves a margin of about 7x.
CROSS_THREAD_ATOL = 1e-5


def _outputs_of_another_process(tmp_path: Path, threads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The outputs computed by a fresh interpreter that uses ``threads`` threads."""
    target = tmp_path / f"outputs_{threads}.pt"
    code = CHILD.format(root=str(PROJECT_ROOT), threads=threads, target=str(target))
    environment = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    subprocess.run([sys.executable, "-c", code], check=True, env=environment, timeout=300)
    return torch.load(target, weights_only=True)


def test_another_process_with_the_same_thread_count_computes_the_same_bits(tmp_path: Path) -> None:
    """A fresh interpreter with this process's thread count computes bitwise the same outputs."""
    theirs = _outputs_of_another_process(tmp_path, torch.get_num_threads())
    ours = outputs(make_model(), images(), NAMES)
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs, strict=True))


def test_another_process_with_one_thread_agrees_within_a_tolerance(tmp_path: Path) -> None:
    """With one thread (where this process may use several) the outputs agree within CROSS_THREAD_ATOL, not bitwise."""
    theirs = _outputs_of_another_process(tmp_path, 1)
    ours = outputs(make_model(), images(), NAMES)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=CROSS_THREAD_ATOL)
