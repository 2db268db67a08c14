"""AdaCLIPModel against the outputs of the authors' code (github.com/caoyunkang/AdaCLIP; see tests/data/README.md)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from anomalib_adaclip import AdaCLIPModel
from tests.conftest import REFERENCE_FILE, VARIANT_FILES, load_reference, reference_model

ATOL = 1e-4


def _batches(data: dict[str, Any]) -> list[tuple[slice, torch.Tensor, list[str]]]:
    """Each image alone, then all four as one batch."""
    images, classes = data["images"], data["classes"]
    singles = [(slice(i, i + 1), images[i : i + 1], classes[i : i + 1]) for i in range(len(classes))]
    return [*singles, (slice(None), images, classes)]


def _run(model: AdaCLIPModel, images: torch.Tensor, classes: list[str], data: dict[str, Any], index: slice) -> dict:
    """Every output the reference holds, computed by our model for one batch."""
    with torch.no_grad():
        features = model.features(images, classes)
        output = model(images, classes)
        result = {
            "features": features,
            "output": output,
            "unblurred": model.anomaly_map(features, blur=False),
        }
        use_hsf = model.use_hsf
        model.use_hsf = False
        result["no_hsf"] = model.image_probabilities(features)[:, 1]
        model.use_hsf = use_hsf
        if use_hsf:
            labels = torch.stack(data["outputs"]["hsf_labels"])[index]
            result["with_labels"] = model.image_probabilities(features, hsf_labels=labels)[:, 1]
        model.train()
        result["train"] = model(images, classes)
        model.eval()
    return result


@pytest.fixture(scope="module", params=(REFERENCE_FILE, *VARIANT_FILES))
def case(request: pytest.FixtureRequest) -> tuple[dict[str, Any], AdaCLIPModel, list[tuple[slice, dict]]]:
    data = load_reference(request.param)
    model = reference_model(data)
    runs = [(index, _run(model, images, classes, data, index)) for index, images, classes in _batches(data)]
    return data, model, runs


def _stack(data: dict[str, Any], key: str) -> torch.Tensor:
    return torch.stack(data["outputs"][key])


def test_features_match_reference(case: tuple) -> None:
    data, _, runs = case
    for index, run in runs:
        features = run["features"]
        torch.testing.assert_close(features.text_features, _stack(data, "text_features")[index], atol=ATOL, rtol=0)
        torch.testing.assert_close(features.image_features, _stack(data, "proj_cls")[index], atol=ATOL, rtol=0)


def test_maps_match_reference(case: tuple) -> None:
    data, _, runs = case
    reference_maps = _stack(data, "test_map")
    blurred_reference = torch.from_numpy(
        np.stack([gaussian_filter(m.double().numpy(), sigma=4) for m in reference_maps]),
    ).float()
    for index, run in runs:
        torch.testing.assert_close(run["output"].anomaly_map, blurred_reference[index], atol=ATOL, rtol=0)
        torch.testing.assert_close(run["unblurred"], reference_maps[index], atol=ATOL, rtol=0)


def test_scores_match_reference(case: tuple) -> None:
    data, model, runs = case
    for index, run in runs:
        torch.testing.assert_close(run["no_hsf"], _stack(data, "test_score_no_hsf")[index], atol=ATOL, rtol=0)
        if model.use_hsf:
            reference_scores = _stack(data, "test_score")[index]
            torch.testing.assert_close(run["with_labels"], reference_scores, atol=ATOL, rtol=0)
            torch.testing.assert_close(run["output"].pred_score, reference_scores, atol=0.02, rtol=0)


def test_training_outputs_match_reference(case: tuple) -> None:
    data, _, runs = case
    for index, run in runs:
        torch.testing.assert_close(run["train"].layer_maps, _stack(data, "train_maps")[index], atol=ATOL, rtol=0)
        torch.testing.assert_close(run["train"].image_probs, _stack(data, "train_score")[index], atol=0.02, rtol=0)


def test_reference_checkpoint_keys_cover_the_model(case: tuple) -> None:
    """The fixture checkpoints hold exactly the tensors our model trains for that setting."""
    data, model, _ = case
    released = {key.removeprefix("clip_model.") for key in data["adaclip_checkpoint"]}
    assert released == set(model.trainable_state_dict())
