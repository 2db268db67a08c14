"""The few-shot memory and maps of AdaCLIPModel (tiny random CLIP of the reference fixture, 224 px, 16 x 16 patches).

The truths: a query equal to a reference is at distance 0 everywhere; a region pasted from an unseen image is where
the distances are largest; the scale maps the references' own leave-one-out distance to exactly 0.5; ``k_shot=0``
builds no memory and computes what the zero-shot model computes, bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from anomalib_adaclip.config import FewShotConfig
from anomalib_adaclip.model.few_shot import FewShotMemory, nearest_distances, scaled_distances

PATCH = 14


def images(count: int, seed: int) -> torch.Tensor:
    return torch.randn(count, 3, 224, 224, generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def few_shot_model(make_model: Callable[..., Any]) -> Callable[..., Any]:
    def factory(k_shot: int = 2, **settings: Any) -> Any:
        return make_model(few_shot=FewShotConfig(k_shot=k_shot, **settings))

    return factory


def test_config_checks_its_values() -> None:
    assert FewShotConfig().k_shot == 0
    for bad in ({"k_shot": -1}, {"map_weight": 1.5}, {"coreset_ratio": 0}, {"augment": 1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            FewShotConfig(**bad)


def test_k_shot_zero_is_the_zero_shot_model(make_model: Callable[..., Any]) -> None:
    plain = make_model()
    zero = make_model(few_shot=FewShotConfig(k_shot=0))
    assert zero.few_shot_memory is None
    assert list(zero.state_dict()) == list(plain.state_dict())
    batch = images(2, 1)
    expected, got = plain(batch, ["bottle", "screw"]), zero(batch, ["bottle", "screw"])
    assert torch.equal(got.pred_score, expected.pred_score)
    assert torch.equal(got.anomaly_map, expected.anomaly_map)
    with pytest.raises(RuntimeError, match="zero-shot"):
        zero.add_references(batch, "bottle")


def test_a_reference_as_query_has_zero_few_shot_distance(few_shot_model: Callable[..., Any]) -> None:
    model = few_shot_model(k_shot=2)
    references = images(2, 2)
    model.add_references(references, "bottle")
    features = model.features(references, "bottle")
    assert features.few_shot_map.shape == (2, 16, 16)
    assert float(features.few_shot_map.max()) < 1e-5
    assert float(model.features(images(1, 3), "bottle").few_shot_map.mean()) > 0.1


def test_a_pasted_region_gets_the_highest_few_shot_values(few_shot_model: Callable[..., Any]) -> None:
    model = few_shot_model(k_shot=2)
    references = images(2, 4)
    model.add_references(references, "bottle")
    query = references[:1].clone()
    rows, cols = slice(5 * PATCH, 9 * PATCH), slice(8 * PATCH, 12 * PATCH)  # patches 5..8 x 8..11
    query[..., rows, cols] = images(1, 5)[..., rows, cols]
    grid = model.features(query, "bottle").few_shot_map[0]
    inside = torch.zeros(16, 16, dtype=torch.bool)
    inside[5:9, 8:12] = True
    assert bool(inside.flatten()[grid.flatten().argmax()])
    assert float(grid[inside].min()) > float(grid[~inside].median())
    # Through forward: the fused map is highest inside the region too, and everything stays in [0, 1].
    with torch.no_grad():
        output = model(query, "bottle")
    pixels = output.anomaly_map[0]
    peak = divmod(int(pixels.flatten().argmax()), 224)
    assert 5 * PATCH - PATCH <= peak[0] < 9 * PATCH + PATCH and 8 * PATCH - PATCH <= peak[1] < 12 * PATCH + PATCH
    assert float(pixels.min()) >= 0 and float(pixels.max()) <= 1 and 0 <= float(output.pred_score) <= 1


def test_scale_maps_the_references_leave_one_out_distance_to_one_half(few_shot_model: Callable[..., Any]) -> None:
    model = few_shot_model(k_shot=3)
    references = images(3, 6)
    model.add_references(references, "bottle")
    tokens = model.reference_tokens(references)
    others = [tokens[[j for j in range(3) if j != i]].transpose(1, 2).flatten(0, 1) for i in range(3)]
    worst = max(float(nearest_distances(tokens[i], others[i]).max()) for i in range(3))
    scale = model.few_shot_memory.scale("bottle")
    assert scale == pytest.approx(worst, rel=1e-6)
    assert float(scaled_distances(torch.tensor(worst), scale)) == pytest.approx(0.5, abs=1e-6)


def test_one_reference_gets_a_scale_from_its_own_patches(few_shot_model: Callable[..., Any]) -> None:
    model = few_shot_model(k_shot=1)
    model.add_references(images(1, 7), "bottle")
    assert model.few_shot_memory.scale("bottle") > 0.01


def test_memory_round_trips_through_state_dict(few_shot_model: Callable[..., Any]) -> None:
    model = few_shot_model(k_shot=2)
    model.add_references(images(2, 8), "bottle")
    model.add_references(images(2, 9), "metal_nut")
    assert model.few_shot_memory.class_names == ["bottle", "metal_nut"]
    assert len(model.few_shot_memory) == 2 * 2 * 256
    assert model.few_shot_memory.nbytes() == 2 * 2 * 256 * 4 * 64 * 4  # patches x layers x embed dim x 4 bytes
    assert not any(key.startswith("few_shot_memory.") for key in model.trainable_state_dict())
    reloaded = few_shot_model(k_shot=2)
    reloaded.load_state_dict(model.state_dict())
    assert reloaded.few_shot_memory.class_names == ["bottle", "metal_nut"]
    query = images(2, 10)
    expected, got = model(query, ["metal_nut", "bottle"]), reloaded(query, ["metal_nut", "bottle"])
    assert torch.equal(got.anomaly_map, expected.anomaly_map) and torch.equal(got.pred_score, expected.pred_score)


def test_replacing_a_class_keeps_the_others(few_shot_model: Callable[..., Any]) -> None:
    model = few_shot_model(k_shot=2)
    model.add_references(images(2, 11), "bottle")
    model.add_references(images(2, 12), "screw")
    before = model.few_shot_memory.scale("screw")
    model.add_references(images(1, 13), "bottle")
    assert model.few_shot_memory.class_names == ["bottle", "screw"]
    assert len(model.few_shot_memory) == 3 * 256 and model.few_shot_memory.scale("screw") == before


def test_a_class_without_references_is_refused(few_shot_model: Callable[..., Any]) -> None:
    model = few_shot_model(k_shot=1)
    with pytest.raises(KeyError, match="no reference images of the class name"):
        model(images(1, 14), "bottle")
    model.add_references(images(1, 14), "bottle")
    with pytest.raises(KeyError, match=r"\['screw'\]"):
        model(images(2, 14), ["bottle", "screw"])


def test_augmented_references_store_eight_views(few_shot_model: Callable[..., Any]) -> None:
    model = few_shot_model(k_shot=1, augment=True)
    reference = images(1, 15)
    model.add_references(reference, "bottle")
    assert len(model.few_shot_memory) == 8 * 256
    rotated = torch.rot90(reference, 1, dims=(-2, -1))
    assert float(model.features(rotated, "bottle").few_shot_map.max()) < 1e-5


def test_coreset_keeps_the_asked_fraction(few_shot_model: Callable[..., Any]) -> None:
    model = few_shot_model(k_shot=2, coreset_ratio=0.25)
    model.add_references(images(2, 16), "bottle")
    assert len(model.few_shot_memory) == 128
    assert model.few_shot_memory.scale("bottle") > 0


def test_image_score_fuses_the_zero_shot_score_with_the_few_shot_maximum(few_shot_model: Callable[..., Any]) -> None:
    model = few_shot_model(k_shot=2, score_weight=0.25, top_percent=10)
    model.add_references(images(2, 17), "bottle")
    query = images(2, 18)
    features = model.features(query, "bottle")
    zero_shot = model.image_probabilities(features)[:, 1]
    few_shot_map = model.few_shot_upsampled(features)
    top = few_shot_map.flatten(1).topk(round(224 * 224 * 0.1), dim=1).values.mean(1)
    torch.testing.assert_close(model(query, "bottle").pred_score, 0.75 * zero_shot + 0.25 * top, rtol=0, atol=1e-6)


def test_memory_refuses_tokens_of_another_shape() -> None:
    memory = FewShotMemory(n_layers=4, embed_dim=64)
    with pytest.raises(ValueError, match="Reference tokens"):
        memory.add("bottle", torch.zeros(1, 3, 16, 64))


def test_one_name_for_the_batch_and_one_per_image_agree(few_shot_model: Callable[..., Any]) -> None:
    model = few_shot_model(k_shot=1)
    model.add_references(images(1, 19), "bottle")
    query = images(3, 20)
    together = model.features(query, "bottle").few_shot_map
    per_image = model.features(query, ["bottle"] * 3).few_shot_map
    alone = torch.cat([model.features(query[i : i + 1], "bottle").few_shot_map for i in range(3)])
    torch.testing.assert_close(together, per_image, rtol=0, atol=1e-6)
    torch.testing.assert_close(together, alone, rtol=0, atol=1e-6)


def test_bf16_autocast_keeps_the_few_shot_outputs_in_range(few_shot_model: Callable[..., Any]) -> None:
    model = few_shot_model(k_shot=1)
    reference = images(1, 21)
    model.add_references(reference, "bottle")
    query = torch.cat([reference, images(1, 22)])
    with torch.no_grad():
        exact = model(query, "bottle")
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(query, "bottle")
    assert low.anomaly_map.dtype == torch.float32 and low.pred_score.dtype == torch.float32
    assert float(low.anomaly_map.min()) >= 0 and float(low.anomaly_map.max()) <= 1
    torch.testing.assert_close(low.pred_score, exact.pred_score, rtol=0, atol=0.05)


def test_with_zero_weights_a_few_shot_model_gives_the_zero_shot_outputs(
    make_model: Callable[..., Any], few_shot_model: Callable[..., Any]
) -> None:
    """The zero-shot part of a few-shot model is the zero-shot model; only the frozen pass's last block computes
    every token instead of the CLS token alone, which may round differently (hence a tolerance, not bits)."""
    zero_shot = make_model()
    model = few_shot_model(k_shot=1, map_weight=0.0, score_weight=0.0)
    model.add_references(images(1, 23), "bottle")
    query = images(2, 24)
    with torch.no_grad():
        expected, got = zero_shot(query, "bottle"), model(query, "bottle")
    torch.testing.assert_close(got.pred_score, expected.pred_score, rtol=0, atol=1e-5)
    torch.testing.assert_close(got.anomaly_map, expected.anomaly_map, rtol=0, atol=1e-5)


def test_every_image_is_compared_with_the_references_of_its_own_class(few_shot_model: Callable[..., Any]) -> None:
    model = few_shot_model(k_shot=1)
    bottle, screw = images(1, 25), images(1, 26)
    model.add_references(bottle, "bottle")
    model.add_references(screw, "screw")
    grid = model.features(torch.cat([bottle, screw, bottle]), ["bottle", "screw", "screw"]).few_shot_map
    assert float(grid[0].max()) < 1e-5 and float(grid[1].max()) < 1e-5
    assert float(grid[2].mean()) > 0.1  # a bottle against the screw's references
