"""What the line needs from a scorer (:class:`LineScorer`), and the adapter to the rarity scorer.

A scorer holds a bank that it learns from the images it admits. The line separates scoring from learning, so that it
decides what enters the bank: :meth:`LineScorer.score` scores one pre-processed image without changing anything and
returns the update the image would make (``pending``); :meth:`LineScorer.admit` applies it. A bank that is frozen
is simply never given an update. ``state_dict`` / ``load_state_dict`` must round-trip the bank exactly, so that a
line restored from a snapshot continues bit for bit.

The line imports no model: :func:`load_scorer` builds one by name, ``"rarity"`` (the rarity scorer through
:class:`RarityLineScorer`), ``"adaclip"`` (AdaCLIP with its ``rarity`` group through :class:`AdaCLIPLineScorer`) or
``"module:callable"`` (any factory that returns a :class:`LineScorer`).
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch

__all__ = ["AdaCLIPLineScorer", "LineScore", "LineScorer", "RarityLineScorer", "ScorerError", "load_scorer"]


class ScorerError(ValueError):
    """A scorer that cannot be built or does not offer what the line needs."""


@dataclass(frozen=True)
class LineScore:
    """The outputs of one image, and the bank update it would make.

    Attributes:
        score: The image score (higher: more anomalous).
        anomaly_map: The anomaly map ``[H, W]``, or ``None``.
        pending: What :meth:`LineScorer.admit` applies to put this image into the bank (opaque to the line).
    """

    score: float
    anomaly_map: torch.Tensor | None
    pending: Any


@runtime_checkable
class LineScorer(Protocol):
    """The narrow interface of a scorer that learns online from the images the line admits.

    Attributes:
        image_size: The side of the square input the scorer expects; the line resizes and normalises to it (CLIP's
            mean and standard deviation, :func:`~anomalib_adaclip.components.pre_processing.adaclip_transform`).
    """

    image_size: int

    def score(self, image: torch.Tensor, class_name: str) -> LineScore:
        """Score one pre-processed image ``[1, 3, S, S]`` of ``class_name`` against the bank, changing nothing."""
        ...

    def admit(self, pending: Any) -> None:
        """Put the image of a :class:`LineScore` into the bank (its ``pending`` update), in the order scored."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """The bank (and anything else that changes as images are admitted), for an exact restore."""
        ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        ...


class RarityLineScorer:
    """The line's view of the rarity scorer (``anomalib_adaclip.RarityScoring``): one bank per class name.

    Thin on purpose: one scorer (one CLIP), whose bank is swapped for the class name's; the line's calls map onto the
    scorer's admission API, ``score(image) -> ScoredImage`` (the outputs and the bank the image would leave, nothing
    changed) and ``commit(scored)``.

    Args:
        scorer: A rarity scorer (``RarityScoring``); its bank at the time is dropped.
    """

    def __init__(self, scorer: Any) -> None:
        self.scorer = scorer
        self.image_size = int(scorer.image_size)
        self.banks: dict[str, Any] = {}

    def _use(self, class_name: str) -> Any:
        if class_name not in self.banks:  # an empty bank, kept: an image scored against it can be admitted later
            self.scorer.reset()
            self.banks[class_name] = self.scorer.bank
        self.scorer.bank = self.banks[class_name]
        return self.scorer

    def score(self, image: torch.Tensor, class_name: str) -> LineScore:
        """Score against the class name's bank without updating, keeping the class name with the pending update.

        One of the scorer's ``k_shot`` normal images has no outputs: its score is NaN (the line writes it as not
        scored and never admits it).
        """
        scored = self._use(class_name).score(image)
        if scored.output is None:
            return LineScore(math.nan, None, (class_name, scored))
        anomaly_map = None if scored.output.anomaly_map is None else scored.output.anomaly_map[0]
        return LineScore(float(scored.output.pred_score.reshape(-1)[0]), anomaly_map, (class_name, scored))

    def admit(self, pending: Any) -> None:
        """Install the bank the image leaves as its class name's (refused if that bank changed since)."""
        class_name, scored = pending
        self._use(class_name).commit(scored)
        self.banks[class_name] = self.scorer.bank

    def state_dict(self) -> dict[str, Any]:
        """Every class name's bank (an empty one too)."""
        return {class_name: bank.state_dict() for class_name, bank in sorted(self.banks.items())}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore every class name's bank (banks of other class names are dropped)."""
        banks = {}
        for class_name, bank in state.items():
            self.scorer.load_bank(bank)
            banks[class_name] = self.scorer.bank
        self.banks = banks


