"""The paper's own data modules through anomalib's Engine.test: zero-shot copies (empty train/), each kind of task.

A tiny random CLIP (MICRO_BACKBONE) scores the generated copies of ``tests/data/paper_layouts.py``; the numbers mean
nothing. The tests check that Engine.test runs on an empty training split and which metrics each kind of data set
gets: image metrics only (HeadCT, no masks), pixel metrics (ColonDB, no normal images; its image metrics are computed
by anomalib but meaningless without normal images). Data sets with both are anomalib's MVTec case (test_engine.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from anomalib_adaclip import AdaCLIP
from tests.conftest import MICRO_BACKBONE
from tests.data.paper_layouts import write_dataset_tree
from tests.helpers import make_engine


@pytest.mark.parametrize(
    ("key", "category", "expected"),
    [
        ("HeadCT", "headct", {"image_AUROC", "image_F1Max"}),
        ("ColonDB", "ColonDB", {"pixel_AUROC", "pixel_F1Max", "pixel_AUPRO"}),
    ],
)
def test_engine_test_on_a_zero_shot_copy(
    micro_weights: Path, tmp_path: Path, key: str, category: str, expected: set[str]
) -> None:
    tree = write_dataset_tree(key, tmp_path / "data", [category])
    for path in (tree.root / category / "train").rglob("*.*"):
        path.unlink()  # the copies the benchmark uses are zero-shot: train/ is empty
    torch.manual_seed(0)
    model = AdaCLIP(backbone=MICRO_BACKBONE, backbone_weights=str(micro_weights), image_size=112)
    engine = make_engine(tmp_path / "run")
    results = engine.test(model, datamodule=tree.datamodule(category, eval_batch_size=8))
    assert expected <= set(results[0])
    assert model.model.class_name
