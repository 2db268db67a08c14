"""Online (rarity) scoring in the demo: one bank per browser session, lent to the kept model's rarity part.

With the page's rarity option each image is also scored against the earlier images of its class name in *this browser
session* (RareCLIP, :mod:`~anomalib_adaclip.components.rarity`), fused with AdaCLIP's outputs with the default
``rarity.weight``, and then admitted into the session's bank. The images of one request are scored in upload order,
each admitted before the next, so one request of 8 images equals 8 requests of 1 image.

**One bank per session, one model for all.** A :class:`SessionBank` holds one browser session's banks (one per class
name) and nothing else: the page keeps it in gradio's per-session state (``gr.State``), so two sessions never see each
other's images, and gradio drops it when the session ends (its state of a closed tab is deleted after gradio's grace
period for reconnecting). The model and its rarity part (:class:`~anomalib_adaclip.components.rarity.RarityBanks`,
the scorer without banks of its own) are kept once for every session (:class:`~.models.KeptModels`); a request lends
its session's banks to the part (:meth:`SessionBank.lent_to`) under the session's lock.

**One model per bank.** A bank holds the patches and scores one model made; a request with another model (any
:class:`~.models.DemoModelSettings`: checkpoint, backbone, weights, image size, the number of references) or other
rarity settings starts a new bank, and the page says so (:meth:`SessionBank.made_for`).

**The text side** (:func:`demo_rarity_settings`). RareCLIP's own text branch needs its TPB weights, which cannot be
downloaded: without them (``anomalib-adaclip demo --rarity-tpb-weights FILE``) the text side is AdaCLIP's own map and
probability (``text_branch="adaclip"``), so the option works with every AdaCLIP checkpoint; with them it is RareCLIP's
(``"tpb"``, its published setting). The rarity layers are the blocks n/4, n/2, 3n/4 and n of the tower (the authors'
6, 12, 18 and 24 on ViT-L), so the smoke model's tiny CLIP works too.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from anomalib_adaclip.config import RarityGroupConfig, RarityScoringConfig, quarter_blocks

if TYPE_CHECKING:
    from anomalib_adaclip.components.rarity import RarityBanks

    from .models import DemoModelSettings

__all__ = ["SessionBank", "demo_rarity_settings"]


def demo_rarity_settings(n_vision_blocks: int, tpb_weights: str | None = None) -> RarityGroupConfig:
    """The demo's rarity group for a tower of ``n_vision_blocks``: the default weight, RareCLIP's other defaults.

    Args:
        n_vision_blocks: The depth of the model's vision tower.
        tpb_weights: RareCLIP's TPB weight file; with it the text side is RareCLIP's own (``"tpb"``, its text layers
            are the authors' ViT-L ones: a shallower tower is refused when the part is built), without it AdaCLIP's
            map and probability (``"adaclip"``).
    """
    layers = quarter_blocks(n_vision_blocks)
    if tpb_weights is None:  # the text layers are not read by the "adaclip" text side: the rarity layers, no extra
        return RarityGroupConfig(
            text_branch="adaclip", scoring=RarityScoringConfig(text_layers=layers, rarity_layers=layers)
        )
    scoring = RarityScoringConfig(rarity_layers=layers)  # the authors' text layers: those of their TPB weights
    return RarityGroupConfig(text_branch="tpb", tpb_weights=tpb_weights, scoring=scoring)


@dataclass
class SessionBank:
    """One browser session's rarity banks: one per class name, and the model they were made with.

    Attributes:
        banks: Class name -> the bank of its images so far (:class:`~anomalib_adaclip.model.rarity_bank.RarityBank`).
        made_with: The model settings and rarity settings the banks were made with (``None`` before the first image).
    """

    banks: dict[str, Any] = field(default_factory=dict)
    made_with: tuple[DemoModelSettings, RarityGroupConfig] | None = None

    def counts(self) -> dict[str, int]:
        """How many images each class name's bank holds, by class name."""
        return {name: int(bank.seen) for name, bank in sorted(self.banks.items())}

    def count(self, class_name: str) -> int:
        """How many images the bank of ``class_name`` holds (0 without one)."""
        bank = self.banks.get(class_name)
        return 0 if bank is None else int(bank.seen)

    def describe(self) -> str:
        """One line for the page: the images per class name, or that the bank is empty."""
        counts = {name: count for name, count in self.counts().items() if count}
        if not counts:
            return "This session's rarity bank is empty."
        held = ", ".join(f"{count} image(s) of {name!r}" for name, count in counts.items())
        return f"This session's rarity bank holds {held}."

    def clear(self) -> None:
        """Empty every class name's bank (a new bank)."""
        self.banks = {}
        self.made_with = None

    def made_for(self, settings: DemoModelSettings, rarity: RarityGroupConfig) -> str:
        """Make the bank the one of this model, starting a new one when it was made with another.

        Returns:
            What happened, for the page (empty when the bank goes on).
        """
        key = (settings, rarity)
        previous, self.made_with = self.made_with, key
        if previous is None or previous == key or not any(self.counts().values()):
            return ""
        dropped = sum(self.counts().values())
        self.banks = {}
        changes = "; ".join(settings.changes_from(previous[0])) or "the rarity settings"
        return (
            f"A new rarity bank: this session's bank was made with another model ({changes}), and a bank holds the "
            f"patches and scores of one model; its {dropped} image(s) were dropped."
        )

    @contextmanager
    def lent_to(self, part: RarityBanks) -> Iterator[RarityBanks]:
        """Lend the banks to the kept model's rarity part for one request, and take them back (also after an error)."""
        part.banks = self.banks
        try:
            yield part
        finally:
            self.banks, part.banks = part.banks, {}
