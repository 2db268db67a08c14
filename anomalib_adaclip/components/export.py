"""Guards of AdaCLIP's exports: what cannot be exported, and no export over an earlier one."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

__all__ = ["EXPORT_SUFFIXES", "check_export_target", "check_exportable"]

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
