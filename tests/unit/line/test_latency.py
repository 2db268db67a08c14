"""line/latency.py: p50 and p95 over a bounded window, checked against hand-computed percentiles."""

from __future__ import annotations

import math

from anomalib_adaclip.line import LatencyLog


def test_percentiles_over_the_window() -> None:
    log = LatencyLog(window=5)
    assert math.isnan(log.percentiles()["latency_p50_ms"]) and log.summary() == "no image scored yet"
    for seconds in (9.0, 0.001, 0.002, 0.003, 0.004, 0.005):  # the first falls out of the window of 5
        log.add(seconds, seconds / 2)
    figures = log.percentiles()
    # numpy's linear interpolation over [1, 2, 3, 4, 5] ms: p50 = 3, p95 = 4 + 0.8 * 1 = 4.8.
    assert math.isclose(figures["latency_p50_ms"], 3.0) and math.isclose(figures["latency_p95_ms"], 4.8)
    assert math.isclose(figures["processing_p50_ms"], 1.5) and math.isclose(figures["processing_p95_ms"], 2.4)
    assert log.count == 6
    assert log.summary().startswith("latency p50 3.0 ms, p95 4.8 ms; processing p50 1.5 ms, p95 2.4 ms (last 5 of 6")
