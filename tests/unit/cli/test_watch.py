"""cli/watch.py: the options are LineConfig's, errors are one line, and a line killed with SIGKILL restarts exactly.

The scorer is ``tests.helpers:PatchMemoryScorer`` (a bank of pixel patches), named on the command line as a user
names their own scorer.
"""

from __future__ import annotations

import csv
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import fields
from pathlib import Path

import pytest
import torch

from anomalib_adaclip.cli.watch import build_parser, main
from anomalib_adaclip.line import LineConfig, LineRunner, load_snapshot
from anomalib_adaclip.locks import OwnedLock
from tests.conftest import MICRO_BACKBONE, PROJECT_ROOT
from tests.helpers import (
    PatchMemoryScorer,
    painted_tire_defects,
    shrink_images,
    subprocess_environment,
    tire_good_images,
)

SCORER = ["--scorer", "tests.helpers:PatchMemoryScorer"]


def rows_of(table: Path) -> list[list[str]]:
    if not table.exists():
        return []
    with table.open(newline="", encoding="utf-8") as handle:
        return [row for row in csv.reader(handle)][1:]


def test_every_setting_is_an_option_with_the_config_default(tmp_path: Path) -> None:
    options = build_parser().parse_args([str(tmp_path), "--output", str(tmp_path / "out")])
    defaults = LineConfig()
    for field in fields(LineConfig):
        if field.name != "snapshot_name":  # the file name stays the documented one on the command line
            assert getattr(options, field.name) == getattr(defaults, field.name), field.name
    options = build_parser().parse_args(
        [str(tmp_path), "--output", "o", "--threshold", "0.5", "--max-backlog", "9", "--json", "-", "--settle", "0"]
    )
    assert (options.threshold, options.max_backlog, options.json_lines, options.settle_seconds) == (0.5, 9, "-", 0.0)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--threshold", "1"], "The folder to watch does not exist"),
        (["--threshold", "1", "--scorer", "rarity"], "rarity scorer"),
        (["--freeze-streak", "0", "--threshold", "1"], "freeze_streak must be an integer >= 1"),
    ],
)
def test_errors_are_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], arguments: list[str], message: str
) -> None:
    folder = tmp_path / ("missing" if "does not exist" in message else "camera")
    if "does not exist" not in message:
        folder.mkdir()
    scorer = [] if "--scorer" in arguments else SCORER
    assert main([str(folder), "--output", str(tmp_path / "out"), *scorer, *arguments]) == 2
    error = capsys.readouterr().err
    assert error.startswith("anomalib-adaclip watch: error: ") and message in error and "Traceback" not in error


def test_no_threshold_and_no_known_good_images_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "camera").mkdir()
    assert main([str(tmp_path / "camera"), "--output", str(tmp_path / "out"), *SCORER]) == 2
    assert "give one (--threshold) or known-good images" in capsys.readouterr().err


def test_a_folder_is_watched_until_idle(tmp_path: Path) -> None:
    folder, output = tmp_path / "camera", tmp_path / "out"
    images = shrink_images(tire_good_images()[:3], folder)
    arguments = [str(folder), "--output", str(output), *SCORER, "--threshold", "7", "--settle", "0", "--poll", "0.01"]
    previous = signal.getsignal(signal.SIGINT)
    assert main([*arguments, "--exit-when-idle", "0"]) == 0
    assert signal.getsignal(signal.SIGINT) is previous  # the handlers are given back
    assert [Path(row[0]).name for row in rows_of(output / "predictions.csv")] == [path.name for path in images]
    # the locks released: their files stay (kernel locks), free and without owner records
    assert sorted(path.name for path in output.iterdir()) == [
        "bank.pt",
        "bank.pt.lock",
        "predictions.csv",
        "predictions.csv.lock",
    ]
    assert not any(OwnedLock(output / name, what=name).in_use() for name in ("bank.pt.lock", "predictions.csv.lock"))


def test_the_adaclip_scorer_with_its_rarity_group_from_a_yaml_file(tmp_path: Path, micro_weights: Path) -> None:
    """``--scorer adaclip --scorer-settings line.yaml``: AdaCLIP with its rarity group on the line, its bank learns."""
    import yaml

    folder, output = tmp_path / "camera", tmp_path / "out"
    images = shrink_images(tire_good_images()[:3], folder)
    settings = {
        "backbone": MICRO_BACKBONE,
        "backbone_weights": str(micro_weights),
        "image_size": 112,
        "rarity": {
            "weight": 0.5,
            "text_branch": "adaclip",
            "scoring": {"text_layers": [2, 4], "rarity_layers": [1, 3]},
        },
    }
    (tmp_path / "line.yaml").write_text(yaml.safe_dump(settings), encoding="utf-8")
    arguments = [str(folder), "--output", str(output), "--scorer", "adaclip", "--scorer-settings"]
    arguments += [str(tmp_path / "line.yaml"), "--threshold", "100", "--settle", "0", "--poll", "0.01"]
    assert main([*arguments, "--exit-when-idle", "0"]) == 0
    rows = rows_of(output / "predictions.csv")
    assert [Path(row[0]).name for row in rows] == [path.name for path in images]
    assert [row[3] for row in rows] == ["OK"] * 3
    snapshot = load_snapshot(output / "bank.pt")
    assert snapshot.scorer_type == "anomalib_adaclip.line.scorer.AdaCLIPLineScorer"
    assert int(snapshot.scorer["object"]["seen"]) == 3  # AdaCLIP's rarity bank of the class name, three images in it


