"""The demo's requests, without any web page: what :mod:`.app` shows comes from here.

:class:`DemoSession` answers a request (images, a class name, thresholds, tiling, references, mutual scoring, online
scoring with a browser session's bank): it checks the inputs, makes the model ready (:class:`~.models.KeptModels`: built
on first use and kept, rebuilt only when its :class:`~.models.DemoModelSettings` change, and says so), scores the images
and has the run's files written (:mod:`.run_files`). Images are scored by the package's own path, the same as ``anomalib
predict`` on image files: anomalib's ``read_image``, then
:func:`~anomalib_adaclip.components.image_scoring.score_images` (the model's pre-processor, its scoring, tiled or not,
or the images as one mutual-scoring group, and its post-processor with the chosen thresholds), then the decision and the
anomalous-area fraction of :mod:`~anomalib_adaclip.components.decisions` and the picture of
:class:`~anomalib_adaclip.components.visualizer.AdaCLIPVisualizer`. A lock lets one request at a time use the model.

Every problem with a request (no images, an empty class name, a file that is not an image or is damaged, 16-bit
grayscale, an image above the size limit, weights that are not on disk) comes back as text in the result, never as
an exception, so the page answers it and keeps serving.

Known-good reference images (normal images of the product) make a run few-shot: with ``n`` references the run uses
an AdaCLIP with ``k_shot=n`` whose few-shot memory holds those ``n`` images for the run's class name, filled by the
package's own path (:meth:`AdaCLIP.set_references <anomalib_adaclip.AdaCLIP.set_references>` reads them with the
model's pre-processing, resizing them to the input size like the queries). The session keeps one zero-shot and one
few-shot model of the same settings, so switching between them rebuilds nothing; the few-shot model's memory is
refilled only when the references (their contents), the class name or tiling change, and the model is rebuilt, with a
message, only when the number of references (``k_shot``) changes. References are checked like the query images; a bad
one is answered and nothing is scored.

Online (rarity) scoring scores each image also against the earlier images of its class name in the browser session's
own bank (:class:`~.banks.SessionBank`, which the page keeps per session; :mod:`.banks` says how), in upload order,
each admitted before the next: one request of 8 images equals 8 requests of 1. Every session's bank goes through the
kept model's one rarity part (:meth:`~.models.KeptModels.rarity_part`), lent under the lock.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from anomalib_adaclip.components.decisions import (
    anomalous_area_fraction,
    applied_threshold,
    decision,
    image_file_size,
)
from anomalib_adaclip.components.image_scoring import score_images
from anomalib_adaclip.components.input_files import check_image_file
from anomalib_adaclip.components.rarity import RarityBanks, check_rarity_scoring
from anomalib_adaclip.components.references import FewShotReferenceError
from anomalib_adaclip.components.visualizer import AdaCLIPVisualizer
from anomalib_adaclip.config import SMOKE_NOTE
from anomalib_adaclip.weights import CheckpointError, WeightsNotFoundError

from .banks import SessionBank, demo_rarity_settings
from .models import DemoModelSettings, KeptModels, MissingWeightsError, smoke_settings
from .results import ImageResult, RunResult
from .run_files import RunFiles

if TYPE_CHECKING:
    from anomalib_adaclip import AdaCLIP

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_MAX_MEGAPIXELS", "EXAMPLES_DIR", "DemoSession", "ProgressCallback", "example_images"]

DEFAULT_MAX_MEGAPIXELS = 50.0
EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
# Width of the overlay picture; its height follows the image's aspect ratio.
OVERLAY_WIDTH = 448

ProgressCallback = Callable[[int, int, str], None]


def example_images() -> list[Path]:
    """The example images shipped with the demo (MVTec 3D-AD tire, CC BY-NC-SA 4.0; see ``examples/README.md``)."""
    return sorted(EXAMPLES_DIR.glob("*.png"))


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


def _combination_problem(tiling: bool, mutual: bool, rarity: bool) -> str:
    """Why the ticked ways of scoring cannot be combined ('' when they can)."""
    if mutual and tiling:
        return (
            "Mutual scoring and tiled inference cannot be combined (mutual scoring compares whole images at the "
            "model's input size): untick one of them. No image was scored."
        )
    try:
        check_rarity_scoring(rarity, mutual, tiling)
    except ValueError as error:
        other = "mutual scoring" if mutual else "tiled inference"
        return f"Online (rarity) scoring cannot be combined with {other}: {error} No image was scored."
    return ""


def _rarity_message(run: RunResult, part: RarityBanks, bank: SessionBank, class_name: str, before: int) -> str:
    """What online scoring did in a run: the text side, the order, the first image of a bank, the bank now."""
    config = part.config
    scored = [result for result in run.results if result.scored]
    if not scored:
        return (
            f"Online (rarity) scoring: no image was scored, so none entered this session's bank (it holds "
            f"{bank.count(class_name)} image(s) of {class_name!r})."
        )
    text = "RareCLIP's TPB text branch" if config.text_branch == "tpb" else "AdaCLIP's map and probability"
    lines = [
        f"Online (rarity) scoring: each image was also scored against the earlier images of {class_name!r} in this "
        f"session's bank (RareCLIP; text side: {text}; fused with the prompts' scores with weight {config.weight:g}), "
        f"in upload order, and then added to the bank: it holds {bank.count(class_name)} image(s) of "
        f"{class_name!r} now."
    ]
    if before == 0:
        lines.append(
            f"{scored[0].name} is the first image of {class_name!r} in this session's bank: its rarity part is the "
            "text side alone (there was nothing to compare it with yet)."
        )
    return " ".join(lines)


class DemoSession:
    """One AdaCLIP model, built when first needed and kept, and the scoring of uploaded images with it.

    Args:
        settings: The model of a request that names none. Defaults to the released ``mvtec_colondb`` checkpoint on
            ViT-L-14-336 (``openai`` weights) at 518 px.
        device: ``"auto"`` (a GPU when there is one), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ... Defaults to ``"auto"``.
        smoke: The model is the quick start's smoke-test model: every result says that it means nothing.
        offline: Look for weights on disk only (``ADACLIP_WEIGHTS_DIR``, the Hugging Face cache), never download.
        max_megapixels: Larger images are refused with a message. Defaults to 50.
        output_dir: Where the CSV, overlays and zip files of the runs go. Defaults to a new temporary folder.
        tpb_weights: RareCLIP's TPB weight file for online (rarity) scoring: its own text branch. Defaults to
            ``None``: AdaCLIP's map and probability are the rarity branch's text side (:mod:`.banks`).

    Attributes:
        models: The kept models (one zero-shot, one few-shot).
        files: The run folders and the writing of a run's files.
    """

    def __init__(
        self,
        settings: DemoModelSettings | None = None,
        *,
        device: str = "auto",
        smoke: bool = False,
        offline: bool = False,
        max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
        output_dir: str | Path | None = None,
        tpb_weights: str | Path | None = None,
    ) -> None:
        self.default_settings = settings or (smoke_settings() if smoke else DemoModelSettings())
        self.device = _resolve_device(device)
        self.smoke = smoke
        self.offline = offline
        self.max_megapixels = max_megapixels
        self.output_dir = Path(output_dir) if output_dir else Path(tempfile.mkdtemp(prefix="adaclip_demo_"))
        self.models = KeptModels(self.device, offline)
        self.files = RunFiles(self.output_dir, smoke)
        self.tpb_weights = str(tpb_weights) if tpb_weights is not None else None
        self._lock = threading.Lock()

    @property
    def model(self) -> AdaCLIP | None:
        """The current model (that of the last request), or ``None`` before the first one is built."""
        return self.models.model

    @property
    def settings(self) -> DemoModelSettings | None:
        """The current model's settings, or ``None``."""
        return self.models.settings

    def load(self, settings: DemoModelSettings | None = None) -> str:
        """Build the model of ``settings`` (default: the session's) now, unless it is built already.

        Returns:
            What happened (empty when the model was kept).

        Raises:
            WeightsNotFoundError: Weights are neither on disk nor downloadable.
            CheckpointError: A checkpoint or weights file does not fit.
        """
        with self._lock:
            return self.models.load(settings or self.default_settings)

    # ------------------------------------------------------------------------------------------------------------------
    # Checks of the inputs
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

    # ------------------------------------------------------------------------------------------------------------------
    # Scoring
    # ------------------------------------------------------------------------------------------------------------------
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

    def _score_read(
        self,
        read: Sequence[tuple[ImageResult, torch.Tensor]],
        class_name: str,
        mutual: bool,
        rarity: RarityBanks | None = None,
    ) -> None:
        """Score read images and fill in their results.

        Each alone, or with ``mutual`` all as one group, or with ``rarity`` in order against and into the lent banks.
        """
        model = self.model
        assert model is not None  # loaded by the caller
        try:  # moving the images to the device fails like the model does when its memory is full
            images = [image.to(self.device) for _, image in read]
            paths = [result.path for result, _ in read]
            batch = score_images(model, images, class_name, paths, mutual=mutual, rarity=rarity)
        except RuntimeError as error:
            self._failed([result for result, _ in read], error)
            return
        for (result, image), item in zip(read, _on_cpu(batch), strict=True):
            self._fill(result, item, image)

    def _score(self, path: Path, name: str, class_name: str, rarity: RarityBanks | None = None) -> ImageResult:
        result, image = self._read(path, name, class_name)
        if image is not None:
            self._score_read([(result, image)], class_name, mutual=False, rarity=rarity)
        return result

    def _score_together(self, paths: Sequence[Path], class_name: str) -> list[ImageResult] | None:
        """Score the images against each other (mutual scoring, one group); ``None`` when fewer than two can be read.

        Each image is resized by the model's pre-processor, so images of different sizes make one group.
        """
        read = [self._read(path, path.name, class_name) for path in paths]
        usable = [(result, image) for result, image in read if image is not None]
        if len(usable) < 2:
            return None
        self._score_read(usable, class_name, mutual=True)
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
        self, run: RunResult, settings: DemoModelSettings, class_name: str, tiling: bool, references: Sequence[Path]
    ) -> AdaCLIP | None:
        """The model of ``settings``, built or kept, with its tiling and its few-shot memory set for this request.

        What happened (built, rebuilt, zero- or few-shot) goes into ``run``'s messages; ``None`` when the request
        cannot be scored (the reason is in the messages).
        """
        try:
            built = self.models.load(settings)
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
            filled = self.models.set_references(references, class_name, tiling)
        except (FewShotReferenceError, OSError, RuntimeError) as error:
            run.messages.append(f"No image was scored: the known-good references cannot be used. {error}")
            return None
        run.k_shot = len(references)
        run.messages.append(
            f"Few-shot: {run.k_shot} known-good reference(s) of {class_name!r} ({filled}); each image is compared "
            "with them as well as with the prompts."
        )
        return model

    def _rarity_part(self, run: RunResult, bank: SessionBank) -> RarityBanks | None:
        """The current model's rarity part with ``bank`` made for it (a new bank for another model, said in ``run``).

        ``None`` when the model cannot score online (the reason is in the messages).
        """
        model, settings = self.model, self.settings
        assert model is not None and settings is not None  # loaded by the caller
        config = demo_rarity_settings(model.model.n_vision_blocks, self.tpb_weights)
        try:
            part = self.models.rarity_part(config)
        except (ValueError, OSError, RuntimeError) as error:
            run.messages.append(
                f"No image was scored: online (rarity) scoring cannot be used with this model ({type(error).__name__}: "
                f"{error}). Untick it to score with the prompts."
            )
            return None
        if note := bank.made_for(settings, config):
            run.messages.append(note)
        return part

    def _score_request(
        self,
        run: RunResult,
        paths: Sequence[Path],
        class_name: str,
        mutual: bool,
        rarity: SessionBank | None,
        report: ProgressCallback,
    ) -> bool:
        """Score a request's images into ``run`` (the model is ready); ``False`` when online scoring cannot run."""
        together = self._score_together(paths, class_name) if mutual else None
        if together is not None:
            run.results.extend(together)
            run.messages.append(
                f"Mutual scoring: the {sum(result.scored for result in together)} images were also scored against "
                "each other (MuSc; one group, each resized to the input size), fused with the prompts' scores."
            )
            return True
        if mutual:
            run.messages.append(
                "Mutual scoring needs at least two readable images to compare: the image was scored with the "
                "prompts only."
            )
        part, lending, before = None, contextlib.nullcontext(), 0
        if rarity is not None:
            if (part := self._rarity_part(run, rarity)) is None:
                return False
            lending, before = rarity.lent_to(part), rarity.count(class_name)
        # In upload order, one image at a time: each is admitted into the bank before the next is scored.
        with lending:
            for index, path in enumerate(paths):
                report(index, len(paths), path.name)
                run.results.append(self._score(path, path.name, class_name, part))
        if rarity is not None and part is not None:
            run.messages.append(_rarity_message(run, part, rarity, class_name, before))
        return True

    def new_bank(self, bank: SessionBank) -> str:
        """Empty a browser session's rarity bank (after a request that uses it, never during one).

        Returns:
            What the page says about the bank now.
        """
        with self._lock:
            bank.clear()
            return f"A new bank. {bank.describe()}"

    def predict(
        self,
        images: Sequence[str | Path],
        class_name: str,
        *,
        settings: DemoModelSettings | None = None,
        image_threshold: float = 0.5,
        pixel_threshold: float = 0.5,
        tiling: bool = False,
        references: Sequence[str | Path] | None = None,
        mutual: bool = False,
        rarity: SessionBank | None = None,
        progress: ProgressCallback | None = None,
    ) -> RunResult:
        """Score image files and write the run's CSV and overlays; every problem is answered in the result.

        Args:
            images: The image files (any other file is answered with a message).
            class_name: The object the prompts describe (``"tire"``, ``"metal-nut"``).
            references: Known-good (normal) images of the same object: with ``n`` of them the run is few-shot with
                ``k_shot=n``, without any it is zero-shot. They are resized to the model's input size like the
                queries. Defaults to none.
            settings: The model to use; rebuilt when it differs from the current one. Defaults to the session's.
            image_threshold: An image is NG when its score is above it. Defaults to 0.5.
            pixel_threshold: A pixel is anomalous when its probability is above it. Defaults to 0.5.
            tiling: Score each image at full resolution in tiles of the model's input size. Defaults to ``False``.
            mutual: Also score the images against each other (mutual scoring, MuSc; they form one group, each resized
                to the input size), fused with AdaCLIP's scores with the default ``mutual.weight``; needs at least two
                images and no tiling. Defaults to ``False``.
            rarity: A browser session's bank: score each image also against the earlier images of the class name in
                it (online rarity scoring, RareCLIP; fused with AdaCLIP's scores with the default ``rarity.weight``),
                in the order given, each admitted into the bank before the next (:mod:`.banks`). Not with ``mutual``
                or ``tiling``; a bank made with another model is replaced by a new one. Defaults to ``None``: off.
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
        if problem := _combination_problem(tiling, mutual, rarity is not None):
            run.messages.append(problem)
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
        settings = dataclasses.replace(settings or self.default_settings, k_shot=len(reference_paths))
        report = progress or (lambda done, total, what: None)
        with self._lock:
            if settings not in self.models:
                report(0, len(paths), "building the model")
            model = self._ready_model(run, settings, class_name, tiling, reference_paths)
            if model is None:
                return run
            if duplicates:
                run.messages.append(
                    f"Known-good references with the same contents as an earlier one are used once: "
                    f"{', '.join(path.name for path in duplicates)}."
                )
            report(0, len(paths), "scoring")
            model.post_processor.set_fixed_thresholds(image_threshold, pixel_threshold)
            if not self._score_request(run, paths, class_name, mutual, rarity, report):
                return run
            report(len(paths), len(paths), "writing the files")
        self.files.write(run)
        scored = [result for result in run.results if result.scored]
        failed = len(run.results) - len(scored)
        defective = sum(result.decision == "NG" for result in scored)
        summary = (
            f"Scored {len(scored)} of {len(run.results)} image(s) with the class name {class_name!r}: "
            f"{defective} NG, {len(scored) - defective} OK (image threshold {image_threshold:g}, "
            f"pixel threshold {pixel_threshold:g}"
            f"{', tiled' if tiling else ''}{', online rarity scoring' if rarity is not None else ''}; "
            f"{self.settings.describe() if self.settings else ''})."
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
