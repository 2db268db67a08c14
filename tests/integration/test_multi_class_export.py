"""A multi-class export: several class names in one file, each image scored with the class CLIP picks.

The truth is independent of the choice's code: the images are made, by gradient ascent on their pixels, to look
like one candidate each to the random CLIP (its open_clip ``encode_image`` against the prompt ensemble of each name
through open_clip's ``encode_text``), and the expected outputs are the torch model's, run with that class name per
image. anomalib's ``TorchInferencer`` and ``OpenVINOInferencer`` feed the image only, as in production.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from anomalib.deploy import OpenVINOInferencer, TorchInferencer
from open_clip.tokenizer import SimpleTokenizer
from torch.nn import functional as F  # noqa: N812

from anomalib_adaclip import AdaCLIP
from tests.conftest import NANO_BACKBONE
from tests.helpers import make_engine

pytest.importorskip("openvino")

CANDIDATES = ["tire", "bottle", "screw"]
# Per image; the torch inferencer runs the same graph as torch (bitwise on one host), OpenVINO its own kernels.
TORCH_ATOL = 1e-6
OPENVINO_SCORE_ATOL, OPENVINO_MAP_ATOL = 1e-5, 1e-4
OPENVINO_FP32 = {"INFERENCE_PRECISION_HINT": "f32"}


def clip_prototypes(model: AdaCLIP) -> torch.Tensor:
    """Each candidate's class prototype through open_clip itself: its sentences' mean embeddings per state, summed."""
    clip, tokenizer = model.model.clip, SimpleTokenizer(context_length=77)
    prototypes = []
    for name in CANDIDATES:
        states = [
            F.normalize(F.normalize(clip.encode_text(tokenizer(sentences)), dim=-1).mean(0), dim=-1)
            for sentences in model.model.ensemble.sentences(name)
        ]
        prototypes.append(F.normalize(states[0] + states[1], dim=-1))
    return torch.stack(prototypes)


def images_like(model: AdaCLIP, prototypes: torch.Tensor, target: int, generator: torch.Generator) -> torch.Tensor:
    """A raw 130 x 150 image in [0, 1] that this CLIP finds closest to candidate ``target``, by a clear margin."""
    logits = torch.randn(1, 3, 130, 150, generator=generator).requires_grad_()
    optimiser = torch.optim.Adam([logits], lr=0.3)
    for _ in range(40):
        similarity = F.normalize(model.model.clip.encode_image(model.pre_processor(torch.sigmoid(logits))), dim=-1)
        similarity = similarity @ prototypes.T
        others = torch.cat([similarity[0, :target], similarity[0, target + 1 :]])
        margin = similarity[0, target] - others.max()
        if margin > 0.05:
            break
        optimiser.zero_grad()
        (-margin).backward()
        optimiser.step()
    return torch.sigmoid(logits).detach()


@pytest.mark.slow  # ONNX and OpenVINO exports of several classes, about 35 s; the class choice itself is unit-tested
def test_one_export_serves_several_classes_in_both_inferencers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    model = AdaCLIP(
        backbone=NANO_BACKBONE,
        backbone_weights=None,
        image_size=112,
        prompts={"depth": 2, "use_hsf": False},
        classes={"export_names": CANDIDATES},
    ).eval()
    with torch.no_grad():
        prototypes = clip_prototypes(model)
    generator = torch.Generator().manual_seed(0)
    targets = [2, 0, 1, 0]
    images = torch.cat([images_like(model, prototypes, target, generator) for target in targets])
    with torch.no_grad():
        similarity = F.normalize(model.model.clip.encode_image(model.pre_processor(images)), dim=-1) @ prototypes.T
    assert similarity.argmax(-1).tolist() == targets  # the premise: every candidate is some image's class
    expected_names = [CANDIDATES[target] for target in targets]
    assert model.model.choose_classes(model.pre_processor(images), CANDIDATES) == expected_names

    with torch.no_grad():  # the truth: the torch model told each image's class name
        expected = model.post_processor(model.model(model.pre_processor(images), expected_names))
        single = model.post_processor(model.model(model.pre_processor(images), "tire"))
    # The class matters: scored as a tire, every other image's map moves by far more than the tolerances.
    moved = (expected.anomaly_map - single.anomaly_map).abs().amax(dim=(1, 2))[torch.tensor(targets) != 0]
    print(f"largest map change per image when scored as a tire instead: {moved.tolist()}")
    assert moved.min() > 10 * OPENVINO_MAP_ATOL

    engine = make_engine(tmp_path)
    torch_path = engine.export(model, export_type="torch", export_root=tmp_path)
    openvino_path = engine.export(model, export_type="openvino", export_root=tmp_path)
    monkeypatch.setenv("TRUST_REMOTE_CODE", "1")
    monkeypatch.chdir(tmp_path)  # OpenVINOInferencer makes an ./openvino_cache folder
    with torch.no_grad():
        from_torch = TorchInferencer(torch_path, device="cpu").predict(images)
    # fp32: on CPUs with native bf16 OpenVINO would otherwise compute in bf16 (docs/source/explanations/precision.md).
    from_openvino = OpenVINOInferencer(openvino_path, device="CPU", config=OPENVINO_FP32).predict(images)

    deviations = {}
    for runtime, prediction, score_atol, map_atol in (
        ("torch", from_torch, TORCH_ATOL, TORCH_ATOL),
        ("openvino", from_openvino, OPENVINO_SCORE_ATOL, OPENVINO_MAP_ATOL),
    ):
        score = torch.as_tensor(prediction.pred_score).reshape(-1)
        anomaly_map = torch.as_tensor(prediction.anomaly_map).reshape(expected.anomaly_map.shape)
        torch.testing.assert_close(score, expected.pred_score, rtol=0, atol=score_atol)
        torch.testing.assert_close(anomaly_map, expected.anomaly_map, rtol=0, atol=map_atol)
        deviations[runtime] = (
            float((score - expected.pred_score).abs().max()),
            float((anomaly_map - expected.anomaly_map).abs().max()),
        )
    print(f"multi-class export vs torch with the class name per image, max |score|, |map| diff: {deviations}")
