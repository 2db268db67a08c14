"""The metrics of the accuracy benchmark: their names, their labels in reports and the evaluator that computes them.

Every run of the grid gets a fresh :func:`benchmark_evaluator`, so the numbers of all models are computed by the same
code; the reports read the values back under the names in :data:`BENCHMARK_METRICS`.

Some data sets cannot have every metric: HeadCT, BrainMRI and Br35H come without masks (image-level only), ISIC,
ColonDB, ClinicDB and TN3K without normal test images (pixel-level only). anomalib computes an image AUROC of 0.0 and
an F1-max of 1.0 on labels of one class, which would enter averages as if they were results. The evaluator therefore
decides from the test data itself which metrics are *not applicable* (:func:`not_applicable_reasons`), leaves them
out, and says why (:attr:`.BenchmarkEvaluator.not_applicable`); the run store keeps the reasons and the reports print
"n/a" with them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from anomalib.metrics import Evaluator

if TYPE_CHECKING:
    from lightning.pytorch import LightningModule, Trainer

__all__ = [
    "BENCHMARK_METRICS",
    "IMAGE_METRICS",
    "METRIC_LABELS",
    "NOT_APPLICABLE",
    "PIXEL_METRICS",
    "BenchmarkEvaluator",
    "EvaluatedCounts",
    "benchmark_evaluator",
    "not_applicable_reasons",
]

#: anomalib's metric names (prefix + class name); "AUPR" is average precision, the sum over recall steps of precision.
BENCHMARK_METRICS: tuple[str, ...] = (
    "image_AUROC",
    "image_AUPR",
    "image_F1Max",
    "pixel_AUROC",
    "pixel_AUPRO",
    "pixel_F1Max",
)
IMAGE_METRICS = tuple(name for name in BENCHMARK_METRICS if name.startswith("image_"))
PIXEL_METRICS = tuple(name for name in BENCHMARK_METRICS if name.startswith("pixel_"))
METRIC_LABELS = {
    "image_AUROC": "image AUROC",
    "image_AUPR": "image AP",
    "image_F1Max": "image F1-max",
    "pixel_AUROC": "pixel AUROC",
    "pixel_AUPRO": "pixel AUPRO",
    "pixel_F1Max": "pixel F1-max",
}
# How the reports print a metric that the data set cannot have.
NOT_APPLICABLE = "n/a"


@dataclass
class EvaluatedCounts:
    """What a test set holds, counted over the batches the evaluator saw.

    Attributes:
        normal_images: Images labelled normal (``gt_label`` 0).
        anomalous_images: Images labelled anomalous.
        images_with_mask: Images that came with a ground-truth mask (``gt_mask`` set).
        anomalous_pixels: Pixels marked anomalous in the masks.
        normal_pixels: Pixels marked normal in the masks.
    """

    normal_images: int = 0
    anomalous_images: int = 0
    images_with_mask: int = 0
    anomalous_pixels: int = 0
    normal_pixels: int = 0

    def add(self, batch: Any) -> None:
        """Count a batch (an anomalib ``ImageBatch``; a missing ``gt_label`` or ``gt_mask`` counts as absent)."""
        labels = getattr(batch, "gt_label", None)
        if labels is not None:
            anomalous = int((labels.reshape(-1) > 0).sum())
            self.anomalous_images += anomalous
            self.normal_images += int(labels.numel()) - anomalous
        masks = getattr(batch, "gt_mask", None)
        if masks is not None:
            self.images_with_mask += int(masks.shape[0]) if masks.dim() > 2 else 1
            positive = int((masks > 0).sum())
            self.anomalous_pixels += positive
            self.normal_pixels += int(masks.numel()) - positive


def not_applicable_reasons(content: EvaluatedCounts) -> dict[str, str]:
    """The benchmark metrics a test set cannot have, each with the reason, decided from the data alone.

    Image metrics need both classes of image labels; pixel metrics need masks with both anomalous and normal pixels.

    Args:
        content: What the test set holds.

    Returns:
        Metric name to reason (empty when every metric applies).
    """
    reasons: dict[str, str] = {}
    image_reason = None
    if content.normal_images == 0 and content.anomalous_images == 0:
        image_reason = "the test set has no image labels"
    elif content.normal_images == 0:
        image_reason = "the test set has no normal images (pixel-level data set)"
    elif content.anomalous_images == 0:
        image_reason = "the test set has no anomalous images"
    if image_reason:
        reasons.update(dict.fromkeys(IMAGE_METRICS, image_reason))
    pixel_reason = None
    if content.images_with_mask == 0:
        pixel_reason = "the test set has no masks (image-level data set)"
    elif content.anomalous_pixels == 0:
        pixel_reason = "the test set's masks mark no anomalous pixel (image-level data set)"
    elif content.normal_pixels == 0:
        pixel_reason = "the test set's masks mark no normal pixel"
    if pixel_reason:
        reasons.update(dict.fromkeys(PIXEL_METRICS, pixel_reason))
    return reasons


class BenchmarkEvaluator(Evaluator):
    """anomalib's ``Evaluator`` that leaves out the metrics the test set cannot have, and records why.

    After each test epoch, :attr:`not_applicable` maps each left-out metric to its reason (see
    :func:`not_applicable_reasons`) and :attr:`content` says what the test set held.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: What the test set held (:class:`EvaluatedCounts`).
        self.content = EvaluatedCounts()
        #: Each metric left out after the last test epoch, and why.
        self.not_applicable: dict[str, str] = {}

    def on_test_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Start counting the test set afresh."""
        del trainer, pl_module
        self.content = EvaluatedCounts()
        self.not_applicable = {}

    def on_test_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Count the batch's labels and masks, then update the metrics as anomalib does."""
        self.content.add(batch)
        super().on_test_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)

    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Compute and log the applicable metrics; reset the others (their values would be meaningless)."""
        del pl_module
        self.not_applicable = not_applicable_reasons(self.content)
        for metric in self.test_metrics:
            if metric.name in self.not_applicable:
                metric.reset()
                continue
            self.log(metric.name, metric)
            if trainer.barebones:
                value = metric.compute()
                trainer.callback_metrics[metric.name] = value
                trainer.logged_metrics[metric.name] = value


def benchmark_evaluator() -> BenchmarkEvaluator:
    """The metrics of every benchmark run: image AUROC, AP (AUPR), F1-max; pixel AUROC, AUPRO, F1-max.

    Pixel metrics are skipped for data without masks (``strict=False``), and every metric the test set cannot have is
    left out with its reason (:class:`BenchmarkEvaluator`). AUPRO integrates up to a false positive rate of 0.3
    (anomalib's default, the usual protocol). A fresh instance is built for each run: the metrics hold state.

    Returns:
        An evaluator whose test metrics are named as in :data:`BENCHMARK_METRICS`.
    """
    from anomalib.metrics import AUPR, AUPRO, AUROC, F1Max  # noqa: PLC0415

    image, pixel = ["pred_score", "gt_label"], ["anomaly_map", "gt_mask"]
    return BenchmarkEvaluator(
        test_metrics=[
            AUROC(fields=image, prefix="image_"),
            AUPR(fields=image, prefix="image_"),
            F1Max(fields=image, prefix="image_"),
            AUROC(fields=pixel, prefix="pixel_", strict=False),
            AUPRO(fields=pixel, prefix="pixel_", strict=False),
            F1Max(fields=pixel, prefix="pixel_", strict=False),
        ],
    )
