"""AdaCLIP's exports through anomalib: what cannot be exported, and never over an earlier export.

:class:`GuardedExports` wraps anomalib's ``to_torch``, ``to_onnx`` and ``to_openvino``: a tiling model is refused
(the tile grid depends on each image's size), an existing export is never replaced, ONNX defaults to opset 18, and
the log names the class name baked into the prompts.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

logger = logging.getLogger(__name__)

__all__ = ["EXPORT_SUFFIXES", "ONNX_OPSET", "GuardedExports", "check_export_target", "check_exportable"]

# anomalib's default opset (14) makes the exporter write opset 18 anyway, after a failed down-conversion.
ONNX_OPSET = 18

ExportType = Literal["torch", "onnx", "openvino"]
# The files each anomalib export writes (ONNX keeps large weights in a side file).
EXPORT_SUFFIXES: dict[str, tuple[str, ...]] = {
    "torch": (".pt",),
    "onnx": (".onnx", ".onnx.data"),
    "openvino": (".xml", ".bin"),
}


def check_export_target(export_root: Path | str, kind: ExportType, model_file_name: str) -> None:
    """Refuse to export over an earlier export (anomalib would replace it silently).

    Raises:
        FileExistsError: ``<export_root>/weights/<kind>/<model_file_name>.*`` exists.
    """
    folder = Path(export_root) / "weights" / kind
    existing = [folder / f"{model_file_name}{suffix}" for suffix in EXPORT_SUFFIXES[kind]]
    existing = [path for path in existing if path.exists()]
    if existing:
        msg = (
            f"{existing[0]} already exists: AdaCLIP never replaces an earlier export. Choose another export_root "
            f"or model_file_name, or delete the old files first."
        )
        raise FileExistsError(msg)


def check_exportable(tiling: bool) -> None:
    """Refuse to export a tiling model: the tile grid depends on each image's size.

    Raises:
        NotImplementedError: ``tiling`` is on.
    """
    if tiling:
        msg = (
            "Tiled inference cannot be exported: the tile grid depends on each image's size. Export a model with "
            "tiling=False (the export resizes every image to image_size) and tile in Python with "
            "anomalib_adaclip.components.tiling.tiled_predict, or predict through anomalib with tiling=True."
        )
        raise NotImplementedError(msg)


class GuardedExports:
    """Mixin of AdaCLIP's LightningModule (it has ``tiling`` and ``model.class_name``) over anomalib's exports."""

    def to_torch(self, export_root: Path | str, model_file_name: str = "model") -> Path:
        """Export the whole module (pre-processing, CLIP, prompts, post-processing) for anomalib's TorchInferencer."""
        check_exportable(self.tiling)
        check_export_target(export_root, "torch", model_file_name)
        logger.info("Exporting AdaCLIP with the class name %r in its prompts.", self.model.class_name)
        return super().to_torch(export_root, model_file_name)

    def to_onnx(
        self,
        export_root: Path | str,
        model_file_name: str = "model",
        input_size: tuple[int, int] | None = None,
        **kwargs: Any,
    ) -> Path:
        """Export to ONNX (opset 18 by default): raw images in [0, 1] in; score, label, map and mask out.

        The class name's text prompts, the k-means of the Hybrid Semantic Fusion and the thresholds are in the graph.
        """
        check_exportable(self.tiling)
        check_export_target(export_root, "onnx", model_file_name)
        kwargs.setdefault("opset_version", ONNX_OPSET)
        logger.info("Exporting AdaCLIP with the class name %r in its prompts.", self.model.class_name)
        return super().to_onnx(export_root, model_file_name, input_size, **kwargs)

    def to_openvino(self, export_root: Path | str, model_file_name: str = "model", *args: Any, **kwargs: Any) -> Path:
        """Export to OpenVINO IR (through ONNX, opset 18); an existing export is an error, as for the other formats."""
        check_export_target(export_root, "openvino", model_file_name)
        return super().to_openvino(export_root, model_file_name, *args, **kwargs)
