"""The metrics of the accuracy benchmark: their names, their labels in reports and the evaluator that computes them.

Every run of the grid gets a fresh :func:`benchmark_evaluator`, so the numbers of all models are computed by the same
code; the reports read the values back under the names in :data:`BENCHMARK_METRICS`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from anomalib.metrics import Evaluator

__all__ = ["BENCHMARK_METRICS", "METRIC_LABELS", "benchmark_evaluator"]

# anomalib's metric names (prefix + class name); "AUPR" is average precision: sum over recall steps of precision.
BENCHMARK_METRICS: tuple[str, ...] = (
    "image_AUROC",
    "image_AUPR",
    "image_F1Max",
    "pixel_AUROC",
    "pixel_AUPRO",
    "pixel_F1Max",
)
METRIC_LABELS = {
    "image_AUROC": "image AUROC",
    "image_AUPR": "image AP",
    "image_F1Max": "image F1-max",
    "pixel_AUROC": "pixel AUROC",
    "pixel_AUPRO": "pixel AUPRO",
    "pixel_F1Max": "pixel F1-max",
}


def benchmark_evaluator() -> Evaluator:
    """The metrics of every benchmark run: image AUROC, AP (AUPR), F1-max; pixel AUROC, AUPRO, F1-max.

    Pixel metrics are skipped for data without masks (``strict=False``). AUPRO integrates up to a false positive rate
    of 0.3 (anomalib's default, the usual protocol). A fresh instance is built for each run: the metrics hold state.

    Returns:
        An anomalib ``Evaluator`` whose test metrics are named as in :data:`BENCHMARK_METRICS`.
    """
    from anomalib.metrics import AUPR, AUPRO, AUROC, Evaluator, F1Max  # noqa: PLC0415

    image, pixel = ["pred_score", "gt_label"], ["anomaly_map", "gt_mask"]
    return Evaluator(
        test_metrics=[
            AUROC(fields=image, prefix="image_"),
            AUPR(fields=image, prefix="image_"),
            F1Max(fields=image, prefix="image_"),
            AUROC(fields=pixel, prefix="pixel_", strict=False),
            AUPRO(fields=pixel, prefix="pixel_", strict=False),
            F1Max(fields=pixel, prefix="pixel_", strict=False),
        ],
    )
