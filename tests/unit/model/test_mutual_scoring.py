"""Mutual scoring (MuSc) against the authors' reference outputs, a transcription of their MSM loop, and invariants.

``tests/data/reference/musc_reference.pt`` holds the outputs of MuSc's own modules (commit b76b93d) on a tiny random
CLIP (12 blocks, width 96, patch 16, 224 px) and the 15 tire images (tests/data/README.md, "MuSc reference").
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch.nn import functional as F  # noqa: N812

from anomalib_adaclip import MutualScoring, MutualScoringConfig
from anomalib_adaclip.model import PlainTokens, mutual_patch_scores
from anomalib_adaclip.model.mutual_scoring import (
    anomaly_maps,
    averaged_interval,
    lnamd,
    musc_blocks,
    rscin,
    score_group,
)
from tests.conftest import TINY_BACKBONE, load_reference
from tests.musc_oracle import musc_lnamd, musc_msm_loop, musc_rscin

TOLERANCE = 1e-4  # issue 20: maps and image scores within 1e-4 of MuSc's code


@pytest.fixture(scope="module")
def musc() -> dict[str, Any]:
    return load_reference("musc_reference.pt")


def build(musc: dict[str, Any], **overrides: Any) -> MutualScoring:
    config = musc["config"]
    arguments = {
        "backbone": config["open_clip_model_cfg"],
        "backbone_weights": musc["state_dict"],  # the vision tower's keys only
        "image_size": config["image_size"],
        "feature_layers": [layer + 1 for layer in config["feature_layers"]],  # MuSc's 0-based -> the paper's 1-based
        "r_list": config["r_list"],
        "topmin_min": config["topmin_min"],
        "topmin_max": config["topmin_max"],
        "rscin_k": config["k_list"],
    }
    arguments.update(overrides)
    return MutualScoring(**arguments).eval()


@pytest.fixture(scope="module")
def model(musc: dict[str, Any]) -> MutualScoring:
    return build(musc)


@pytest.fixture(scope="module")
def output(model: MutualScoring, musc: dict[str, Any]) -> Any:
    return model(musc["images"])


@pytest.fixture(scope="module")
def tokens(model: MutualScoring, musc: dict[str, Any]) -> PlainTokens:
    return model.tokens(musc["images"])


def unit_vectors(count: int, patches: int, channels: int, seed: int) -> torch.Tensor:
    return F.normalize(torch.randn(count, patches, channels, generator=torch.Generator().manual_seed(seed)), dim=-1)


# ----------------------------------------------------------------------------------------------------------------------
# The public call against MuSc's code
# ----------------------------------------------------------------------------------------------------------------------
def test_maps_and_scores_equal_musc(output: Any, musc: dict[str, Any]) -> None:
    assert output.anomaly_map.shape == (15, 224, 224)
    assert output.anomaly_map.dtype == output.pred_score.dtype == torch.float32
    torch.testing.assert_close(output.anomaly_map, musc["anomaly_maps"][:, 0], rtol=0, atol=TOLERANCE)
    torch.testing.assert_close(output.pred_score, musc["image_scores_rscin"], rtol=0, atol=TOLERANCE)


def test_map_maxima_equal_musc_without_rscin(tokens: PlainTokens, musc: dict[str, Any]) -> None:
    """``rscin_k`` holding 0 switches RsCIN off: the score is the map's maximum (MuSc's score before RsCIN)."""
    plain = build(musc, rscin_k=[0]).score_tokens(tokens)
    torch.testing.assert_close(plain.pred_score.double(), musc["image_scores_max"], rtol=0, atol=TOLERANCE)
    torch.testing.assert_close(plain.pred_score, plain.anomaly_map.flatten(1).amax(1))


def test_image_order_does_not_matter(output: Any, model: MutualScoring, musc: dict[str, Any]) -> None:
    order = torch.randperm(15, generator=torch.Generator().manual_seed(7))
    permuted = model(musc["images"][order])
    torch.testing.assert_close(permuted.anomaly_map, output.anomaly_map[order], rtol=0, atol=1e-6)
    torch.testing.assert_close(permuted.pred_score, output.pred_score[order], rtol=0, atol=1e-6)
    torch.testing.assert_close(permuted.anomaly_map, musc["anomaly_maps"][order, 0], rtol=0, atol=TOLERANCE)
    torch.testing.assert_close(permuted.pred_score, musc["image_scores_rscin"][order], rtol=0, atol=TOLERANCE)


def musc_pipeline(
    visual: torch.nn.Module, images: torch.Tensor, layers: list[int], r_list: list[int], k_list: list[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """MuSc's glue (``make_category_data``) over transcriptions of its modules, with open_clip's own vision forward
    (forward hooks on the blocks, not this package's loop): maps ``[N, H, W]`` and scores ``[N]``."""
    kept: dict[int, torch.Tensor] = {}
    handles = [
        visual.transformer.resblocks[layer].register_forward_hook(
            lambda _module, _inputs, output, layer=layer: kept.__setitem__(layer, output)
        )
        for layer in layers
    ]
    with torch.no_grad():
        embedding = visual(images)
    for handle in handles:
        handle.remove()
    embedding = embedding / embedding.norm(dim=-1, keepdim=True)
    per_r = []
    for r in r_list:
        per_layer = [musc_msm_loop(musc_lnamd(kept[layer][:, 1:], r)) for layer in layers]
        per_r.append(torch.stack(per_layer).mean(0))
    patch_scores = torch.stack(per_r).mean(0)
    side = int(patch_scores.shape[1] ** 0.5)
    size = images.shape[-1]
    maps = F.interpolate(patch_scores.view(-1, 1, side, side), size=size, mode="bilinear", align_corners=True)
    return maps[:, 0].float(), musc_rscin(maps.flatten(1).amax(1), embedding, k_list)


def test_held_out_setting_equals_musc_glue(musc: dict[str, Any]) -> None:
    """Another size (positions resized from 14 x 14 to 10 x 10), other layers, r values, RsCIN k and image count."""
    setting = {"image_size": 160, "feature_layers": [2, 8, 12], "r_list": [1, 5], "rscin_k": [1, 4]}  # 1-based
    model = build(musc, **setting)
    images = F.interpolate(musc["images"][3:11], size=160, mode="bicubic", align_corners=False)
    output = model(images)
    maps, scores = musc_pipeline(model.visual, images, [1, 7, 11], [1, 5], [1, 4])
    torch.testing.assert_close(output.anomaly_map, maps, rtol=0, atol=TOLERANCE)
    torch.testing.assert_close(output.pred_score, scores, rtol=0, atol=TOLERANCE)


# ----------------------------------------------------------------------------------------------------------------------
# Intermediates: tokens, LNAMD, MSM, maps, RsCIN
# ----------------------------------------------------------------------------------------------------------------------
def test_plain_tokens_equal_musc(tokens: PlainTokens, musc: dict[str, Any]) -> None:
    assert len(tokens.patch_tokens) == 4
    assert tokens.patch_tokens[0].shape == (15, 196, 96)  # class token dropped
    torch.testing.assert_close(tokens.patch_tokens[0], musc["patch_tokens"][0][:, 1:], rtol=0, atol=1e-5)
    torch.testing.assert_close(tokens.embedding, musc["class_tokens"], rtol=0, atol=1e-6)


@pytest.mark.parametrize("r", [1, 3])
def test_lnamd_equals_musc(musc: dict[str, Any], r: int) -> None:
    features = lnamd(musc["patch_tokens"][0][:, 1:], r)
    torch.testing.assert_close(features, musc["lnamd_features"][f"r{r}_layer0"], rtol=0, atol=1e-6)
    torch.testing.assert_close(musc_lnamd(musc["patch_tokens"][0][:, 1:], r), features, rtol=0, atol=1e-6)


@pytest.mark.parametrize("r", [5, 7])
def test_lnamd_equals_the_transcription(musc: dict[str, Any], r: int) -> None:
    tokens = musc["patch_tokens"][0][:, 1:]
    torch.testing.assert_close(lnamd(tokens, r), musc_lnamd(tokens, r), rtol=0, atol=1e-6)


def test_lnamd_counts_the_zero_padding() -> None:
    """A constant image after its layer norm is 0 everywhere; worked by hand on a grid with one non-zero channel."""
    tokens = torch.zeros(1, 9, 2)
    tokens[0, :, 0] = torch.arange(9.0)  # 3 x 3 grid, channel 0 = 0..8, channel 1 = 0
    normed = F.layer_norm(tokens, (9, 2), eps=1e-5)
    grid = normed[0].T.reshape(2, 3, 3)
    # The corner's 3 x 3 window holds 4 values inside the grid and 5 zeros of padding: sum / 9, not sum / 4.
    corner = grid[:, :2, :2].sum(dim=(1, 2)) / 9
    expected = corner / corner.norm()
    torch.testing.assert_close(lnamd(tokens, 3)[0, 0], expected)


def test_msm_scores_equal_musc(tokens: PlainTokens, musc: dict[str, Any]) -> None:
    """Every layer and r; layer 0 from MuSc's own tokens, the others from this package's (equal to 1e-5)."""
    layers = [musc["patch_tokens"][0][:, 1:], *tokens.patch_tokens[1:]]
    for key, expected in musc["msm_scores"].items():
        r, layer = (int(part) for part in key.removeprefix("r").split("_layer"))
        scores = mutual_patch_scores(lnamd(layers[layer], r))
        torch.testing.assert_close(scores.double(), expected, rtol=0, atol=TOLERANCE, msg=key)


def test_msm_is_exact_where_musc_carries_cdist_rounding(musc: dict[str, Any]) -> None:
    """On the reference's LNAMD features the nearest distances go down to 0.004, where cdist's float32 formula loses
    digits: MuSc's scores differ from a float64 computation by up to ~4e-5, this package's by ~2e-6."""
    z = musc["lnamd_features"]["r1_layer0"]
    exact = musc_msm_loop(z.double())
    assert (musc["msm_scores"]["r1_layer0"] - exact).abs().max() > 1e-5  # what MuSc's float32 cdist gives
    torch.testing.assert_close(mutual_patch_scores(z).double(), exact, rtol=0, atol=5e-6)


def test_maps_and_rscin_from_musc_patch_scores(musc: dict[str, Any]) -> None:
    maps, maxima = anomaly_maps(musc["patch_scores"], 224)
    torch.testing.assert_close(maps, musc["anomaly_maps"][:, 0], rtol=0, atol=1e-6)
    torch.testing.assert_close(maxima, musc["image_scores_max"], rtol=0, atol=1e-7)
    rescored = rscin(musc["image_scores_max"], musc["class_tokens"], musc["config"]["k_list"])
    torch.testing.assert_close(rescored, musc["image_scores_rscin"], rtol=0, atol=1e-6)
    transcribed = musc_rscin(musc["image_scores_max"], musc["class_tokens"], musc["config"]["k_list"])
    torch.testing.assert_close(transcribed, musc["image_scores_rscin"], rtol=0, atol=1e-6)


def test_rscin_rules() -> None:
    scores = torch.tensor([0.2, 0.5, 0.4], dtype=torch.float64)
    embeddings = torch.eye(3)
    assert rscin(scores, embeddings, [0, 1]) is scores  # 0 switches it off
    assert rscin(scores, None, [1, 2]) is scores
    # Orthogonal embeddings: each image's only positive neighbour is itself, k = 1 gives the min-max normalised scores.
    torch.testing.assert_close(rscin(scores, embeddings, [1]), torch.tensor([0.0, 1.0, 2 / 3]))
    # All scores equal: MuSc divides 0 by 0; here they normalise to 0.
    assert torch.equal(rscin(torch.ones(3, dtype=torch.float64), embeddings, [1, 2]), torch.zeros(3))
    # A k beyond the group keeps every image: with equal similarities every image gets the group mean.
    torch.testing.assert_close(rscin(scores, torch.ones(3, 1), [5]), torch.full((3,), (0 + 1 + 2 / 3) / 3))


# ----------------------------------------------------------------------------------------------------------------------
# mutual_patch_scores against MuSc's loop
# ----------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("count", [5, 6, 24])
@pytest.mark.parametrize(("topmin_min", "topmin_max"), [(0.0, 0.3), (0.1, 0.5), (0.6, 0.2), (1, 3)])
def test_mutual_patch_scores_equal_musc_loop(count: int, topmin_min: float, topmin_max: float) -> None:
    z = unit_vectors(count, 30, 12, seed=count)
    expected = musc_msm_loop(z, topmin_min, topmin_max)
    scores = mutual_patch_scores(z, topmin_min, topmin_max)
    assert scores.shape == (count, 30)
    torch.testing.assert_close(scores.double(), expected, rtol=0, atol=1e-6)


def test_chunks_do_not_change_the_scores() -> None:
    z = unit_vectors(7, 20, 8, seed=1)
    whole = mutual_patch_scores(z)
    assert torch.equal(mutual_patch_scores(z, max_elements=1), whole)  # one pair of images at a time


def test_coinciding_patches_get_exact_distances() -> None:
    """Duplicated and nearly duplicated images: distances near 0 are computed directly, not from 2 - 2 cos."""
    z = unit_vectors(6, 25, 16, seed=3)
    z[1] = F.normalize(z[0] + 1e-3 * torch.randn(25, 16, generator=torch.Generator().manual_seed(4)), dim=-1)
    z[2] = z[0]
    exact = musc_msm_loop(z.double(), 0.0, 0.5)
    torch.testing.assert_close(mutual_patch_scores(z, 0.0, 0.5).double(), exact, rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------------------------------------------------
# Small groups
# ----------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("count", [2, 3, 4])
def test_groups_of_two_to_four_use_the_nearest_other_image(count: int) -> None:
    z = unit_vectors(count, 16, 8, seed=count)
    with pytest.warns(UserWarning, match="nearest other image"):
        scores = mutual_patch_scores(z)
    assert torch.isnan(musc_msm_loop(z)).all()  # MuSc's own code averages an empty set
    torch.testing.assert_close(scores.double(), musc_msm_loop(z, 0, 1), rtol=0, atol=1e-6)  # 1 = the nearest image


def test_five_images_follow_musc_without_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mutual_patch_scores(unit_vectors(5, 16, 8, seed=0))


def test_averaged_interval() -> None:
    assert averaged_interval(23) == (0, 6, None)  # int(23 * 0.3)
    assert averaged_interval(10, 0.6, 0.2)[:2] == (2, 6)  # swapped, as MuSc
    assert averaged_interval(3)[:2] == (0, 1)
    assert averaged_interval(3, 0.5, 0.6)[:2] == (1, 2)  # int(1.5) = int(1.8): one image beyond the lower end
    k_min, k_max, reason = averaged_interval(4, 0, 10)
    assert (k_min, k_max) == (0, 4)
    assert "exceeds" in reason


def test_a_group_of_one_image_is_refused_with_its_names(model: MutualScoring, musc: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"group of 'tire' of 1 image: good/000\.png.*at least 2 images"):
        mutual_patch_scores(unit_vectors(1, 4, 3, seed=0), names=["good/000.png"], group="tire")
    with pytest.raises(ValueError, match="at least 2 images"):
        model(musc["images"][:1])


def test_layers_must_hold_the_same_images() -> None:
    layers = [torch.randn(5, 16, 8), torch.randn(4, 16, 8)]
    with pytest.raises(ValueError, match="same images at the same grid"):
        score_group(layers, F.normalize(torch.randn(5, 5), dim=-1), 32)


# ----------------------------------------------------------------------------------------------------------------------
# Construction and settings
# ----------------------------------------------------------------------------------------------------------------------
def test_settings_are_validated() -> None:
    assert MutualScoringConfig().to_dict() == {
        "feature_layers": None,  # MuSc's choice for the tower (quarter_blocks)
        "r_list": [1, 3, 5],
        "topmin_min": 0.0,
        "topmin_max": 0.3,
        "rscin_k": [1, 2, 3],
    }
    for changes, message in (
        ({"r_list": [2]}, "odd"),
        ({"r_list": []}, "non-empty"),
        ({"feature_layers": [0]}, "1-based"),
        ({"feature_layers": [3, 3]}, "repeat"),
        ({"topmin_max": 1.5}, "whole"),
        ({"topmin_max": -0.1}, "fraction"),
        ({"rscin_k": [-1]}, "neighbour counts"),
        ({"topmin_min": 0.3}, "equal"),
    ):
        with pytest.raises(ValueError, match=message):
            MutualScoringConfig(**changes)


def test_feature_layers_beyond_the_backbone_are_refused(musc: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"count blocks from 1.*\[1, 12\].*\[3, 6, 9, 12\]"):
        build(musc, feature_layers=[6, 13])


def test_feature_layers_count_from_one_and_meet_musc_at_its_boundary(musc: dict[str, Any]) -> None:
    """The reference's layers are MuSc's 0-based [2, 5, 8, 11]: the blocks 3, 6, 9 and 12, MuSc's default for 12."""
    assert musc["config"]["feature_layers"] == [2, 5, 8, 11]
    assert musc_blocks([3, 6, 9, 12]) == musc["config"]["feature_layers"]
    default = build(musc, feature_layers=None)  # MuSc's choice for the reference's 12-block tower
    assert default.settings.feature_layers == (3, 6, 9, 12)
    assert MutualScoringConfig().resolved_feature_layers(24) == (6, 12, 18, 24)  # ViT-L's [5, 11, 17, 23] in MuSc
    with torch.no_grad():
        output = default(musc["images"])
    torch.testing.assert_close(output.anomaly_map, musc["anomaly_maps"][:, 0], rtol=0, atol=TOLERANCE)
    torch.testing.assert_close(output.pred_score, musc["image_scores_rscin"], rtol=0, atol=TOLERANCE)


def test_images_of_another_size_are_refused(model: MutualScoring) -> None:
    with pytest.raises(ValueError, match="224"):
        model(torch.zeros(3, 3, 160, 160))


def test_another_image_size_resizes_the_positions(musc: dict[str, Any]) -> None:
    """At 160 px (a 10 x 10 grid) the maps come at 160 px; scores stay finite."""
    out = build(musc, image_size=160, feature_layers=[4, 12], r_list=[3], rscin_k=[1, 4])(
        F.interpolate(musc["images"][:6], size=160, mode="bilinear")
    )
    assert out.anomaly_map.shape == (6, 160, 160)
    assert torch.isfinite(out.pred_score).all()


# ----------------------------------------------------------------------------------------------------------------------
# AdaCLIP's frozen pass feeds the mutual scoring
# ----------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("overrides", [{}, {"prompting_branch": "L"}], ids=["prompted-vision", "frozen-only"])
def test_score_with_plain_tokens(make_model: Callable[..., Any], overrides: dict[str, Any]) -> None:
    adaclip = make_model(**overrides)
    images = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(5))
    layers = [3, 1]  # 0-based, the last block included
    with torch.no_grad():
        expected = adaclip(images, "bottle")
        output, plain = adaclip.score_with_plain_tokens(images, "bottle", plain_layers=layers)
    assert torch.equal(output.pred_score, expected.pred_score)
    assert torch.equal(output.anomaly_map, expected.anomaly_map)
    assert isinstance(plain, PlainTokens)
    mutual = MutualScoring(
        backbone=TINY_BACKBONE,
        backbone_weights=load_reference()["clip_state_dict"],  # a whole CLIP's state dict is accepted too
        image_size=224,
        feature_layers=[layer + 1 for layer in layers],
    )
    own = mutual.tokens(images)
    for mine, theirs in zip(plain.patch_tokens, own.patch_tokens, strict=True):
        assert torch.equal(mine, theirs)
    if adaclip.prompt_vision:  # both compute the embedding from the last block's class row alone
        assert torch.equal(plain.embedding, own.embedding)
    else:  # AdaCLIP's frozen pass stands in for the prompted one and runs the whole last block
        torch.testing.assert_close(plain.embedding, own.embedding, rtol=0, atol=1e-6)
    with pytest.warns(UserWarning, match="group of 3 images"):  # 3 images: the small-group rule
        scored = mutual.score_tokens(plain)
    assert scored.anomaly_map.shape == (3, 224, 224)


def test_score_with_plain_tokens_checks_its_layers(make_model: Callable[..., Any]) -> None:
    adaclip = make_model()
    with pytest.raises(ValueError, match=r"0-based blocks in \[0, 3\]"):
        adaclip.score_with_plain_tokens(torch.zeros(2, 3, 224, 224), plain_layers=[4])
