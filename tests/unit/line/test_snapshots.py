"""line/snapshots.py: a snapshot round-trips bit for bit, replaces the last one whole, and has one writer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from anomalib_adaclip.line import Snapshot, SnapshotError, bank_lock, load_snapshot, save_snapshot
from anomalib_adaclip.locks import LockHeldError


def test_a_snapshot_round_trips_exactly_and_replaces_the_previous(tmp_path: Path) -> None:
    path = tmp_path / "bank.pt"
    assert load_snapshot(path) is None
    bank = torch.randn(7, 5, generator=torch.Generator().manual_seed(0))
    save_snapshot(path, Snapshot("predictions.csv", 3, {"bank": torch.zeros(1)}, {"threshold": 1.0}, "a.B"))
    save_snapshot(path, Snapshot("predictions.csv", 9, {"bank": bank}, {"threshold": 2.5, "window": [True]}, "a.B"))
    loaded = load_snapshot(path)
    assert loaded is not None and (loaded.table, loaded.rows, loaded.scorer_type) == ("predictions.csv", 9, "a.B")
    assert torch.equal(loaded.scorer["bank"], bank) and loaded.admission == {"threshold": 2.5, "window": [True]}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bank.pt"]


def test_a_file_that_is_no_snapshot_is_named(tmp_path: Path) -> None:
    (tmp_path / "bank.pt").write_text("not torch")
    with pytest.raises(SnapshotError, match=r"bank.pt is not a line snapshot .*Move it away"):
        load_snapshot(tmp_path / "bank.pt")
    torch.save({"format": "something else"}, tmp_path / "other.pt")
    with pytest.raises(SnapshotError, match="not a line snapshot of this version"):
        load_snapshot(tmp_path / "other.pt")


def test_one_writer_per_bank(tmp_path: Path) -> None:
    with (
        bank_lock(tmp_path / "bank.pt"),
        pytest.raises(LockHeldError, match=r"The line's bank .*bank.pt is in use"),
        bank_lock(tmp_path / "bank.pt"),
    ):
        pass
