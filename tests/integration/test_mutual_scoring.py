"""Mutual scoring (MuSc) through anomalib's loops: Engine, the CLI, streaming predict, a resume, several processes.

Everything runs on the micro CLIP of ``tests/conftest.py`` (4 blocks at 112 px; MuSc's layers are then the last block
of each quarter, 1 to 4) and the 15 tire images of ``tests/data``, or 40 random images of one class. The truths:
AdaCLIP's zero-shot outputs (for ``mutual.weight=0``), :class:`~anomalib_adaclip.MutualScoring` on the same images and
weights (for ``mutual.weight=1``), the same run with another batch size, on one process, or without the kill, the
Engine's outputs for the paths outside a run, and the counts of images and groups.
"""

from __future__ import annotations

import csv
import logging
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from anomalib.data import MVTecAD, PredictDataset
from anomalib.data.utils import read_image
from torch.utils.data import DataLoader
from torchmetrics.classification import BinaryAUROC

from anomalib_adaclip import AdaCLIP, AdaCLIPModel, MutualScoring, cli
from anomalib_adaclip.components.prediction_table import CSV_COLUMNS
from anomalib_adaclip.weights import save_checkpoint
from tests.conftest import MICRO_BACKBONE, TIRE_ROOT
from tests.helpers import IMAGE_SIZE, explain, make_adaclip, make_engine, predict_arguments, subprocess_environment

GROUP_SIZE = 8  # 15 images: groups of 8 and 7
TEST_IMAGES = TIRE_ROOT / "tire" / "test"


# Every model of this module: fixed thresholds (no validation pass), groups of GROUP_SIZE.
FIXED = {"mode": "fixed"}


def mutual_model(weights: Path, mutual: dict[str, object] | None = None) -> AdaCLIP:
    """The micro AdaCLIP with fixed thresholds, and mutual scoring in groups of GROUP_SIZE unless ``mutual`` is None."""
    return make_adaclip(
        weights, thresholds=FIXED, mutual=None if mutual is None else {"group_size": GROUP_SIZE, **mutual}
    )


def predict(weights: Path, root: Path, batch_size: int, mutual: dict[str, object] | None = None) -> SimpleNamespace:
    """``Engine.predict`` on the tire test images (a loader alone: no validation pass first), in data-set order."""
    engine = make_engine(root)
    dataset = PredictDataset(TEST_IMAGES)
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=dataset.collate_fn)
    batches = engine.predict(mutual_model(weights, mutual), dataloaders=loader, return_predictions=True)
    paths = [str(path) for batch in batches for path in batch.image_path]
    return SimpleNamespace(
        paths=paths,
        scores=torch.cat([batch.pred_score for batch in batches]),
        maps=torch.cat([batch.anomaly_map for batch in batches]),
    )


