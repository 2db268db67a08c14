"""The group machinery of mutual scoring without a CLIP: the plan, the fusion's scale, and bad input refused."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from anomalib.data import InferenceBatch

from anomalib_adaclip import AdaCLIP
from anomalib_adaclip.components.export import check_exportable
from anomalib_adaclip.components.mutual_groups import (
    GroupBatchSampler,
    GroupPlan,
    MutualScoringError,
    assign_groups,
    fuse,
    plan_groups,
    score_fused_group,
)
from anomalib_adaclip.config import FewShotConfig, MutualGroupConfig, MutualScoringConfig
from tests.conftest import MICRO_BACKBONE, random_images


def test_a_class_is_split_into_near_equal_groups_of_consecutive_images() -> None:
    names = ["a"] * 33 + ["b"] * 15 + ["a"] * 2  # the last two a's come after the b's in the data set
    paths = [f"/data/{index:02d}.png" for index in range(len(names))]
    plan = plan_groups(paths, names, 32)
    a_indices = [*range(33), 48, 49]  # 35 images of a: 2 groups, 18 and 17, never 32 and 3
    assert plan.groups == (tuple(a_indices[:18]), tuple(a_indices[18:]), tuple(range(33, 48)))
    assert plan.key(1) == ("a", tuple(paths[index] for index in a_indices[18:]))
    assert plan_groups(paths[:15], ["x"] * 15, 8).groups == (tuple(range(8)), tuple(range(8, 15)))
    assert [len(group) for group in plan_groups(paths[:17], ["x"] * 17, 4).groups] == [4, 4, 3, 3, 3]
    # group_size=None: each class is one group whatever its size (MuSc's protocol).
    assert plan_groups(paths, names, None).groups == (tuple(a_indices), tuple(range(33, 48)))


@pytest.mark.parametrize("sizes", [[5, 5, 5], [4, 4, 4, 3], [20, 20], [17, 16, 15, 2, 2], [3]])
def test_every_group_goes_to_exactly_one_process_and_the_passes_add_up(sizes: list[int]) -> None:
    """For 1, 2 and 3 processes: each group once, the CLIP passes sum to the images, the loads as even as can be."""
    offsets = [sum(sizes[:number]) for number in range(len(sizes))]
    plan = GroupPlan(
        tuple(f"/{index}.png" for index in range(sum(sizes))),
        ("x",) * sum(sizes),
        tuple(tuple(range(offset, offset + size)) for offset, size in zip(offsets, sizes, strict=True)),
    )
    for world_size in (1, 2, 3):
        assigned = assign_groups(sizes, world_size)
        assert sorted(group for groups in assigned for group in groups) == list(range(len(sizes)))
        batches = [list(GroupBatchSampler(range(sum(sizes)), plan, groups)) for groups in assigned]
        indices = [index for batches_of_rank in batches for batch in batches_of_rank for index in batch]
        assert sorted(indices) == list(range(sum(sizes)))  # one CLIP pass per image in all
        assert sum(len(batches_of_rank) for batches_of_rank in batches) == len(sizes)  # one scoring per group
        loads = [sum(sizes[group] for group in groups) for groups in assigned]
        assert max(loads) - min(loads) <= max(sizes), (world_size, loads)
    assert assign_groups([5, 5, 5], 3) == [[0], [1], [2]]
    assert assign_groups([4, 4, 4, 3], 2) == [[0, 2], [1, 3]]  # 8 and 7 images
    assert assign_groups([4, 4, 4, 3], 3) == [[0, 3], [1], [2]]
    assert assign_groups([3], 2) == [[0], []]  # a process without a group


def test_a_resume_leaves_out_finished_groups_only() -> None:
    plan = plan_groups([f"/{index}.png" for index in range(10)], ["x"] * 10, 4)  # 4, 3, 3
    groups = [0, 1, 2]
    sampler = GroupBatchSampler(range(10), plan, groups)
    copy = GroupBatchSampler(range(10), plan, groups)  # Lightning's re-created copy shares the list
    assert sampler.leave_out({"/0.png", "/1.png", "/2.png", "/3.png", "/4.png"}) == 4  # group 1 is unfinished
    assert list(copy) == [[4, 5, 6], [7, 8, 9]] and len(copy) == 2


def test_a_class_with_one_image_is_refused_naming_the_class_and_the_image() -> None:
    with pytest.raises(MutualScoringError, match=r"class 'screw' has a single image: /data/screw/7\.png"):
        plan_groups(["/data/a.png", "/data/b.png", "/data/screw/7.png"], ["nut", "nut", "screw"], 8)


def test_groups_of_two_to_four_images_are_warned(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        plan_groups([f"/{index}.png" for index in range(11)], ["a"] * 7 + ["b"] * 4, 8)
    assert "groups of 4 image(s)" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        plan_groups([f"/{index}.png" for index in range(10)], ["a"] * 10, 8)
    assert not caplog.records  # 5 + 5


def _batch(scores: list[float], level: float) -> InferenceBatch:
    return InferenceBatch(pred_score=torch.tensor(scores), anomaly_map=torch.full((len(scores), 2, 2), level))


def test_fusion_is_exact_at_both_ends_and_musc_distances_are_halved() -> None:
    adaclip, musc = _batch([0.2, 0.9], 0.4), _batch([0.0, 1.0], 1.2)  # MuSc's map holds distances in [0, 2]
    settings = MutualScoringConfig(feature_layers=[1])
    zero = fuse(adaclip, musc, 0.0, settings)
    assert zero.pred_score is adaclip.pred_score and zero.anomaly_map is adaclip.anomaly_map
    one = fuse(adaclip, musc, 1.0, settings)
    assert torch.equal(one.pred_score, musc.pred_score)  # RsCIN's score is already in [0, 1]
    assert torch.equal(one.anomaly_map, torch.full((2, 2, 2), 0.6))
    quarter = fuse(adaclip, musc, 0.25, settings)
    assert torch.allclose(quarter.pred_score, torch.tensor([0.75 * 0.2, 0.75 * 0.9 + 0.25]))
    assert torch.allclose(quarter.anomaly_map, torch.full((2, 2, 2), 0.75 * 0.4 + 0.25 * 0.6))
    # Without RsCIN MuSc's score is the map's maximum, a distance: halved like the map.
    plain = fuse(adaclip, _batch([1.2, 1.6], 1.6), 1.0, MutualScoringConfig(feature_layers=[1], rscin_k=[0]))
    assert torch.allclose(plain.pred_score, torch.tensor([0.6, 0.8]))


def test_images_of_another_size_in_a_group_are_refused() -> None:
    model = SimpleNamespace(image_size=112)  # refused before the model is used
    with pytest.raises(MutualScoringError, match=r"class 'tire'.*\(96, 96\).*112x112"):
        score_fused_group(model, torch.zeros(3, 3, 96, 96), "tire", MutualScoringConfig(feature_layers=[1]), 0.5)


def test_bad_settings_tiling_and_exports_are_refused() -> None:
    with pytest.raises(ValueError, match=r"mutual\.group_size must be an integer of at least 2"):
        MutualGroupConfig(group_size=1)
    with pytest.raises(ValueError, match=r"mutual.weight must be a number in \[0.0, 1.0\]"):
        MutualGroupConfig(weight=1.5)
    with pytest.raises(ValueError, match="mutual_scoring cannot be combined with tiling=True"):
        AdaCLIP(backbone_weights=None, tiling=True, mutual={})  # refused before a CLIP is built
    with pytest.raises(NotImplementedError, match=r"mutual scoring cannot be exported.*depends on which images"):
        check_exportable(tiling=False, mutual_scoring=True)


def test_groups_compose_with_few_shot_and_class_names(
    micro_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each class name is its own group; the AdaCLIP part is the few-shot model's own output; the fusion is linear."""
    from anomalib_adaclip import AdaCLIPModel, MutualScoring
    from anomalib_adaclip.components.mutual_groups import MutualGroupStage, mutual_settings

    torch.manual_seed(0)
    model = AdaCLIPModel(
        backbone=MICRO_BACKBONE, backbone_weights=str(micro_weights), image_size=112, few_shot=FewShotConfig(k_shot=1)
    ).eval()
    images = random_images(6, 112, seed=3)
    for name in ("nut", "screw"):
        model.add_references(random_images(1, 112, seed=len(name)), name)
    names = ["nut", "screw", "nut", "screw", "nut", "screw"]
    stage = MutualGroupStage(MutualGroupConfig(weight=0.25), mutual_settings(model), lambda path: "unused")
    fused = stage.score_tensors(model, images, names)

    musc = MutualScoring(
        backbone=MICRO_BACKBONE, backbone_weights=str(micro_weights), image_size=112, feature_layers=[1, 2, 3, 4]
    )
    with torch.no_grad():
        alone = model(images, names)
        for rows in ([0, 2, 4], [1, 3, 5]):
            expected = musc(images[rows])
            torch.testing.assert_close(
                fused.pred_score[rows], 0.75 * alone.pred_score[rows] + 0.25 * expected.pred_score, atol=1e-6, rtol=0
            )
            torch.testing.assert_close(
                fused.anomaly_map[rows],
                0.75 * alone.anomaly_map[rows] + 0.25 * expected.anomaly_map / 2,
                atol=1e-6,
                rtol=0,
            )
    # A group whose tokens exceed the memory limit goes through a temporary folder: the same numbers, nothing left.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    kept = score_fused_group(model, images[:4], "nut", stage.settings, 0.25)
    spilled = score_fused_group(model, images[:4], "nut", stage.settings, 0.25, spill_bytes=0)
    assert torch.equal(kept.pred_score, spilled.pred_score) and torch.equal(kept.anomaly_map, spilled.anomaly_map)
    assert not list(tmp_path.iterdir())
    with pytest.raises(MutualScoringError, match="class 'screw' has a single image: image 2"):
        stage.score_tensors(model, images[:3], ["nut", "nut", "screw"])


def test_mutual_settings_default_to_each_quarter_of_the_tower_and_are_read_only_when_mutual_scoring_is_on() -> None:
    """MuSc's default layers per depth, 1-based (24 -> [6, 12, 18, 24], 12 -> [3, 6, 9, 12]); a tower too short for four
    quarters keeps each block once; and a model without mutual scoring never derives them (any depth builds)."""
    from anomalib_adaclip.components.mutual_groups import mutual_settings

    for blocks, expected in ((24, [6, 12, 18, 24]), (12, [3, 6, 9, 12]), (4, [1, 2, 3, 4]), (2, [1, 2]), (1, [1])):
        model = SimpleNamespace(n_vision_blocks=blocks)  # the tower's depth is all the defaults read
        assert list(mutual_settings(model).feature_layers) == expected, blocks
    two_blocks = {**MICRO_BACKBONE, "vision_cfg": {**MICRO_BACKBONE["vision_cfg"], "layers": 2}}
    assert (
        AdaCLIP(backbone=two_blocks, backbone_weights=None, image_size=112, prompts={"depth": 1}).mutual_groups is None
    )
