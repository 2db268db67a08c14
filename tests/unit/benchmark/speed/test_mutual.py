"""The speed benchmark's mutual-scoring mode (``benchmark/speed/mutual.py``): the cost per group size, its lines."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from anomalib_adaclip.benchmark import speed
from anomalib_adaclip.benchmark.speed.mutual import format_mutual, mutual_feature_layers
from tests.conftest import MICRO_BACKBONE

MICRO = json.dumps(MICRO_BACKBONE)


def test_mutual_group_sizes_split_the_cost_between_clip_and_mutual_scoring(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    output = tmp_path / "mutual.json"
    arguments = ["--backbone", MICRO, "--image-size", "112", "--batch-size", "1", "--images", "1", "--warmup", "0"]
    assert speed.main([*arguments, "--mutual-group-sizes", "2", "3", "--json", str(output)]) == 0
    printed = capsys.readouterr().out
    assert "mutual scoring: the rows above are the CLIP passes" in printed and "total s/image" in printed
    assert "groups of [2, 3] images use the small-group rule" in printed  # MuSc's 30 % of 1 or 2 others is none
    mutual = json.loads(output.read_text())["mutual"]
    # MuSc's layers for a 4-block tower (the last block of each quarter, counted from 1); the micro CLIP's shapes at
    # 112 px: an 8 x 8 grid of width-64 tokens, 32-dimensional embeddings.
    assert mutual["feature_layers"] == [1, 2, 3, 4] and mutual["r_list"] == [1, 3, 5]
    assert mutual["token_shape"] == [[64, 64]] * 4 and mutual["embedding_dim"] == 32
    assert [group["group_size"] for group in mutual["groups"]] == [2, 3]
    report = json.loads(output.read_text())
    clip = report["results"][0]["seconds_per_image"]
    for group in mutual["groups"]:
        assert group["seconds"] > 0 and group["peak_memory_bytes"] > 0
        assert group["seconds_per_image"] == pytest.approx(group["seconds"] / group["group_size"])
        assert group["clip_seconds_per_image"] == clip
        assert group["total_seconds_per_image"] == pytest.approx(clip + group["seconds_per_image"])
        assert group["total_peak_memory_bytes"] >= group["peak_memory_bytes"]


@pytest.mark.parametrize(
    ("blocks", "layers"),
    [(24, [6, 12, 18, 24]), (12, [3, 6, 9, 12]), (4, [1, 2, 3, 4])],  # 1-based: MuSc's ViT-L 5, 11, 17, 23 from 0
)
def test_mutual_feature_layers_are_the_last_block_of_each_quarter(blocks: int, layers: list[int]) -> None:
    model = SimpleNamespace(n_vision_blocks=blocks)  # the tower's depth is all the layers depend on
    assert mutual_feature_layers(model) == layers


def mutual_part(small_groups: list[int]) -> dict[str, Any]:
    return {
        "feature_layers": [5, 11],
        "r_list": [1, 3],
        "rscin_k": [1, 9],
        "token_shape": [[1369, 1024], [1369, 1024]],
        "embedding_dim": 768,
        "small_groups": small_groups,
        "groups": [
            {
                "group_size": 4,
                "seconds": 2.0,
                "seconds_per_image": 0.5,
                "cpu_seconds_per_image": 1.25,
                "clip_seconds_per_image": 1.5,
                "total_seconds_per_image": 2.0,
                "peak_memory_bytes": 2e9,
                "total_peak_memory_bytes": 3e9,
                "memory_kind": "peak_rss",
            }
        ],
    }


def test_the_mutual_lines_name_the_shapes_and_add_up_per_image() -> None:
    lines = format_mutual(mutual_part([]))
    assert lines[0] == "" and len(lines) == 4
    assert "2 layers [5, 11] of [N, 1369, 1024], embeddings [N, 768]; r [1, 3], RsCIN k [1, 9]" in lines[1]
    assert lines[2].split()[:2] == ["group", "mutual"]
    assert lines[3].split()[:8] == ["4", "2.000", "0.500", "1.250", "1.500", "2.000", "3.00", "GB"]
    assert lines[3].endswith("(group step 2.00 GB, peak_rss)")


def test_small_groups_are_noted_once_above_the_table() -> None:
    lines = format_mutual(mutual_part([2, 4]))
    assert len(lines) == 5
    assert lines[2].startswith("groups of [2, 4] images use the small-group rule")
    assert lines[3].split()[:2] == ["group", "mutual"]
