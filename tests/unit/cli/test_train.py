"""``anomalib-adaclip train``'s parser and its checks of ``--resume`` (the training runs themselves are in
``tests/integration/test_training.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from anomalib_adaclip.cli.train import build_parser, main
from tests.conftest import PROJECT_ROOT

CONFIG_DIR = PROJECT_ROOT / "configs" / "train"


@pytest.mark.parametrize("name", ["mvtec_colondb.yaml", "visa_clinicdb.yaml"])
def test_the_authors_checkpoint_selection_is_one_option(name: str) -> None:
    """The authors' train.py keeps the best pixel max-F1 on the testing data: the option the configs' headers give."""
    header = (CONFIG_DIR / name).read_text().split("\nname:", 1)[0]
    assert f"--config configs/train/{name} --checkpointing.monitor pixel_F1Max" in header
    parser = build_parser()
    config = parser.parse_args(["--config", str(CONFIG_DIR / name), "--checkpointing.monitor", "pixel_F1Max"])
    assert config.checkpointing.monitor == "pixel_F1Max" and config.checkpointing.mode == "max"
    assert "pixel_F1Max" in config.val_metrics
    assert parser.parse_args(["--config", str(CONFIG_DIR / name)]).checkpointing.monitor is None


def test_resume_refuses_another_config(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--resume", str(tmp_path), "--config", str(CONFIG_DIR / "mvtec_colondb.yaml")])
    assert exit_info.value.code == 2
    assert "--resume uses the run's own config.yaml" in capsys.readouterr().err


@pytest.mark.parametrize("spelling", ["separate", "equals"])
def test_resume_of_a_folder_without_a_checkpoint_names_the_missing_file(
    tmp_path: Path, capsys: pytest.CaptureFixture, spelling: str
) -> None:
    arguments = ["--resume", str(tmp_path)] if spelling == "separate" else [f"--resume={tmp_path}"]
    with pytest.raises(SystemExit) as exit_info:
        main(arguments)
    assert exit_info.value.code == 2
    message = capsys.readouterr().err
    assert f"Cannot resume {tmp_path}" in message and str(tmp_path / "checkpoints" / "last.ckpt") in message
    assert not list(tmp_path.iterdir())  # nothing was written
