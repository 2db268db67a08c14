"""The demo's models: what one is built from, building it, and keeping one zero-shot and one few-shot model.

:class:`DemoModelSettings` are the settings a model is built from (a change of any of them builds a new one).
:class:`KeptModels` keeps at most one zero-shot and one few-shot model of the same settings, so switching between runs
with and without references rebuilds nothing; it says what it built or rebuilt, and checks every weight file before
anything is built (:class:`MissingWeightsError` names each missing one). The few-shot model's memory is refilled
through :meth:`AdaCLIP.set_references <anomalib_adaclip.AdaCLIP.set_references>` only when the references (their
contents), the class name or tiling change. The rarity part of a kept model (:meth:`KeptModels.rarity_part`, the
scorer without banks: every browser session lends it its own, :mod:`.banks`) is built once and kept with it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from anomalib_adaclip.components.rarity import RarityBanks
from anomalib_adaclip.components.visualizer import AdaCLIPVisualizer
from anomalib_adaclip.config import (
    SMOKE_BACKBONE,
    SMOKE_IMAGE_SIZE,
    AdaCLIPConfig,
    FewShotConfig,
    RarityGroupConfig,
    ThresholdConfig,
)
from anomalib_adaclip.weights import RELEASED_CHECKPOINTS, WeightsNotFoundError, hub_cache_only, locate_weights

if TYPE_CHECKING:
    from anomalib_adaclip import AdaCLIP

__all__ = [
    "DemoModelSettings",
    "KeptModels",
    "MissingWeightsError",
    "build_model",
    "missing_weights",
    "smoke_settings",
]


@dataclass(frozen=True)
class DemoModelSettings:
    """What the model is built from: a change of any of these builds a new model.

    Attributes:
        backbone: open_clip model name, or the JSON of an open_clip config dict.
        backbone_weights: open_clip pretrained tag, a weights file, or ``None`` for random weights (smoke test).
        checkpoint: A released checkpoint name, a checkpoint file, or ``None`` (untrained prompts: smoke test).
        image_size: The model's input side in pixels.
        k_shot: Known-good references per class (few-shot, AdaCLIP's ``few_shot.k_shot``); 0 for zero-shot.
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

    def zero_shot(self) -> DemoModelSettings:
        """The same settings without references (``k_shot=0``)."""
        return dataclasses.replace(self, k_shot=0)

    def changes_from(self, other: DemoModelSettings) -> list[str]:
        """The settings that differ from ``other``, as ``name: old -> new``."""
        return [
            f"{name}: {getattr(other, name)} -> {getattr(self, name)}"
            for name in ("checkpoint", "backbone", "backbone_weights", "image_size", "k_shot")
            if getattr(other, name) != getattr(self, name)
        ]


def smoke_settings() -> DemoModelSettings:
    """The quick start's smoke-test model: a tiny random CLIP, untrained prompts (meaningless outputs)."""
    return DemoModelSettings(json.dumps(SMOKE_BACKBONE, sort_keys=True), None, None, SMOKE_IMAGE_SIZE)


class MissingWeightsError(WeightsNotFoundError):
    """Every weight file a model needs that is neither on disk nor downloadable; ``errors`` holds each one's."""

    def __init__(self, errors: Sequence[WeightsNotFoundError]) -> None:
        super().__init__("\n\n".join(str(error) for error in errors))
        self.errors = list(errors)


def missing_weights(settings: DemoModelSettings, offline: bool) -> list[WeightsNotFoundError]:
    """The weight files of ``settings`` (a pretrained tag's CLIP weights, a released checkpoint) that cannot be found.

    Args:
        settings: The model's settings.
        offline: Look on disk only, never download.
    """
    backbone, weights, checkpoint = settings.backbone, settings.backbone_weights, settings.checkpoint
    return list(locate_weights(backbone, weights, checkpoint, local_only=offline)[1].values())


def build_model(settings: DemoModelSettings, device: torch.device, offline: bool = False) -> AdaCLIP:
    """The demo's AdaCLIP of ``settings``: fixed thresholds, no evaluator, the overlay visualiser, in eval mode.

    Args:
        settings: What it is built from (random weights are seeded: the same model every time).
        device: Where it runs.
        offline: Look for weights on disk only, never download.
    """
    from anomalib_adaclip import AdaCLIP  # noqa: PLC0415  (torch, anomalib and open_clip load when needed)

    backbone: str | dict[str, Any] = settings.backbone
    if settings.backbone.startswith("{"):
        backbone = json.loads(settings.backbone)
    if settings.backbone_weights is None:
        torch.manual_seed(0)  # random weights (smoke test): the same model every time
    visualizer = AdaCLIPVisualizer(fields=["image"], overlay_fields=[("image", ["anomaly_map", "pred_mask"])])
    with hub_cache_only(offline):
        model = AdaCLIP(
            backbone=backbone,
            backbone_weights=settings.backbone_weights,
            checkpoint=settings.checkpoint,
            image_size=settings.image_size,
            evaluator=False,
            visualizer=visualizer,
            few_shot=FewShotConfig(k_shot=settings.k_shot) if settings.k_shot else None,
            thresholds=ThresholdConfig(mode="fixed"),
        )
    return model.eval().to(device)


def _contents_digest(paths: Sequence[Path]) -> str:
    """One digest of the files' contents, whatever their names and order."""
    digest = hashlib.sha256()
    for content in sorted(hashlib.sha256(path.read_bytes()).hexdigest() for path in paths):
        digest.update(content.encode())
    return digest.hexdigest()


class KeptModels:
    """At most one zero-shot and one few-shot AdaCLIP of the same settings, built when asked for and kept.

    Not thread-safe: the session's lock guards it.

    Args:
        device: Where the models run.
        offline: Look for weights on disk only (``ADACLIP_WEIGHTS_DIR``, the Hugging Face cache), never download.

    Attributes:
        model: The current model (the one :meth:`load` made current), or ``None`` before the first one.
        settings: The current model's settings, or ``None``.
    """

    def __init__(self, device: torch.device, offline: bool = False) -> None:
        self.device = device
        self.offline = offline
        self.model: AdaCLIP | None = None
        self.settings: DemoModelSettings | None = None
        self._models: dict[DemoModelSettings, AdaCLIP] = {}
        # What the few-shot memory of a kept model holds: (class name, tiling, digest of the reference files).
        self._filled: dict[DemoModelSettings, tuple[str, bool, str]] = {}
        # The rarity part of a kept model, for the rarity settings it was built with.
        self._rarity: dict[DemoModelSettings, tuple[RarityGroupConfig, RarityBanks]] = {}

    def __contains__(self, settings: object) -> bool:
        """Whether the model of ``settings`` is kept (using it builds nothing)."""
        return settings in self._models

    def kept(self, settings: DemoModelSettings) -> AdaCLIP | None:
        """The kept model of ``settings``, or ``None``."""
        return self._models.get(settings)

    def load(self, settings: DemoModelSettings) -> str:
        """Make the model of ``settings`` the current one, building it unless it is kept.

        Returns:
            What happened, for the page (empty when the model was kept).

        Raises:
            MissingWeightsError: Weight files are neither on disk nor downloadable (all of them named).
            ~anomalib_adaclip.weights.CheckpointError: A checkpoint or weights file does not fit.
        """
        if settings in self._models:
            self.model, self.settings = self._models[settings], settings
            return ""
        start = time.perf_counter()
        few_shot = settings.k_shot > 0
        # The model this one replaces: the kept one of the same kind (zero- or few-shot), else the current one.
        previous = next((kept for kept in self._models if (kept.k_shot > 0) == few_shot), None)
        other_kind = next((kept for kept in self._models if (kept.k_shot > 0) != few_shot), None)
        # Kept: the other kind's model of the same settings; everything else goes (and a failed build leaves no
        # half-built model behind).
        keep = other_kind if other_kind is not None and other_kind.zero_shot() == settings.zero_shot() else None
        previous = previous or (other_kind if keep is None else None)
        self._models = {keep: self._models[keep]} if keep is not None else {}
        self._filled = {kept: filled for kept, filled in self._filled.items() if kept in self._models}
        self._rarity = {kept: part for kept, part in self._rarity.items() if kept in self._models}
        self.model, self.settings = None, None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        if missing := missing_weights(settings, self.offline):  # every missing file at once, before anything is built
            raise MissingWeightsError(missing)
        model = build_model(settings, self.device, self.offline)
        self._models[settings] = model
        self.model, self.settings = model, settings
        took = time.perf_counter() - start
        if previous is None:
            kind = "few-shot model" if few_shot else "model"
            also = f" (the {'zero' if few_shot else 'few'}-shot model is kept too)" if keep is not None else ""
            return (
                f"Built the {kind} ({settings.describe()}) on {self.device} in {took:.1f} s; it is kept for later "
                f"runs{also}."
            )
        changes = "; ".join(settings.changes_from(previous))
        return f"Rebuilt the model because its settings changed ({changes}): {settings.describe()}, {took:.1f} s."

    def set_references(self, paths: Sequence[Path], class_name: str, tiling: bool) -> str:
        """Fill the current (few-shot) model's memory with ``paths`` for ``class_name`` unless it holds them already.

        Through :meth:`AdaCLIP.set_references <anomalib_adaclip.AdaCLIP.set_references>`: every file is read with the
        model's pre-processing (cut into tiles with tiling), and the memory holds one class name at a time here.
        Call it after the model's tiling is set.

        Returns:
            What happened, for the page.

        Raises:
            ~anomalib_adaclip.components.references.FewShotReferenceError: A reference cannot be read.
        """
        model, settings = self.model, self.settings
        assert model is not None and settings is not None  # loaded by the caller
        key = (class_name, tiling, _contents_digest(paths))
        if self._filled.get(settings) == key:
            return "kept from the previous run"
        self._filled.pop(settings, None)  # until the new references are in
        start = time.perf_counter()
        model.set_references({class_name: list(paths)})
        self._filled[settings] = key
        return f"read in {time.perf_counter() - start:.1f} s"

    def rarity_part(self, config: RarityGroupConfig) -> RarityBanks:
        """The current model's rarity part of ``config`` (built on first use and kept with the model), without banks.

        Raises:
            ValueError: Layers the backbone does not have, or banks smaller than ``topk``.
            OSError: The TPB weight file cannot be read.
        """
        model, settings = self.model, self.settings
        assert model is not None and settings is not None  # loaded by the caller
        kept = self._rarity.get(settings)
        if kept is None or kept[0] != config:
            kept = (config, RarityBanks(config, model.model))
            self._rarity[settings] = kept
        return kept[1]
