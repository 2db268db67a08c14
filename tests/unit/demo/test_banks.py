"""The demo's online (rarity) scoring: one bank per browser session, upload order, new banks, refusals.

The truths: ``Engine.predict`` of an ``AdaCLIP`` built with the demo's rarity group on the same files in the same order
(the demo adds no scoring path of its own), the same session's images scored one request at a time (a request of 8
equals 8 requests of 1, bit for bit, banks included), and a session scored alone (another session's requests in
between change nothing). The model is the micro CLIP with a prompts checkpoint (``demo_settings``); the images are 8
tire test images shrunk to 200 px wide (quick to read, the same for both paths).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch

from anomalib_adaclip.demo import DemoModelSettings, DemoSession, SessionBank
from anomalib_adaclip.demo.banks import demo_rarity_settings
from tests.conftest import MICRO_BACKBONE, TIRE_ROOT
from tests.helpers import demo_twin, make_engine, shrink_images

TIRE_TEST = sorted((TIRE_ROOT / "tire" / "test").glob("*/*.png"))


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """8 tire test images (good and defective, interleaved), 200 px wide, named in upload order."""
    return shrink_images(TIRE_TEST[::2][:8], tmp_path_factory.mktemp("online_images"))


@pytest.fixture(scope="module")
def session(demo_settings: DemoModelSettings, tmp_path_factory: pytest.TempPathFactory) -> DemoSession:
    return DemoSession(demo_settings, device="cpu", output_dir=tmp_path_factory.mktemp("online_runs"))


def _scores(runs: list[Any]) -> list[float]:
    return [result.score for run in runs for result in run.results]


def _assert_same_banks(first: SessionBank, second: SessionBank) -> None:
    """The two sessions' banks hold the same images, bit for bit (every tensor of every class name's bank)."""
    assert first.counts() == second.counts()
    for name in first.banks:
        one, other = first.banks[name].state_dict(), second.banks[name].state_dict()
        assert one.keys() == other.keys()
        for key, value in one.items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(value, other[key]), key
            elif isinstance(value, list):
                assert all(torch.equal(a, b) for a, b in zip(value, other[key], strict=True)), key
            else:
                assert value == other[key], key


def test_one_request_of_8_equals_8_requests_of_1_and_engine_predict_with_the_rarity_group(
    session: DemoSession,
    demo_settings: DemoModelSettings,
    micro_weights: Path,
    images: list[Path],
    tmp_path: Path,
) -> None:
    together = SessionBank()
    run = session.predict(images, "tire", rarity=together)
    assert all(result.scored for result in run.results), run.message
    assert together.counts() == {"tire": 8}
    one_by_one = SessionBank()
    runs = [session.predict([path], "tire", rarity=one_by_one) for path in images]
    assert _scores(runs) == _scores([run])  # bit for bit
    assert [r.anomalous_area_fraction for r in run.results] == [x.results[0].anomalous_area_fraction for x in runs]
    _assert_same_banks(together, one_by_one)

    # The truth: AdaCLIP built with the demo's rarity group, through anomalib's Engine, on the same files in order.
    model = demo_twin(
        micro_weights,
        demo_settings.checkpoint,
        rarity=demo_rarity_settings(MICRO_BACKBONE["vision_cfg"]["layers"]),
        visualizer=False,
    )
    predictions = make_engine(tmp_path / "engine").predict(model, data_path=images[0].parent)
    items = [item for batch in predictions for item in batch]
    assert [Path(item.image_path).name for item in items] == [path.name for path in images]
    for result, item in zip(run.results, items, strict=True):
        assert result.score == pytest.approx(float(item.pred_score), abs=1e-6)
    plain = session.predict(images[:2], "tire")  # the rarity branch is in the scores
    assert plain.results[1].score != pytest.approx(run.results[1].score, abs=1e-4)


def test_two_sessions_never_see_each_others_images(session: DemoSession, images: list[Path]) -> None:
    """Interleaved requests of two browser sessions give each session the scores it gets alone."""
    first, second = images[:4], images[4:]
    alone_a, alone_b = SessionBank(), SessionBank()
    expected_a = _scores([session.predict([path], "tire", rarity=alone_a) for path in first])
    expected_b = _scores([session.predict([path], "tire", rarity=alone_b) for path in second])
    model = session.model
    bank_a, bank_b = SessionBank(), SessionBank()
    got_a, got_b = [], []
    for path_a, path_b in zip(first, second, strict=True):
        got_a += _scores([session.predict([path_a], "tire", rarity=bank_a)])
        got_b += _scores([session.predict([path_b], "tire", rarity=bank_b)])
    assert (got_a, got_b) == (expected_a, expected_b)
    assert bank_a.counts() == bank_b.counts() == {"tire": 4}
    _assert_same_banks(bank_a, alone_a)
    _assert_same_banks(bank_b, alone_b)
    assert session.model is model  # one model for every session


def test_one_bank_per_class_name_the_first_image_is_said_and_a_new_bank_empties_it(
    session: DemoSession, images: list[Path]
) -> None:
    bank = SessionBank()
    first = session.predict(images[:2], "tire", rarity=bank)
    said = f"{images[0].name} is the first image of 'tire' in this session's bank: its rarity part is the text side"
    assert said in first.message
    assert "it holds 2 image(s) of 'tire' now" in first.message and "weight 0.5" in first.message
    wheel = session.predict(images[2:3], "wheel", rarity=bank)  # another class name: its own bank
    assert f"{images[2].name} is the first image of 'wheel'" in wheel.message
    assert bank.describe() == "This session's rarity bank holds 2 image(s) of 'tire', 1 image(s) of 'wheel'."
    later = session.predict(images[2:3], "tire", rarity=bank)
    assert "is the first image" not in later.message

    assert session.new_bank(bank) == "A new bank. This session's rarity bank is empty."
    assert bank.counts() == {}
    again = session.predict(images[:1], "tire", rarity=bank)  # against an empty bank again: the first score
    assert again.results[0].score == first.results[0].score and "is the first image of 'tire'" in again.message


def test_another_model_starts_a_new_bank_and_says_so(
    session: DemoSession, demo_settings: DemoModelSettings, prompt_checkpoints: list[Path], images: list[Path]
) -> None:
    bank = SessionBank()
    session.predict(images[:3], "tire", rarity=bank)
    other = dataclasses.replace(demo_settings, checkpoint=str(prompt_checkpoints[1]))
    run = session.predict(images[3:4], "tire", settings=other, rarity=bank)
    assert "A new rarity bank: this session's bank was made with another model (checkpoint: " in run.message
    assert "its 3 image(s) were dropped" in run.message and "is the first image of 'tire'" in run.message
    assert bank.counts() == {"tire": 1}
    kept = session.predict(images[4:5], "tire", settings=other, rarity=bank)
    assert "A new rarity bank" not in kept.message and bank.counts() == {"tire": 2}
    session.predict(images[:1], "tire", settings=demo_settings)  # back to the module's model for the other tests


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"mutual": True}, "Online (rarity) scoring cannot be combined with mutual scoring: rarity cannot be combined"),
        ({"tiling": True}, "Online (rarity) scoring cannot be combined with tiled inference: rarity cannot be"),
    ],
)
def test_rarity_with_mutual_scoring_or_tiling_is_refused_with_the_reason(
    session: DemoSession, images: list[Path], options: dict[str, bool], expected: str
) -> None:
    bank = SessionBank()
    session.predict(images[:1], "tire", rarity=bank)
    run = session.predict(images[1:3], "tire", rarity=bank, **options)
    assert expected in run.message and "No image was scored." in run.message
    assert run.results == [] and run.csv_path is None and bank.counts() == {"tire": 1}


def test_tpb_weights_on_a_tower_without_rareclips_text_layers_are_refused(
    demo_settings: DemoModelSettings, images: list[Path], tmp_path: Path
) -> None:
    session = DemoSession(demo_settings, device="cpu", output_dir=tmp_path, tpb_weights=tmp_path / "tpb.pth")
    bank = SessionBank()
    run = session.predict(images[:1], "tire", rarity=bank)
    assert "No image was scored: online (rarity) scoring cannot be used with this model (ValueError: " in run.message
    assert "text_layers count blocks from 1" in run.message and run.results == [] and bank.counts() == {}
    assert session.predict(images[:1], "tire").results[0].scored  # without the option the session keeps serving


def test_demo_rarity_settings_text_side_and_layers() -> None:
    adaclip = demo_rarity_settings(24)
    assert adaclip.text_branch == "adaclip" and adaclip.tpb_weights is None and adaclip.weight == 0.5
    assert adaclip.scoring.rarity_layers == (6, 12, 18, 24)  # the authors' on ViT-L
    tpb = demo_rarity_settings(24, "tpb.pth")
    assert (tpb.text_branch, tpb.tpb_weights) == ("tpb", "tpb.pth")
    assert tpb.scoring.text_layers == (12, 16, 20, 24) and tpb.scoring.rarity_layers == (6, 12, 18, 24)
    assert demo_rarity_settings(4).scoring.rarity_layers == (1, 2, 3, 4)
