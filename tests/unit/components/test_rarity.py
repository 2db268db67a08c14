"""components/rarity.py: the rarity part on its own, told what it needs (the group and AdaCLIP's torch model).

The truths: RareCLIP's scorer run by hand on each class name's images alone (one bank per class name), the same part
restored from a snapshot (bit for bit), and the documented scale of the fusion (hand-computed).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from anomalib.data import InferenceBatch

from anomalib_adaclip.components.rarity import (
    RARITY_MAP_SCALE,
    RARITY_SCORE_SCALE,
    RarityBanks,
    check_rarity_scoring,
    fuse,
)
from anomalib_adaclip.config import RarityGroupConfig
from tests.helpers import make_adaclip

SCORING = {"text_layers": [2, 4], "rarity_layers": [1, 3], "sigma": 1.0, "rs_freq": 2, "keep_ftime": 2.0}


@pytest.fixture(scope="module")
def host(micro_weights: Path):
    """AdaCLIP's torch model on the micro CLIP, in eval mode."""
    return make_adaclip(micro_weights).model.eval()


def part(host, **group) -> RarityBanks:
    return RarityBanks(RarityGroupConfig(**({"text_branch": "adaclip", "scoring": SCORING} | group)), host)


def test_one_bank_per_class_name_images_in_the_order_they_come(host) -> None:
    torch.manual_seed(1)
    images = torch.randn(6, 3, 112, 112)
    names = ["a", "b", "a", "a", "b", "a"]
    mixed = part(host).score_images(host, images, names)
    alone_a = part(host).score_images(host, images[[0, 2, 3, 5]], "a")
    alone_b = part(host).score_images(host, images[[1, 4]], "b")
    assert torch.equal(mixed.pred_score[[0, 2, 3, 5]], alone_a.pred_score)
    assert torch.equal(mixed.pred_score[[1, 4]], alone_b.pred_score)
    assert torch.equal(mixed.anomaly_map[[0, 2, 3, 5]], alone_a.anomaly_map)
    one_by_one = part(host)
    scores = torch.cat([one_by_one.score_images(host, images[i : i + 1], names[i]).pred_score for i in range(6)])
    assert torch.equal(scores, mixed.pred_score)  # a batch is its images in order


def test_score_changes_nothing_admit_does_and_a_stale_image_is_refused(host) -> None:
    banks = part(host)
    image = torch.randn(2, 3, 112, 112)
    first = banks.score(host, image[:1], "a")
    again = banks.score(host, image[:1], "a")
    assert torch.equal(first.output.pred_score, again.output.pred_score) and banks.banks["a"].seen == 0
    banks.admit(first)
    assert banks.banks["a"].seen == 1
    with pytest.raises(ValueError, match="another state of the bank of 'a'"):
        banks.admit(again)


def test_a_snapshot_of_the_banks_continues_bit_for_bit(host, tmp_path: Path) -> None:
    torch.manual_seed(2)
    images = torch.randn(8, 3, 112, 112)
    names = ["a", "b"] * 4
    whole = part(host).score_images(host, images, names)
    first = part(host)
    first.score_images(host, images[:4], names[:4])
    torch.save(first.state_dict(), tmp_path / "banks.pt")
    restored = part(host)
    restored.load_state_dict(torch.load(tmp_path / "banks.pt", weights_only=True))
    assert sorted(restored.banks) == ["a", "b"]
    rest = restored.score_images(host, images[4:], names[4:])
    assert torch.equal(rest.pred_score, whole.pred_score[4:]) and torch.equal(rest.anomaly_map, whole.anomaly_map[4:])


def test_fusion_on_the_documented_scale() -> None:
    adaclip = InferenceBatch(pred_score=torch.tensor([0.2]), anomaly_map=torch.full((1, 2, 2), 0.4))
    rarity = InferenceBatch(pred_score=torch.tensor([RARITY_SCORE_SCALE]), anomaly_map=torch.full((1, 2, 2), 5 / 3))
    assert fuse(adaclip, rarity, 0.0).pred_score is adaclip.pred_score  # AdaCLIP's tensors themselves
    alone = fuse(adaclip, rarity, 1.0)  # RareCLIP's largest values land on 1
    torch.testing.assert_close(alone.pred_score, torch.tensor([1.0]))
    torch.testing.assert_close(alone.anomaly_map, torch.ones(1, 2, 2))
    half = fuse(adaclip, rarity, 0.5)
    torch.testing.assert_close(half.pred_score, torch.tensor([0.6]))
    torch.testing.assert_close(half.anomaly_map, torch.full((1, 2, 2), 0.7))
    assert RARITY_MAP_SCALE == 5 / 3 and RARITY_SCORE_SCALE == 8 / 3


def test_rarity_with_mutual_scoring_or_tiling_is_refused() -> None:
    check_rarity_scoring(True, False, False)
    with pytest.raises(ValueError, match="rarity cannot be combined with mutual"):
        check_rarity_scoring(True, True, False)
    with pytest.raises(ValueError, match="rarity cannot be combined with tiling"):
        check_rarity_scoring(True, False, True)
