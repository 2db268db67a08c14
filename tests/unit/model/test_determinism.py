"""Determinism on the CPU: the same image gives bitwise the same map and score across runs, batches and processes.

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


def test_another_process_with_one_thread_computes_the_same_bits(tmp_path: Path) -> None:
    """A fresh interpreter, with one thread where this process may use several, computes bitwise the same outputs."""
    target = tmp_path / "outputs.pt"
    code = CHILD.format(root=str(PROJECT_ROOT), threads=1, target=str(target))
    environment = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    subprocess.run([sys.executable, "-c", code], check=True, env=environment, timeout=300)
    theirs = torch.load(target, weights_only=True)
    ours = outputs(make_model(), images(), NAMES)
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs, strict=True))
