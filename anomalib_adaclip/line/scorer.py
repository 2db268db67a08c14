"""What the line needs from a scorer (:class:`LineScorer`), and the adapter to the rarity scorer.

A scorer holds a bank that it learns from the images it admits. The line separates scoring from learning, so that it
decides what enters the bank: :meth:`LineScorer.score` scores one pre-processed image without changing anything and
returns the update the image would make (``pending``); :meth:`LineScorer.admit` applies it. A bank that is frozen
is simply never given an update. ``state_dict`` / ``load_state_dict`` must round-trip the bank exactly, so that a
line restored from a snapshot continues bit for bit.

The line imports no model: :func:`load_scorer` builds one by name, ``"rarity"`` (the rarity scorer through
:class:`RarityLineScorer`) or ``"module:callable"`` (any factory that returns a :class:`LineScorer`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch

__all__ = ["LineScore", "LineScorer", "RarityLineScorer", "ScorerError", "load_scorer"]


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
    """The line's view of the rarity scorer (``anomalib_adaclip.RarityScoring``): one scorer (one bank) per class name.

    Thin on purpose: it maps the line's calls onto the rarity scorer's admission API, which scores first and lets
    the caller decide whether the image enters the bank (``score_pending(image) -> (InferenceBatch, pending)`` and
    ``admit(pending)`` here; the names are the rarity scorer's and are bound at merge time).

    Args:
        factory: Builds one rarity scorer (already ``reset``); called once per class name.
        image_size: Its input size.
    """

    def __init__(self, factory: Callable[[], Any], image_size: int) -> None:
        self.factory = factory
        self.image_size = image_size
        self.banks: dict[str, Any] = {}

    def _bank(self, class_name: str) -> Any:
        if class_name not in self.banks:
            self.banks[class_name] = self.factory()
        return self.banks[class_name]

    def score(self, image: torch.Tensor, class_name: str) -> LineScore:
        """Score without updating, keeping the class name with the pending update."""
        output, pending = self._bank(class_name).score_pending(image)
        anomaly_map = None if output.anomaly_map is None else output.anomaly_map[0]
        return LineScore(float(output.pred_score.reshape(-1)[0]), anomaly_map, (class_name, pending))

    def admit(self, pending: Any) -> None:
        """Apply the update to the bank of its class name."""
        class_name, update = pending
        self._bank(class_name).admit(update)

    def state_dict(self) -> dict[str, Any]:
        """Every class name's bank."""
        return {class_name: scorer.state_dict() for class_name, scorer in sorted(self.banks.items())}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore every class name's bank (banks of other class names are dropped)."""
        self.banks = {}
        for class_name, bank in state.items():
            self._bank(class_name).load_state_dict(bank)


def load_scorer(spec: str, settings: Mapping[str, Any] | None = None) -> LineScorer:
    """Build the line's scorer.

    Args:
        spec: ``"rarity"``: ``anomalib_adaclip.RarityScoring(**settings)``, one per class name; or
            ``"package.module:factory"``: ``factory(**settings)``, which returns a :class:`LineScorer`.
        settings: Keyword arguments of the scorer (for ``"rarity"``: ``backbone``, ``backbone_weights``,
            ``image_size``, layers, bank sizes, ...).

    Raises:
        ScorerError: The name cannot be imported, or the object lacks what :class:`LineScorer` needs.
    """
    settings = dict(settings or {})
    if spec == "rarity":
        import anomalib_adaclip  # noqa: PLC0415  (the package root imports the model; the line does not)

        rarity = getattr(anomalib_adaclip, "RarityScoring", None)
        if rarity is None:
            msg = "The rarity scorer (anomalib_adaclip.RarityScoring) is not part of this installation."
            raise ScorerError(msg)
        if "image_size" not in settings:
            msg = "The rarity scorer needs its settings: at least backbone, backbone_weights and image_size."
            raise ScorerError(msg)

        def factory() -> Any:
            scorer = rarity(**settings)
            scorer.reset()
            return scorer

        return RarityLineScorer(factory, int(settings["image_size"]))
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        msg = f"--scorer {spec!r}: expected 'rarity' or 'package.module:factory'."
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
