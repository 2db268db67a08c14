"""Results, exports and checkpoints never silently replace earlier ones.

Covered next to their code: AdaCLIP checkpoints (``save_checkpoint`` refuses an existing file, test_checkpoint.py),
training runs (a new ``v<N>`` folder per run, resuming from ``last.ckpt`` without overwriting, test_training.py),
the predictions CSV (``predictions-v1.csv`` for a second run, test_production.py), calibration snippets
(``--output`` refuses an existing file, test_production.py), the benchmark's ``--json`` (test_benchmark_speed.py),
generated data sets (test_cli.py). Here: exports, and anomalib's results folder of ``test`` / ``predict``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from anomalib.data import Folder

from anomalib_adaclip.data.synthetic import generate_defect_dataset
from tests.helpers import make_adaclip, make_engine


def test_a_second_test_run_keeps_the_first_checkpoint_and_warns_before_replacing_images(
    micro_weights: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = generate_defect_dataset(tmp_path / "data", "widget", n_train=1, n_good=1, n_defect=1, size=48)

    def datamodule() -> Folder:
        return Folder(
            name="widget",
            root=root,
            normal_dir="train/good",
            normal_test_dir="test/good",
            abnormal_dir="test/defect",
            val_split_mode="same_as_test",
            num_workers=0,
        )

    make_engine(tmp_path / "results").test(make_adaclip(micro_weights, class_name="widget"), datamodule=datamodule())
    run_dir = tmp_path / "results" / "AdaCLIP" / "widget" / "latest"
    images = sorted((run_dir / "images").rglob("*.png"))
    assert len(images) == 2 and "earlier run" not in caplog.text
    with caplog.at_level(logging.WARNING, logger="anomalib_adaclip"):
        make_engine(tmp_path / "results").test(
            make_adaclip(micro_weights, class_name="widget"), datamodule=datamodule()
        )
    assert f"{run_dir / 'images'} holds visualisations of an earlier run" in caplog.text
    # anomalib's checkpoint of the forced validation: Lightning gives the second one a new name.
    assert sorted(path.name for path in (run_dir / "weights" / "lightning").glob("*.ckpt")) == [
        "model-v1.ckpt",
        "model.ckpt",
    ]
