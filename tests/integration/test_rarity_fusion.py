"""AdaCLIP(rarity=...): RareCLIP's online scoring fused with AdaCLIP through the Engine, the exports and the line.

The micro CLIP has 4 blocks, so the layers are 1-based blocks of it (RareCLIP's defaults need 24). The truths: AdaCLIP
without the group (weight 0 must equal it bitwise), the same model at batch size 1 (batch 8 must equal it bitwise:
the bank updates image by image inside a batch), and ``predict`` on the same files in the same order (the line must
equal it).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from anomalib.data import MVTecAD
from anomalib.data.utils import read_image

from anomalib_adaclip import AdaCLIP
from anomalib_adaclip.components.rarity import RARITY_MAP_SCALE, RARITY_SCORE_SCALE
from anomalib_adaclip.line import AdaCLIPLineScorer, LineConfig, LineRunner
from anomalib_adaclip.model.mutual_scoring import PlainTokens
from anomalib_adaclip.model.rarity import RarityScoring
from tests.conftest import TIRE_ROOT
from tests.helpers import make_adaclip, make_engine, shrink_images

SCORING = {"text_layers": [2, 4], "rarity_layers": [1, 3], "sigma": 1.0, "rs_freq": 2, "keep_ftime": 2.0}


def rarity_model(weights: Path, **group: Any) -> AdaCLIP:
    settings = {"weight": 0.5, "text_branch": "adaclip", "scoring": SCORING} | group
    return make_adaclip(weights, rarity=settings, thresholds={"mode": "fixed"}, visualizer=False)


def engine_predictions(model: AdaCLIP, root: Path, batch_size: int) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """The tire test images (15, data-set order) through ``Engine.predict``: paths, scores, maps."""
    if model.rarity is not None:
        model.rarity.reset()
    datamodule = MVTecAD(root=TIRE_ROOT, category="tire", num_workers=0, eval_batch_size=batch_size)
    batches = make_engine(root).predict(model, datamodule=datamodule)
    paths = [str(path) for batch in batches for path in batch.image_path]
    return paths, torch.cat([b.pred_score for b in batches]), torch.cat([b.anomaly_map for b in batches])


def counted_predictions(model: AdaCLIP, root: Path) -> tuple[list[str], torch.Tensor, torch.Tensor, int]:
    """Paths, scores and maps at batch size 8, and how many images went through CLIP's patch embedding (all passes)."""
    calls: list[int] = []
    hook = model.model.clip.visual.conv1.register_forward_hook(lambda module, inputs, output: calls.append(len(output)))
    try:
        paths, scores, maps = engine_predictions(model, root, 8)
    finally:
        hook.remove()
    return paths, scores, maps, sum(calls)


@pytest.fixture(scope="module")
def adaclip_alone(micro_weights: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, ...]:
    """AdaCLIP without the group: the truth for weight 0 and for the number of CLIP passes."""
    model = make_adaclip(micro_weights, thresholds={"mode": "fixed"}, visualizer=False)
    return counted_predictions(model, tmp_path_factory.mktemp("plain"))


def test_batch_1_equals_batch_8_through_the_engine_and_rareclips_text_branch_is_available(
    micro_weights: Path, tmp_path: Path, adaclip_alone: tuple[Any, ...]
) -> None:
    model = rarity_model(micro_weights, text_branch="tpb")
    paths1, scores1, maps1 = engine_predictions(model, tmp_path / "b1", 1)
    paths8, scores8, maps8 = engine_predictions(model, tmp_path / "b8", 8)
    assert paths1 == paths8 and len(paths1) == 15
    assert torch.equal(scores1, scores8) and torch.equal(maps1, maps8)
    assert (
        list(model.rarity.banks) == ["tire"] and model.rarity.banks["tire"].seen == 15
    )  # a new bank per run (the Engine
    # validates on the same images first: they must not be in the bank when they are tested)
    assert not torch.allclose(scores8, adaclip_alone[1])  # the rarity branch is in the scores


