"""line/scorer.py: the interface the line needs, the factory by name, and the thin adapter to the rarity scorer."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from anomalib.data import InferenceBatch

import anomalib_adaclip
from anomalib_adaclip.line import LineScorer, RarityLineScorer, ScorerError, load_scorer
from anomalib_adaclip.model.rarity import ScoredImage
from tests.conftest import MICRO_BACKBONE
from tests.helpers import IMAGE_SIZE, PatchMemoryScorer


def test_a_factory_by_import_path_builds_a_line_scorer() -> None:
    scorer = load_scorer("tests.helpers:PatchMemoryScorer", {"image_size": 32, "patch": 8})
    assert isinstance(scorer, PatchMemoryScorer) and isinstance(scorer, LineScorer)
    assert (scorer.image_size, scorer.patch) == (32, 8)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("PatchMemoryScorer", "expected 'rarity', 'adaclip' or 'package.module:factory'"),
        ("tests.helpers:NoSuchScorer", "cannot be imported"),
        ("no_such_package.module:factory", "cannot be imported"),
        ("tests.helpers:tire_good_images", "built a list, which lacks image_size, score, admit"),
    ],
)
def test_a_scorer_that_cannot_be_built_is_named(spec: str, message: str) -> None:
    with pytest.raises(ScorerError, match=message):
        load_scorer(spec)


def test_the_rarity_scorer_is_named_when_missing_or_without_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(anomalib_adaclip, "RarityScoring", raising=False)
    with pytest.raises(ScorerError, match="not part of this installation"):
        load_scorer("rarity", {"image_size": 224})
    monkeypatch.setattr(anomalib_adaclip, "RarityScoring", object, raising=False)
    with pytest.raises(ScorerError, match="at least backbone, backbone_weights and image_size"):
        load_scorer("rarity", {})


class StubRarity:
    """The rarity scorer's admission API as the adapter uses it (``score`` -> ``ScoredImage``, ``commit``, ``reset``,
    ``bank``, ``load_bank``): a bank that counts the images admitted."""

    def __init__(self, **settings: Any) -> None:
        self.settings = settings
        self.image_size = settings["image_size"]
        self.bank = torch.zeros(0)
        self.resets = 0

    def reset(self) -> None:
        self.resets += 1
        self.bank = torch.zeros(0)

    def score(self, image: torch.Tensor) -> ScoredImage:
        score = float(image.mean()) + len(self.bank)
        output = InferenceBatch(pred_score=torch.tensor([score]), anomaly_map=torch.full((1, 2, 2), score))
        return ScoredImage(output, torch.cat([self.bank, image.mean().reshape(1)]), self.bank)

    def commit(self, scored: ScoredImage) -> None:
        if scored.base is not self.bank:
            raise ValueError("another state of the bank")
        self.bank = scored.bank

    def load_bank(self, state: dict[str, torch.Tensor]) -> None:
        self.bank = state["bank"].clone()


def test_the_rarity_adapter_keeps_one_bank_per_class_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(anomalib_adaclip, "RarityScoring", StubRarity, raising=False)
    monkeypatch.setattr(torch.Tensor, "state_dict", lambda self: {"bank": self.clone()}, raising=False)
    scorer = load_scorer("rarity", {"image_size": 8, "topk": 3})
    assert isinstance(scorer, RarityLineScorer) and scorer.image_size == 8
    assert scorer.scorer.settings == {"image_size": 8, "topk": 3}  # one scorer (one CLIP), a bank per class name
    image = torch.ones(1, 3, 8, 8)
    first = scorer.score(image, "tire")
    assert first.score == 1.0 and first.anomaly_map.shape == (2, 2)
    assert scorer.score(image, "tire").score == 1.0  # scoring changes nothing
    scorer.admit(first.pending)
    assert scorer.score(image, "tire").score == 2.0  # the tire bank holds one image
    assert scorer.score(image, "bottle").score == 1.0  # the bottle bank none
    with pytest.raises(ValueError, match="another state of the bank"):
        scorer.admit(first.pending)  # scored against the empty bank, which is gone
    state = scorer.state_dict()
    assert list(state) == ["bottle", "tire"]  # the empty bottle bank too
    restored = RarityLineScorer(StubRarity(image_size=8))
    restored.load_state_dict(state)
    assert restored.score(image, "tire").score == 2.0 and torch.equal(restored.banks["tire"], torch.ones(1))


def test_a_normal_reference_image_has_no_score_and_the_line_never_judges_it() -> None:
    stub = StubRarity(image_size=8)
    stub.score = lambda image: ScoredImage(None, torch.ones(1), stub.bank)  # a k_shot image: no outputs
    result = RarityLineScorer(stub).score(torch.ones(1, 3, 8, 8), "tire")
    assert math.isnan(result.score) and result.anomaly_map is None


def test_the_adaclip_scorer_needs_the_rarity_group(micro_weights: Path) -> None:
    with pytest.raises(ScorerError, match="needs the rarity group"):
        load_scorer("adaclip", {**micro_settings(micro_weights)})
    with pytest.raises(ScorerError, match="at least backbone, backbone_weights and image_size"):
        load_scorer("adaclip", {})


def micro_settings(weights: Path) -> dict[str, Any]:
    return {"backbone": MICRO_BACKBONE, "backbone_weights": str(weights), "image_size": IMAGE_SIZE}
