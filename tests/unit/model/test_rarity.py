"""RareCLIP's online rarity scoring: equal to the authors' outputs, its bank exact state, its rules and its parts."""

from __future__ import annotations

import copy
import dataclasses
import io
from typing import Any

import pytest
import torch

from anomalib_adaclip import RarityScoring, RarityScoringConfig
from anomalib_adaclip.model.rarity import (
    TextProjection,
    blur_kernel_size,
    load_tpb_weights,
    loose_similarity,
    neighbourhood_index,
    rareclip_sentences,
    sequential_coreset,
)
from anomalib_adaclip.weights.loading import CheckpointError
from tests.conftest import MICRO_BACKBONE, RARECLIP_FILE, load_reference, random_images, rarity_reference_scorer

TOLERANCE = 1e-4  # the issue's: maps and scores of the authors' code within 1e-4 at every step


@pytest.fixture(scope="module")
def reference() -> dict[str, Any]:
    return load_reference(RARECLIP_FILE)


@pytest.fixture(scope="module")
def scorer(reference: dict[str, Any]) -> RarityScoring:
    return rarity_reference_scorer(reference)


@pytest.fixture(scope="module")
def online_run(scorer: RarityScoring, reference: dict[str, Any]) -> dict[str, list[Any]]:
    """The 15 images scored one after another through the public call; the outputs and the bank after each."""
    scorer.reset()
    outputs, banks = [], []
    for image in reference["images"].split(1):
        outputs.append(scorer.step(image))
        banks.append(scorer.bank)
    return {"outputs": outputs, "banks": banks}


