"""Export of AdaCLIP through anomalib: ONNX (checked against torch with onnxruntime) and OpenVINO where installed.

The exported graph is ``AdaCLIP.forward``: raw ``[B, 3, H, W]`` images in [0, 1] -> resize + CLIP normalisation ->
AdaCLIPModel with the class name's prompts as constants -> post-processing. Tolerances: onnxruntime and torch agree
on the probabilities within 1e-5 (image score) and 1e-4 (anomaly map); labels and masks agree wherever the value is
farther than that from the threshold.

The default suite exports a two-block CLIP without HSF (the k-means unrolls into a large graph whose export takes
minutes on two CPU cores); ``-m slow`` exports the full default setting, HSF included, through the real CLI.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from open_clip.model import CLIP

from anomalib_adaclip import AdaCLIP, AdaCLIPModel
from anomalib_adaclip.weights import save_checkpoint
from tests.conftest import MICRO_BACKBONE, NANO_BACKBONE
from tests.helpers import assert_onnx_matches_torch, console_script, explain, make_engine, run

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def test_onnx_export_matches_torch_with_dynamic_batch(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = AdaCLIP(
        backbone=NANO_BACKBONE,
        backbone_weights=None,
        image_size=112,
        prompts={"depth": 2, "use_hsf": False},
        classes={"name": "tire"},
    )
    # Learned statistics, as after a validation in the adaptive mode: the graph must normalise with them.
    post = model.post_processor
    post.learned_threshold("image").fill_(0.5)
    post.learned_threshold("pixel").fill_(0.5)
    for name, value in {"image_min": 0.45, "image_max": 0.56, "pixel_min": 0.3, "pixel_max": 0.7}.items():
        getattr(post, name).fill_(value)
    engine = make_engine(tmp_path)
    path = engine.export(model, export_type="onnx", export_root=tmp_path)
    assert path == tmp_path / "weights" / "onnx" / "model.onnx"
    graph = onnx.load(str(path), load_external_data=False)
    assert {entry.version for entry in graph.opset_import if entry.domain in {"", "ai.onnx"}} == {18}
    input_shape = [dim.dim_param or dim.dim_value for dim in graph.graph.input[0].type.tensor_type.shape.dim]
    assert input_shape == ["batch_size", 3, "height", "width"]
    deviations = assert_onnx_matches_torch(path, model)
    print(f"ONNX vs torch, no HSF, max |deviation|: {deviations}")


def test_openvino_export(tmp_path: Path) -> None:
    """OpenVINO is in the test extra (``pip install -e ".[test]"``), so this runs, never skips."""
    torch.manual_seed(0)
    model = AdaCLIP(
        backbone=NANO_BACKBONE, backbone_weights=None, image_size=112, prompts={"depth": 2, "use_hsf": False}
    )
    engine = make_engine(tmp_path)
    path = engine.export(model, export_type="openvino", export_root=tmp_path)
    assert path.suffix == ".xml" and path.is_file()
    assert path.with_suffix(".bin").is_file()


@pytest.mark.slow
def test_cli_onnx_export_with_hsf_matches_torch(tmp_path: Path) -> None:
    """``anomalib export --export_type onnx`` of the default setting (HSF k-means in the graph), then onnxruntime."""
    torch.manual_seed(0)
    weights = tmp_path / "micro_clip.pt"
    torch.save(CLIP(**MICRO_BACKBONE).state_dict(), weights)
    reference = AdaCLIPModel(backbone=MICRO_BACKBONE, backbone_weights=str(weights), image_size=112)
    checkpoint = save_checkpoint(reference.trainable_state_dict(), reference.config.to_dict(), tmp_path / "prompts.pt")
    model_arguments = {
        "backbone": MICRO_BACKBONE,
        "backbone_weights": str(weights),
        "checkpoint": str(checkpoint),
        "image_size": 112,
        "classes.name": "tire",
    }
    command = [*console_script("anomalib"), "export", "--model", "anomalib_adaclip.AdaCLIP"]
    for key, value in model_arguments.items():
        command += [f"--model.{key}", json.dumps(value) if isinstance(value, dict) else str(value)]
    command += ["--export_type", "onnx", "--export_root", str(tmp_path / "export")]
    result = run(command, tmp_path)
    assert result.returncode == 0, explain(result)
    onnx_path = tmp_path / "export" / "weights" / "onnx" / "model.onnx"
    assert onnx_path.is_file()
    assert "No Adapter" not in result.stdout + result.stderr  # opset 18 by default: no failed down-conversion

    # The same model in Python: the flag --model.classes.name is the classes group's name.
    flat = {key: value for key, value in model_arguments.items() if "." not in key}
    model = AdaCLIP(**flat, classes={"name": model_arguments["classes.name"]})
    deviations = assert_onnx_matches_torch(onnx_path, model)
    print(f"ONNX vs torch, HSF on, max |deviation|: {deviations}")
    assert np.isfinite(list(deviations.values())).all()
