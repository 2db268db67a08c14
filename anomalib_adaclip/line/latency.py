"""Latency of a running line: p50 and p95 per image, over a bounded window of recent images.

Two figures per image: the **latency** from the moment its file was found complete to its row written (what the
line's control sees: waiting in the backlog included) and the **processing** time (reading, pre-processing, scoring,
admission, writing). Only the last ``window`` images are kept, so memory stays flat on a line that never stops.
"""

from __future__ import annotations

from collections import deque

import numpy as np

__all__ = ["LatencyLog"]


class LatencyLog:
    """Per-image latencies and processing times of the last ``window`` images.

    Args:
        window: Images kept for the percentiles.
    """

    def __init__(self, window: int = 1000) -> None:
        self.latency: deque[float] = deque(maxlen=window)
        self.processing: deque[float] = deque(maxlen=window)
        self.count = 0

    def add(self, latency_s: float, processing_s: float) -> None:
        """Record one image (seconds)."""
        self.latency.append(latency_s)
        self.processing.append(processing_s)
        self.count += 1

    def percentiles(self) -> dict[str, float]:
        """``latency_p50_ms``, ``latency_p95_ms``, ``processing_p50_ms``, ``processing_p95_ms`` (NaN when empty)."""
        figures = {}
        for name, values in (("latency", self.latency), ("processing", self.processing)):
            for q in (50, 95):
                figures[f"{name}_p{q}_ms"] = float(np.percentile(values, q) * 1000) if values else float("nan")
        return figures

    def summary(self) -> str:
        """One log line: the percentiles over the window and the images counted in all."""
        if not self.latency:
            return "no image scored yet"
        figures = self.percentiles()
        return (
            f"latency p50 {figures['latency_p50_ms']:.1f} ms, p95 {figures['latency_p95_ms']:.1f} ms; processing "
            f"p50 {figures['processing_p50_ms']:.1f} ms, p95 {figures['processing_p95_ms']:.1f} ms (last "
            f"{len(self.latency)} of {self.count} images)"
        )
