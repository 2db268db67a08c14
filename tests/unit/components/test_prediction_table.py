"""The predictions table on disk: which table a resume appends to, cut-off rows, parts merged each image once.

Every table and part here is written by hand; the expected rows are written out in the tests.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

from anomalib_adaclip.components.prediction_table import (
    CSV_COLUMNS,
    PART_COLUMNS,
    PredictionTableError,
    existing_parts,
    merge_parts,
    part_path,
    path_key,
    read_finished,
    repair,
    reserve_table,
    resume_target,
    start_table,
    table_lock,
)
from anomalib_adaclip.locks import LockHeldError

HEADER = ",".join(CSV_COLUMNS) + "\r\n"


def write_csv(path: Path, rows: list[list[str]], header: tuple[str, ...] = CSV_COLUMNS) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([header, *rows])
    return path


def row(name: str, score: str = "0.500000") -> list[str]:
    return [f"/data/{name}.png", "object", score, "NG", "0.100000"]


def read_rows(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


# ----------------------------------------------------------------------------------------------------------------------
# Which table a resume appends to
# ----------------------------------------------------------------------------------------------------------------------
def test_resume_finds_the_one_table_or_names_the_candidates(tmp_path: Path) -> None:
    assert resume_target(tmp_path, "predictions.csv", True) is None  # nothing to resume: a new table
    write_csv(tmp_path / "predictions.csv", [])
    write_csv(tmp_path / "other.csv", [])  # not of the family
    assert resume_target(tmp_path, "predictions.csv", True) == tmp_path / "predictions.csv"
    write_csv(tmp_path / "predictions-v2.csv", [])
    with pytest.raises(PredictionTableError, match=r"2 \(predictions.csv, predictions-v2.csv\).*--resume .*-v2.csv"):
        resume_target(tmp_path, "predictions.csv", True)
    assert (
        resume_target(tmp_path, "predictions.csv", tmp_path / "predictions-v2.csv") == tmp_path / "predictions-v2.csv"
    )
    with pytest.raises(PredictionTableError, match=r"does not exist: .*predictions-v7\.csv"):
        resume_target(tmp_path, "predictions.csv", str(tmp_path / "predictions-v7.csv"))


# ----------------------------------------------------------------------------------------------------------------------
# Reading a table back, a cut-off last row
# ----------------------------------------------------------------------------------------------------------------------
def test_a_cut_off_last_row_is_removed_and_complete_rows_stay(tmp_path: Path) -> None:
    table = write_csv(tmp_path / "predictions.csv", [row("a"), row("b")])
    complete = table.read_bytes()
    with table.open("ab") as handle:
        handle.write(b"/data/c.png,object,0.12")  # the process was killed while writing this row
    finished = read_finished(table)
    assert finished.keys == {path_key("/data/a.png"), path_key("/data/b.png")}
    assert finished.rows == 2
    assert finished.dropped == "/data/c.png,object,0.12"
    assert table.read_bytes() == complete


def test_a_table_cut_inside_its_header_gets_the_header_and_nothing_is_finished(tmp_path: Path) -> None:
    table = tmp_path / "predictions.csv"
    table.write_text("path,class_na", encoding="utf-8")
    assert read_finished(table).keys == set()
    assert table.read_bytes() == HEADER.encode()
    empty = tmp_path / "empty.csv"
    empty.touch()
    assert read_finished(empty).rows == 0
    assert empty.read_bytes() == HEADER.encode()


def test_a_file_that_is_not_a_predictions_table_is_refused(tmp_path: Path) -> None:
    other = write_csv(tmp_path / "predictions.csv", [["1", "2"]], header=("image", "label"))
    with pytest.raises(PredictionTableError, match=r"predictions.csv is not a predictions table: its header is"):
        read_finished(other)
    broken = write_csv(tmp_path / "broken.csv", [row("a"), ["/data/b.png", "object"], row("c")])
    with pytest.raises(PredictionTableError, match=r"broken.csv, line 3: 2 cells, expected 5"):
        read_finished(broken)


def test_repair_leaves_a_complete_table_byte_for_byte(tmp_path: Path) -> None:
    table = write_csv(tmp_path / "predictions.csv", [row("a")])
    before = table.read_bytes()
    assert repair(table) == ""
    assert table.read_bytes() == before


# ----------------------------------------------------------------------------------------------------------------------
# Parts of a multi-process run
# ----------------------------------------------------------------------------------------------------------------------
def test_parts_merge_in_data_set_order_each_image_once(tmp_path: Path) -> None:
    """Five images on two processes with a padding sampler: rank 0 gets 0, 2, 4; rank 1 gets 1, 3 and 0 again."""
    table = write_csv(tmp_path / "predictions.csv", [])
    names = ["a", "b", "c", "d", "e"]
    write_csv(part_path(table, 0), [["0", str(i), *row(names[i])] for i in (0, 2, 4)], PART_COLUMNS)
    write_csv(part_path(table, 1), [["0", str(i), *row(names[i], "0.900000")] for i in (1, 3, 0)], PART_COLUMNS)
    (tmp_path / "predictions-v1.csv.rank0.part").write_text("another table's part")
    assert existing_parts(table) == [part_path(table, 0), part_path(table, 1)]
    assert part_path(table, 1).name == "predictions.csv.rank1.part"

    assert merge_parts(table, existing_parts(table)) == 5

    rows = read_rows(table)[1:]
    assert [r[0] for r in rows] == [f"/data/{name}.png" for name in names]
    assert rows[0][2] == "0.500000"  # the first copy of the repeated image (rank 0's)
    assert existing_parts(table) == []
    assert (tmp_path / "predictions-v1.csv.rank0.part").exists()


def test_parts_of_a_run_killed_while_merging_add_only_what_the_table_lacks(tmp_path: Path) -> None:
    table = write_csv(tmp_path / "predictions.csv", [row("a"), row("b")])
    write_csv(part_path(table, 0), [["0", "0", *row("a")], ["0", "2", *row("c")]], PART_COLUMNS)
    part = write_csv(part_path(table, 1), [["0", "1", *row("b")], ["0", "3", *row("d")]], PART_COLUMNS)
    with part.open("a", encoding="utf-8") as handle:
        handle.write("0,5,/data/f.png,obj")  # cut off: its image is scored again
    finished = read_finished(table)
    assert merge_parts(table, existing_parts(table), finished.keys) == 2
    assert [r[0] for r in read_rows(table)[1:]] == ["/data/a.png", "/data/b.png", "/data/c.png", "/data/d.png"]
    assert finished.keys == {path_key(f"/data/{name}.png") for name in "abcd"}


def test_rows_without_a_data_set_index_are_all_kept(tmp_path: Path) -> None:
    """A loader Lightning cannot index (not a DataLoader): no duplicates to find, every row is appended."""
    table = write_csv(tmp_path / "predictions.csv", [])
    write_csv(part_path(table, 0), [["0", "", *row("a")]], PART_COLUMNS)
    write_csv(part_path(table, 1), [["0", "", *row("b")]], PART_COLUMNS)
    assert merge_parts(table, existing_parts(table)) == 2


def test_path_keys_are_absolute_without_resolving_links(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert path_key("images/a.png") == os.path.join(str(tmp_path), "images", "a.png")
    assert path_key("") == ""


def test_a_new_table_is_locked_before_it_exists_and_a_name_another_run_is_starting_is_passed_over(
    tmp_path: Path,
) -> None:
    starting = table_lock(tmp_path / "predictions.csv")  # another run, about to create predictions.csv
    starting.try_acquire()
    table, lock = start_table(tmp_path, "predictions.csv")
    assert table == tmp_path / "predictions-v1.csv" and table.read_bytes().decode() == HEADER
    assert lock.held and lock.path == tmp_path / "predictions-v1.csv.lock"
    # A resumed run that found no table does not start a second one beside the run that starts it: it stops.
    with pytest.raises(LockHeldError, match=rf"predictions.csv is in use by another run: PID {os.getpid()}"):
        start_table(tmp_path, "predictions.csv", resuming=True)
    assert not (tmp_path / "predictions-v2.csv").exists()
    starting.release()
    lock.release()
    locks = ["predictions-v1.csv.lock", "predictions.csv.lock"]  # lock files stay, free; no owner record
    assert sorted(path.name for path in tmp_path.iterdir()) == ["predictions-v1.csv", *locks]
    (tmp_path / "predictions.csv").write_text(HEADER)  # written meanwhile by a run that has ended
    with pytest.raises(PredictionTableError, match="run the command again to resume it"):
        start_table(tmp_path, "predictions.csv", resuming=True)
    assert not table_lock(tmp_path / "predictions.csv").in_use()  # released on the error


def test_a_reserved_table_lock_is_handed_once_to_the_writer_of_this_process_and_refuses_every_other(
    tmp_path: Path,
) -> None:
    table = tmp_path / "predictions.csv"
    table.write_text(HEADER)
    reserved = reserve_table(tmp_path, "predictions.csv", resume=True)  # the command line, before the model
    assert reserved.held and reserved.path == tmp_path / "predictions.csv.lock"
    assert table_lock(table) is reserved  # the writer takes the held lock: no moment without it
    with pytest.raises(LockHeldError, match=rf"predictions.csv is in use by another run: PID {os.getpid()}"):
        table_lock(table).try_acquire()  # handed over once: any other writer is refused
    with pytest.raises(LockHeldError):
        reserve_table(tmp_path, "predictions.csv", resume=True)
    with pytest.raises(PredictionTableError, match="does not exist"):
        reserve_table(tmp_path, "predictions.csv", resume=tmp_path / "missing.csv")
    reserved.release()
    reserved.release()  # the writer released it already: nothing happens

    # Nothing to resume yet: the table the run will start is reserved, and start_table takes that lock.
    empty = tmp_path / "empty"
    reserved = reserve_table(empty, "predictions.csv", resume=True)
    started, lock = start_table(empty, "predictions.csv", resuming=True)
    assert started == empty / "predictions.csv" and lock is reserved and lock.held
    lock.release()
    assert not table_lock(started).in_use()
