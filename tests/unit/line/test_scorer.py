"""line/scorer.py: the interface the line needs, the factory by name, and the thin adapter to the rarity scorer."""

from __future__ import annotations

import types
from typing import Any

import pytest
import torch

import anomalib_adaclip
from anomalib_adaclip.line import LineScorer, RarityLineScorer, ScorerError, load_scorer
from tests.helpers import PatchMemoryScorer


def test_a_factory_by_import_path_builds_a_line_scorer() -> None:
    scorer = load_scorer("tests.helpers:PatchMemoryScorer", {"image_size": 32, "patch": 8})
    assert isinstance(scorer, PatchMemoryScorer) and isinstance(scorer, LineScorer)
    assert (scorer.image_size, scorer.patch) == (32, 8)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("PatchMemoryScorer", "expected 'rarity' or 'package.module:factory'"),
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
    """The rarity scorer's admission API as the adapter uses it: a bank that counts the images admitted."""

    def __init__(self, **settings: Any) -> None:
        self.settings = settings
        self.bank = torch.zeros(0)
        self.resets = 0

    def reset(self) -> None:
        self.resets += 1

    def score_pending(self, image: torch.Tensor) -> tuple[Any, torch.Tensor]:
        score = float(image.mean()) + len(self.bank)
        output = types.SimpleNamespace(pred_score=torch.tensor([score]), anomaly_map=torch.full((1, 2, 2), score))
        return output, image.mean().reshape(1)

    def admit(self, pending: torch.Tensor) -> None:
        self.bank = torch.cat([self.bank, pending])

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"bank": self.bank.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.bank = state["bank"].clone()


def test_the_rarity_adapter_keeps_one_bank_per_class_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(anomalib_adaclip, "RarityScoring", StubRarity, raising=False)
    scorer = load_scorer("rarity", {"image_size": 8, "topk": 3})
    assert isinstance(scorer, RarityLineScorer) and scorer.image_size == 8
    image = torch.ones(1, 3, 8, 8)
    first = scorer.score(image, "tire")
    assert first.score == 1.0 and first.anomaly_map.shape == (2, 2)
    scorer.admit(first.pending)
    assert scorer.score(image, "tire").score == 2.0  # the tire bank holds one image
    assert scorer.score(image, "bottle").score == 1.0  # the bottle bank none
    assert scorer.banks["tire"].settings == {"image_size": 8, "topk": 3} and scorer.banks["tire"].resets == 1
    state = scorer.state_dict()
    restored = RarityLineScorer(StubRarity, 8)
    restored.load_state_dict(state)
    assert restored.score(image, "tire").score == 2.0 and torch.equal(restored.banks["tire"].bank, torch.ones(1))
