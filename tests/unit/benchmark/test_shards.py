"""``--shard I/N`` and SLURM job arrays: fixed, disjoint parts of the grid whose union is the grid.

The truth is the grid itself (``--dry-run`` of the whole grid) and SLURM's numbering of array tasks (sbatch(1): with
``--array=<min>-<max>:<step>``, ``SLURM_ARRAY_TASK_ID`` runs from ``SLURM_ARRAY_TASK_MIN`` in steps of
``SLURM_ARRAY_TASK_STEP``; ``SLURM_ARRAY_TASK_COUNT`` tasks in all).
"""

from __future__ import annotations

import re

import pytest

from anomalib_adaclip import cli
from anomalib_adaclip.benchmark.config import BenchmarkConfigError, load_config
from anomalib_adaclip.benchmark.runner import Shard
from tests.conftest import PROJECT_ROOT

PAPER_FULL = PROJECT_ROOT / "configs" / "benchmark" / "paper_full.yaml"
RUN_LINE = re.compile(r"^  (pending|finished|failed) +(.+ · .+ · seed \d+)", re.MULTILINE)


def listed(capsys: pytest.CaptureFixture[str], *arguments: str) -> tuple[str, list[str]]:
    assert cli.main(["benchmark", "--config", str(PAPER_FULL), "--dry-run", *arguments]) == 0
    out = capsys.readouterr().out
    return out, [match.group(2) for match in RUN_LINE.finditer(out)]


def test_three_shards_of_paper_full_are_disjoint_and_together_the_grid(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT"):
        monkeypatch.delenv(name, raising=False)
    _, grid = listed(capsys)
    labels = [key.label for key in load_config(PAPER_FULL).grid()]
    assert grid == labels and len(set(grid)) == len(grid) == 66  # 1 model x 66 categories of 14 data sets
    shards = []
    for index in (1, 2, 3):
        out, runs = listed(capsys, "--shard", f"{index}/3")
        assert out.startswith(f"{len(runs)} runs of {len(grid)} (shard {index}/3)")
        assert runs == [label for position, label in enumerate(grid) if position % 3 == index - 1]  # in grid order
        shards.append(runs)
    sizes = [len(runs) for runs in shards]
    assert max(sizes) - min(sizes) <= 1 and sum(sizes) == len(grid)
    assert set().union(*map(set, shards)) == set(grid)
    assert (
        not set(shards[0]) & set(shards[1])
        and not set(shards[0]) & set(shards[2])
        and not set(shards[1]) & set(shards[2])
    )


@pytest.mark.parametrize(
    ("environment", "shard"),
    [
        ({"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "0"}, Shard(1, 4)),
        ({"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "0"}, Shard(4, 4)),
        # --array=1-4: the ids start at 1
        ({"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "1"}, Shard(1, 4)),
        ({"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "1"}, Shard(4, 4)),
        # --array=10-16:2: 10, 12, 14, 16
        (
            {
                "SLURM_ARRAY_TASK_ID": "14",
                "SLURM_ARRAY_TASK_COUNT": "4",
                "SLURM_ARRAY_TASK_MIN": "10",
                "SLURM_ARRAY_TASK_MAX": "16",
                "SLURM_ARRAY_TASK_STEP": "2",
            },
            Shard(3, 4),
        ),
        ({}, None),
    ],
)
def test_a_slurm_array_task_is_the_shard_of_its_position(environment: dict[str, str], shard: Shard | None) -> None:
    assert Shard.from_environment(environment) == shard


@pytest.mark.parametrize(
    "environment",
    [
        # --array=1,4,5: not a range, the position of task 4 is not defined by the numbers
        {
            "SLURM_ARRAY_TASK_ID": "4",
            "SLURM_ARRAY_TASK_COUNT": "3",
            "SLURM_ARRAY_TASK_MIN": "1",
            "SLURM_ARRAY_TASK_MAX": "5",
        },
        {"SLURM_ARRAY_TASK_ID": "4"},  # no count
    ],
)
def test_an_array_that_is_not_a_range_asks_for_shard(environment: dict[str, str]) -> None:
    with pytest.raises(BenchmarkConfigError, match="--shard I/N"):
        Shard.from_environment(environment)


def test_the_dry_run_lists_the_array_tasks_shard_unless_shard_is_given(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "2")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "3")
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "1")
    monkeypatch.setenv("SLURM_ARRAY_TASK_MAX", "3")
    out, from_environment = listed(capsys)
    assert "(shard 2/3)" in out
    _, given = listed(capsys, "--shard", "2/3")
    _, whole = listed(capsys, "--shard", "1/1")
    assert from_environment == given == whole[1::3]
