"""Export guards: anomalib's contract (an export takes `weights/<kind>/<name>.*`), and no earlier export lost."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest
import torch
from anomalib.models import Padim

from anomalib_adaclip import AdaCLIP
from anomalib_adaclip.components.export import export_lock, exporting, keep_earlier_export
from tests.conftest import MICRO_BACKBONE
from tests.helpers import make_engine


def test_an_earlier_export_is_moved_aside_and_the_new_one_takes_its_place(
    micro_weights: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    torch.manual_seed(0)
    model = AdaCLIP(
        backbone=MICRO_BACKBONE, backbone_weights=str(micro_weights), image_size=112, classes={"name": "widget"}
    )
    engine = make_engine(tmp_path)
    first = engine.export(model, export_type="torch", export_root=tmp_path / "export")
    before = first.read_bytes()
    with caplog.at_level(logging.WARNING, logger="anomalib_adaclip"):
        second = engine.export(model, export_type="torch", export_root=tmp_path / "export")
    assert second == first and second.is_file()  # anomalib's path, as its own models use it
    kept = first.parent / "earlier" / "model.pt"
    assert kept.read_bytes() == before
    assert f"it was moved to {first.parent / 'earlier'}" in caplog.text
    engine.export(model, export_type="torch", export_root=tmp_path / "export")
    assert (first.parent / "earlier-v1" / "model.pt").is_file() and kept.read_bytes() == before


def test_adaclip_exports_after_another_model_into_the_same_project_folder(micro_weights: Path, tmp_path: Path) -> None:
    """anomalib's integration routine exports every model into one folder; nothing earlier is lost."""
    torch.manual_seed(0)
    padim = Padim(backbone="resnet18", pre_trained=False, layers=["layer1"], n_features=16)
    engine = make_engine(tmp_path)
    padim_path = engine.export(padim, export_type="torch", export_root=tmp_path / "project")
    padim_bytes = padim_path.read_bytes()
    model = AdaCLIP(
        backbone=MICRO_BACKBONE, backbone_weights=str(micro_weights), image_size=112, classes={"name": "widget"}
    )
    path = engine.export(model, export_type="torch", export_root=tmp_path / "project")
    assert path == padim_path and path.read_bytes() != padim_bytes
    assert (path.parent / "earlier" / "model.pt").read_bytes() == padim_bytes


@pytest.mark.parametrize(("kind", "suffixes"), [("onnx", (".onnx", ".onnx.data")), ("openvino", (".xml", ".bin"))])
def test_the_files_of_one_export_move_together_under_their_names(
    tmp_path: Path, kind: str, suffixes: tuple[str, ...]
) -> None:
    folder = tmp_path / "weights" / kind
    folder.mkdir(parents=True)
    for suffix in suffixes:
        (folder / f"model{suffix}").write_text(f"earlier {suffix}")
    (folder / "other.onnx").write_text("another name stays")
    target = keep_earlier_export(tmp_path, kind, "model")
    assert target == folder / "earlier"
    for suffix in suffixes:  # an ONNX model still finds its .onnx.data, an .xml its .bin
        assert (target / f"model{suffix}").read_text() == f"earlier {suffix}"
        assert not (folder / f"model{suffix}").exists()
    assert (folder / "other.onnx").read_text() == "another name stays"
    assert keep_earlier_export(tmp_path, kind, "model") is None  # nothing there any more: nothing to keep


def test_two_exports_of_one_name_at_once_neither_mix_nor_lose_a_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An ONNX export writes two files; the second export waits until the first has both, then moves them aside."""
    folder = tmp_path / "weights" / "onnx"
    barrier = threading.Barrier(2)

    def export(name: str) -> None:
        barrier.wait()
        with exporting(tmp_path, "onnx", "model"):
            keep_earlier_export(tmp_path, "onnx", "model")
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "model.onnx").write_text(f"graph of {name}")
            time.sleep(0.3)  # the weights file comes later, as the exporter writes it
            (folder / "model.onnx.data").write_text(f"weights of {name}")

    with caplog.at_level(logging.WARNING, logger="anomalib_adaclip.components.export"):
        threads = [threading.Thread(target=export, args=(name,)) for name in ("a", "b")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    pairs = {
        (path / "model.onnx").read_text().removeprefix("graph of "): (path / "model.onnx.data").read_text()
        for path in (folder, folder / "earlier")
    }
    assert pairs == {"a": "weights of a", "b": "weights of b"}  # each export whole, one of them moved aside
    assert "Waiting: The onnx export" in caplog.text and "is in use by another run" in caplog.text
    # The kernel lock's file stays beside the export, free (locks.py: a lock file is never removed)
    names = ["earlier", "model.export.lock", "model.onnx", "model.onnx.data"]
    assert sorted(path.name for path in folder.iterdir()) == names
    assert not export_lock(tmp_path, "onnx", "model").in_use()


def test_the_guard_refuses_tiling_mutual_and_rarity_scoring_and_keeps_an_earlier_export(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``ExportGuard`` is told what the model does; nothing is written or moved when it refuses."""
    from anomalib_adaclip.components.export import ExportGuard

    guard = ExportGuard()
    for tiling, mutual in ((True, False), (False, True)):
        with pytest.raises(NotImplementedError), guard.guard(tmp_path, "torch", "model", tiling=tiling,
                                                              mutual_scoring=mutual, class_names="x"):  # fmt: skip
            pytest.fail("the export must not run")
    with (
        pytest.raises(NotImplementedError, match="A model with rarity scoring cannot be exported"),
        guard.guard(
            tmp_path, "torch", "model", tiling=False, mutual_scoring=False, rarity_scoring=True, class_names="x"
        ),
    ):
        pytest.fail("the export must not run")
    assert not list(tmp_path.iterdir())
    folder = tmp_path / "weights" / "torch"
    folder.mkdir(parents=True)
    (folder / "model.pt").write_text("earlier")
    with caplog.at_level(logging.INFO), guard.guard(tmp_path, "torch", "model", tiling=False, mutual_scoring=False,
                                                    class_names=("a", "b")):  # fmt: skip
        (folder / "model.pt").write_text("new")
    assert (folder / "earlier" / "model.pt").read_text() == "earlier" and (folder / "model.pt").read_text() == "new"
    assert "class names ['a', 'b']" in caplog.text
    assert guard.onnx_opset == 18
