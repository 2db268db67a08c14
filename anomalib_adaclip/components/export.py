"""AdaCLIP's exports through anomalib: what cannot be exported, and nothing earlier is lost.

:class:`ExportGuard` guards anomalib's ``to_torch``, ``to_onnx`` and ``to_openvino``: a tiling model is refused (the
tile grid depends on each image's size), and so is a model with mutual scoring (its outputs depend on the other images
of a group, which an exported graph and an inferencer fed one image at a time do not have), and so is one with rarity
scoring (its outputs depend on a bank of the images before, which changes at every image); ONNX defaults to opset 18,
and the log names the class name baked into the prompts. anomalib's contract is that an export goes to
``<export_root>/weights/<kind>/<name>.*``, replacing what is there (its own models do; its integration routine exports
every model into one project folder). AdaCLIP keeps that contract without losing anything: an earlier export of the same
name is first moved, whole, into ``<export_root>/weights/<kind>/earlier/`` (``earlier-v1``, ... when that exists) and
the log says where.

Two exports of the same name into one project folder at once would move each other's half-written files: an export
holds ``weights/<kind>/<name>.export.lock`` (:func:`export_lock`) from the move to its last file, and a second one
waits for it, saying so in one line, then moves the finished export aside in turn.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from anomalib_adaclip.locks import OwnedLock
from anomalib_adaclip.output_files import new_directory

logger = logging.getLogger(__name__)

__all__ = [
    "EXPORT_SUFFIXES",
    "ONNX_OPSET",
    "ExportGuard",
    "check_exportable",
    "export_lock",
    "exporting",
    "keep_earlier_export",
]

#: The ONNX opset of exports (anomalib's default, 14, makes the exporter write opset 18 anyway, after a failed
#: down-conversion).
ONNX_OPSET = 18

ExportType = Literal["torch", "onnx", "openvino"]
# The files each anomalib export writes (ONNX keeps large weights in a side file).
EXPORT_SUFFIXES: dict[str, tuple[str, ...]] = {
    "torch": (".pt",),
    "onnx": (".onnx", ".onnx.data"),
    "openvino": (".xml", ".bin"),
}


def keep_earlier_export(export_root: Path | str, kind: ExportType, model_file_name: str) -> Path | None:
    """Move an earlier export of this name into ``weights/<kind>/earlier[-vN]/`` before a new one replaces it.

    The files keep their names side by side, so a moved ONNX model still finds its ``.onnx.data`` and an OpenVINO
    ``.xml`` its ``.bin``.

    Returns:
        The folder the earlier export now lives in, or ``None`` when there was none.
    """
    folder = Path(export_root) / "weights" / kind
    existing = [folder / f"{model_file_name}{suffix}" for suffix in EXPORT_SUFFIXES[kind]]
    existing = [path for path in existing if path.exists()]
    if not existing:
        return None
    target = new_directory(folder / "earlier")  # exports of other names may move theirs at the same time
    for path in existing:
        shutil.move(str(path), str(target / path.name))
    logger.warning(
        "%s held an earlier %s export; it was moved to %s before the new export took its place.",
        existing[0],
        kind,
        target,
    )
    return target


def export_lock(export_root: Path | str, kind: ExportType, model_file_name: str) -> OwnedLock:
    """The lock of one export of ``model_file_name`` into ``<export_root>/weights/<kind>/`` (not taken yet)."""
    folder = Path(export_root) / "weights" / kind
    return OwnedLock(folder / f"{model_file_name}.export.lock", what=f"The {kind} export {folder / model_file_name}")


@contextmanager
def exporting(export_root: Path | str, kind: ExportType, model_file_name: str) -> Iterator[None]:
    """Hold the export's lock for the block, after waiting (with one logged line) for another export of it to end."""
    lock = export_lock(export_root, kind, model_file_name)
    lock.acquire(wait=True, on_wait=logger.warning)
    try:
        yield
    finally:
        lock.release()


def check_exportable(tiling: bool, mutual_scoring: bool = False, rarity_scoring: bool = False) -> None:
    """Refuse to export a tiling model (the tile grid depends on each image's size), or one scoring groups or a bank.

    Raises:
        NotImplementedError: ``tiling``, ``mutual_scoring`` or ``rarity_scoring`` is on.
    """
    if rarity_scoring:
        msg = (
            "A model with rarity scoring cannot be exported: RareCLIP scores each image against a bank of the images "
            "before it and then adds the image to the bank, so its output depends on the images seen so far and the "
            "bank changes at every image. An exported graph is a fixed function of one image and keeps no state "
            "between calls. Export the model with rarity=None (AdaCLIP's own scores), and run rarity scoring in "
            "Python (Engine / anomalib-adaclip predict, anomalib-adaclip watch, or anomalib_adaclip.RarityScoring)."
        )
        raise NotImplementedError(msg)
    if mutual_scoring:
        msg = (
            "A model with mutual scoring cannot be exported: MuSc scores each image against the other images of its "
            "group, so its output depends on which images are fed together. An exported graph fixes at tracing time "
            "how many other images it averages over (30 % of the group) and which images RsCIN re-scores against, "
            "and an inferencer feeds one image at a time. Export the model with mutual=None (AdaCLIP's own "
            "scores), and run mutual scoring in Python (Engine / anomalib-adaclip predict, or "
            "anomalib_adaclip.MutualScoring on a group of images)."
        )
        raise NotImplementedError(msg)
    if tiling:
        msg = (
            "Tiled inference cannot be exported: the tile grid depends on each image's size. Export a model with "
            "tiling=None (the export resizes every image to image_size) and tile in Python with "
            "anomalib_adaclip.components.tiling.tiled_predict, or predict through anomalib with tiling on."
        )
        raise NotImplementedError(msg)


class ExportGuard:
    """What AdaCLIP's exports through anomalib respect: refused settings, one at a time, an earlier export kept.

    AdaCLIP owns one and runs anomalib's ``to_torch``, ``to_onnx`` and ``to_openvino`` inside :meth:`guard`.

    Args:
        onnx_opset: The ONNX opset an export uses unless given. Defaults to :data:`ONNX_OPSET`.
    """

    def __init__(self, onnx_opset: int = ONNX_OPSET) -> None:
        self.onnx_opset = onnx_opset

    @contextmanager
    def guard(
        self,
        export_root: Path | str,
        kind: ExportType,
        model_file_name: str,
        *,
        tiling: bool,
        mutual_scoring: bool,
        class_names: str | tuple[str, ...],
        rarity_scoring: bool = False,
    ) -> Iterator[None]:
        """Check the export, hold its lock, move an earlier one aside, log the class names; the export runs inside.

        Args:
            export_root: anomalib's export root.
            kind: ``"torch"``, ``"onnx"`` or ``"openvino"``.
            model_file_name: The export's file name without suffix.
            tiling: Whether the model tiles (refused).
            mutual_scoring: Whether the model scores groups (refused).
            rarity_scoring: Whether the model scores against a bank of earlier images (refused).
            class_names: The class name baked into the prompts, or the export's candidate class names.

        Raises:
            NotImplementedError: ``tiling``, ``mutual_scoring`` or ``rarity_scoring``.
        """
        check_exportable(tiling, mutual_scoring, rarity_scoring)
        with exporting(export_root, kind, model_file_name):
            keep_earlier_export(export_root, kind, model_file_name)
            if isinstance(class_names, str):
                logger.info("Exporting AdaCLIP with the class name %r in its prompts.", class_names)
            else:
                logger.info(
                    "Exporting AdaCLIP with the class names %s; each image is scored with the one CLIP picks.",
                    list(class_names),
                )
            yield
