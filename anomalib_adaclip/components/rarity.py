"""Online rarity scoring (RareCLIP) inside AdaCLIP's runs: one bank per class name, image by image, and the fusion.

RareCLIP (He et al., ICCV 2025) scores each image as it arrives against a bank of the images of its class seen before
(:mod:`~anomalib_adaclip.model.rarity` computes it, equal to the authors' code). Inside AdaCLIP this module decides
everything that is not the arithmetic:

**One CLIP pass per image.** AdaCLIP's frozen pass already computes the plain (un-prompted) tokens RareCLIP reads:
:meth:`AdaCLIPModel.score_with_plain_tokens <anomalib_adaclip.model.AdaCLIPModel.score_with_plain_tokens>` gives
AdaCLIP's outputs and the tokens of the rarity scorer's blocks from that one pass. The scorer
(:meth:`RarityScoring.on_clip <anomalib_adaclip.model.rarity.RarityScoring.on_clip>`) holds no vision tower of its
own. The pass runs one image at a time, whatever the loader's batch size: the bank is sequential anyway, and an
image's outputs then do not depend on the batch it came in (batch 1 equals batch 8 bit for bit). (RareCLIP's
reference tower runs open_clip's own blocks, AdaCLIP's pass its lean ones: the tokens differ by rounding, about
3e-6; :class:`~anomalib_adaclip.RarityScoring` is the one that equals the authors' numbers.)

**Order and banks** (:class:`RarityBanks`). Images are scored in the order they come, each against the bank its
class name's earlier images left, and then admitted (the authors' online mode), one bank per class name. The banks
are explicit state: :meth:`RarityBanks.state_dict` / :meth:`RarityBanks.load_state_dict` round-trip them exactly
(per class name), so a line can snapshot them; :meth:`RarityBanks.score` and :meth:`RarityBanks.admit` separate
scoring from learning for a caller that decides what enters a bank (the line's admission threshold).

**Runs** (:class:`NewBanksPerRun`, a Lightning callback that :class:`~anomalib_adaclip.AdaCLIP` installs). Every
validation, test and predict run starts with empty banks: anomalib's Engine validates on the test images before it
tests (to learn thresholds), and a test image must not be scored against a bank that already holds it. A resumed
``predict`` therefore starts a new bank too (the rows already written came from the earlier one); the line
(``anomalib-adaclip watch``) is the mode whose bank survives restarts.

**The text side** (``rarity.text_branch``). ``"tpb"``: RareCLIP's own text branch (its prompt ensemble through
AdaCLIP's CLIP text tower, and the TPB linear layers of ``rarity.tpb_weights``), its published setting.
``"adaclip"``: AdaCLIP's own map, average-pooled onto the patch grid, and AdaCLIP's image probability take the text
branch's place everywhere RareCLIP uses it (the foreground map, the combination, the score); no TPB weights needed.

**Fusion and scale** (:func:`fuse`). AdaCLIP's map and score are probabilities in [0, 1]. RareCLIP's are not: after
its fourth image its map is ``4/3 * rarity + 1/3 * text``, both parts in [0, 1] (apart from the image-rarity term,
usually small), so the map lies in ``[0, 5/3]``; its score is the map's maximum plus the text probability, in
``[0, 8/3]``. They enter divided by those constants, :data:`RARITY_MAP_SCALE` and :data:`RARITY_SCORE_SCALE`
(constant factors: rankings, AUROC, AUPRO and F1-max of RareCLIP's outputs are unchanged). The fused values are
``(1 - w) * AdaCLIP + w * rarity`` with ``w = rarity.weight``; ``w = 0`` returns AdaCLIP's tensors themselves (the
rarity branch does not run and the banks stay empty) and ``w = 1`` the rarity branch's on that scale. The rarity
score of an image depends on the images before it (the first image of a class gets the text side alone), so a fixed
image threshold is best calibrated on known-good images in the order of the line (``AdaCLIP.calibrate``) or learned
from labelled validation data.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from anomalib.data import InferenceBatch
from lightning.pytorch import Callback
from torch.nn import functional as F  # noqa: N812

from anomalib_adaclip.config import RarityGroupConfig
from anomalib_adaclip.model.mutual_scoring import PlainTokens
from anomalib_adaclip.model.rarity import RarityScoring, ScoredImage

if TYPE_CHECKING:
    from anomalib_adaclip.model import AdaCLIPModel

logger = logging.getLogger(__name__)

__all__ = [
    "RARITY_MAP_SCALE",
    "RARITY_SCORE_SCALE",
    "NewBanksPerRun",
    "PendingImage",
    "RarityBanks",
    "check_rarity_scoring",
    "fuse",
    "rarity_banks",
]

# RareCLIP's map is 4/3 rarity + 1/3 text (both in [0, 1]); its score adds the text probability to the map's maximum.
RARITY_MAP_SCALE = 5 / 3
RARITY_SCORE_SCALE = 8 / 3


def check_rarity_scoring(rarity: bool, mutual_scoring: bool, tiling: bool) -> None:
    """Refuse rarity scoring with mutual scoring or with tiling.

    Raises:
        ValueError: Rarity scoring with either.
    """
    if rarity and mutual_scoring:
        msg = (
            "rarity cannot be combined with mutual: both score an image against other images of its class (MuSc "
            "against a group, in any order; RareCLIP against the images before it, in order), and fusing the two "
            "with AdaCLIP has no tested meaning. Use one of them."
        )
        raise ValueError(msg)
    if rarity and tiling:
        msg = (
            "rarity cannot be combined with tiling: RareCLIP's bank holds patches of whole images at one resolution, "
            "while tiling scores each image in tiles of its own grid. Use one of them."
        )
        raise ValueError(msg)


def fuse(adaclip: InferenceBatch, rarity: InferenceBatch, weight: float) -> InferenceBatch:
    """``(1 - weight) * AdaCLIP + weight * rarity`` for map and score, the rarity branch on the unit scale (see above).

    ``weight == 0`` returns AdaCLIP's tensors unchanged and ``weight == 1`` the rarity branch's (scaled), so both ends
    are exact.
    """
    if weight == 0:
        return InferenceBatch(pred_score=adaclip.pred_score, anomaly_map=adaclip.anomaly_map)
    rarity_map = (rarity.anomaly_map / RARITY_MAP_SCALE).to(adaclip.anomaly_map)
    rarity_score = (rarity.pred_score / RARITY_SCORE_SCALE).to(adaclip.pred_score)
    if weight == 1:
        return InferenceBatch(pred_score=rarity_score, anomaly_map=rarity_map)
    return InferenceBatch(
        pred_score=(1 - weight) * adaclip.pred_score + weight * rarity_score,
        anomaly_map=(1 - weight) * adaclip.anomaly_map + weight * rarity_map,
    )


class PendingImage(NamedTuple):
    """One image scored by :meth:`RarityBanks.score`: its fused outputs and the update that admits it.

    Attributes:
        output: The fused ``InferenceBatch(pred_score [1], anomaly_map [1, H, W])``.
        class_name: The class name whose bank it was scored against.
        scored: The rarity scorer's pending update (``None`` when the weight is 0: nothing to admit).
    """

    output: InferenceBatch
    class_name: str
    scored: ScoredImage | None


class RarityBanks:
    """AdaCLIP's rarity part: RareCLIP's scorer on AdaCLIP's plain pass, one bank per class name, and the fusion.

    Told what it needs: the group's settings and the torch model whose CLIP pass it reads (its text tower gives
    RareCLIP's text features once, at construction). It is not a ``torch.nn.Module`` of its host: the banks are not
    weights (Lightning checkpoints do not carry them; :meth:`state_dict` does), and the few tensors of the scorer
    follow the images' device.

    Args:
        config: The ``rarity`` group.
        model: AdaCLIP's torch model.

    Raises:
        ValueError: Layers outside the backbone, or banks smaller than ``topk``.
    """

    def __init__(self, config: RarityGroupConfig, model: AdaCLIPModel) -> None:
        self.config = config
        tpb = config.text_branch == "tpb"
        self.scorer = RarityScoring.on_clip(
            model.clip, model.image_size, config.scoring, config.tpb_weights if tpb else None, text_branch=tpb
        )
        self.banks: dict[str, Any] = {}  # class name -> RarityBank

    @property
    def plain_layers(self) -> list[int]:
        """The 0-based blocks of the plain pass the scorer reads (those of ``scoring``'s 1-based layers)."""
        return list(self.scorer.token_blocks)

    def reset(self, class_name: str | None = None) -> None:
        """Empty the bank of ``class_name``, or every bank."""
        if class_name is None:
            self.banks = {}
        else:
            self.banks.pop(class_name, None)

    def score_images(
        self, model: AdaCLIPModel, images: torch.Tensor, class_names: Sequence[str] | str, *, admit: bool = True
    ) -> InferenceBatch:
        """Score a batch image by image, in order, each admitted into its class name's bank before the next.

        Args:
            model: AdaCLIP's torch model (in eval mode).
            images: Normalised images ``[B, 3, S, S]``.
            class_names: One class name per image, or one for all.
            admit: Admit every image (the authors' online mode); ``False`` scores them all against the banks as
                they are.

        Returns:
            The fused ``InferenceBatch(pred_score [B], anomaly_map [B, S, S])``.
        """
        names = [class_names] * len(images) if isinstance(class_names, str) else list(class_names)
        if self.config.weight == 0:  # AdaCLIP's outputs, bit for bit: the rarity branch does not run
            return model(images, names)
        scores, maps = [], []
        for index, name in enumerate(names):
            pending = self.score(model, images[index : index + 1], name)
            if admit:
                self.admit(pending)
            scores.append(pending.output.pred_score)
            maps.append(pending.output.anomaly_map)
        return InferenceBatch(pred_score=torch.cat(scores), anomaly_map=torch.cat(maps))

    @torch.no_grad()
    def score(self, model: AdaCLIPModel, image: torch.Tensor, class_name: str) -> PendingImage:
        """Score one image ``[1, 3, S, S]`` against its class name's bank, changing nothing; :meth:`admit` admits it.

        One CLIP pass gives AdaCLIP's outputs and the rarity scorer's tokens.
        """
        adaclip, tokens = model.score_with_plain_tokens(image, [class_name], plain_layers=self.plain_layers)
        if self.config.weight == 0:
            return PendingImage(InferenceBatch(pred_score=adaclip.pred_score, anomaly_map=adaclip.anomaly_map),
                                class_name, None)  # fmt: skip
        scorer = self._scorer_on(tokens.embedding.device)
        if class_name not in self.banks:  # an empty bank, kept: an image scored against it can be admitted later
            scorer.reset()
            self.banks[class_name] = scorer.bank
        elif self.banks[class_name].foreground.device != scorer.neighbours.device:  # restored before a move
            self.banks[class_name] = self.banks[class_name].to(scorer.neighbours.device)
        scorer.bank = self.banks[class_name]
        scored = scorer.score_tokens(PlainTokens(tokens.patch_tokens, tokens.embedding), self._text_side(adaclip))
        if scored.output is None:  # one of the k_shot normal images: AdaCLIP's outputs stand alone
            return PendingImage(InferenceBatch(pred_score=adaclip.pred_score, anomaly_map=adaclip.anomaly_map),
                                class_name, scored)  # fmt: skip
        return PendingImage(fuse(adaclip, scored.output, self.config.weight), class_name, scored)

    def admit(self, pending: PendingImage) -> None:
        """Put a scored image into its class name's bank.

        Raises:
            ValueError: The bank changed since the image was scored (another image of its class name was admitted).
        """
        if pending.scored is None:
            return
        if pending.scored.base is not self.banks.get(pending.class_name):
            msg = (
                f"This image was scored against another state of the bank of {pending.class_name!r} (an image was "
                "admitted or the bank restored since): score it again."
            )
            raise ValueError(msg)
        self.banks[pending.class_name] = pending.scored.bank

    def state_dict(self) -> dict[str, Any]:
        """Every class name's bank (plain tensors and integers, for ``torch.load(weights_only=True)``)."""
        return {name: bank.state_dict() for name, bank in sorted(self.banks.items())}

    def load_state_dict(self, state: Mapping[str, Mapping[str, Any]]) -> None:
        """Restore what :meth:`state_dict` returned (banks of other class names are dropped).

        Raises:
            ValueError: A bank of another setting (other layers, grid or width).
        """
        banks = {}
        for name, bank in state.items():
            self.scorer.load_bank(bank)  # checks it against this scorer's setting
            banks[str(name)] = self.scorer.bank
        self.banks = banks

    def _scorer_on(self, device: torch.device) -> RarityScoring:
        if self.scorer.neighbours.device != device:
            self.scorer.to(device)
        return self.scorer

    def _text_side(self, adaclip: InferenceBatch) -> tuple[torch.Tensor, torch.Tensor] | None:
        """AdaCLIP's map pooled onto the patch grid and its probability (``text_branch="adaclip"``), else ``None``."""
        if self.config.text_branch == "tpb":
            return None
        grid = self.scorer.grid
        pooled = F.adaptive_avg_pool2d(adaclip.anomaly_map.reshape(1, 1, *adaclip.anomaly_map.shape[-2:]), grid)
        return pooled.reshape(1, grid * grid), adaclip.pred_score.reshape(1)


class NewBanksPerRun(Callback):
    """Empty the rarity banks when a validation, test or predict run starts (see the module: no run sees another's).

    Args:
        banks: The model's rarity part.
    """

    def __init__(self, banks: RarityBanks) -> None:
        self.banks = banks

    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
        """A new bank per class name for the run."""
        del trainer, pl_module
        self.banks.reset()

    def on_test_start(self, trainer: Any, pl_module: Any) -> None:
        """A new bank per class name for the run."""
        del trainer, pl_module
        self.banks.reset()

    def on_predict_start(self, trainer: Any, pl_module: Any) -> None:
        """A new bank per class name for the run."""
        del trainer, pl_module
        self.banks.reset()


def rarity_banks(config: RarityGroupConfig | None, model: AdaCLIPModel) -> RarityBanks | None:
    """The rarity part of an AdaCLIP with the rarity group ``config``, or ``None`` without rarity scoring."""
    return None if config is None else RarityBanks(config, model)
