"""The speed benchmark's online mode (``benchmark/speed/online.py``): RareCLIP's CLIP pass, rarity step and memory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from anomalib_adaclip import RarityScoring
from anomalib_adaclip.benchmark import speed
from anomalib_adaclip.benchmark.speed.online import (
    bank_shapes,
    build_scorer,
    format_online,
    online_layers,
    percentile,
    random_tokens,
    synthetic_bank,
)
from anomalib_adaclip.model.rarity_bank import RarityBank
from tests.conftest import MICRO_BACKBONE

MICRO = json.dumps(MICRO_BACKBONE)
# The micro CLIP at 56 px: a 4 x 4 grid (16 patches) of width-64 tokens; small caps, so that a few steps reach them.
SMALL_CAPS = {"keep_ftime": 2, "keep_snum": 5, "keep_inum": 7, "rs_freq": 2, "sigma": 1.0}


@pytest.fixture(scope="module")
def scorer() -> RarityScoring:
    return build_scorer(MICRO_BACKBONE, 56, torch.device("cpu"), **SMALL_CAPS)


def state_shapes(bank: RarityBank) -> dict[str, tuple[int, ...]]:
    return {key: tuple(value.shape) for key, value in bank.state_dict().items() if isinstance(value, torch.Tensor)}


@pytest.mark.parametrize("n_images", [1, 2, 3, 6, 9])
def test_the_synthetic_bank_has_the_shapes_that_real_steps_leave(scorer: RarityScoring, n_images: int) -> None:
    # Below, at and past every cap: prototypes (2 images' worth, 32), rows (5) and remembered images (7).
    scorer.reset()
    for seed in range(n_images):
        scorer.step_tokens(random_tokens(scorer, seed))
    stepped = scorer.bank
    synthetic = synthetic_bank(scorer, n_images)
    assert state_shapes(synthetic) == state_shapes(stepped)
    assert synthetic.seen == stepped.seen == n_images
    assert synthetic.nbytes() == stepped.nbytes()
    # The caps by hand: min(N * 16, 2 * 16) prototypes, min(N, 5) rows, min(N, 7) images.
    assert synthetic.prototypes == min(16 * n_images, 32)
    assert synthetic.measures[1][3].shape == (min(n_images, 5), min(16 * n_images, 32))
    assert synthetic.aaif[0].shape == (min(n_images, 7), 64) and synthetic.scores.shape == (min(n_images, 7),)
    scorer.reset()


def test_a_step_on_the_synthetic_bank_leaves_a_bank_of_the_same_capped_shapes(scorer: RarityScoring) -> None:
    # Past every cap, one more image leaves the shapes as they were: the cost of every later step.
    scorer.bank = synthetic_bank(scorer, 1000)
    assert scorer.step_tokens(random_tokens(scorer, 0)) is not None
    assert state_shapes(scorer.bank) == state_shapes(synthetic_bank(scorer, 1001))
    assert bank_shapes(scorer, 1000) == bank_shapes(scorer, 1001)
    scorer.reset()


def test_the_synthetic_bank_holds_unit_prototypes_and_measures_in_0_1(scorer: RarityScoring) -> None:
    bank = synthetic_bank(scorer, 4)
    norms = torch.stack([t.norm(dim=-1) for row in bank.features for t in row])
    assert torch.allclose(norms, torch.ones_like(norms))
    measures = torch.cat([t.flatten() for row in bank.measures for t in row])
    assert measures.min() >= 0 and measures.max() <= 1


@pytest.mark.parametrize(
    ("blocks", "text", "rarity"),
    [(24, [12, 16, 20, 24], [6, 12, 18, 24]), (12, [6, 8, 10, 12], [3, 6, 9, 12]), (4, [2, 3, 4], [1, 2, 3, 4])],
)
def test_the_layers_are_the_authors_scaled_to_the_depth(blocks: int, text: list[int], rarity: list[int]) -> None:
    assert online_layers(blocks) == (text, rarity)  # 24: RareCLIP's own; 12: the reference fixture's


def test_percentiles_interpolate_between_ranks() -> None:
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([1.0, 2.0, 3.0], 95) == pytest.approx(2.9)
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 50) == 3.0 and percentile([7.0], 95) == 7.0


def test_the_online_mode_times_the_clip_pass_and_each_bank_and_follows_the_memory(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    output = tmp_path / "online.json"
    arguments = ["--backbone", MICRO, "--image-size", "56", "--images", "2", "--warmup", "0", "--json", str(output)]
    extra = ["--online-banks", "1", "40", "--online-memory-images", "12", "--online-memory-every", "5"]
    assert speed.main([*arguments, *extra, "--online-keep-inum", "4"]) == 0
    captured = capsys.readouterr()
    printed = captured.out
    assert captured.err.count("memory after ") == 3  # the progress of the memory run, row by row
    assert "RareCLIP's online rarity scoring" in printed and "CLIP pass" in printed and "step, N=40" in printed
    online = json.loads(output.read_text())["online"]
    assert online["token_shape"] == [4, 16, 64] and online["keep_inum"] == 4
    assert online["clip"]["runs"] == 2 and online["clip"]["p95_seconds"] >= online["clip"]["p50_seconds"] > 0
    assert [bank["images"] for bank in online["banks"]] == [1, 40]
    for bank in online["banks"]:
        assert bank["runs"] == 2 and bank["p95_seconds"] >= bank["p50_seconds"] > 0
        assert bank["bank_bytes"] == bank["prototype_bytes"] + bank["image_memory_bytes"]
        assert bank["peak_memory_bytes"] > 0
    # The authors' keep_ftime 3 and keep_snum 200: 1 image's 16 prototypes, then 48 and 40 rows; 4 images remembered.
    one, forty = online["banks"]
    assert (one["prototypes"], one["measure_rows"], one["remembered_images"]) == (16, 1, 1)
    assert (forty["prototypes"], forty["measure_rows"], forty["remembered_images"]) == (48, 40, 4)
    memory = online["memory"]
    assert [row["images"] for row in memory] == [5, 10, 12]
    assert [row["remembered_images"] for row in memory] == [4, 4, 4]
    assert [row["prototypes"] for row in memory] == [48, 48, 48]
    assert all(row["resident_bytes"] is None or row["resident_bytes"] > 0 for row in memory)


def test_the_online_mode_refuses_what_it_cannot_measure(capsys: pytest.CaptureFixture) -> None:
    arguments = ["--backbone", MICRO, "--image-size", "56", "--online-banks", "10"]
    assert speed.main([*arguments, "--k-shot", "2"]) == 2
    assert "measure RareCLIP's rarity scoring alone" in capsys.readouterr().err
    assert speed.main(["--backbone", MICRO, "--image-size", "56", "--online-banks", "0"]) == 2
    assert "--online-banks must count at least 1 image" in capsys.readouterr().err


def test_the_online_lines_name_the_setting_and_the_ratio_to_the_clip_pass() -> None:
    latency = {"runs": 3, "p50_seconds": 2.0, "p95_seconds": 3.0, "mean_seconds": 2.2, "cpu_seconds_per_image": 4.0}
    sizes = {"bank_bytes": 3e6, "prototype_bytes": 2e6, "image_memory_bytes": 1e6}
    online = {
        "text_layers": [12, 16, 20, 24],
        "rarity_layers": [6, 12, 18, 24],
        "keep_ftime": 3.0,
        "keep_snum": 200,
        "keep_inum": 1000,
        "rescoring": True,
        "token_shape": [6, 1369, 1024],
        "clip": {**latency, "p50_seconds": 4.0},
        "banks": [
            {
                "images": 1000,
                **latency,
                **sizes,
                "prototypes": 4107,
                "measure_rows": 200,
                "remembered_images": 1000,
                "peak_memory_bytes": 5e9,
                "memory_kind": "peak_rss",
            },
        ],
        "memory_every": 100,
        "memory": [
            {
                "images": 100,
                **sizes,
                "measure_rows": 100,
                "remembered_images": 100,
                "prototypes": 4107,
                "resident_bytes": 4e9,
                "peak_memory_bytes": 4.5e9,
                "memory_kind": "peak_rss",
            }
        ],
    }
    lines = format_online(online)
    assert "keep_ftime 3, keep_snum 200, keep_inum 1000" in lines[0] and "(6 blocks of [1369, 1024] tokens)" in lines[0]
    clip_row = next(line for line in lines if line.strip().startswith("CLIP pass"))
    assert clip_row.split()[2:5] == ["3", "4.000", "3.000"]
    step_row = next(line for line in lines if "step, N=1000" in line)
    # p50, p95, CPU s, the ratio to the CLIP pass (2 / 4), the bank, prototypes, rows, images, peak memory.
    assert step_row.split()[2:] == ["3", "2.000", "3.000", "4.000", "0.50", "3.0", "MB", "4107", "200", "1000",
                                    "5.00", "GB"]  # fmt: skip
    memory_row = lines[-1].split()
    assert memory_row[:7] == ["100", "3.0", "MB", "2.0", "MB", "1.0", "MB"]
