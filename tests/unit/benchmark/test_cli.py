"""The command ``anomalib-adaclip benchmark`` (``benchmark/cli.py``): its parsers, ``--dry-run`` and its errors.

In process and without running a grid; the grids that run are in ``tests/integration/test_benchmark.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from anomalib_adaclip import cli
from anomalib_adaclip.benchmark import cli as benchmark_cli
from anomalib_adaclip.benchmark.config import load_config
from anomalib_adaclip.benchmark.runner import Shard
from anomalib_adaclip.benchmark.store import RunRecord, RunStore
from tests.conftest import PROJECT_ROOT
from tests.helpers import adaclip_entry, folder_entry

MUTUAL_CONFIG = PROJECT_ROOT / "configs" / "benchmark" / "mutual_scoring.yaml"


def test_dry_run_marks_the_mutual_runs(capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["benchmark", "--config", str(MUTUAL_CONFIG), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "90 runs" in out  # 3 models x (15 + 12 + 3) categories
    assert "pending   AdaCLIP-MuSc · BTech/03 · seed 0 (mutual scoring)" in out
    assert "pending   AdaCLIP · BTech/03 · seed 0\n" in out


def test_the_parsers_defaults_and_options() -> None:
    arguments = benchmark_cli.build_parser().parse_args(["--config", "grid.yaml"])
    assert arguments.config == Path("grid.yaml") and arguments.output is None
    assert not (arguments.dry_run or arguments.skip_failed or arguments.paper)
    assert arguments.shard is None
    given = ["--config", "g.yaml", "--output", "out", "--dry-run", "--skip-failed", "--paper"]
    arguments = benchmark_cli.build_parser().parse_args([*given, "--shard", "2/5"])
    assert (arguments.output, arguments.shard) == (Path("out"), Shard(2, 5))
    assert arguments.dry_run and arguments.skip_failed and arguments.paper
    report = benchmark_cli.build_report_parser().parse_args(["--config", "g.yaml", "--paper"])
    assert (report.config, report.output, report.paper) == (Path("g.yaml"), None, True)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ([], "the following arguments are required: --config"),
        (["--config", "g.yaml", "--shard", "2"], "argument --shard: --shard takes I/N"),
        (["--config", "g.yaml", "--shard", "4/3"], "argument --shard: A shard is I/N with 1 <= I <= N, got 4/3"),
        (["--config", "g.yaml", "--shard", "0/3"], "argument --shard: A shard is I/N with 1 <= I <= N, got 0/3"),
        (["--config", "g.yaml", "--heartbeat-timeout", "90"], "unrecognized arguments: --heartbeat-timeout 90"),
        (["--config", "g.yaml", "--dry_run"], "unrecognized arguments: --dry_run"),
        (["report", "--config", "g.yaml", "--dry-run"], "unrecognized arguments: --dry-run"),  # report runs nothing
        (["report"], "the following arguments are required: --config"),
    ],
)
def test_bad_arguments_stop_the_command_with_a_clear_error(
    arguments: list[str], message: str, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SystemExit) as raised:
        benchmark_cli.main(arguments)
    assert raised.value.code == 2
    error = capsys.readouterr().err
    assert message in error
    assert error.startswith(f"usage: anomalib-adaclip benchmark{' report' if arguments[:1] == ['report'] else ''} ")


def test_a_missing_configuration_is_exit_code_2_with_the_commands_name(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    missing = tmp_path / "nothing.yaml"
    assert benchmark_cli.main(["--config", str(missing), "--dry-run"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("anomalib-adaclip benchmark: error: ") and "nothing.yaml does not exist" in error
    assert benchmark_cli.main(["report", "--config", str(missing)]) == 2
    assert capsys.readouterr().err.startswith("anomalib-adaclip benchmark report: error: ")
    assert list(tmp_path.iterdir()) == []


def test_dry_run_lists_each_runs_state_and_runs_nothing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    source, output = tmp_path / "grid.yaml", tmp_path / "out"
    source.write_text(yaml.safe_dump({"models": [adaclip_entry()], "data": [folder_entry()]}))
    config = load_config(source, output=output)
    first = config.grid()[0]
    RunStore(output / "runs").save(
        RunRecord(first.model, first.dataset, first.category, first.seed, "finished", metrics={"image_AUROC": 0.5})
    )
    assert benchmark_cli.main(["--config", str(source), "--output", str(output), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        f"2 runs ({source}), output {output}:",
        "  finished  AdaCLIP · parts/gear · seed 0",
        "  pending   AdaCLIP · parts/bracket · seed 0",
    ]
    assert sorted(path.name for path in output.iterdir()) == ["runs"]  # no report, no run folder
