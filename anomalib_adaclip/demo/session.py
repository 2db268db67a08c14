"""The demo's model and inference, without any web page: what :mod:`.app` shows comes from here.

:class:`DemoSession` owns one :class:`~anomalib_adaclip.AdaCLIP`, built on first use and kept; it is rebuilt only
when its :class:`ModelSpec` (backbone, weights, checkpoint, input size) changes, and says so. Images are scored by
the package's own path, the same as ``anomalib predict`` on image files: anomalib's ``read_image``, then
:func:`~anomalib_adaclip.components.image_scoring.score_images` (the model's pre-processor, its scoring, tiled
or not, and its post-processor with the chosen thresholds), then the decision and the anomalous-area fraction of
:mod:`~anomalib_adaclip.components.decisions` and the picture of
:class:`~anomalib_adaclip.components.visualizer.AdaCLIPVisualizer`. A lock lets one request at a time use the model.

Every problem with a request (no images, an empty class name, a file that is not an image or is damaged, 16-bit
grayscale, an image above the size limit, weights that are not on disk) comes back as text in the result, never as
an exception, so the page answers it and keeps serving.

Known-good reference images (normal images of the product) make a run few-shot: with ``n`` references the run uses
an AdaCLIP with ``k_shot=n`` whose few-shot memory holds those ``n`` images for the run's class name, filled by the
package's own path (the references are copied into a folder of the session, which becomes ``few_shot_source``, and
:meth:`AdaCLIP.prepare_references <anomalib_adaclip.AdaCLIP.prepare_references>` reads them with the model's
pre-processing, resizing them to the input size like the queries). The session keeps one zero-shot and one few-shot
model of the same settings, so switching between them rebuilds nothing; the few-shot model's memory is refilled only
when the references (their contents), the class name or tiling change, and the model is rebuilt, with a message, only
when the number of references (``k_shot``) changes. References are checked like the query images; a bad one is
answered and nothing is scored.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
import math
import shutil
import tempfile
import threading
import time
import uuid
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from torchvision.datasets.folder import IMG_EXTENSIONS

from anomalib_adaclip.components.decisions import (
    anomalous_area_fraction,
    applied_threshold,
    decision,
    image_file_size,
)
from anomalib_adaclip.components.image_scoring import score_images
from anomalib_adaclip.components.input_files import check_image_file
from anomalib_adaclip.components.mutual_groups import mutual_settings, score_fused_group
from anomalib_adaclip.components.prediction_writer import CSV_COLUMNS, csv_row
from anomalib_adaclip.components.references import FewShotReferenceError
from anomalib_adaclip.components.visualizer import AdaCLIPVisualizer
from anomalib_adaclip.config import SMOKE_BACKBONE, SMOKE_IMAGE_SIZE, SMOKE_NOTE, AdaCLIPConfig, MutualGroupConfig
from anomalib_adaclip.weights import (
    RELEASED_CHECKPOINTS,
    CheckpointError,
    WeightsNotFoundError,
    hub_cache_only,
    locate_weights,
)

if TYPE_CHECKING:
    from anomalib_adaclip import AdaCLIP

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_MAX_MEGAPIXELS",
    "EXAMPLES_DIR",
    "TABLE_HEADERS",
    "DemoSession",
    "ImageResult",
    "MissingWeightsError",
    "ModelSpec",
    "RunResult",
    "example_images",
    "smoke_spec",
]

DEFAULT_MAX_MEGAPIXELS = 50.0
EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
TABLE_HEADERS = ("file", "class name", "score", "decision", "anomalous area %", "message")
# Width of the overlay picture; its height follows the image's aspect ratio.
OVERLAY_WIDTH = 448
KEEP_RUNS = 20  # run folders (CSV, overlays, zip) of a session kept on disk; its older ones are deleted

ProgressCallback = Callable[[int, int, str], None]


def example_images() -> list[Path]:
    """The example images shipped with the demo (MVTec 3D-AD tire, CC BY-NC-SA 4.0; see ``examples/README.md``)."""
    return sorted(EXAMPLES_DIR.glob("*.png"))


@dataclass(frozen=True)
class ModelSpec:
    """What the model is built from: a change of any of these builds a new model.

    Attributes:
        backbone: open_clip model name, or the JSON of an open_clip config dict.
        backbone_weights: open_clip pretrained tag, a weights file, or ``None`` for random weights (smoke test).
        checkpoint: A released checkpoint name, a checkpoint file, or ``None`` (untrained prompts: smoke test).
        image_size: The model's input side in pixels.
        k_shot: Known-good references per class (few-shot); 0 for zero-shot.
    """

    backbone: str = AdaCLIPConfig.backbone
    backbone_weights: str | None = "openai"
    checkpoint: str | None = "mvtec_colondb"
    image_size: int = AdaCLIPConfig.image_size
    k_shot: int = 0

    def describe(self) -> str:
        """One line for the page: checkpoint, backbone, weights and input size."""
        backbone = "tiny random CLIP" if self.backbone.startswith("{") else self.backbone
        checkpoint = self.checkpoint if self.checkpoint in RELEASED_CHECKPOINTS else None
        if checkpoint is None:
            checkpoint = Path(self.checkpoint).name if self.checkpoint else "none (untrained prompts)"
        weights = self.backbone_weights if self.backbone_weights else "random"
        if weights != "random" and "/" in weights:
            weights = Path(weights).name
        shots = f", few-shot k_shot={self.k_shot}" if self.k_shot else ""
        return f"checkpoint {checkpoint}, backbone {backbone} ({weights} weights), {self.image_size} px{shots}"

    def zero_shot(self) -> ModelSpec:
        """The same settings without references (``k_shot=0``)."""
        return dataclasses.replace(self, k_shot=0)

    def changes_from(self, other: ModelSpec) -> list[str]:
        """The settings that differ from ``other``, as ``name: old -> new``."""
        return [
            f"{name}: {getattr(other, name)} -> {getattr(self, name)}"
            for name in ("checkpoint", "backbone", "backbone_weights", "image_size", "k_shot")
            if getattr(other, name) != getattr(self, name)
        ]


def smoke_spec() -> ModelSpec:
    """The quick start's smoke-test model: a tiny random CLIP, untrained prompts (meaningless outputs)."""
    return ModelSpec(json.dumps(SMOKE_BACKBONE, sort_keys=True), None, None, SMOKE_IMAGE_SIZE)


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


