"""The predictions table on disk: its columns, which file a run writes or resumes, and the per-process parts.

One predict run writes one CSV (``predictions.csv``, or the next free ``-vN`` name:
:mod:`anomalib_adaclip.output_files`). This module owns everything about that file that is not a Lightning hook:

- the columns and the formatting of a row (:data:`CSV_COLUMNS`, :func:`csv_row`);
- which table a resumed run appends to (:func:`resume_target`): the one table of the folder, or the one named;
- reading a table back (:func:`read_finished`): the images that already have a row (:func:`table_rows`: the rows in
  the order they were written). A last row cut off by a killed process (no line end) is removed from the file, so
  that its image is scored again;
- one writer per table (:func:`table_lock`, :func:`start_table`, :func:`reserve_table`): a run holds ``<table>.lock``
  (an :class:`~anomalib_adaclip.locks.OwnedLock`, a kernel lock) while it writes, so a second run that would append to
  the same table stops before it scores anything, naming the first; a new table is locked before it is created. The
  command line takes a resumed table's lock before it builds the model (:func:`reserve_table`) and the writer takes
  that very lock over, so no other run can slip in between;
- the parts of a run on several processes (:func:`part_path`, :func:`existing_parts`, :func:`merge_parts`): each
  process appends its rows, with the data-loader and data-set index of each image, to its own part file next to the
  table; at the end the global-rank-zero process merges them into the table in data-set order, each image once (a
  distributed sampler that pads its last batch repeats images), and deletes them. Parts left by a run that was
  killed are merged when the run is resumed, skipping images the table already has.

Image paths are compared as absolute paths (:func:`path_key`), so a table written from one working directory is
resumed correctly from the same one.
"""

from __future__ import annotations

import csv
import heapq
import logging
import math
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from anomalib_adaclip.locks import LockHeldError, OwnedLock, Owner
from anomalib_adaclip.output_files import candidate_paths, existing_versions

logger = logging.getLogger(__name__)

__all__ = [
    "CSV_COLUMNS",
    "DEFAULT_CSV_NAME",
    "PART_COLUMNS",
    "FinishedImages",
    "PredictionTableError",
    "csv_row",
    "existing_parts",
    "merge_parts",
    "part_path",
    "path_key",
    "read_finished",
    "repair",
    "reserve_table",
    "resume_target",
    "start_table",
    "table_lock",
    "table_rows",
]

#: The columns of the predictions CSV, in order.
CSV_COLUMNS = ("path", "class_name", "score", "decision", "anomalous_area_fraction")
DEFAULT_CSV_NAME = "predictions.csv"
# A part row is a table row after the image's data-loader index and its index in that loader's data set.
PART_COLUMNS = ("dataloader_index", "dataset_index", *CSV_COLUMNS)
_PART_PATTERN = r"\.rank(\d+)\.part"


class PredictionTableError(ValueError):
    """A predictions table that cannot be resumed or merged: ambiguous, missing, or not a predictions table."""


def csv_row(path: str, class_name: str, score: float | None, verdict: str, fraction: float | None) -> list[str]:
    """One row of the predictions table (``CSV_COLUMNS``); a missing score or area fraction is an empty cell."""
    return [
        path,
        class_name,
        "" if score is None else f"{score:.6f}",
        verdict,
        "" if fraction is None or math.isnan(fraction) else f"{fraction:.6f}",
    ]


def path_key(path: str | os.PathLike[str]) -> str:
    """The form in which image paths are compared: absolute, not resolved (links stay links); ``""`` stays empty."""
    text = os.fspath(path)
    return os.path.abspath(text) if text else ""


def resume_target(directory: str | Path, filename: str, resume: bool | str | Path) -> Path | None:
    """The table a resumed run appends to.

    Args:
        directory: The run's table folder.
        filename: The table's preferred name (its ``-vN`` versions belong to it).
        resume: ``True``: the one table of ``filename``'s family in ``directory``; a path: that table.

    Returns:
        The table, or ``None`` when ``resume`` is ``True`` and the folder has none yet (the run starts one).

    Raises:
        PredictionTableError: The folder holds several tables (which one is meant cannot be told), or the named table
            does not exist.
    """
    if resume is True:
        tables = existing_versions(Path(directory) / filename)
        if len(tables) > 1:
            listed = ", ".join(table.name for table in tables)
            msg = (
                f"Cannot tell which predictions table to resume: {directory} holds {len(tables)} ({listed}). "
                f"Name one: --resume {tables[-1]} (Python: PredictionCSVWriter(resume=...))."
            )
            raise PredictionTableError(msg)
        return tables[0] if tables else None
    table = Path(resume)
    if not table.is_file():
        msg = f"The predictions table to resume does not exist: {table} (resume={str(resume)!r})."
        raise PredictionTableError(msg)
    return table