def test_scorer_settings_are_json_or_a_json_or_yaml_file(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text("image_size: 64\npatch: 8\n", encoding="utf-8")
    (tmp_path / "s.json").write_text('{"image_size": 64, "patch": 8}', encoding="utf-8")
    parser = build_parser()
    for value in ('{"image_size": 64, "patch": 8}', str(tmp_path / "s.yaml"), str(tmp_path / "s.json")):
        options = parser.parse_args(["in", "--output", "out", "--scorer-settings", value])
        assert options.scorer_settings == {"image_size": 64, "patch": 8}
    for bad in ("[1, 2]", "{not json", str(tmp_path / "missing.yaml")):
        with pytest.raises(SystemExit):
            parser.parse_args(["in", "--output", "out", "--scorer-settings", bad])


def wait_for_rows(table: Path, count: int, process: subprocess.Popen, log: Path, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while len(rows_of(table)) < count:
        if process.poll() is not None:
            pytest.fail(f"watch ended early ({process.returncode}):\n{log.read_text()}")
        if time.monotonic() > deadline:
            pytest.fail(f"no row {count} after {timeout} s:\n{log.read_text()}")
        time.sleep(0.05)


@pytest.mark.slow
def test_kill_9_then_restart_loses_and_repeats_nothing(tmp_path: Path) -> None:
    goods = shrink_images(tire_good_images(), tmp_path / "goods")
    defects = shrink_images(painted_tire_defects(tmp_path / "painted"), tmp_path / "defects")
    sources = [*goods[:6], defects[0], *goods[6:]]
    folder, output = tmp_path / "camera", tmp_path / "out"
    folder.mkdir()
    settings = ["--threshold", "7", "--settle", "0.2", "--poll", "0.05", "--snapshot-every", "3"]
    command = [sys.executable, "-m", "anomalib_adaclip", "watch", str(folder), "--output", str(output)]
    command += [*SCORER, *settings]
    log = tmp_path / "first.log"
    with log.open("w") as stderr:
        process = subprocess.Popen(command, cwd=PROJECT_ROOT, env=subprocess_environment(), stderr=stderr)
        try:
            for index, source in enumerate(sources[:5]):  # the camera writes one part at a time, in place
                shutil.copyfile(source, folder / f"{index:03d}.png")
                wait_for_rows(output / "predictions.csv", index + 1, process, log)
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait()
    assert process.returncode == -signal.SIGKILL
    snapshot = load_snapshot(output / "bank.pt")
    assert snapshot is not None and snapshot.rows == 3  # rows 4 and 5 came after it: their bank updates are lost
    for index, source in enumerate(sources[5:], start=5):
        shutil.copyfile(source, folder / f"{index:03d}.png")
        time.sleep(0.01)  # distinct modification times: the arrival order
    again = subprocess.run(
        [*command, "--exit-when-idle", "1"],
        cwd=PROJECT_ROOT,
        env=subprocess_environment(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert again.returncode == 0, again.stderr
    assert "Replaying 2 scored images" in again.stderr

    # The uninterrupted line, on the same images in the same order.
    straight_folder = tmp_path / "straight"
    straight_folder.mkdir()
    for index, source in enumerate(sources):
        shutil.copyfile(source, straight_folder / f"{index:03d}.png")
        time.sleep(0.01)
    config = LineConfig(threshold=7.0, settle_seconds=0.0, snapshot_every=3)
    with LineRunner(straight_folder, tmp_path / "straight_out", PatchMemoryScorer(), config) as straight:
        straight.poll()

    def comparable(rows: list[list[str]]) -> list[list[str]]:
        return [[Path(row[0]).name, *row[1:]] for row in rows]

    got = comparable(rows_of(output / "predictions.csv"))
    assert got == comparable(rows_of(tmp_path / "straight_out" / "predictions.csv"))
    assert [row[0] for row in got] == [f"{index:03d}.png" for index in range(len(sources))]
    assert [row[3] for row in got].count("NG") == 1
    restarted = load_snapshot(output / "bank.pt")
    assert restarted is not None
    for name, value in straight.scorer.state_dict().items():
        assert torch.equal(restarted.scorer[name], value), name
