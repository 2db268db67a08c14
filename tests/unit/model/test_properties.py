"""Property-based tests of the torch API: any batch, image size (a multiple of the patch size), class names and pixel
values give finite maps and scores of the right shapes, in [0, 1]; the batch never changes an image's outputs."""

from __future__ import annotations

import functools
import string

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from anomalib_adaclip import AdaCLIP, AdaCLIPModel
from tests.conftest import MICRO_BACKBONE

PATCH = MICRO_BACKBONE["vision_cfg"]["patch_size"]
MIN_BITWISE_GRID = 4
CHEAP = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])

class_names = st.text(alphabet=string.ascii_letters + string.digits + "_- äé螺", min_size=1, max_size=12).filter(
    str.strip
)


@functools.cache
def model(image_size: int, prompting_branch: str = "VL") -> AdaCLIPModel:
    torch.manual_seed(0)
    return AdaCLIPModel(
        backbone=MICRO_BACKBONE, backbone_weights=None, image_size=image_size, prompting_branch=prompting_branch
    ).eval()


def assert_valid(scores: torch.Tensor, maps: torch.Tensor, batch: int, height: int, width: int) -> None:
    assert scores.shape == (batch,) and maps.shape == (batch, height, width)
    for values in (scores, maps):
        assert torch.isfinite(values).all()
        assert float(values.min()) >= 0.0 and float(values.max()) <= 1.0


@CHEAP
@given(
    batch=st.integers(1, 3),
    grid=st.integers(1, 9),
    branch=st.sampled_from(["VL", "V", "L"]),
    names=st.lists(class_names, min_size=3, max_size=3),
    scale=st.sampled_from([0.0, 1.0, 30.0]),
    seed=st.integers(0, 2**16),
)
def test_outputs_are_finite_probabilities_of_the_right_shape(
    batch: int, grid: int, branch: str, names: list[str], scale: float, seed: int
) -> None:
    size = grid * PATCH  # from 1x1 to 9x9 patches: fewer patches than HSF's 5k included
    network = model(size, branch)
    images = scale * torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        output = network(images, names[:batch])
        assert_valid(output.pred_score, output.anomaly_map, batch, size, size)
        alone = network(images[-1:], names[batch - 1 : batch])
    # The batch does not change an image's outputs: bitwise on the CPU from 4x4 patches on; below, the token
    # products are too small for the CPU kernels to be batch-invariant (docs/source/guides/inputs.md, Determinism).
    tolerance = 0.0 if grid >= MIN_BITWISE_GRID else 1e-5
    torch.testing.assert_close(alone.pred_score, output.pred_score[-1:], rtol=0, atol=tolerance)
    torch.testing.assert_close(alone.anomaly_map, output.anomaly_map[-1:], rtol=0, atol=tolerance)


@functools.cache
def lightning_model() -> AdaCLIP:
    torch.manual_seed(0)
    return AdaCLIP(backbone=MICRO_BACKBONE, backbone_weights=None, image_size=112, classes={"name": "part"}).eval()


@CHEAP
@given(batch=st.integers(1, 2), height=st.integers(1, 300), width=st.integers(1, 300), seed=st.integers(0, 2**16))
def test_raw_images_of_any_size_give_probabilities_and_decisions(
    batch: int, height: int, width: int, seed: int
) -> None:
    """AdaCLIP.forward (export and TorchInferencer): raw RGB in [0, 1] of any size, resized by the pre-processor."""
    images = torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        output = lightning_model()(images)
    assert_valid(output.pred_score, output.anomaly_map.reshape(batch, 112, 112), batch, 112, 112)
    assert torch.equal(output.pred_label, output.pred_score > 0.5)
