"""Choosing each image's class among candidates: hand-made embeddings, an exact gather, clear errors."""

from __future__ import annotations

import pytest
import torch

from anomalib_adaclip.model.class_choice import check_candidates, choose_classes, class_prototypes, select_per_image


def test_each_image_takes_the_closest_prototype() -> None:
    # Class 0: normal (1, 0) and abnormal (0.6, 0.8); class 1: normal (0, 1) and abnormal (0.8, 0.6).
    text = torch.tensor([[[1.0, 0.6], [0.0, 0.8]], [[0.0, 0.8], [1.0, 0.6]]])  # [C=2, D=2, states=2]
    prototypes = class_prototypes(text)
    # the sums (1.6, 0.8) and (0.8, 1.6), normalised: (2, 1) / sqrt(5) and (1, 2) / sqrt(5)
    torch.testing.assert_close(prototypes, torch.tensor([[2.0, 1.0], [1.0, 2.0]]) / 5**0.5)
    images = torch.tensor([[2.0, 0.1], [0.1, 3.0], [1.0, 1.0]])  # the third is a tie: the first candidate wins
    assert choose_classes(images, prototypes).tolist() == [0, 1, 0]


def test_select_per_image_gathers_exactly() -> None:
    per_class = [torch.randn(4, 5, 2) for _ in range(3)]
    index = torch.tensor([2, 0, 1, 2])
    expected = torch.stack([per_class[int(c)][b] for b, c in enumerate(index)])
    assert torch.equal(select_per_image(per_class, index), expected)


@pytest.mark.parametrize(
    ("candidates", "error", "message"),
    [
        ("bottle", TypeError, "list of names"),
        ([], ValueError, "at least one"),
        (["bottle", 3], TypeError, "must be a string"),
        (["bottle", "screw", "bottle"], ValueError, "more than once"),
    ],
)
def test_bad_candidates_are_clear_errors(candidates: object, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        check_candidates(candidates)


def test_the_model_scores_each_image_as_if_told_its_chosen_class(make_model) -> None:
    torch.manual_seed(0)
    model = make_model()
    images = torch.randn(3, 3, model.image_size, model.image_size)
    candidates = ["bottle", "screw", "tire"]
    names = model.choose_classes(images, candidates)
    with torch.no_grad():
        chosen = model(images, choose_from=candidates)
        told = model(images, names)
    assert torch.equal(chosen.pred_score, told.pred_score) and torch.equal(chosen.anomaly_map, told.anomaly_map)
    with pytest.raises(ValueError, match="not both"):
        model(images, names, choose_from=candidates)


def test_export_class_names_are_checked_when_set() -> None:
    from anomalib_adaclip import AdaCLIP
    from tests.conftest import MICRO_BACKBONE

    model = AdaCLIP(
        backbone=MICRO_BACKBONE, backbone_weights=None, image_size=112, classes={"export_names": ["a", "b"]}
    )
    assert model.class_names.export_names == ("a", "b")
    with pytest.raises(ValueError, match="more than once"):
        model.set_export_class_names(["a", "a"])
    with pytest.raises(ValueError, match="non-empty"):
        model.set_export_class_names(["a", " "])
    model.set_export_class_names(None)
    assert model.class_names.export_names is None


def test_few_shot_maps_follow_the_chosen_class(make_model) -> None:
    from anomalib_adaclip.config import FewShotConfig

    model = make_model(few_shot=FewShotConfig(k_shot=2, augment=False))
    torch.manual_seed(1)
    candidates = ["bottle", "screw"]
    for name in candidates:
        model.add_references(torch.randn(2, 3, model.image_size, model.image_size), name)
    images = torch.randn(2, 3, model.image_size, model.image_size)
    names = model.choose_classes(images, candidates)
    with torch.no_grad():
        chosen = model(images, choose_from=candidates)
        told = model(images, names)
    assert torch.equal(chosen.pred_score, told.pred_score) and torch.equal(chosen.anomaly_map, told.anomaly_map)
    with pytest.raises(KeyError, match="no reference images"):
        model(images, choose_from=[*candidates, "tire"])
