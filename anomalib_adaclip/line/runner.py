"""The running line: a hot folder scored image by image, each file exactly once, the bank guarded and snapshotted.

:class:`LineRunner` ties the pieces together:

1. **Start.** It takes the bank's lock (``<snapshot>.lock``) and the predictions table's (``<table>.lock``: one
   writer per table, as for ``predict``), continues the output folder's table (the same CSV as ``predict``, repaired
   if a killed line cut its last row) or starts one, and restores the bank from the snapshot. Scored images that
   have a row but came after the snapshot are **replayed**: re-scored from the snapshot's bank in the table's order
   and admitted as they were, without writing their rows again, so the bank is exactly that of a line that never
   stopped (a replayed score that differs from its row is logged: the file changed, or the scorer is not
   deterministic). Without a snapshot the bank starts empty, filled first by the known-good images when given
   (which also calibrate the threshold).
2. **Each image**, in arrival order (:mod:`.hot_folder`): read and checked (a file that cannot be used gets a row
   that says "not scored" and why, never a traceback), scored without touching the bank, its row appended and
   flushed, then admitted or not (:mod:`.admission`). The row comes first: a line killed in between has the row and
   replays the admission on restart. Every ``snapshot_every`` rows the bank is saved.
3. **Overload.** When more than ``max_backlog`` ready files wait, the oldest get a row "not scored" with the reason.
4. **Freeze.** An alarm freezes the bank, writes the marker ``<snapshot stem>.frozen`` (its text says why) and saves
   the bank at once. Deleting the marker lifts the freeze (seen at the next poll, saved at once); creating it freezes
   the bank by hand.
5. **Exit** (:meth:`LineRunner.close`): a last snapshot, the latency figures, the locks released.

Rows of the table: ``path`` (absolute), ``class_name``, ``score``, ``decision`` (``OK``/``NG``, or ``not scored:
<reason>`` with an empty score) and ``anomalous_area_fraction`` (empty: the line sets no pixel threshold).
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from anomalib.data.utils import read_image
from torchvision.datasets.folder import IMG_EXTENSIONS

from anomalib_adaclip.components.input_files import check_image_file
from anomalib_adaclip.components.pre_processing import adaclip_transform
from anomalib_adaclip.components.prediction_table import (
    DEFAULT_CSV_NAME,
    csv_row,
    path_key,
    read_finished,
    resume_target,
    start_table,
    table_lock,
    table_rows,
)
from anomalib_adaclip.output_files import write_new_file

from .admission import Admission, Verdict
from .config import LineConfig
from .hot_folder import HotFolder, ReadyFile
from .latency import LatencyLog
from .scorer import LineScorer
from .snapshots import Snapshot, SnapshotError, bank_lock, load_snapshot, save_snapshot

__all__ = ["NOT_SCORED", "LineError", "LineRunner", "LineSummary"]

logger = logging.getLogger(__name__)

NOT_SCORED = "not scored"


class LineError(ValueError):
    """A line that cannot start: no folder, no threshold, a snapshot that does not fit the table."""


@dataclass
class LineSummary:
    """What a line did in this process.

    Attributes:
        scored: Images scored (rows with a score).
        not_scored: Rows that say "not scored".
        admitted: Images that entered the bank.
        replayed: Images re-scored at the start to rebuild the bank.
        frozen: Whether the bank is frozen now.
        rows: Rows of the table now.
    """

    scored: int = 0
    not_scored: int = 0
    admitted: int = 0
    replayed: int = 0
    frozen: bool = False
    rows: int = 0


class LineRunner:
    """Score the images a camera writes into ``folder``, each once, into ``output``'s predictions table.

    Use it as a context manager (``with LineRunner(...) as line: line.run(stop)``), or call :meth:`start`,
    :meth:`poll` / :meth:`run` and :meth:`close`.

    Args:
        folder: The hot folder.
        output: The line's folder: ``predictions.csv``, the snapshot, its marker and locks.
        scorer: The scorer (:class:`~.scorer.LineScorer`), fresh: its bank comes from the snapshot.
        config: The line's settings.
        good_folder: Known-good images that fill a new bank first (in name order) and, without a threshold,
            calibrate it. Ignored when the output folder has a snapshot.
        clock: Monotonic seconds (tests).
    """

    def __init__(
        self,
        folder: str | Path,
        output: str | Path,
        scorer: LineScorer,
        config: LineConfig | None = None,
        *,
        good_folder: str | Path | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.folder = Path(path_key(folder))
        self.output = Path(output)
        self.scorer = scorer
        self.config = config or LineConfig()
        self.good_folder = None if good_folder is None else Path(good_folder)
        self.clock = clock
        self.snapshot_path = self.output / self.config.snapshot_name
        self.marker = self.snapshot_path.with_suffix(".frozen")
        self.admission = Admission(
            self.config.threshold, self.config.freeze_streak, self.config.rate_window, self.config.rate_factor
        )
        self.transform = adaclip_transform(scorer.image_size)
        self.latency = LatencyLog()
        self.summary = LineSummary()
        self.table: Path | None = None
        self.queue: deque[ReadyFile] = deque()
        # Entered as context managers only (the locks' one public protocol), released in reverse order.
        self._locks = contextlib.ExitStack()
        self._table_file: IO[str] | None = None
        self._writer: Any = None
        self._json: IO[str] | None = None
        self._since_snapshot = 0
        self._last_scan = -math.inf
        self._hot_folder = HotFolder(self.folder, self.config.settle_seconds, clock)
        self._known: set[str] = set()  # names of this folder's files that the table has a row of, at the start

    # ------------------------------------------------------------------------------------------------------------------
    # Start: locks, table, snapshot, calibration, replay
    # ------------------------------------------------------------------------------------------------------------------
    def __enter__(self) -> LineRunner:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def start(self) -> None:
        """Take the locks, open the table, restore (or calibrate) the bank and replay what the snapshot lacks.

        Raises:
            LineError: No folder, no threshold and no known-good images, or nothing to calibrate on.
            SnapshotError: The snapshot is not one, or belongs to another table or scorer.
            LockHeldError: Another line writes this bank or table.
            PredictionTableError: The table cannot be continued.
        """
        if not self.folder.is_dir():
            msg = f"The folder to watch does not exist or is not a folder: {self.folder}."
            raise LineError(msg)
        self.output.mkdir(parents=True, exist_ok=True)
        self._locks.enter_context(bank_lock(self.snapshot_path))
        try:
            self._start()
        except BaseException:
            self._release()
            raise

    def _start(self) -> None:
        table = resume_target(self.output, DEFAULT_CSV_NAME, True)
        if table is None:
            table, lock = start_table(self.output, DEFAULT_CSV_NAME, resuming=True)  # returned held
            self._locks.push(lock.__exit__)
        else:
            self._locks.enter_context(table_lock(table))
        self.table = table
        finished = read_finished(table)
        folder = str(self.folder)
        self._known = {os.path.basename(key) for key in finished.keys if os.path.dirname(key) == folder}
        rows = list(table_rows(table))
        snapshot = load_snapshot(self.snapshot_path)
        if snapshot is None:
            self._new_bank()
            covered = 0
            if rows:
                logger.warning(
                    "%s has %d rows but there is no snapshot %s: the bank is rebuilt by re-scoring them.",
                    table,
                    len(rows),
                    self.snapshot_path,
                )
        else:
            covered = self._restore(snapshot, len(rows))
            if self.good_folder is not None:
                logger.info("The bank continues from %s: the known-good images are not read again.", self.snapshot_path)
        self._replay(rows[covered:])
        if self.config.threshold is not None and self.admission.threshold != self.config.threshold:
            logger.info("Threshold %s (given) replaces %s.", self.config.threshold, self.admission.threshold)
            self.admission.threshold = self.config.threshold
        self.summary.rows = len(rows)
        self._table_file = table.open("a", newline="", encoding="utf-8")
        self._writer = csv.writer(self._table_file)
        if self.config.json_lines == "-":
            self._json = sys.stdout
        elif self.config.json_lines:
            self._json = Path(self.config.json_lines).open("a", encoding="utf-8")  # noqa: SIM115  (closed in close())
        self._check_marker()
        self._save()
        state = "frozen: " + self.admission.frozen_reason if self.admission.frozen else "open"
        logger.info(
            "Watching %s (class name %r, threshold %.6g, bank %s); table %s (%d rows).",
            self.folder,
            self.config.class_name,
            self.admission.threshold,
            state,
            table,
            len(rows),
        )

    def _new_bank(self) -> None:
        good = []
        if self.good_folder is not None:
            if not self.good_folder.is_dir():
                msg = f"The folder of known-good images does not exist: {self.good_folder}."
                raise LineError(msg)
            good = sorted(
                path for path in self.good_folder.iterdir() if path.is_file() and path.suffix.lower() in IMG_EXTENSIONS
            )
            if not good:
                msg = f"{self.good_folder} holds no image file ({', '.join(IMG_EXTENSIONS)})."
                raise LineError(msg)
        if self.admission.threshold is None and not good:
            msg = (
                "The line needs an image threshold: give one (--threshold) or known-good images to calibrate it on "
                "(--good FOLDER)."
            )
            raise LineError(msg)
        scores = []
        for path in good:
            image, reason = self._read(path)
            if image is None:
                msg = f"Known-good image {path}: {reason}."
                raise LineError(msg)
            result = self.scorer.score(image, self.config.class_name)
            scores.append(result.score)
            self.scorer.admit(result.pending)
        if good:
            logger.info("The bank starts with %d known-good images from %s.", len(good), self.good_folder)
        if self.admission.threshold is None:
            used = scores[self.config.calibration_warmup :]
            if not used:
                msg = (
                    f"{len(good)} known-good images are not enough to calibrate: the first "
                    f"{self.config.calibration_warmup} (calibration_warmup) only fill the bank."
                )
                raise LineError(msg)
            self.admission.threshold = float(np.percentile(used, self.config.calibration_percentile))
            logger.info(
                "Threshold %.6g: the %gth percentile of the scores of %d known-good images.",
                self.admission.threshold,
                self.config.calibration_percentile,
                len(used),
            )

    def _restore(self, snapshot: Snapshot, rows: int) -> int:
        assert self.table is not None
        scorer_type = _type_name(self.scorer)
        if snapshot.table != self.table.name:
            msg = f"{self.snapshot_path} is the bank of the table {snapshot.table}, not of {self.table.name}."
            raise SnapshotError(msg)
        if snapshot.scorer_type != scorer_type:
            msg = f"{self.snapshot_path} is a bank of {snapshot.scorer_type}, but this line's scorer is {scorer_type}."
            raise SnapshotError(msg)
        if snapshot.rows > rows:
            msg = (
                f"{self.snapshot_path} covers {snapshot.rows} rows of {self.table}, which has {rows}: rows were "
                "removed. Restore the table, or move both away to start a new line."
            )
            raise SnapshotError(msg)
        self.scorer.load_state_dict(snapshot.scorer)
        self.admission.load_state_dict(snapshot.admission)
        return snapshot.rows

    def _replay(self, rows: list[list[str]]) -> None:
        """Rebuild the bank from rows written after the snapshot: re-score and admit as before, no rows written."""
        scored = [row for row in rows if row[2]]
        if not scored:
            return
        logger.info("Replaying %d scored images written after the last snapshot, to rebuild the bank.", len(scored))
        for path, class_name, written, *_ in scored:
            image, reason = self._read(Path(path))
            if image is None:
                logger.warning(
                    "Cannot replay %s (%s): the bank misses its update, so it differs from an uninterrupted line's.",
                    path,
                    reason,
                )
                continue
            result = self.scorer.score(image, class_name)
            verdict = self.admission.judge(result.score)
            if f"{result.score:.6f}" != written:
                logger.warning(
                    "Replayed %s scores %.6f, its row says %s: the file changed or the scorer is not deterministic.",
                    path,
                    result.score,
                    written,
                )
            if verdict.admit:
                self.scorer.admit(result.pending)
            if verdict.alarm:
                self._raise_alarm(verdict.alarm, save=False)
            self.summary.replayed += 1

    # ------------------------------------------------------------------------------------------------------------------
    # Images
    # ------------------------------------------------------------------------------------------------------------------
    def _read(self, path: Path) -> tuple[torch.Tensor | None, str]:
        """The pre-processed image ``[1, 3, S, S]``, or ``None`` and why it cannot be used."""
        fatal = [problem for problem in check_image_file(path) if problem.fatal]
        if fatal:
            return None, "; ".join(
                problem.problem + (f" ({problem.remedy})" if problem.remedy else "") for problem in fatal
            )
        try:  # read as anomalib's data sets read images for predict, so that the scores are predict's
            tensor = read_image(path, as_tensor=True)
        except Exception as error:  # anything PIL raises for a file that passed the checks: its row says why
            return None, f"cannot be read ({type(error).__name__}: {error})"
        return self.transform(tensor)[None], ""

    def process(self, item: ReadyFile) -> Verdict | None:
        """Score one ready file and write its row; ``None`` when it could not be scored (its row says why)."""
        start = self.clock()
        image, reason = self._read(item.path)
        if image is None:
            self._write(item, None, f"{NOT_SCORED}: {reason}", start=start)
            self._row_done()
            return None
        result = self.scorer.score(image, self.config.class_name)
        if not math.isfinite(result.score):  # never judged, never admitted: a NaN is not "at or below the threshold"
            self._write(item, None, f"{NOT_SCORED}: the scorer returned the score {result.score}", start=start)
            self._row_done()
            return None
        verdict = self.admission.judge(result.score)
        self._write(item, result.score, verdict.decision, start=start, verdict=verdict)  # the row before the bank
        if verdict.admit:
            self.scorer.admit(result.pending)
            self.summary.admitted += 1
        if verdict.alarm:
            self._raise_alarm(verdict.alarm, save=True)
        self._row_done()
        if self.latency.count % self.config.report_every == 0:
            logger.info("Line: %s.", self.latency.summary())
        return verdict

    def _write(
        self, item: ReadyFile, score: float | None, decision: str, *, start: float, verdict: Verdict | None = None
    ) -> None:
        assert self._writer is not None and self._table_file is not None
        self._writer.writerow(csv_row(str(item.path), self.config.class_name, score, decision, None))
        self._table_file.flush()
        self.summary.rows += 1
        now = self.clock()
        if score is None:
            self.summary.not_scored += 1
        else:
            self.summary.scored += 1
            self.latency.add(now - item.ready_at, now - start)
        if self._json is not None:
            record = {
                "path": str(item.path),
                "class_name": self.config.class_name,
                "status": "scored" if score is not None else NOT_SCORED,
                "score": score,
                "decision": decision if score is not None else "",
                "reason": "" if score is not None else decision.removeprefix(f"{NOT_SCORED}: "),
                "admitted": bool(verdict and verdict.admit),
                "frozen": self.admission.frozen,
                "latency_ms": round((now - item.ready_at) * 1000, 3),
                "processing_ms": round((now - start) * 1000, 3),
            }
            self._json.write(json.dumps(record) + "\n")
            self._json.flush()

    def _row_done(self) -> None:
        """Count a row whose image is fully handled (admitted or not); save the bank every ``snapshot_every``."""
        self._since_snapshot += 1
        if self._since_snapshot >= self.config.snapshot_every:
            self._save()

    # ------------------------------------------------------------------------------------------------------------------
    # Freeze, snapshots
    # ------------------------------------------------------------------------------------------------------------------
    def _raise_alarm(self, reason: str, *, save: bool) -> None:
        """The bank froze: the marker (first, so that a replay after a kill finds it), the snapshot, the alarm."""
        if not self.marker.exists():
            text = f"The bank froze: {reason}. Delete this file to lift the freeze.\n"
            with contextlib.suppress(FileExistsError):  # created meanwhile by a person: theirs is kept
                write_new_file(self.marker, text, next_free=False)
        if save:
            self._save()
        logger.error(
            "ALARM: the line's bank is frozen: %s. Images are still scored, none enters the bank. Check the line; "
            "delete %s to lift the freeze.",
            reason,
            self.marker,
        )

    def _check_marker(self) -> None:
        """Apply a person's lift (marker deleted) or freeze (marker created); saved at once."""
        present = self.marker.exists()
        if self.admission.frozen and not present:
            logger.warning(
                "The freeze of the bank is lifted (%s was deleted): images enter the bank again.", self.marker
            )
            self.admission.lift()
        elif present and not self.admission.frozen:
            self.admission.freeze(f"frozen by hand ({self.marker} exists)")
            logger.warning("The bank is frozen by hand (%s exists): no image enters it.", self.marker)
        else:
            return
        if self._writer is not None:
            self._save()

    def _save(self) -> None:
        assert self.table is not None
        if self._table_file is not None:
            self._table_file.flush()
            os.fsync(self._table_file.fileno())  # the rows a snapshot covers are on disk before it
        save_snapshot(
            self.snapshot_path,
            Snapshot(
                table=self.table.name,
                rows=self.summary.rows,
                scorer=self.scorer.state_dict(),
                admission=self.admission.state_dict(),
                scorer_type=_type_name(self.scorer),
            ),
        )
        self._since_snapshot = 0

    # ------------------------------------------------------------------------------------------------------------------
    # The loop
    # ------------------------------------------------------------------------------------------------------------------
    def _scan(self) -> None:
        self._last_scan = self.clock()
        try:
            self.queue.extend(self._hot_folder.scan(self._known))
        except OSError as error:  # an unmounted share, a folder moved away: looked at again at the next poll
            logger.warning("Cannot list %s (%s); trying again.", self.folder, error)
            return
        bound = self.config.max_backlog
        while bound is not None and len(self.queue) > bound:
            item = self.queue.popleft()
            reason = (
                f"the backlog of {len(self.queue) + 1} waiting images exceeded max_backlog={bound} (the line scores "
                "slower than parts arrive; the oldest are left out so that the newest are scored in time)"
            )
            logger.warning("%s: %s: %s.", item.path, NOT_SCORED, reason)
            self._write(item, None, f"{NOT_SCORED}: {reason}", start=self.clock())
            self._row_done()

    def poll(self, stop: threading.Event | None = None) -> int:
        """Look at the folder and score what is ready (looking again every ``poll_seconds`` meanwhile).

        Args:
            stop: When set, the files still waiting are left (they have no row: the next start scores them).

        Returns:
            The number of rows written.
        """
        self._check_marker()
        before = self.summary.rows
        self._scan()
        while self.queue and not (stop is not None and stop.is_set()):
            self.process(self.queue.popleft())
            if self.clock() - self._last_scan >= self.config.poll_seconds:
                self._check_marker()
                self._scan()
        return self.summary.rows - before

    def run(self, stop: threading.Event | None = None, *, exit_when_idle: float | None = None) -> LineSummary:
        """Poll until ``stop`` is set (or no file arrived for ``exit_when_idle`` seconds).

        Returns:
            The summary so far (call :meth:`close` after, or use the runner as a context manager).
        """
        stop = stop or threading.Event()
        idle_since = self.clock()
        while not stop.is_set():
            if self.poll(stop):
                idle_since = self.clock()
            elif exit_when_idle is not None and self.clock() - idle_since >= exit_when_idle:
                break
            stop.wait(self.config.poll_seconds)
        return self.summary

    def close(self) -> LineSummary:
        """The last snapshot, the latency figures, the locks released. Safe to call twice."""
        if self._writer is not None:
            self._save()
            logger.info(
                "Line stopped: %d scored, %d not scored, %d admitted, %d replayed; %s.",
                self.summary.scored,
                self.summary.not_scored,
                self.summary.admitted,
                self.summary.replayed,
                self.latency.summary(),
            )
        self.summary.frozen = self.admission.frozen
        if self._table_file is not None:
            self._table_file.close()
        if self._json is not None and self._json is not sys.stdout:
            self._json.close()
        self._table_file = self._writer = self._json = None
        self._release()
        return self.summary

    def _release(self) -> None:
        self._locks.close()


def _type_name(scorer: object) -> str:
    return f"{type(scorer).__module__}.{type(scorer).__qualname__}"