@dataclass
class FinishedImages:
    """What a table already holds.

    Attributes:
        keys: :func:`path_key` of every image with a row.
        rows: Number of rows.
        dropped: The cut-off last row that was removed from the file (``""`` when there was none).
    """

    keys: set[str] = field(default_factory=set)
    rows: int = 0
    dropped: str = ""


def _drop_incomplete_last_line(path: Path) -> str:
    """Cut the file after its last line end; return what was cut (a row a killed process did not finish)."""
    with path.open("rb+") as handle:
        size = handle.seek(0, os.SEEK_END)
        if size == 0:
            return ""
        handle.seek(size - 1)
        if handle.read(1) == b"\n":
            return ""
        # Read backwards in blocks until a line end: the tail is at most one row.
        position, tail = size, b""
        while position > 0:
            start = max(0, position - 65536)
            handle.seek(start)
            block = handle.read(position - start)
            tail = block + tail
            position = start
            if b"\n" in block:
                break
        cut = tail.rfind(b"\n") + 1 + position
        handle.seek(cut)
        dropped = handle.read()
        handle.truncate(cut)
    return dropped.decode("utf-8", errors="replace")


def _check_header(path: Path, header: Sequence[str], expected: Sequence[str]) -> None:
    if tuple(header) != tuple(expected):
        msg = f"{path} is not a predictions table: its header is {list(header)}, expected {list(expected)}."
        raise PredictionTableError(msg)


def repair(path: str | Path, columns: Sequence[str] = CSV_COLUMNS) -> str:
    """Make a table (or a part) that a killed process left readable again, and check its header.

    A last row without a line end (the process was killed while writing it) is cut off, so that its image is scored
    again; a file without even a complete header gets the header. Complete rows are never touched.

    Returns:
        The text that was cut off (``""`` when the file was complete).

    Raises:
        PredictionTableError: The header is not ``columns``.
    """
    path = Path(path)
    dropped = _drop_incomplete_last_line(path)
    if dropped:
        logger.warning("%s: removed the unfinished last row %r; its image is scored again.", path, dropped)
    with path.open(newline="", encoding="utf-8") as handle:
        header = next(csv.reader(handle), None)
    if header is None:
        with path.open("a", newline="", encoding="utf-8") as handle:
            csv.writer(handle).writerow(columns)
    else:
        _check_header(path, header, columns)
    return dropped


def read_finished(path: str | Path) -> FinishedImages:
    """The images a table already has, after :func:`repair`.

    Raises:
        PredictionTableError: The header is not ``CSV_COLUMNS``, or a row has another number of cells.
    """
    path = Path(path)
    finished = FinishedImages(dropped=repair(path))
    for row in table_rows(path):
        finished.keys.add(path_key(row[0]))
        finished.rows += 1
    return finished


def table_rows(path: str | Path) -> Iterator[list[str]]:
    """The complete rows of a table (without the header), in the order they were written; call :func:`repair` first.

    Raises:
        PredictionTableError: The header is not ``CSV_COLUMNS``, or a row has another number of cells.
    """
    path = Path(path)
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        _check_header(path, next(reader, []), CSV_COLUMNS)
        for row in reader:
            if len(row) != len(CSV_COLUMNS):
                msg = f"{path}, line {reader.line_num}: {len(row)} cells, expected {len(CSV_COLUMNS)} ({CSV_COLUMNS})."
                raise PredictionTableError(msg)
            yield row


# Table locks this process took before its writer existed (:func:`reserve_table`), by lock file; the writer takes them.
_reserved: dict[Path, OwnedLock] = {}


def _lock_key(table: Path) -> Path:
    return table.with_name(f"{table.name}.lock").resolve()


def table_lock(table: str | Path, run_id: str | None = None) -> OwnedLock:
    """The lock of one writer of ``table``: ``<table name>.lock`` beside it.

    Not taken yet, unless this process reserved it (:func:`reserve_table`): then it is that held lock, handed over
    once.
    """
    table = Path(table)
    reserved = _reserved.pop(_lock_key(table), None)
    if reserved is not None and reserved.held:
        return reserved
    return OwnedLock(
        table.with_name(f"{table.name}.lock"),
        what=f"The predictions table {table}",
        remedy="Nothing was scored. Wait for that run and resume afterwards, or write to another results folder.",
        owner=Owner.this_process(run_id),
    )