def _bytes(state: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def _states_equal(a: dict[str, Any], b: dict[str, Any]) -> bool:
    if a.keys() != b.keys():
        return False
    for key, x in a.items():
        y = b[key]
        if isinstance(x, torch.Tensor):
            if x.dtype != y.dtype or x.shape != y.shape or x.numpy().tobytes() != y.numpy().tobytes():
                return False
        elif x != y:
            return False
    return True


@pytest.fixture(scope="module")
def micro() -> RarityScoring:
    """A 4-block CLIP (fewer than the 12 blocks RareCLIP's tower needs), 112 px: 8x8 patches."""
    torch.manual_seed(0)
    return RarityScoring(
        MICRO_BACKBONE, None, 112, text_layers=[2, 4], rarity_layers=[1, 3], rs_freq=2, keep_ftime=1.5, topk=2
    )


def variant(scorer: RarityScoring, **changes: Any) -> RarityScoring:
    """The same scorer (shared CLIP, text features and TPB layers) with other settings and an empty bank."""
    other = copy.copy(scorer)
    other.settings = dataclasses.replace(scorer.settings, **changes)
    other.reset()
    return other


# ----------------------------------------------------------------------------------------------------------------------
# Equality with the authors' code
# ----------------------------------------------------------------------------------------------------------------------
def test_text_features_equal_the_reference(scorer: RarityScoring, reference: dict[str, Any]) -> None:
    assert torch.allclose(scorer.text_features, reference["text_features"], atol=1e-6)


def test_maps_and_scores_equal_the_reference_at_every_step(
    online_run: dict[str, list[Any]], reference: dict[str, Any]
) -> None:
    for index, output in enumerate(online_run["outputs"]):
        assert output.anomaly_map.shape == (1, 224, 224)
        map_error = (output.anomaly_map[0] - reference["maps"][index]).abs().max().item()
        score_error = (output.pred_score[0] - reference["scores"][index]).abs().item()
        assert map_error < TOLERANCE, (index, map_error)
        assert score_error < TOLERANCE, (index, score_error)


def test_the_bank_is_thinned_to_keep_ftime_images(online_run: dict[str, list[Any]]) -> None:
    # 16x16 patches, keep_ftime 3: the bank grows by 256 prototypes per image up to 768, then stays there.
    sizes = [bank.prototypes for bank in online_run["banks"]]
    assert sizes[:3] == [256, 512, 768]
    assert set(sizes[3:]) == {768}
    assert [bank.measures[1][3].shape[0] for bank in online_run["banks"]] == list(range(1, 16))
    assert [bank.scores.shape[0] for bank in online_run["banks"]] == list(range(1, 16))


# ----------------------------------------------------------------------------------------------------------------------
# The bank as exact state: snapshots, admission, scoring without updating
# ----------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("stop", [4, 9])
def test_a_restored_scorer_continues_bit_for_bit(
    scorer: RarityScoring, online_run: dict[str, list[Any]], reference: dict[str, Any], stop: int
) -> None:
    snapshot = torch.load(io.BytesIO(_bytes(online_run["banks"][stop].state_dict())), weights_only=True)
    scorer.reset()
    scorer.load_bank(snapshot)
    assert _states_equal(scorer.bank.state_dict(), online_run["banks"][stop].state_dict())
    for index in range(stop + 1, stop + 3):
        output = scorer.step(reference["images"][index : index + 1])
        expected = online_run["outputs"][index]
        assert torch.equal(output.anomaly_map, expected.anomaly_map), index
        assert torch.equal(output.pred_score, expected.pred_score), index
        assert _states_equal(scorer.bank.state_dict(), online_run["banks"][index].state_dict()), index


def test_an_image_not_admitted_leaves_the_bank_bitwise_as_before(
    scorer: RarityScoring, online_run: dict[str, list[Any]], reference: dict[str, Any]
) -> None:
    scorer.reset()
    scorer.load_bank(online_run["banks"][6].state_dict())
    before = _bytes(scorer.bank.state_dict())
    scored = scorer.score(reference["images"][7:8])
    assert _bytes(scorer.bank.state_dict()) == before  # scored, not admitted
    # Its outputs are those of the online mode, admitted or not.
    assert torch.equal(scored.output.pred_score, online_run["outputs"][7].pred_score)
    assert torch.equal(scored.output.anomaly_map, online_run["outputs"][7].anomaly_map)
    scorer.commit(scored)
    assert _states_equal(scorer.bank.state_dict(), online_run["banks"][7].state_dict())
    with pytest.raises(ValueError, match="another state of the bank"):
        scorer.commit(scored)  # a second commit of the same image would drop nothing but is stale


def test_scoring_without_updating_uses_the_bank_as_it_is(
    scorer: RarityScoring, online_run: dict[str, list[Any]], reference: dict[str, Any]
) -> None:
    scorer.reset()
    scorer.load_bank(online_run["banks"][5].state_dict())
    before = _bytes(scorer.bank.state_dict())
    offline = [scorer.step(reference["images"][i : i + 1], update=False) for i in (6, 7)]
    assert _bytes(scorer.bank.state_dict()) == before
    # Image 7 scored without image 6 in the bank differs from the online run.
    assert not torch.equal(offline[1].pred_score, online_run["outputs"][7].pred_score)
    # Scored again, the same image gives the same numbers: nothing was remembered.
    again = scorer.step(reference["images"][6:7], update=False)
    assert torch.equal(again.anomaly_map, offline[0].anomaly_map)


def test_without_an_update_the_first_image_leaves_the_bank_empty(
    scorer: RarityScoring, online_run: dict[str, list[Any]], reference: dict[str, Any]
) -> None:
    scorer.reset()
    output = scorer.step(reference["images"][:1], update=False)
    assert scorer.bank.seen == 0 and scorer.bank.prototypes == 0
    assert output.anomaly_map.shape == (1, 224, 224)


def test_k_shot_normal_images_give_nothing_and_fill_the_bank(micro: RarityScoring) -> None:
    images = random_images(4, 112, seed=3)
    shot = variant(micro, k_shot=2)
    assert shot.step(images[:1]) is None
    with pytest.raises(ValueError, match="normal references"):
        shot.step(images[1:2], update=False)
    assert shot.step(images[1:2]) is None
    assert shot.bank.seen == 2 and shot.bank.scores.numel() == 0  # no score is remembered for them
    # 128 normal prototypes, thinned to keep_ftime 1.5 x 64 = 96: all of them normal.
    assert shot.bank.normal_counts[0][0] == shot.bank.prototypes == 96
    out = shot.step(images[2:3])
    assert out is not None and torch.isfinite(out.anomaly_map).all()
    assert shot.bank.aaif[0].shape[0] == 3 and shot.bank.scores.shape[0] == 1


def test_memories_of_images_drop_the_oldest_together_past_keep_inum(micro: RarityScoring) -> None:
    images = random_images(6, 112, seed=4)
    bounded = variant(micro, keep_inum=2, keep_snum=2)
    for image in images.split(1):
        bounded.step(image)
    bank = bounded.bank
    assert bank.scores.shape[0] == 2 and bank.embeddings.shape[0] == 2 and bank.aaif[0].shape[0] == 2
    # The embeddings kept are the two latest images', in order.
    latest = torch.cat([micro.tokens(image).embedding for image in images[-2:].split(1)])
    assert torch.equal(bank.embeddings, latest)
    assert bank.measures[0][0].shape[0] == 2  # keep_snum rows


def test_the_normal_images_stay_remembered_and_the_bound_holds_without_rescoring(micro: RarityScoring) -> None:
    images = random_images(6, 112, seed=9)
    shot = variant(micro, keep_inum=2, k_shot=1)
    shot.step(images[:1])
    normal_aaif = [a.clone() for a in shot.bank.aaif]
    for image in images[1:].split(1):
        shot.step(image)
    assert shot.bank.aaif[0].shape[0] == 1 + 2 and shot.bank.scores.shape[0] == 2
    assert all(torch.equal(a[:1], n) for a, n in zip(shot.bank.aaif, normal_aaif, strict=True))
    plain = variant(micro, keep_inum=2, rescoring=False)
    for image in images.split(1):
        plain.step(image)
    assert plain.bank.aaif[0].shape[0] == 2 and plain.bank.scores.numel() == 0  # the authors' would keep all 6


def test_keep_snum_drops_the_oldest_measure_row(micro: RarityScoring) -> None:
    images = random_images(3, 112, seed=5)
    banks = {}
    for keep in (2, 200):
        other = variant(micro, keep_snum=keep)
        for image in images.split(1):
            other.step(image)
        banks[keep] = other.bank
    for r in range(2):
        for layer in range(2):
            assert torch.equal(banks[2].measures[r][layer], banks[200].measures[r][layer][1:])


def test_a_bank_of_another_setting_is_refused(micro: RarityScoring, online_run: dict[str, list[Any]]) -> None:
    state = online_run["banks"][2].state_dict()
    with pytest.raises(ValueError, match=r"2 rarity layers: missing \[\], unexpected \['aaif.2'"):
        micro.load_bank(state)
    two_layers = {key: value for key, value in state.items() if not key.endswith((".2", ".3"))}
    with pytest.raises(ValueError, match="width 128, this scorer's tower has width 64"):
        micro.load_bank(two_layers)
    del two_layers["aaif.0"]
    with pytest.raises(ValueError, match=r"missing \['aaif.0'\]"):
        micro.load_bank(two_layers)


# ----------------------------------------------------------------------------------------------------------------------
# Another setting: any depth, other image size, layers, topk and keep ratio (invariants and hand-computed values)
# ----------------------------------------------------------------------------------------------------------------------
def test_another_setting_runs_on_a_clip_of_four_blocks(micro: RarityScoring) -> None:
    micro.reset()
    images = random_images(5, 112, seed=6)
    outputs = [micro.step(image) for image in images.split(1)]
    for output in outputs:
        assert output.anomaly_map.shape == (1, 112, 112) and output.pred_score.shape == (1,)
        assert torch.isfinite(output.anomaly_map).all()
    # keep_ftime 1.5 of 64 patches: 96 prototypes once two images are in.
    assert micro.bank.prototypes == 96
    assert micro.token_blocks == (0, 1, 2, 3)


def test_the_first_image_is_scored_by_the_text_branch_alone(micro: RarityScoring) -> None:
    image = random_images(1, 112, seed=7)
    micro.reset()
    first = micro.step(image)
    other = variant(micro, topk=1, keep_ftime=4.0)
    assert torch.equal(other.step(image).anomaly_map, first.anomaly_map)


def test_step_tokens_equals_step(micro: RarityScoring) -> None:
    images = random_images(3, 112, seed=8)
    micro.reset()
    direct = [micro.step(image) for image in images.split(1)]
    micro.reset()
    for image, expected in zip(images.split(1), direct, strict=True):
        output = micro.step_tokens(micro.tokens(image))
        assert torch.equal(output.pred_score, expected.pred_score)


def test_tokens_of_the_wrong_shape_are_refused(micro: RarityScoring) -> None:
    tokens = micro.tokens(random_images(1, 112))
    with pytest.raises(ValueError, match="layers of tokens"):
        micro.step_tokens(tokens._replace(patch_tokens=tokens.patch_tokens[:2]))
    with pytest.raises(ValueError, match="one image"):
        micro.step_tokens(tokens._replace(patch_tokens=[t.expand(2, -1, -1) for t in tokens.patch_tokens]))


@pytest.mark.parametrize(
    ("images", "match"),
    [
        (torch.zeros(2, 3, 112, 112), "one image at a time"),
        (torch.zeros(1, 3, 96, 96), "112x112"),
        (torch.zeros(0, 3, 112, 112), "empty"),
    ],
)
def test_bad_images_are_refused(micro: RarityScoring, images: torch.Tensor, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        micro.step(images)


def test_layers_outside_the_backbone_are_refused() -> None:
    with pytest.raises(ValueError, match=r"\[1, 4\]"):
        RarityScoring(MICRO_BACKBONE, None, 112, text_layers=[2, 5], rarity_layers=[1, 3])
    with pytest.raises(ValueError, match="1-based"):
        RarityScoringConfig(text_layers=[0, 2])
    with pytest.raises(TypeError, match="unknown settings"):
        RarityScoring(MICRO_BACKBONE, None, 112, text_layers=[2], rarity_layers=[1], Rs_freq=3)


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("keep_ftime", 0, "keep_ftime"),
        ("topk", 0, "topk"),
        ("ls_ratio", 1.0, "ls_ratio"),
        ("rare_thd", 0.0, "rare_thd"),
        ("sampler", "KCS", "not implemented"),
        ("sigma", -1, "sigma"),
        ("rescoring", 1, "true or false"),
        ("k_shot", -1, "k_shot"),
    ],
)
def test_invalid_settings_are_refused(field: str, value: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        RarityScoringConfig(**{field: value})


def test_too_few_prototypes_for_topk_are_refused() -> None:
    with pytest.raises(ValueError, match="fewer than topk"):
        RarityScoringConfig(text_layers=[1], rarity_layers=[1], keep_ftime=0.01, topk=3).check_backbone(12, 64)


# ----------------------------------------------------------------------------------------------------------------------
# The parts, against hand-computed values
# ----------------------------------------------------------------------------------------------------------------------
def test_loose_similarity_divides_by_the_quantile_and_clips() -> None:
    x = torch.arange(1, 101, dtype=torch.float32) / 100
    # k = int(100 * 0.99) = 99: the 99th smallest value, 0.99; the value above it clips to 1.
    expected = (x / 0.99).clamp(max=1)
    assert torch.equal(loose_similarity(x, 0.01), expected)
    assert loose_similarity(x, 0.01)[-1] == 1 and loose_similarity(x, 0.01)[-2] == 1
    # Y = 0 divides by the maximum, no clipping needed.
    assert torch.equal(loose_similarity(x, 0.0), x / 1.0)
    # Very few values: k is at least 1 (the authors' k = 0 raises).
    assert torch.equal(loose_similarity(torch.tensor([0.5]), 0.01), torch.tensor([1.0]))


def test_three_by_three_neighbourhoods_repeat_the_border() -> None:
    index = neighbourhood_index(3, 3, 3)
    # Patch 0 (top left): rows -1, 0, 1 and columns -1, 0, 1 replicate row and column 0.
    assert index[0].tolist() == [0, 0, 1, 0, 0, 1, 3, 3, 4]
    assert index[4].tolist() == list(range(9))
    assert index[8].tolist() == [4, 5, 5, 7, 8, 8, 7, 8, 8]
    assert neighbourhood_index(2, 2, 1).tolist() == [[0], [1], [2], [3]]


def test_sequential_coreset_keeps_the_least_redundant_prototypes_in_order() -> None:
    e1, e2, e3 = torch.eye(3)
    near = torch.nn.functional.normalize(e1 + 0.1 * e2, dim=0)  # cos to e1: 0.995
    features = torch.stack([e1, e2, near, e3])
    measures = torch.arange(8, dtype=torch.float32).reshape(2, 4)
    kept_f, kept_m, kept = sequential_coreset(features, measures, keep=3)
    # Largest cosine to an earlier prototype: 0, 0, 0.995, 0 -> the near-duplicate goes.
    assert kept.tolist() == [0, 1, 3]
    assert torch.equal(kept_f, features[[0, 1, 3]]) and torch.equal(kept_m, measures[:, [0, 1, 3]])
    # Nothing to thin.
    assert sequential_coreset(features, measures, keep=4)[2].tolist() == [0, 1, 2, 3]
    # Protected normal prototypes stay even when redundant.
    duplicate = torch.stack([e1, e1, e2, near])
    assert sequential_coreset(duplicate, measures, keep=3, protected=2)[2].tolist() == [0, 1, 2]


def test_blur_is_torchvision_gaussian_with_kernel_six_sigma_plus_one() -> None:
    assert blur_kernel_size(4.0) == 25
    assert blur_kernel_size(2.5) == 17  # int(16.0) = 16 made odd
    from torchvision.transforms.functional import gaussian_blur

    impulse = torch.zeros(1, 1, 41, 41)
    impulse[..., 20, 20] = 1
    blurred = gaussian_blur(impulse, [25, 25], [4.0, 4.0])[0, 0]
    x = torch.arange(-12, 13, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (x / 4) ** 2)
    kernel /= kernel.sum()
    assert torch.allclose(blurred[8:33, 8:33].double(), torch.outer(kernel, kernel), atol=1e-7)


def test_rareclip_prompt_ensemble_sizes() -> None:
    normal, abnormal = rareclip_sentences()
    assert len(normal) == 14 * 35 and len(abnormal) == 10 * 35
    assert normal[0] == "a bad photo of a object." and abnormal[-1] == "this is one texture with damage in the scene."


def test_tpb_weights_load_from_the_authors_file_format(tmp_path: Any, reference: dict[str, Any]) -> None:
    head = TextProjection(128, 64, 4)
    path = tmp_path / "mvtec_pretrained.pth"
    torch.save({"trainable_linearlayer": reference["tpb_state_dict"]}, path)
    load_tpb_weights(path, head)
    assert torch.equal(head.fc[2].weight, reference["tpb_state_dict"]["fc.2.weight"])
    with pytest.raises(CheckpointError, match=r"mvtec_pretrained\.pth.*\n.*missing keys"):
        load_tpb_weights(path, TextProjection(128, 64, 5))
    with pytest.raises(CheckpointError, match="shape mismatches"):
        load_tpb_weights(reference["tpb_state_dict"], TextProjection(64, 64, 4))
    with pytest.raises(FileNotFoundError, match="TPB weights file not found"):
        load_tpb_weights(tmp_path / "absent.pth", head)
