"""``LineConfig``: the settings of a running line (``anomalib-adaclip watch``), one frozen group, each field documented.

The scorer's own settings (backbone, layers, bank sizes) are not here: they belong to the scorer
(:mod:`.scorer`). These say how the line treats the files and the bank around it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from anomalib_adaclip.config import DEFAULT_CLASS_NAME

__all__ = ["LineConfig"]


@dataclass(frozen=True)
class LineConfig:
    """How a line watches a folder, admits images into the bank, freezes it, snapshots it and reports.

    Attributes:
        class_name: The class name of the parts (the prompts' object name; with AdaCLIP and the rarity branch, one
            bank per class name). Written in every row.
        settle_seconds: A file is read only once its size and modification time have not changed for this long
            (measured on this host's clock between polls). ``0``: read a file as soon as it is seen; only right when
            the camera writes under a temporary name (``.*``, ``*.tmp``, ``*.part``, ...) and renames the finished
            file into the folder, which is atomic.
        poll_seconds: How often the folder is listed.
        snapshot_every: The bank is saved after every this many images that have a row (and at exit, after a
            replay, and when it freezes or is lifted). A restart after ``kill -9`` re-scores at most this many
            images to rebuild the bank (their rows are not written again).
        threshold: The image-score threshold: an image above it is NG (its row says so), is not admitted into the
            bank and counts towards a freeze. ``None``: calibrated on known-good images (``good_folder`` of
            :class:`~.runner.LineRunner`, ``--good`` on the command line); a restarted line keeps the threshold of
            its snapshot unless one is given.
        calibration_percentile: The threshold calibrated on known-good images is this percentile of their scores.
        calibration_warmup: The first this many known-good images fill the bank but their scores are not used for
            the threshold (an online scorer's first scores come from a nearly empty bank).
        freeze_streak: This many NG images in a row freeze the bank.
        rate_window: The NG rate of the last this many images is compared with the rate of all images before them.
        rate_factor: The bank freezes when the NG rate of the last ``rate_window`` images exceeds ``rate_factor``
            times the earlier rate (at least ``1 / rate_window``: with no NG before, more than ``rate_factor`` NG
            images in the window). Checked once ``rate_window`` images have been judged before the window.
            ``math.inf`` turns this check off.
        max_backlog: At most this many ready files wait to be scored; beyond it the oldest get a row that says "not
            scored" and why, so that the parts in front of the camera are scored in time. ``None``: no bound (every
            file is scored, however late).
        report_every: Latency (p50, p95) is logged after every this many scored images, and at exit.
        json_lines: Also write one JSON line per image: ``"-"`` to standard output, or a file path (appended to).
            ``None``: only the table.
        snapshot_name: The bank's snapshot file in the output folder; ``<stem>.frozen`` beside it marks a frozen
            bank (delete it to lift the freeze; create it to freeze by hand).
    """

    class_name: str = DEFAULT_CLASS_NAME
    settle_seconds: float = 1.0
    poll_seconds: float = 0.5
    snapshot_every: int = 50
    threshold: float | None = None
    calibration_percentile: float = 99.0
    calibration_warmup: int = 4
    freeze_streak: int = 5
    rate_window: int = 50
    rate_factor: float = 4.0
    max_backlog: int | None = None
    report_every: int = 100
    json_lines: str | None = None
    snapshot_name: str = "bank.pt"

    def __post_init__(self) -> None:
        problems = []
        if not self.class_name.strip():
            problems.append("class_name must not be empty")
        for name in ("settle_seconds", "poll_seconds"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                problems.append(f"{name} must be a finite number >= 0, got {value!r}")
        for name in ("snapshot_every", "freeze_streak", "rate_window", "report_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                problems.append(f"{name} must be an integer >= 1, got {value!r}")
        if self.calibration_warmup < 0:
            problems.append(f"calibration_warmup must be >= 0, got {self.calibration_warmup!r}")
        if self.threshold is not None and not math.isfinite(self.threshold):
            problems.append(f"threshold must be a finite number, got {self.threshold!r}")
        if not 0 <= self.calibration_percentile <= 100:
            problems.append(f"calibration_percentile must be in [0, 100], got {self.calibration_percentile!r}")
        if not self.rate_factor > 1:
            problems.append(f"rate_factor must be > 1 (or inf to turn the rate check off), got {self.rate_factor!r}")
        if self.max_backlog is not None and self.max_backlog < 1:
            problems.append(f"max_backlog must be >= 1 or None, got {self.max_backlog!r}")
        if not self.snapshot_name or "/" in self.snapshot_name or self.snapshot_name.startswith("."):
            problems.append(f"snapshot_name must be a plain visible file name, got {self.snapshot_name!r}")
        if problems:
            raise ValueError("Invalid LineConfig: " + "; ".join(problems) + ".")