def reserve_table(directory: str | Path, filename: str, resume: bool | str | Path) -> OwnedLock:
    """Take the lock of the table a resumed run will append to, before anything else of the run is built.

    The table is the one :func:`resume_target` finds (or ``filename``, which the run then starts). The lock stays
    held; the writer of this process takes it over through :func:`table_lock`. The caller releases it at the end
    (releasing twice does nothing).

    Raises:
        LockHeldError: Another run holds the table.
        LockError: The folder cannot be written.
        PredictionTableError: Which table to resume cannot be told, or the named one does not exist.
    """
    table = resume_target(directory, filename, resume) or Path(directory) / filename
    lock = table_lock(table)
    lock.try_acquire()
    _reserved[_lock_key(table)] = lock
    return lock


def start_table(directory: str | Path, filename: str, *, resuming: bool = False) -> tuple[Path, OwnedLock]:
    """Create a new table (the first free name of ``filename``'s family, header written), locked by this run.

    The lock of a name is taken before the file is created, so a resumed run never picks up a table that another
    run has just started.

    Args:
        directory: The table's folder.
        filename: The preferred name.
        resuming: The run was asked to resume and found no table. Then only ``filename`` itself is tried, and another
            run starting it is an error naming that run (both would score every image); otherwise a name whose lock
            another run holds is passed over for the next free one.

    Returns:
        The table and its lock, held.

    Raises:
        LockHeldError: ``resuming``, and another run is starting the table.
        LockError: The folder cannot be written.
        PredictionTableError: ``resuming``, and the table appeared meanwhile (run the command again to resume it).
        OSError: The table cannot be created.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for table in candidate_paths(directory / filename):
        if not resuming and (table.exists() or table.is_symlink()):
            continue
        lock = table_lock(table)
        try:
            lock.try_acquire()
        except LockHeldError:
            if resuming:
                raise
            continue
        try:
            with table.open("x", newline="", encoding="utf-8") as handle:
                csv.writer(handle).writerow(CSV_COLUMNS)
        except FileExistsError:
            lock.release()
            if resuming:
                msg = f"{table} was written by another run while this one started; run the command again to resume it."
                raise PredictionTableError(msg) from None
            continue
        except BaseException:
            lock.release()
            raise
        return table, lock
    raise AssertionError  # candidate_paths has no end


def part_path(table: str | Path, rank: int) -> Path:
    """The part file of global rank ``rank`` for ``table``: ``<table name>.rank<rank>.part`` next to it."""
    table = Path(table)
    return table.with_name(f"{table.name}.rank{rank}.part")


def existing_parts(table: str | Path) -> list[Path]:
    """The part files of ``table`` that exist, in rank order."""
    table = Path(table)
    pattern = re.compile(re.escape(table.name) + _PART_PATTERN)
    found = []
    for entry in table.parent.iterdir() if table.parent.is_dir() else ():
        match = pattern.fullmatch(entry.name)
        if match and entry.is_file():
            found.append((int(match.group(1)), entry))
    return [entry for _, entry in sorted(found)]


def _part_rows(part: Path) -> Iterator[tuple[int, int, list[str]]]:
    """``(dataloader index, data-set index, table row)`` of each complete row of a part; -1 for an unknown index."""
    repair(part, PART_COLUMNS)
    with part.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        next(reader)
        for row in reader:
            if len(row) != len(PART_COLUMNS):
                msg = f"{part}, line {reader.line_num}: {len(row)} cells, expected {len(PART_COLUMNS)}."
                raise PredictionTableError(msg)
            loader, index = (int(value) if value else -1 for value in row[:2])
            yield loader, index, row[2:]


def merge_parts(table: str | Path, parts: Sequence[Path], finished: set[str] | None = None) -> int:
    """Append the rows of ``parts`` to ``table`` in data-set order, each image once, then delete the parts.

    Duplicates are recognised by their data-loader and data-set index (all parts come from one run): a distributed
    sampler that pads repeats the first images on the last processes. Rows of images in ``finished`` (the table's
    :func:`path_key` set, updated here) are skipped too: a run killed while merging left rows both in the table and
    in its parts. The parts are deleted only after the table is flushed to disk.

    Returns:
        The number of rows appended.
    """
    seen: dict[int, bytearray] = {}  # one byte per image and data loader: memory does not depend on row lengths
    appended = 0
    with Path(table).open("a", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        for loader, index, row in heapq.merge(*(_part_rows(part) for part in parts), key=lambda item: item[:2]):
            if index >= 0:
                marks = seen.setdefault(loader, bytearray())
                if index >= len(marks):
                    marks.extend(bytes(index + 1 - len(marks)))
                if marks[index]:
                    continue
                marks[index] = 1
            if finished is not None:
                key = path_key(row[0])
                if key in finished:
                    continue
                finished.add(key)
            writer.writerow(row)
            appended += 1
        handle.flush()
        os.fsync(handle.fileno())
    for part in parts:
        part.unlink()
    return appended