class AdaCLIPLineScorer:
    """The line's view of AdaCLIP with rarity scoring (``AdaCLIP(rarity=...)``): the fused outputs, one bank per class.

    One CLIP pass per image gives AdaCLIP's outputs and RareCLIP's tokens; the rarity part
    (:class:`~anomalib_adaclip.components.rarity.RarityBanks`) scores the image against its class name's bank without
    changing it, and :meth:`admit` puts it in. The scores are those of ``predict`` with the same model on the same
    files in the same order (both admit every image there). The model's post-processor is not applied: the line
    judges the raw fused score against its own admission threshold.

    Args:
        model: An ``AdaCLIP`` with the ``rarity`` group (``model.rarity`` is not ``None``).

    Raises:
        ScorerError: The model has no rarity group.
    """

    def __init__(self, model: Any) -> None:
        if getattr(model, "rarity", None) is None:
            msg = (
                "The AdaCLIP line scorer needs the rarity group (AdaCLIP(rarity={...}), --scorer-settings "
                '\'{"rarity": {"weight": 0.5}}\'): without a bank there is nothing for the line to learn.'
            )
            raise ScorerError(msg)
        self.model = model.eval()
        self.image_size = int(model.model.image_size)

    def score(self, image: torch.Tensor, class_name: str) -> LineScore:
        """Score one pre-processed image against its class name's bank, changing nothing."""
        device = next(self.model.model.parameters()).device
        pending = self.model.rarity.score(self.model.model, image.to(device), class_name)
        output = pending.output
        return LineScore(float(output.pred_score.reshape(-1)[0]), output.anomaly_map[0].cpu(), pending)

    def admit(self, pending: Any) -> None:
        """Put the image into its class name's bank."""
        self.model.rarity.admit(pending)

    def state_dict(self) -> dict[str, Any]:
        """Every class name's bank."""
        return self.model.rarity.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore every class name's bank."""
        self.model.rarity.load_state_dict(state)


def load_scorer(spec: str, settings: Mapping[str, Any] | None = None) -> LineScorer:
    """Build the line's scorer.

    Args:
        spec: ``"rarity"``: ``anomalib_adaclip.RarityScoring(**settings)``, one bank per class name;
            ``"adaclip"``: ``anomalib_adaclip.AdaCLIP(**settings)`` with its ``rarity`` group; or
            ``"package.module:factory"``: ``factory(**settings)``, which returns a :class:`LineScorer`.
        settings: Keyword arguments of the scorer (for ``"rarity"``: ``backbone``, ``backbone_weights``,
            ``image_size``, layers, bank sizes, ...; for ``"adaclip"``: ``backbone``, ``backbone_weights``,
            ``image_size``, ``checkpoint``, ``rarity`` (a mapping of the group), ...).

    Raises:
        ScorerError: The name cannot be imported, or the object lacks what :class:`LineScorer` needs.
    """
    settings = dict(settings or {})
    if spec in ("rarity", "adaclip"):
        import anomalib_adaclip  # noqa: PLC0415  (the package root imports the model; the line does not)

        name = "RarityScoring" if spec == "rarity" else "AdaCLIP"
        model = getattr(anomalib_adaclip, name, None)
        if model is None:
            msg = f"The {spec} scorer (anomalib_adaclip.{name}) is not part of this installation."
            raise ScorerError(msg)
        if "image_size" not in settings:
            msg = f"The {spec} scorer needs its settings: at least backbone, backbone_weights and image_size."
            raise ScorerError(msg)
        if spec == "rarity":
            return RarityLineScorer(model(**settings))
        return AdaCLIPLineScorer(model(**settings))
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        msg = f"--scorer {spec!r}: expected 'rarity', 'adaclip' or 'package.module:factory'."
        raise ScorerError(msg)
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        msg = f"--scorer {spec!r} cannot be imported: {error}."
        raise ScorerError(msg) from error
    scorer = factory(**settings)
    missing = [
        name for name in ("image_size", "score", "admit", "state_dict", "load_state_dict") if not hasattr(scorer, name)
    ]
    if missing:
        msg = f"--scorer {spec!r} built a {type(scorer).__name__}, which lacks {', '.join(missing)} (see LineScorer)."
        raise ScorerError(msg)
    return scorer