def _on_cpu(batch: Any) -> Any:
    """A post-processed batch with its outputs on the CPU, for the numbers and the pictures."""
    outputs = ("image", "anomaly_map", "pred_mask", "pred_score", "pred_label")
    return batch.update(**{key: getattr(batch, key).cpu() for key in outputs if getattr(batch, key) is not None})


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "gpu":
        device = "cuda"
    return torch.device(device)


def _problem_text(problems: Sequence[Any]) -> str:
    return " ".join(f"{problem.problem}." + (f" {problem.remedy}." if problem.remedy else "") for problem in problems)


def _request_problem(paths: Sequence[Path], class_name: str, image_threshold: float, pixel_threshold: float) -> str:
    """What is missing or wrong in a request before any image is looked at ('' when nothing)."""
    if not paths:
        return "Add one or more images first (upload, drag and drop, or the examples)."
    if not class_name:
        return (
            "Enter a class name: the prompts compare 'a photo of a flawless <class name>' with 'a photo of a "
            "damaged <class name>', so name the object in the images (e.g. tire, bottle, metal-nut)."
        )
    for threshold, label in ((image_threshold, "image threshold"), (pixel_threshold, "pixel threshold")):
        if not 0.0 <= float(threshold) <= 1.0:
            return f"The {label} must be a probability in [0, 1], got {threshold}."
    return ""


