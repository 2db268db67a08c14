"""The run store: one JSON record per run of the grid under ``<output>/runs/``, which makes a benchmark resumable.

Layout: ``runs/<model>/<dataset>/<category>/seed<k>.json`` for a finished run (written once, never replaced) and
``seed<k>.failed.json``, ``seed<k>.failed-v1.json``, ... for failed attempts (a new file each, the next free
name of :func:`anomalib_adaclip.output_files.write_new_file`). A rerun skips every run that has a finished record.
Records appear complete or not at all (written to a temporary file, then linked to their name), so a report never
reads half a run.

While a worker executes a run it holds the run's claim, ``seed<k>.claim`` beside the records (a non-blocking
:class:`~anomalib_adaclip.locks.OwnedLock`, which a killed worker leaves free at once): any number of workers on one
output folder run each run once between them (:func:`RunStore.claim`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from anomalib_adaclip.locks import OwnedLock, Owner
from anomalib_adaclip.output_files import write_new_file

from .config import BenchmarkConfigError, RunKey

__all__ = ["RunRecord", "RunStore"]


@dataclass
class RunRecord:
    """What one run produced, stored as JSON under ``runs/``.

    Attributes:
        model: Model name.
        dataset: Data set name.
        category: Category (``""`` for a data set without categories).
        seed: Seed.
        status: ``"finished"`` or ``"failed"``.
        metrics: anomalib's test metrics (``image_AUROC``, ...); the metrics in ``not_applicable`` are absent.
        not_applicable: The metrics the test set cannot have, each with the reason, decided from the data (no masks:
            pixel metrics; no normal or no anomalous image: image metrics). See
            :func:`~anomalib_adaclip.benchmark.metrics.not_applicable_reasons`.
        error: ``"<ExceptionType>: message"`` of a failed run.
        traceback: The traceback of a failed run.
        learning_type: ``"zero_shot"``, ``"few_shot"`` or ``"one_class"`` (``None`` when the model could not be built).
        mode: The run's mode: its ``learning_type``, or ``"mutual_scoring"`` (``"few_shot+mutual_scoring"``) when the
            model scores each test image against the others of its group (``None`` when the model could not be
            built; records written before modes existed have none). See
            :meth:`~anomalib_adaclip.benchmark.specs.ModelSpec.mode`.
        fit_seconds: Time of ``Engine.fit`` (one-class models only).
        test_seconds: Time of ``Engine.test`` (its validation pass included).
        model_config: Class path and arguments of the model, as configured.
        data_config: Class path, category and arguments of the data module (without ``num_workers``/batch size).
        score_normalization: Whether the metrics were computed on post-processed (normalised) scores.
        artifacts: anomalib's run folder of this attempt.
        finished_at: UTC time stamp.
        versions: Versions of anomalib, torch, open_clip and this package.
        path: The record's file (not stored in it).
    """

    model: str
    dataset: str
    category: str
    seed: int
    status: Literal["finished", "failed"]
    metrics: dict[str, float] = field(default_factory=dict)
    not_applicable: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    traceback: str | None = None
    learning_type: str | None = None
    mode: str | None = None
    fit_seconds: float | None = None
    test_seconds: float | None = None
    model_config: dict[str, Any] = field(default_factory=dict)
    data_config: dict[str, Any] = field(default_factory=dict)
    score_normalization: bool = False
    artifacts: str | None = None
    finished_at: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    path: Path | None = field(default=None, compare=False)

    @property
    def key(self) -> RunKey:
        """The grid cell of this run."""
        return RunKey(self.model, self.dataset, self.category, self.seed)

    def to_json(self) -> str:
        """The record as JSON (without ``path``)."""
        content = asdict(self)
        content.pop("path")
        return json.dumps(content, indent=2) + "\n"

    @classmethod
    def read(cls, path: Path) -> RunRecord:
        """Read a record; a file that is not one is an error naming the file."""
        try:
            content = json.loads(path.read_text())
            return cls(**content, path=path)
        except (OSError, ValueError, TypeError) as error:
            msg = f"{path} is not a benchmark run record ({type(error).__name__}: {error}); move it out of the folder."
            raise BenchmarkConfigError(msg) from error


class RunStore:
    """The run records of an output folder: ``runs/<model>/<dataset>/<category>/seed<k>[.failed[-vN]].json``.

    Args:
        root: The records' folder, ``<output>/runs``.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def finished_path(self, key: RunKey) -> Path:
        """Where the record of a finished run is (or goes)."""
        return self.root / key.folder / f"seed{key.seed}.json"

    def failures(self, key: RunKey) -> list[Path]:
        """Records of the failed attempts of a run, oldest first."""
        folder = self.root / key.folder

        def attempt(path: Path) -> int:
            version = path.stem.rpartition("-v")[2]
            return int(version) if version.isdigit() else 0

        return sorted(folder.glob(f"seed{key.seed}.failed*.json"), key=attempt)

    def finished(self, key: RunKey) -> RunRecord | None:
        """The record of the finished run, if any."""
        path = self.finished_path(key)
        return RunRecord.read(path) if path.is_file() else None

    def latest(self, key: RunKey) -> RunRecord | None:
        """The finished record, else the last failed attempt, else ``None``."""
        finished = self.finished(key)
        if finished is not None:
            return finished
        failures = self.failures(key)
        return RunRecord.read(failures[-1]) if failures else None

    def save(self, record: RunRecord) -> Path:
        """Write a record, complete or not at all: a finished one never replaces another, failed ones get a file each.

        Raises:
            FileExistsError: The run has a finished record already (another worker finished it first).
            OSError: The folder cannot be written (full, read-only); nothing is left behind.
        """
        key = record.key
        if record.status == "finished":
            try:
                path = write_new_file(self.finished_path(key), record.to_json(), next_free=False)
            except FileExistsError:
                msg = f"{self.finished_path(key)} exists: a finished run is never written twice."
                raise FileExistsError(msg) from None
        else:
            path = write_new_file(self.root / key.folder / f"seed{key.seed}.failed.json", record.to_json())
        record.path = path
        return path

    def claim_path(self, key: RunKey) -> Path:
        """The claim file of a run: ``seed<k>.claim`` beside its records."""
        return self.root / key.folder / f"seed{key.seed}.claim"

    def claim(self, key: RunKey, owner: Owner) -> OwnedLock:
        """The claim of a run for the worker ``owner`` (not taken yet): a non-blocking lock, taken with ``with``."""
        return OwnedLock(self.claim_path(key), what=f"The benchmark run {key.label}", owner=owner)

    def in_use(self, key: RunKey) -> bool:
        """Whether a worker holds the claim of ``key`` now (a probe: it writes no record, creates no claim file)."""
        return OwnedLock(self.claim_path(key), what=key.label).in_use()

    def claimed_by(self, key: RunKey) -> Owner | None:
        """The worker that holds the claim of ``key`` now, ``None`` when it is free (or its record cannot be read)."""
        return OwnedLock(self.claim_path(key), what=key.label).holder()