@pytest.fixture(scope="module")
def runs(micro_weights: Path, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("mutual_runs")
    return SimpleNamespace(
        zero_shot=predict(micro_weights, root / "zero", 5),
        weight0=predict(micro_weights, root / "w0", 5, {"weight": 0.0}),
        weight1_batch1=predict(micro_weights, root / "w1b1", 1, {"weight": 1.0}),
        weight1_batch4=predict(micro_weights, root / "w1b4", 4, {"weight": 1.0}),
    )


def test_weight_zero_gives_the_zero_shot_outputs_bitwise(runs: SimpleNamespace) -> None:
    assert runs.weight0.paths == runs.zero_shot.paths
    assert torch.equal(runs.weight0.scores, runs.zero_shot.scores)
    assert torch.equal(runs.weight0.maps, runs.zero_shot.maps)


def test_outputs_do_not_depend_on_the_batch_size(runs: SimpleNamespace) -> None:
    assert runs.weight1_batch1.paths == runs.weight1_batch4.paths
    assert torch.equal(runs.weight1_batch1.scores, runs.weight1_batch4.scores)
    assert torch.equal(runs.weight1_batch1.maps, runs.weight1_batch4.maps)


def micro_musc(weights: Path) -> MutualScoring:
    """MuSc's own module on the micro CLIP: MuSc's layer choice for 4 blocks, the last of each quarter."""
    return MutualScoring(
        backbone=MICRO_BACKBONE, backbone_weights=str(weights), image_size=IMAGE_SIZE, feature_layers=[1, 2, 3, 4]
    ).eval()


def normalised(paths: list[str]) -> torch.Tensor:
    """The images as AdaCLIP's pre-processor gives them (resize, CLIP normalisation), one by one."""
    transform = AdaCLIP.configure_pre_processor(IMAGE_SIZE).transform
    return torch.cat([transform(read_image(path, as_tensor=True).unsqueeze(0)) for path in paths])


def test_weight_one_gives_musc_on_each_group(runs: SimpleNamespace, micro_weights: Path) -> None:
    """MuSc's own module on the same images and weights, group by group: its map halved, its RsCIN score."""
    images = normalised(runs.weight1_batch1.paths)
    for group in (slice(0, 8), slice(8, 15)):  # 15 images in groups of at most 8: 8 and 7, in data-set order
        with torch.no_grad():
            expected = micro_musc(micro_weights)(images[group])
        torch.testing.assert_close(runs.weight1_batch1.maps[group], expected.anomaly_map / 2, atol=1e-6, rtol=0)
        torch.testing.assert_close(runs.weight1_batch1.scores[group], expected.pred_score, atol=1e-6, rtol=0)


def test_engine_test_metrics_get_the_final_values(micro_weights: Path, tmp_path: Path) -> None:
    """Engine.test (validation, then test) with one group of all 15 images: its image AUROC is MuSc's."""
    engine = make_engine(tmp_path)
    datamodule = MVTecAD(root=TIRE_ROOT, category="tire", num_workers=0, eval_batch_size=5)
    model = mutual_model(micro_weights, {"weight": 1.0, "group_size": 15})
    (metrics,) = engine.test(model, datamodule=datamodule)
    paths = sorted(str(path) for path in TEST_IMAGES.rglob("*.png"))  # one group: the order does not matter
    with torch.no_grad():
        scores = micro_musc(micro_weights)(normalised(paths)).pred_score
    labels = torch.tensor([int(Path(path).parent.name != "good") for path in paths])
    assert metrics["image_AUROC"] == pytest.approx(float(BinaryAUROC()(scores, labels)), abs=1e-6)


# ----------------------------------------------------------------------------------------------------------------------
# anomalib-adaclip predict: one process, two processes, killed and resumed
# ----------------------------------------------------------------------------------------------------------------------
def table_rows(table: Path) -> list[list[str]]:
    """The complete rows of a table, header checked."""
    text = table.read_text(encoding="utf-8")
    rows = list(csv.reader(text[: text.rfind("\n") + 1].splitlines()))
    assert tuple(rows[0]) == CSV_COLUMNS
    return rows[1:]


@pytest.mark.slow  # a DDP run of 2 processes, a killed run and its resume (5 start-ups): 30-40 s on 2 cores
def test_predict_is_the_same_on_two_processes_and_after_a_kill_and_resume(
    micro_weights: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """15 images in 3 groups of 5 (default weight): a run killed and resumed, then the same on two processes."""
    table = Path("AdaCLIP") / "latest" / "predictions.csv"
    # Prompts from a file: every process of every run gets the same (a seed does not reach DDP's other process).
    torch.manual_seed(0)
    donor = AdaCLIPModel(backbone=MICRO_BACKBONE, backbone_weights=None, image_size=IMAGE_SIZE, prompting_type="S")
    prompts = save_checkpoint(donor.trainable_state_dict(), donor.config.to_dict(), tmp_path / "prompts.pt")

    def arguments(root: Path) -> list[str]:
        mutual = [
            "--model.mutual.group_size",
            "5",
            "--model.checkpoint",
            str(prompts),
        ]
        return [*predict_arguments(micro_weights, TEST_IMAGES, root), *mutual]

    killed = tmp_path / "killed" / table
    command = [sys.executable, "-m", "anomalib_adaclip", *arguments(tmp_path / "killed")]
    process = subprocess.Popen(
        command,
        env=subprocess_environment(OMP_NUM_THREADS="1"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 600
        while not (killed.is_file() and len(killed.read_bytes().splitlines()) > 6):  # into the second group
            assert process.poll() is None, f"predict ended before it was killed: {process.stderr.read()[-3000:]}"
            assert time.monotonic() < deadline, "no 6 rows within 10 minutes"
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
        process.stderr.close()
    before = table_rows(killed)
    assert 6 <= len(before) < 15, f"{len(before)} rows when killed"
    written = {row[0] for row in before}
    order = [str(path) for path in PredictDataset(TEST_IMAGES).image_filenames]  # the data-set order
    unfinished = {order[index // 5 * 5] for index, path in enumerate(order) if path not in written}  # first images

    with caplog.at_level(logging.INFO, logger="anomalib_adaclip.components.mutual_groups"):
        assert cli.main([*arguments(tmp_path / "killed"), "--resume"]) == 0
    scored = {
        str(record.args[2]) for record in caplog.records if record.getMessage().startswith("Mutual scoring: scored")
    }
    assert scored == unfinished  # whole finished groups are skipped; an unfinished one is scored whole
    after = table_rows(killed)
    assert after[: len(before)] == before
    assert Counter(row[0] for row in after) == Counter(order)  # every image exactly once
    assert all(0.0 <= float(row[2]) <= 1.0 for row in after)

    # Two processes (DDP, gloo) give the table of one process without a kill: the same rows in the same order.
    result = subprocess.run(
        [sys.executable, "-m", "anomalib_adaclip", *arguments(tmp_path / "two"), "--trainer.strategy", "ddp",
         "--trainer.devices", "2"],
        capture_output=True, text=True, env=subprocess_environment(OMP_NUM_THREADS="1"), timeout=900, check=False,
    )  # fmt: skip
    assert result.returncode == 0, explain(result)
    assert table_rows(tmp_path / "two" / table) == sorted(after, key=lambda row: order.index(row[0]))


def test_exports_refuse_and_forward_scores_the_batch_as_one_group(micro_weights: Path, tmp_path: Path) -> None:
    model = mutual_model(micro_weights, {}).eval()
    for export in (model.to_torch, model.to_onnx, model.to_openvino):
        with pytest.raises(NotImplementedError, match="mutual scoring cannot be exported"):
            export(tmp_path)
    assert not list(tmp_path.iterdir())  # nothing written, nothing moved
    raw = torch.rand(3, 3, 90, 120, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        output = model(raw)
    assert output.pred_score.shape == (3,) and ((output.pred_score >= 0) & (output.pred_score <= 1)).all()


# ----------------------------------------------------------------------------------------------------------------------
# One planning rule: 40 images of one class scored outside a run and by the Engine
# ----------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def forty_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 random 128 x 96 RGB images of one class (downscaled to 112 px: the resize matters)."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("forty") / "images"
    folder.mkdir()
    generator = torch.Generator().manual_seed(40)
    for index in range(40):
        pixels = torch.randint(0, 256, (96, 128, 3), generator=generator, dtype=torch.uint8)
        Image.fromarray(pixels.numpy()).save(folder / f"{index:03d}.png")
    return folder


@pytest.mark.parametrize(("group_size", "groups"), [(32, [20, 20]), (None, [40])], ids=["groups-of-32", "whole-class"])
def test_forty_images_get_the_engines_scores_outside_a_run(
    micro_weights: Path, forty_images: Path, tmp_path: Path, group_size: int | None, groups: list[int]
) -> None:
    """``AdaCLIP.forward`` and the demo's ``score_images`` on raw images equal ``Engine.predict``, bit for bit.

    40 images with a group size of 32 are two groups of 20 on every path (before, ``forward`` and the demo scored the
    batch as one group of any size and failed beyond 8 images); ``None`` is one group of the whole class.
    """
    from anomalib_adaclip.components.image_scoring import score_images

    model = make_adaclip(micro_weights, thresholds=FIXED, mutual={"group_size": group_size})
    dataset = PredictDataset(forty_images)
    loader = DataLoader(dataset, batch_size=3, collate_fn=dataset.collate_fn)  # the loader's batch size is not read
    batches = make_engine(tmp_path).predict(model, dataloaders=loader, return_predictions=True)
    assert [len(batch) for batch in batches] == groups  # every step received one whole group
    stage = model.mutual_groups
    assert (stage.images_passed, stage.groups_scored) == (40, len(groups))
    engine_paths = [str(path) for batch in batches for path in batch.image_path]
    engine_scores = torch.cat([batch.pred_score for batch in batches])
    engine_maps = torch.cat([batch.anomaly_map for batch in batches])

    raw = torch.stack([read_image(path, as_tensor=True) for path in engine_paths])
    with torch.no_grad():
        eager = model.eval()(raw)
    assert (stage.images_passed, stage.groups_scored) == (80, 2 * len(groups))  # outside a run: the same groups
    assert torch.equal(eager.pred_score, engine_scores)
    assert torch.equal(eager.anomaly_map.squeeze(1), engine_maps.squeeze(1))
    demo = score_images(model, raw, model.model.class_name, engine_paths)
    assert torch.equal(demo.pred_score, engine_scores)
    assert torch.equal(demo.anomaly_map.squeeze(1), engine_maps.squeeze(1))


def test_engine_test_scores_each_group_once_for_validation_and_test(
    micro_weights: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``Engine.test`` validates first (adaptive thresholds); with ``same_as_test`` the test reuses those groups."""
    model = make_adaclip(micro_weights, mutual={"group_size": 5}, thresholds={"mode": "auto"})
    datamodule = MVTecAD(
        root=TIRE_ROOT, category="tire", num_workers=0, eval_batch_size=4, val_split_mode="same_as_test"
    )
    with caplog.at_level(logging.INFO, logger="anomalib_adaclip.components.mutual_groups"):
        make_engine(tmp_path).test(model, datamodule=datamodule)
    scored = [record for record in caplog.records if record.getMessage().startswith("Mutual scoring: scored")]
    assert sum(int(record.args[0]) for record in scored) == 15  # CLIP passes: each image once in the whole call
    assert len(scored) == 3  # 15 images in groups of 5: scored in validation, reused by the test
    assert (model.mutual_groups.groups_scored, model.mutual_groups.groups_reused) == (0, 3)  # the test run's counts


# ----------------------------------------------------------------------------------------------------------------------
# Several processes: each group scored by one process
# ----------------------------------------------------------------------------------------------------------------------
COUNTS = re.compile(r"Mutual scoring on process (\d+) of (\d+): (\d+) CLIP pass\(es\), (\d+) group\(s\) scored")


@pytest.mark.slow
def test_one_two_and_three_processes_pass_each_image_once_and_score_each_group_once(
    micro_weights: Path, tmp_path: Path
) -> None:
    """15 images in 4 groups (4, 4, 4, 3) on 1, 2 and 3 processes (DDP on CPUs, gloo): the totals are the images and
    the groups, and the table of every run is the table of one process, row for row."""
    script = tmp_path / "predict.py"  # a script file: Lightning's DDP launcher re-runs it for the other processes
    script.write_text(
        "import logging, sys\n"
        "logging.basicConfig(level=logging.INFO, format='%(message)s')\n"
        "from anomalib_adaclip import cli\n"
        "sys.exit(cli.main(sys.argv[1:]))\n",
        encoding="utf-8",
    )
    torch.manual_seed(0)  # prompts from a file: every process of every run gets the same
    donor = AdaCLIPModel(backbone=MICRO_BACKBONE, backbone_weights=None, image_size=IMAGE_SIZE, prompting_type="S")
    prompts = save_checkpoint(donor.trainable_state_dict(), donor.config.to_dict(), tmp_path / "prompts.pt")
    tables = {}
    for processes in (1, 2, 3):
        root = tmp_path / f"p{processes}"
        arguments = [*predict_arguments(micro_weights, TEST_IMAGES, root), "--model.mutual.group_size", "4",
                     "--model.checkpoint", str(prompts), "--trainer.devices", str(processes)]  # fmt: skip
        if processes > 1:
            arguments += ["--trainer.strategy", "ddp"]
        result = subprocess.run(
            [sys.executable, str(script), *arguments], capture_output=True, text=True, timeout=900, check=False,
            env=subprocess_environment(OMP_NUM_THREADS="1"),
        )  # fmt: skip
        assert result.returncode == 0, explain(result)
        counts = [tuple(map(int, match)) for match in COUNTS.findall(result.stdout + result.stderr)]
        assert sorted(rank for rank, *_ in counts) == list(range(processes)), counts
        assert all(world == processes for _, world, *_ in counts)
        assert sum(passes for *_, passes, _ in counts) == 15  # one CLIP pass per image, all processes together
        assert sum(groups for *_, groups in counts) == 4  # each group scored once
        tables[processes] = table_rows(root / "AdaCLIP" / "latest" / "predictions.csv")
    assert tables[2] == tables[1] and tables[3] == tables[1]