def _distinct_files(paths: Sequence[Path]) -> tuple[list[Path], list[Path]]:
    """The files with distinct contents (the first of each), and the repeats left out.

    A reference given twice would be its own nearest neighbour in the leave-one-out scale of the few-shot memory.
    """
    seen: set[str] = set()
    distinct, repeats = [], []
    for path in paths:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        (repeats if digest in seen else distinct).append(path)
        seen.add(digest)
    return distinct, repeats


class MissingWeightsError(WeightsNotFoundError):
    """Every weight file a model needs that is neither on disk nor downloadable; ``errors`` holds each one's."""

    def __init__(self, errors: Sequence[WeightsNotFoundError]) -> None:
        super().__init__("\n\n".join(str(error) for error in errors))
        self.errors = list(errors)


def _missing_weights(spec: ModelSpec, offline: bool) -> list[WeightsNotFoundError]:
    """The weight files of ``spec`` (a pretrained tag's CLIP weights, a released checkpoint) that cannot be found."""
    return list(locate_weights(spec.backbone, spec.backbone_weights, spec.checkpoint, local_only=offline)[1].values())


class DemoSession:
    """One AdaCLIP model, built when first needed and kept, and the scoring of uploaded images with it.

    Args:
        spec: The model of a request that names none. Defaults to the released ``mvtec_colondb`` checkpoint on
            ViT-L-14-336 (``openai`` weights) at 518 px.
        device: ``"auto"`` (a GPU when there is one), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ... Defaults to ``"auto"``.
        smoke: The model is the quick start's smoke-test model: every result says that it means nothing.
        offline: Look for weights on disk only (``ADACLIP_WEIGHTS_DIR``, the Hugging Face cache), never download.
        max_megapixels: Larger images are refused with a message. Defaults to 50.
        output_dir: Where the CSV, overlays and zip files of the runs go. Defaults to a new temporary folder.
    """

    def __init__(
        self,
        spec: ModelSpec | None = None,
        *,
        device: str = "auto",
        smoke: bool = False,
        offline: bool = False,
        max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
        output_dir: str | Path | None = None,
    ) -> None:
        self.default_spec = spec or (smoke_spec() if smoke else ModelSpec())
        self.device = _resolve_device(device)
        self.smoke = smoke
        self.offline = offline
        self.max_megapixels = max_megapixels
        self.output_dir = Path(output_dir) if output_dir else Path(tempfile.mkdtemp(prefix="adaclip_demo_"))
        self.model: AdaCLIP | None = None
        self.spec: ModelSpec | None = None
        # The kept models: at most one zero-shot and one few-shot model, of the same settings otherwise.
        self._models: dict[ModelSpec, AdaCLIP] = {}
        # What the few-shot memory of a kept model holds: (class name, tiling, digest of the reference files).
        self._filled: dict[ModelSpec, tuple[str, bool, str]] = {}
        self._lock = threading.Lock()
        # This session's run folders, oldest first: only these are ever deleted (another demo process may share the
        # output folder, and its pages still offer their files).
        self._run_dirs: list[Path] = []
        self._run_dirs_lock = threading.Lock()

    # ------------------------------------------------------------------------------------------------------------------
    # The model
    # ------------------------------------------------------------------------------------------------------------------
    def _build(self, spec: ModelSpec) -> AdaCLIP:
        from anomalib_adaclip import AdaCLIP  # noqa: PLC0415  (torch, anomalib and open_clip load when needed)

        backbone: str | dict[str, Any] = json.loads(spec.backbone) if spec.backbone.startswith("{") else spec.backbone
        if spec.backbone_weights is None:
            torch.manual_seed(0)  # random weights (smoke test): the same model every time
        visualizer = AdaCLIPVisualizer(fields=["image"], overlay_fields=[("image", ["anomaly_map", "pred_mask"])])
        with hub_cache_only(self.offline):
            model = AdaCLIP(
                backbone=backbone,
                backbone_weights=spec.backbone_weights,
                checkpoint=spec.checkpoint,
                image_size=spec.image_size,
                k_shot=spec.k_shot,
                thresholding="fixed",
                evaluator=False,
                visualizer=visualizer,
            )
        return model.eval().to(self.device)

    def _load(self, spec: ModelSpec) -> str:
        """Make the model of ``spec`` the current one, building it unless it is kept; returns what happened."""
        if spec in self._models:
            self.model, self.spec = self._models[spec], spec
            return ""
        start = time.perf_counter()
        few_shot = spec.k_shot > 0
        # The model this one replaces: the kept one of the same kind (zero- or few-shot), else the current one.
        previous = next((kept for kept in self._models if (kept.k_shot > 0) == few_shot), None)
        other_kind = next((kept for kept in self._models if (kept.k_shot > 0) != few_shot), None)
        # Kept: the other kind's model of the same settings; everything else goes (and a failed build leaves no
        # half-built model behind).
        keep = other_kind if other_kind is not None and other_kind.zero_shot() == spec.zero_shot() else None
        previous = previous or (other_kind if keep is None else None)
        self._models = {keep: self._models[keep]} if keep is not None else {}
        self._filled = {kept: filled for kept, filled in self._filled.items() if kept in self._models}
        self.model, self.spec = None, None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        if missing := _missing_weights(spec, self.offline):  # every missing file at once, before anything is built
            raise MissingWeightsError(missing)
        model = self._build(spec)
        self._models[spec] = model
        self.model, self.spec = model, spec
        took = time.perf_counter() - start
        if previous is None:
            kind = "few-shot model" if few_shot else "model"
            also = f" (the {'zero' if few_shot else 'few'}-shot model is kept too)" if keep is not None else ""
            return (
                f"Built the {kind} ({spec.describe()}) on {self.device} in {took:.1f} s; it is kept for later "
                f"runs{also}."
            )
        changes = "; ".join(spec.changes_from(previous))
        return f"Rebuilt the model because its settings changed ({changes}): {spec.describe()}, {took:.1f} s."

    def load(self, spec: ModelSpec | None = None) -> str:
        """Build the model of ``spec`` (default: the session's) now, unless it is built already.

        Returns:
            What happened (empty when the model was kept).

        Raises:
            WeightsNotFoundError: Weights are neither on disk nor downloadable.
            CheckpointError: A checkpoint or weights file does not fit.
        """
        with self._lock:
            return self._load(spec or self.default_spec)

    # ------------------------------------------------------------------------------------------------------------------
    # Scoring
    # ------------------------------------------------------------------------------------------------------------------
    def _refusal(self, path: Path) -> tuple[str, list[str]]:
        """Why the image cannot be scored ('' when it can), and notes about one that can."""
        problems = check_image_file(path)
        fatal = [problem for problem in problems if problem.fatal]
        if fatal:
            return f"Not scored: {_problem_text(fatal)}", []
        notes = [_problem_text([problem]) for problem in problems]
        size = image_file_size(str(path))
        if size is not None and size[0] * size[1] > self.max_megapixels * 1e6:
            height, width = size
            return (
                f"Not scored: {width}x{height} pixels ({width * height / 1e6:.0f} megapixels) is above this demo's "
                f"limit of {self.max_megapixels:g} megapixels. Downscale it, or score it at full resolution with "
                f"tiled inference: anomalib predict --model anomalib_adaclip.AdaCLIP --model.tiling true --data ...",
                notes,
            )
        return "", notes

    def _reference_problems(self, paths: Sequence[Path]) -> list[str]:
        """Why known-good references cannot be used, one line each (the same checks as the query images)."""
        problems = []
        for path in paths:
            refusal, _ = self._refusal(path)
            if refusal:
                problems.append(f"- {path.name}: {refusal.removeprefix('Not scored: ')}")
        return problems

    def _fill_references(self, model: AdaCLIP, paths: Sequence[Path], class_name: str, tiling: bool) -> str:
        """Fill the few-shot memory of ``model`` with ``paths`` for ``class_name`` unless it holds them already.

        The files are copied into a folder of the session, which becomes the model's ``few_shot_source``, and
        :meth:`AdaCLIP.prepare_references` reads them with the model's pre-processing (the same path as a run of
        ``anomalib predict`` with ``--model.few_shot_source``). The memory holds one class name at a time here.

        Returns:
            What happened, for the page.

        Raises:
            ~anomalib_adaclip.components.references.FewShotReferenceError: A reference cannot be read.
        """
        digest = hashlib.sha256()
        for content in sorted(hashlib.sha256(path.read_bytes()).hexdigest() for path in paths):
            digest.update(content.encode())
        key = (class_name, tiling, digest.hexdigest())
        assert self.spec is not None
        if self._filled.get(self.spec) == key:
            return "kept from the previous run"
        memory = model.model.few_shot_memory
        assert memory is not None  # a few-shot model
        self._filled.pop(self.spec, None)
        start = time.perf_counter()
        folder = self.output_dir / "references" / uuid.uuid4().hex[:12]
        folder.mkdir(parents=True)
        try:
            for index, path in enumerate(paths):
                suffix = "" if path.suffix.lower() in IMG_EXTENSIONS else ".png"  # PIL reads by content
                shutil.copy(path, folder / f"{index:03d}_{path.name}{suffix}")
            memory.clear()
            model.few_shot_source = str(folder)
            model.model.class_name = class_name
            model.prepare_references()
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        self._filled[self.spec] = key
        return f"read in {time.perf_counter() - start:.1f} s"

    def _read(self, path: Path, name: str, class_name: str) -> tuple[ImageResult, torch.Tensor | None]:
        """The image as anomalib's predict reads it, or ``None`` with the reason in the result."""
        from anomalib.data.utils import read_image  # noqa: PLC0415  (anomalib's reader, as predict uses)

        result = ImageResult(name=name, path=str(path), class_name=class_name)
        result.error, result.notes = self._refusal(path)
        if result.error:
            return result, None
        try:
            return result, read_image(path, as_tensor=True)
        except (OSError, ValueError, SyntaxError) as error:  # PIL's errors for files that passed the header checks
            result.error = f"Not scored: the image cannot be decoded ({type(error).__name__}: {error})."
            return result, None

    def _failed(self, results: Sequence[ImageResult], error: RuntimeError) -> None:
        """A model failure (e.g. out of memory on a large tiled image) answered as text; the page keeps serving."""
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        logger.exception("AdaCLIP demo: scoring %s failed", ", ".join(result.name for result in results))
        for result in results:
            result.error = f"Not scored: the model failed on this image ({type(error).__name__}: {error})."

    def _score(self, path: Path, name: str, class_name: str) -> ImageResult:
        result, image = self._read(path, name, class_name)
        if image is None:
            return result
        model = self.model
        assert model is not None  # loaded by the caller
        try:
            batch = score_images(model, image[None].to(self.device), class_name, [str(path)])
        except RuntimeError as error:
            self._failed([result], error)
            return result
        self._fill(result, next(iter(_on_cpu(batch))), image)
        return result

    def _score_together(self, paths: Sequence[Path], class_name: str) -> list[ImageResult] | None:
        """Score the images against each other (mutual scoring, one group); ``None`` when fewer than two can be read.

        Each image is resized by the model's pre-processor, so images of different sizes make one group.
        """
        read = [self._read(path, path.name, class_name) for path in paths]
        usable = [(result, image) for result, image in read if image is not None]
        if len(usable) < 2:
            return None
        from anomalib.data import ImageBatch  # noqa: PLC0415  (anomalib loads when a run starts, as read_image)

        model = self.model
        assert model is not None  # loaded by the caller
        transform = model.pre_processor.transform
        try:
            with torch.no_grad():
                images = torch.cat([transform(image[None].to(self.device)) for _, image in usable])
                settings = mutual_settings(model.model)
                weight = MutualGroupConfig().mutual_weight
                names = [result.name for result, _ in usable]
                predictions = score_fused_group(model.model, images, class_name, settings, weight, names)
                batch = ImageBatch(image=images, image_path=[result.path for result, _ in usable])
                batch.update(**predictions._asdict())
                model.post_processor.on_predict_batch_end(None, model, batch, batch, 0)
        except RuntimeError as error:
            self._failed([result for result, _ in usable], error)
            return [result for result, _ in read]
        for (result, image), item in zip(usable, _on_cpu(batch), strict=True):
            self._fill(result, item, image)
        return [result for result, _ in read]

    def _fill(self, result: ImageResult, item: Any, image: torch.Tensor) -> None:
        """The numbers and the picture of a scored image (its post-processed item, on the CPU) into its result."""
        model = self.model
        score = float(item.pred_score)
        result.score, result.decision = score, decision(item.pred_label)
        result.anomalous_area_fraction = anomalous_area_fraction(
            item.anomaly_map, item.pred_mask, applied_threshold(model, "pixel"), image_file_size(result.path)
        )
        visualizer = model.visualizer
        if isinstance(visualizer, AdaCLIPVisualizer):
            height, width = image.shape[-2:]
            visualizer.field_size = (OVERLAY_WIDTH, max(1, round(OVERLAY_WIDTH * height / width)))
            result.overlay = visualizer.render(item, applied_threshold(model, "image"))

    def _ready_model(
        self, run: RunResult, spec: ModelSpec, class_name: str, tiling: bool, references: Sequence[Path]
    ) -> AdaCLIP | None:
        """The model of ``spec``, built or kept, with its tiling and its few-shot memory set for this request.

        What happened (built, rebuilt, zero- or few-shot) goes into ``run``'s messages; ``None`` when the request
        cannot be scored (the reason is in the messages).
        """
        try:
            built = self._load(spec)
        except WeightsNotFoundError as error:
            count = len(error.errors) if isinstance(error, MissingWeightsError) else 1
            run.messages.append(
                f"The model cannot be built: {count} weight file(s) are missing.\n\n```text\n{error}\n```"
            )
            return None
        except (CheckpointError, ValueError, TypeError, OSError, RuntimeError) as error:
            run.messages.append(f"The model cannot be built ({type(error).__name__}):\n\n```text\n{error}\n```")
            return None
        if built:
            run.messages.append(built)
        model = self.model
        assert model is not None
        try:
            model.model.check_class_name(class_name)
        except ValueError as error:
            run.messages.append(str(error))
            return None
        model.set_tiling(tiling)
        if not references:
            run.messages.append("Zero-shot: no known-good references (the prompts only).")
            return model
        try:
            filled = self._fill_references(model, references, class_name, tiling)
        except (FewShotReferenceError, OSError, RuntimeError) as error:
            run.messages.append(f"No image was scored: the known-good references cannot be used. {error}")
            return None
        run.k_shot = len(references)
        run.messages.append(
            f"Few-shot: {run.k_shot} known-good reference(s) of {class_name!r} ({filled}); each image is compared "
            "with them as well as with the prompts."
        )
        return model

    def predict(
        self,
        images: Sequence[str | Path],
        class_name: str,
        *,
        spec: ModelSpec | None = None,
        image_threshold: float = 0.5,
        pixel_threshold: float = 0.5,
        tiling: bool = False,
        references: Sequence[str | Path] | None = None,
        mutual: bool = False,
        progress: ProgressCallback | None = None,
    ) -> RunResult:
        """Score image files and write the run's CSV and overlays; every problem is answered in the result.

        Args:
            images: The image files (any other file is answered with a message).
            class_name: The object the prompts describe (``"tire"``, ``"metal-nut"``).
            references: Known-good (normal) images of the same object: with ``n`` of them the run is few-shot with
                ``k_shot=n``, without any it is zero-shot. They are resized to the model's input size like the
                queries. Defaults to none.
            spec: The model to use; rebuilt when it differs from the current one. Defaults to the session's.
            image_threshold: An image is NG when its score is above it. Defaults to 0.5.
            pixel_threshold: A pixel is anomalous when its probability is above it. Defaults to 0.5.
            tiling: Score each image at full resolution in tiles of the model's input size. Defaults to ``False``.
            mutual: Also score the images against each other (mutual scoring, MuSc; they form one group, each resized
                to the input size), fused with AdaCLIP's scores with the default ``mutual_weight``; needs at least two
                images and no tiling. Defaults to ``False``.
            progress: Called as ``progress(done, total, what)`` before each step.

        Returns:
            The per-image results, the messages, and the CSV and zip files.
        """
        run = RunResult(smoke=self.smoke)
        if self.smoke:
            run.messages.append(f"**{SMOKE_NOTE}**")
        class_name = (class_name or "").strip()
        paths = [Path(image) for image in images or []]
        if problem := _request_problem(paths, class_name, image_threshold, pixel_threshold):
            run.messages.append(problem)
            return run
        if mutual and tiling:
            run.messages.append(
                "Mutual scoring and tiled inference cannot be combined (mutual scoring compares whole images at the "
                "model's input size): untick one of them. No image was scored."
            )
            return run
        reference_paths = [Path(reference) for reference in references or []]
        if problems := self._reference_problems(reference_paths):
            heading = (
                "No image was scored: the known-good reference(s) below cannot be used. Remove or replace them (or "
                "run without references, zero-shot)."
            )
            run.messages.append("\n".join([heading, *problems]))
            return run
        reference_paths, duplicates = _distinct_files(reference_paths)
        spec = dataclasses.replace(spec or self.default_spec, k_shot=len(reference_paths))
        report = progress or (lambda done, total, what: None)
        with self._lock:
            if spec not in self._models:
                report(0, len(paths), "building the model")
            model = self._ready_model(run, spec, class_name, tiling, reference_paths)
            if model is None:
                return run
            if duplicates:
                run.messages.append(
                    f"Known-good references with the same contents as an earlier one are used once: "
                    f"{', '.join(path.name for path in duplicates)}."
                )
            report(0, len(paths), "scoring")
            model.post_processor.set_fixed_thresholds(image_threshold, pixel_threshold)
            together = self._score_together(paths, class_name) if mutual else None
            if together is not None:
                run.results.extend(together)
                run.messages.append(
                    f"Mutual scoring: the {sum(result.scored for result in together)} images were also scored against "
                    "each other (MuSc; one group, each resized to the input size), fused with the prompts' scores."
                )
            elif mutual:
                run.messages.append(
                    "Mutual scoring needs at least two readable images to compare: the image was scored with the "
                    "prompts only."
                )
            for index, path in enumerate(paths if together is None else []):
                report(index, len(paths), path.name)
                run.results.append(self._score(path, path.name, class_name))
            report(len(paths), len(paths), "writing the files")
        self._write_files(run)
        scored = [result for result in run.results if result.scored]
        failed = len(run.results) - len(scored)
        defective = sum(result.decision == "NG" for result in scored)
        summary = (
            f"Scored {len(scored)} of {len(run.results)} image(s) with the class name {class_name!r}: "
            f"{defective} NG, {len(scored) - defective} OK (image threshold {image_threshold:g}, "
            f"pixel threshold {pixel_threshold:g}"
            f"{', tiled' if tiling else ''}; {self.spec.describe() if self.spec else ''})."
        )
        run.messages.append(summary)
        if failed:
            run.messages.append(
                "\n".join(
                    [f"{failed} image(s) not scored:"]
                    + [f"- {result.name}: {result.error}" for result in run.results if not result.scored]
                )
            )
        return run

    # ------------------------------------------------------------------------------------------------------------------
    # Files
    # ------------------------------------------------------------------------------------------------------------------
    def _new_run_dir(self) -> Path:
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

    def _write_files(self, run: RunResult) -> None:
        """The predictions CSV (scored images) and a zip of the overlays, in a new run folder."""
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
        folder = self._new_run_dir()
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
