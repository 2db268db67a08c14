"""The bank on disk: a snapshot of the scorer's and the admission's state, and the table rows it covers.

A snapshot replaces the previous one atomically (:func:`~anomalib_adaclip.output_files.replace_file`): after a
``kill -9`` the file is the old snapshot or the new one, whole. It records how many rows of the predictions table
it covers, so that a restarted line knows which scored images came after it and replays them (re-scores them from
the snapshot's bank, in the table's order, without writing their rows again) before it scores anything new. One
line at a time writes a bank: ``<snapshot>.lock`` (:func:`bank_lock`).
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from anomalib_adaclip.locks import OwnedLock
from anomalib_adaclip.output_files import replace_file

__all__ = ["SNAPSHOT_FORMAT", "Snapshot", "SnapshotError", "bank_lock", "load_snapshot", "save_snapshot"]

SNAPSHOT_FORMAT = "anomalib-adaclip line snapshot 1"


class SnapshotError(ValueError):
    """A snapshot that cannot be used: not a snapshot, or of another table."""


@dataclass
class Snapshot:
    """What a restarted line needs.

    Attributes:
        table: The name of the predictions table whose rows it covers.
        rows: How many rows of that table it covers (the images judged before it was taken).
        scorer: The scorer's ``state_dict()``.
        admission: :meth:`~anomalib_adaclip.line.Admission.state_dict`.
        scorer_type: The scorer's class, checked on load.
    """

    table: str
    rows: int
    scorer: Mapping[str, Any] = field(default_factory=dict)
    admission: Mapping[str, Any] = field(default_factory=dict)
    scorer_type: str = ""


def save_snapshot(path: str | Path, snapshot: Snapshot) -> None:
    """Write ``snapshot`` over the previous one, atomically."""
    buffer = io.BytesIO()
    torch.save(
        {
            "format": SNAPSHOT_FORMAT,
            "table": snapshot.table,
            "rows": snapshot.rows,
            "scorer_type": snapshot.scorer_type,
            "scorer": dict(snapshot.scorer),
            "admission": dict(snapshot.admission),
        },
        buffer,
    )
    replace_file(path, buffer.getvalue())


def load_snapshot(path: str | Path) -> Snapshot | None:
    """The snapshot at ``path``, or ``None`` when there is none.

    Raises:
        SnapshotError: The file is not a line snapshot.
    """
    path = Path(path)
    if not path.exists():
        return None
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many kinds for a file that is not its own
        first_line = (str(error).splitlines() or [""])[0]  # torch's messages run over many lines
        msg = f"{path} is not a line snapshot ({type(error).__name__}: {first_line}). Move it away to start a new bank."
        raise SnapshotError(msg) from error
    if not isinstance(content, dict) or content.get("format") != SNAPSHOT_FORMAT:
        msg = f"{path} is not a line snapshot of this version ({SNAPSHOT_FORMAT!r}). Move it away to start a new bank."
        raise SnapshotError(msg)
    return Snapshot(
        table=content["table"],
        rows=int(content["rows"]),
        scorer=content["scorer"],
        admission=content["admission"],
        scorer_type=content["scorer_type"],
    )


def bank_lock(path: str | Path) -> OwnedLock:
    """The lock of one writer of the bank at ``path``: ``<snapshot name>.lock`` beside it (not taken yet)."""
    path = Path(path)
    return OwnedLock(
        path.with_name(f"{path.name}.lock"),
        what=f"The line's bank {path}",
        remedy="Nothing was scored. Stop that line first, or give this one another output folder.",
    )
