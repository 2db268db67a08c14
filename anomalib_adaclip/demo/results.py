"""What a demo run answers: per image the numbers, the picture or why it was not scored; per run the messages and files.

:class:`ImageResult` is one image's answer, :class:`RunResult` one request's; the page shows their ``table`` (columns
:data:`TABLE_HEADERS`), ``gallery`` and ``message``, and offers their CSV and zip files.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from anomalib_adaclip.components.prediction_table import csv_row

__all__ = ["TABLE_HEADERS", "ImageResult", "RunResult"]

TABLE_HEADERS = ("file", "class name", "score", "decision", "anomalous area %", "message")


@dataclass
class ImageResult:
    """What one image gave: the numbers, the picture, or why it was not scored.

    Attributes:
        name: The file name as uploaded.
        path: The file that was read.
        class_name: The class name of the prompts.
        score: The image score (the abnormal probability); ``None`` when the image was not scored.
        decision: ``"NG"``, ``"OK"``, or ``""`` when the image was not scored.
        anomalous_area_fraction: Share of the image's pixels above the pixel threshold (at the image's size).
        overlay: The image with the anomaly map and the predicted-mask contour, the decision written on it.
        error: Why the image was not scored (empty when it was).
        notes: Warnings about an image that was scored (e.g. an EXIF orientation that is ignored).
    """

    name: str
    path: str
    class_name: str
    score: float | None = None
    decision: str = ""
    anomalous_area_fraction: float | None = None
    overlay: Image.Image | None = None
    error: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def scored(self) -> bool:
        """Whether the image was scored."""
        return self.score is not None

    def csv_row(self) -> list[str]:
        """The row of the predictions CSV (``CSV_COLUMNS``, formatted as ``anomalib predict`` writes them)."""
        return csv_row(self.name, self.class_name, self.score, self.decision, self.anomalous_area_fraction)

    def table_row(self) -> list[Any]:
        """The row of the page's table (``TABLE_HEADERS``)."""
        fraction = self.anomalous_area_fraction
        return [
            self.name,
            self.class_name,
            "" if self.score is None else round(self.score, 4),
            self.decision or "not scored",
            "" if fraction is None or math.isnan(fraction) else round(100 * fraction, 2),
            self.error or " ".join(self.notes),
        ]


@dataclass
class RunResult:
    """The answer to one request.

    Attributes:
        results: One entry per image, in the order given.
        messages: What the page says above the results: the model (built, rebuilt or kept), problems, the summary.
        csv_path: The predictions CSV (one row per scored image), or ``None`` when nothing was scored.
        zip_path: The overlays as PNG files in a zip, or ``None`` when nothing was scored.
        smoke: Whether the outputs come from the smoke-test model (meaningless).
        k_shot: Known-good references the run used (few-shot), 0 for a zero-shot run.
    """

    results: list[ImageResult] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    csv_path: Path | None = None
    zip_path: Path | None = None
    smoke: bool = False
    k_shot: int = 0

    @property
    def message(self) -> str:
        """The messages, one paragraph each."""
        return "\n\n".join(self.messages)

    def table(self) -> list[list[Any]]:
        """The rows of the page's table, one per image."""
        return [result.table_row() for result in self.results]

    def gallery(self) -> list[tuple[Image.Image, str]]:
        """The overlays with a caption each (``name: NG 0.734``)."""
        return [
            (result.overlay, f"{result.name}: {result.decision} {result.score:.3f}")
            for result in self.results
            if result.overlay is not None and result.score is not None
        ]