def test_weight_0_is_adaclip_bitwise_and_weight_1_the_rarity_branch_alone_without_another_clip_pass(
    micro_weights: Path, tmp_path: Path, adaclip_alone: tuple[Any, ...]
) -> None:
    _, adaclip_scores, adaclip_maps, adaclip_passes = adaclip_alone
    weight0 = rarity_model(micro_weights, weight=0.0)
    _, scores, maps, _ = counted_predictions(weight0, tmp_path / "w0")
    assert torch.equal(scores, adaclip_scores) and torch.equal(maps, adaclip_maps)
    assert weight0.rarity.banks == {}  # the branch did not run

    weight1 = rarity_model(micro_weights, weight=1.0)
    paths, scores, maps, passes = counted_predictions(weight1, tmp_path / "w1")
    # The rarity branch reads AdaCLIP's frozen plain pass: no pass of its own. AdaCLIP runs two per image (the plain
    # one and the prompted one), for the 15 images of each of the Engine's two runs (it validates, then predicts).
    assert passes == adaclip_passes == 2 * 15 * 2
    # The independent path: RareCLIP's scorer on the tokens of AdaCLIP's pass, image after image, by hand.
    host = weight1.model.eval()
    scorer = RarityScoring.on_clip(host.clip, host.image_size, weight1.rarity.config.scoring, text_branch=False)
    transform = weight1.pre_processor.transform
    for index, path in enumerate(paths):
        image = transform(read_image(path, as_tensor=True))[None]
        adaclip, tokens = host.score_with_plain_tokens(image, ["tire"], plain_layers=list(scorer.token_blocks))
        grid = scorer.grid
        text = torch.nn.functional.adaptive_avg_pool2d(adaclip.anomaly_map[:, None], grid).reshape(1, -1)
        scored = scorer.score_tokens(PlainTokens(tokens.patch_tokens, tokens.embedding), (text, adaclip.pred_score))
        scorer.commit(scored)
        torch.testing.assert_close(scores[index], scored.output.pred_score[0] / RARITY_SCORE_SCALE, rtol=0, atol=1e-6)
        torch.testing.assert_close(maps[index], scored.output.anomaly_map[0] / RARITY_MAP_SCALE, rtol=0, atol=1e-6)


def test_exports_refuse_rarity_scoring_and_mutual_or_tiling_with_it_are_refused(
    micro_weights: Path, tmp_path: Path
) -> None:
    model = rarity_model(micro_weights)
    with pytest.raises(NotImplementedError, match="A model with rarity scoring cannot be exported: RareCLIP scores"):
        model.to_torch(tmp_path)
    assert not (tmp_path / "weights").exists() or not any((tmp_path / "weights").rglob("*.pt"))
    with pytest.raises(ValueError, match="rarity cannot be combined with mutual"):
        make_adaclip(micro_weights, rarity={"scoring": SCORING}, mutual={})
    with pytest.raises(ValueError, match="rarity cannot be combined with tiling"):
        make_adaclip(micro_weights, rarity={"scoring": SCORING}, tiling=True)
    with pytest.raises(ValueError, match="rarity cannot be combined with tiling"):
        model.set_tiling(True)


def test_watch_fed_one_file_at_a_time_equals_predict_on_the_same_files(micro_weights: Path, tmp_path: Path) -> None:
    """The issue's done-when: rows equal images, scores equal ``predict``'s in the same order (all admitted)."""
    sources = sorted((TIRE_ROOT / "tire" / "test").rglob("*.png"))
    images = shrink_images(sources, tmp_path / "shrunk")
    ordered = tmp_path / "ordered"
    ordered.mkdir()
    for index, image in enumerate(images):
        shutil.copyfile(image, ordered / f"{index:03d}.png")
    model = rarity_model(micro_weights)
    batches = make_engine(tmp_path / "predict").predict(model, data_path=ordered)
    predicted = {Path(p).name: float(s) for b in batches for p, s in zip(b.image_path, b.pred_score, strict=True)}
    assert sorted(predicted) == [f"{index:03d}.png" for index in range(len(images))]
    assert list(model.rarity.banks) == ["object"] and model.rarity.banks["object"].seen == len(images)

    model.rarity.reset()
    folder, output = tmp_path / "camera", tmp_path / "line"
    folder.mkdir()
    config = LineConfig(settle_seconds=0.0, poll_seconds=0.0, threshold=1e9)  # every image is admitted
    with LineRunner(folder, output, AdaCLIPLineScorer(model), config) as line:
        for index in range(len(images)):  # the camera hands one file over at a time
            shutil.copyfile(ordered / f"{index:03d}.png", folder / f".{index:03d}.png.tmp")
            (folder / f".{index:03d}.png.tmp").rename(folder / f"{index:03d}.png")
            assert line.poll() == 1
    rows = (output / "predictions.csv").read_text(encoding="utf-8").splitlines()[1:]
    assert len(rows) == len(images)
    for index, row in enumerate(rows):
        path, class_name, score = row.split(",")[:3]
        assert Path(path).name == f"{index:03d}.png" and class_name == "object"
        assert score == f"{predicted[Path(path).name]:.6f}"
    assert model.rarity.banks["object"].seen == len(images)
