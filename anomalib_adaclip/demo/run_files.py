"""The files of the demo's runs: one new folder per run with the predictions CSV, the overlays and their zip.

Each run gets a folder of its own (a unique name, created exclusively), so two runs never share one; a session deletes
only its own folders, the oldest beyond :data:`KEEP_RUNS` (another demo process may share the output folder, and its
pages still offer their files). A run whose files cannot be written (a full disk) keeps its results and says so; no
half-written zip is ever offered.
"""

from __future__ import annotations

import csv
import shutil
import threading
import time
import uuid
import zipfile
from pathlib import Path

from PIL.PngImagePlugin import PngInfo

from anomalib_adaclip.components.prediction_table import CSV_COLUMNS
from anomalib_adaclip.config import SMOKE_NOTE

from .results import ImageResult, RunResult

__all__ = ["KEEP_RUNS", "RunFiles"]

KEEP_RUNS = 20  # run folders (CSV, overlays, zip) of a session kept on disk; its older ones are deleted


class RunFiles:
    """The run folders of one session in ``output_dir``, and the writing of a run's CSV and zip into a new one.

    Args:
        output_dir: Where the run folders go (created when the first run writes).
        smoke: The outputs come from the smoke-test model: every PNG and zip says that they mean nothing.
    """

    def __init__(self, output_dir: Path, smoke: bool = False) -> None:
        self.output_dir = output_dir
        self.smoke = smoke
        # This session's run folders, oldest first: only these are ever deleted (another demo process may share the
        # output folder, and its pages still offer their files).
        self._run_dirs: list[Path] = []
        self._run_dirs_lock = threading.Lock()

    def new_run_dir(self) -> Path:
        """A new run folder (a unique name, created exclusively); this session's oldest beyond ``KEEP_RUNS`` go."""
        self.output_dir.mkdir(parents=True, exist_ok=True)
        folder = self.output_dir / f"run-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
        folder.mkdir()
        with self._run_dirs_lock:
            self._run_dirs.append(folder)
            old, self._run_dirs = self._run_dirs[:-KEEP_RUNS], self._run_dirs[-KEEP_RUNS:]
        for path in old:
            shutil.rmtree(path, ignore_errors=True)
        return folder

    def write(self, run: RunResult) -> None:
        """The predictions CSV (scored images) and a zip of the overlays, in a new run folder; ``run`` gets their paths.

        Nothing is written when no image was scored; a failure to write is a message of ``run``, never raised.
        """
        scored = [result for result in run.results if result.scored]
        if not scored:
            return
        try:
            self._write_run_folder(run, scored)
        except OSError as error:  # a full disk, a read-only folder: the results on the page are complete
            run.csv_path = run.zip_path = None
            run.messages.append(
                f"The CSV and zip could not be written to {self.output_dir}: {error.strerror or error}. The results "
                "shown here are complete; free space (or choose another --output folder) and run again for the files."
            )

    def _write_run_folder(self, run: RunResult, scored: list[ImageResult]) -> None:
        """The run's files in a new folder of its own (created exclusively: two runs never share one)."""
        folder = self.new_run_dir()
        try:
            self._write_run_files(run, scored, folder)
        except OSError:
            shutil.rmtree(folder, ignore_errors=True)  # no half-written zip is ever offered
            raise

    def _write_run_files(self, run: RunResult, scored: list[ImageResult], folder: Path) -> None:
        run.csv_path = folder / "predictions.csv"
        with run.csv_path.open("x", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(CSV_COLUMNS)
            writer.writerows(result.csv_row() for result in scored)
        run.zip_path = folder / "overlays.zip"
        with zipfile.ZipFile(run.zip_path, "x") as archive:
            for index, result in enumerate(scored, start=1):
                if result.overlay is None:
                    continue
                info = PngInfo()
                info.add_text("Decision", result.decision)
                info.add_text("Score", repr(result.score))
                if self.smoke:
                    info.add_text("Warning", SMOKE_NOTE)
                png = folder / f"{index:03d}_{Path(result.name).stem}.png"
                result.overlay.save(png, pnginfo=info)
                archive.write(png, png.name)
            archive.write(run.csv_path, run.csv_path.name)
            if self.smoke:
                archive.writestr("WARNING.txt", SMOKE_NOTE + "\n")
