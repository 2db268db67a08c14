"""Online rarity scoring (RareCLIP): each image scored as it arrives, against a bank of the images seen before.

RareCLIP (He, Cao, Peng, Xie, "RareCLIP: Rarity-aware Online Zero-shot Industrial Anomaly Detection", ICCV 2025;
code at commit a8e6d46 of the history of github hy28hy/RareCLIP_v1, no licence file) needs no batch and no training
of its own. This module computes what the authors' ``RareCLIP.process_image_and_update`` computes, re-implemented,
not copied (``/work/shared/reference/RARECLIP.md`` in the project's notes lists it fact by fact). For image ``t``:

1. **Tokens** (one plain CLIP pass, :func:`~anomalib_adaclip.model.mutual_scoring.plain_tokens`): the unit image
   embedding and the patch tokens after the blocks of the sorted union of ``text_layers`` and ``rarity_layers``
   (1-based here and in the settings; the pass counts from 0).
2. **Text branch (TPB):** the image embedding against RareCLIP's prompt ensemble (:func:`rarity_text_features`)
   gives ``text_prob``; each text layer's tokens through its linear layer (:class:`TextProjection`, the authors'
   ``trainable_linearlayer``) give a patch map, averaged over the layers; the **foreground map** is the running mean
   of those maps over the images so far, this one included, and the text map is their element-wise maximum.
3. **Patch rarity**, for ``r`` in (1, 3) and each rarity layer: the tokens (for ``r = 3`` the mean of each 3x3
   neighbourhood, replicate padding), L2-normalised, against the bank's prototypes: the ``topk`` nearest ones,
   their similarities through the loose similarity (:func:`loose_similarity`), times the prototypes' rarity
   measures; the mean of the ``ceil(T * rare_thd)`` largest rows is the estimate, ``1 - estimate`` the map. The
   image's patches then enter the bank with their measures, and sequential coreset sampling
   (:func:`sequential_coreset`) thins it to ``keep_ftime`` images' worth of prototypes.
4. **Image rarity:** the mean raw token over the top half of the foreground map (``aaif``), against those of the
   earlier images.
5. **Combination:** the map is the text map alone for the first image, ``2/3 rarity + 2/3 text`` up to the fourth,
   ``4/3 rarity + 1/3 text`` after; bilinear upsampling (``align_corners=True``), torchvision's Gaussian blur; the
   score is the map's maximum plus ``text_prob``, then re-scored by the scores of the most similar earlier images.

Equality with the authors' code: on their outputs for 15 tire images (``tests/data/reference/rareclip_reference.pt``,
a tiny random CLIP, CPU fp32) maps and scores agree within 1e-4 at every step.

**State and admission.** Everything an image leaves behind is one immutable bank
(:class:`~.rarity_bank.RarityBank`). :meth:`RarityScoring.score` computes an image's outputs *and* the bank it would
leave, without changing anything; :meth:`RarityScoring.commit` admits it. :meth:`RarityScoring.step` is both at once
(the authors' online mode), or a score without an update (their ``online=0``). A bank's ``state_dict()``
round-trips exactly, so a scorer restored from a snapshot continues bit for bit.

Rules of our own where the authors' code fails (the reference stays below all of them):

- **The memory of earlier images past ``keep_inum``.** Their code drops the oldest score but not the oldest image
  embedding (``IF_memory = IF_memory``), so re-scoring then pairs scores with the wrong images, and it shifts the
  ``aaif`` memory with ``mem[k:] = mem[k + 1:]``, a copy between slices of different lengths that raises. Here the
  oldest image after the ``k_shot`` normal ones goes from all three memories at once; the ``aaif`` memory is bounded
  the same way when re-scoring is off (theirs then grows without end).
- **CLIPs of fewer than 12 blocks.** Their vendored tower reads block 12's attention (which nothing uses): with
  fewer blocks it raises. Nothing here reads it, so any depth works; layers must lie in ``[1, depth]``.
- **Scoring without updating before the first update** (``online=0`` with ``k_shot=0``): their code still makes the
  image the bank's first (and replaces it at every image); here the bank stays empty. The outputs are the same.
- **The loose similarity of very few values:** ``kthvalue``'s ``k`` is at least 1 (theirs is 0, which raises, when
  fewer than ``1 / ls_ratio`` values are compared).
- **A constant foreground map** (every patch equal): its min-max normalisation is 0, not NaN.
- **The blur:** their code builds the kernel from ``sigma`` but passes the constant 4 as its standard deviation; here
  both come from ``sigma`` (equal at the default, 4), and an even kernel size is made odd (torchvision refuses it).
- **Other image sizes:** the positional embedding is resized as RareCLIP's vendored open_clip does (bicubic with
  open_clip's default antialiasing; AdaCLIP's reference does not antialias), so weights at the native size give
  the authors' tokens at any size.
- The first ``k_shot`` images are normal references: they always enter the bank (scoring them without an update is
  refused).

Example:
    >>> import torch
    >>> tiny = {"embed_dim": 32, "vision_cfg": {"image_size": 56, "layers": 4, "width": 64, "head_width": 32,
    ...         "patch_size": 14}, "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32,
    ...         "heads": 2, "layers": 1}}
    >>> scorer = RarityScoring(tiny, None, 56, text_layers=[2, 4], rarity_layers=[2, 4], sigma=1.0)
    >>> out = scorer.step(torch.randn(1, 3, 56, 56))
    >>> out.anomaly_map.shape, out.pred_score.shape
    (torch.Size([1, 56, 56]), torch.Size([1]))
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from anomalib.data import InferenceBatch
from open_clip.model import CLIP
from open_clip.tokenizer import SimpleTokenizer
from torch import nn
from torch.nn import functional as F  # noqa: N812
from torchvision.transforms.functional import gaussian_blur

from anomalib_adaclip.config import NORMAL_STATES, RarityScoringConfig
from anomalib_adaclip.weights.loading import CheckpointError, check_state_dict, load_state_dict_file, torch_load

from .backbone import BackboneWeights, backbone_config, create_clip
from .inputs import check_images
from .mutual_scoring import PlainTokens, unit_embedding
from .rarity_bank import RarityBank
from .vision import vision_forward

logger = logging.getLogger(__name__)

__all__ = [
    "RARECLIP_ABNORMAL_STATES",
    "RARECLIP_NORMAL_STATES",
    "RARECLIP_TEMPLATES",
    "RarityScoring",
    "ScoredImage",
    "TextProjection",
    "blur_kernel_size",
    "load_tpb_weights",
    "loose_similarity",
    "neighbourhood_index",
    "rarity_text_features",
    "sequential_coreset",
]

# RareCLIP's prompt ensemble (its encode_text_with_prompt_ensemble): each state with "object" and with "texture",
# crossed with 35 templates.
RARECLIP_NORMAL_STATES: tuple[str, ...] = NORMAL_STATES  # the same seven states as AdaCLIP's ensemble
RARECLIP_ABNORMAL_STATES: tuple[str, ...] = (
    "damaged {}",
    "broken {}",
    "{} with flaw",
    "{} with defect",
    "{} with damage",
)
RARECLIP_TEMPLATES: tuple[str, ...] = (
    "a bad photo of a {}.",
    "a low resolution photo of the {}.",
    "a bad photo of the {}.",
    "a cropped photo of the {}.",
    "a bright photo of a {}.",
    "a dark photo of the {}.",
    "a photo of my {}.",
    "a photo of the cool {}.",
    "a close-up photo of a {}.",
    "a black and white photo of the {}.",
    "a bright photo of the {}.",
    "a cropped photo of a {}.",
    "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.",
    "a photo of the {}.",
    "a good photo of the {}.",
    "a photo of one {}.",
    "a close-up photo of the {}.",
    "a photo of a {}.",
    "a low resolution photo of a {}.",
    "a photo of a large {}.",
    "a blurry photo of a {}.",
    "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.",
    "a photo of the small {}.",
    "a photo of the large {}.",
    "a black and white photo of a {}.",
    "a dark photo of a {}.",
    "a photo of a cool {}.",
    "a photo of a small {}.",
    "there is a {} in the scene.",
    "there is the {} in the scene.",
    "this is a {} in the scene.",
    "this is the {} in the scene.",
    "this is one {} in the scene.",
)
_R_LIST = (1, 3)  # the neighbourhood sizes of the patch rarity branch (fixed in the authors' code)
_FOREGROUND_RATIO = 0.5  # the share of patches the foreground map selects for the image rarity branch
_TPB_KEY = "trainable_linearlayer"  # where the authors' weight files keep the TPB state dict


def rareclip_sentences() -> tuple[list[str], list[str]]:
    """The normal and abnormal sentences of RareCLIP's prompt ensemble (14 and 10 states x 35 templates)."""
    return tuple(  # type: ignore[return-value]
        [
            template.format(state)
            for state in [s.format("object") for s in states] + [s.format("texture") for s in states]
            for template in RARECLIP_TEMPLATES
        ]
        for states in (RARECLIP_NORMAL_STATES, RARECLIP_ABNORMAL_STATES)
    )


@torch.no_grad()
def rarity_text_features(clip: CLIP, max_batch: int = 128) -> torch.Tensor:
    """RareCLIP's text features ``[embed, 2]`` (normal, abnormal): the normalised mean of normalised embeddings."""
    tokenizer = SimpleTokenizer(context_length=int(clip.context_length))
    columns = []
    for sentences in rareclip_sentences():
        tokens = tokenizer(sentences)
        embeddings = torch.cat([clip.encode_text(tokens[i : i + max_batch]) for i in range(0, len(tokens), max_batch)])
        embeddings = embeddings / embeddings.norm(dim=-1, keepdim=True)
        mean = embeddings.mean(dim=0)
        columns.append(mean / mean.norm())
    return torch.stack(columns, dim=1)


def loose_similarity(similarities: torch.Tensor, ratio: float) -> torch.Tensor:
    """RareCLIP's loose similarity ``LS(x, Y)``: ``x`` divided by its ``k``-th smallest value, clipped at 1.

    ``k = int(numel * (1 - Y))`` (at least 1), so about the ``1 - Y`` quantile; ``Y = 0`` divides by the maximum
    (and does not clip). Returns a new tensor.
    """
    if ratio > 0:
        flat = similarities.flatten()
        k = max(1, int(flat.shape[0] * (1 - ratio)))
        return (similarities / torch.kthvalue(flat, k=k)[0]).clamp(max=1)
    return similarities / similarities.max()


def neighbourhood_index(height: int, width: int, r: int) -> torch.Tensor:
    """For each patch of an ``height x width`` grid, the flat indices of its ``r x r`` neighbours ``[h*w, r*r]``.

    Neighbours outside the grid repeat the border patch (replicate padding, RareCLIP's; MuSc pads with zeros).
    """
    index = torch.arange(height * width, dtype=torch.float32).reshape(1, 1, height, width)
    pad = r // 2
    padded = F.pad(index, (pad, pad, pad, pad), mode="replicate") if pad else index
    return F.unfold(padded, (r, r)).reshape(r * r, height * width).t().long()


def sequential_coreset(
    features: torch.Tensor, measures: torch.Tensor, keep: int, protected: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sequential coreset sampling (SCS): keep the ``keep`` prototypes least similar to any earlier one.

    Each prototype's largest cosine to an *earlier* prototype (the first one's is 0) ranks it; the ``keep`` smallest
    stay, in their original order, with their columns of ``measures``. The first ``protected`` prototypes (normal
    references) rank as 0 and so stay first.

    Args:
        features: Unit prototypes ``[M, C]``, oldest first.
        measures: Their rarity measures ``[T, M]``.
        keep: How many to keep; nothing happens when ``M <= keep``.
        protected: Prototypes at the front that rank first.

    Returns:
        The kept features, their measures, and the kept indices.
    """
    count = features.shape[0]
    if count <= keep:
        return features, measures, torch.arange(count, device=features.device)
    earlier = torch.tril(torch.mm(features, features.t()), diagonal=-1).max(dim=-1)[0]
    if protected:
        earlier[:protected] = 0
    _, smallest = torch.topk(earlier, k=keep, largest=False, sorted=False)
    kept, _ = torch.sort(smallest)
    return features[kept].contiguous(), measures[:, kept].contiguous(), kept


def blur_kernel_size(sigma: float) -> int:
    """RareCLIP's kernel size, ``int(2 * 3 * sigma + 1)``, made odd (torchvision needs an odd size)."""
    size = int(2 * 3 * sigma + 1)
    return size if size % 2 else size + 1


def _normalize01(values: torch.Tensor) -> torch.Tensor:
    low, high = values.min(), values.max()
    if high == low:
        return torch.zeros_like(values)
    return (values - low) / (high - low)


def _cat(memory: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    return rows.contiguous() if memory.numel() == 0 else torch.cat((memory, rows), dim=0).contiguous()


class ScoredImage(NamedTuple):
    """An image scored by :meth:`RarityScoring.score`: its outputs and the bank it would leave (a pending update).

    Attributes:
        output: ``InferenceBatch(anomaly_map [1, S, S], pred_score [1])``, or ``None`` for one of the ``k_shot``
            normal images.
        bank: The bank after this image; :meth:`RarityScoring.commit` installs it.
        base: The bank it was computed from; a commit is refused unless the scorer still holds it.
    """

    output: InferenceBatch | None
    bank: RarityBank
    base: RarityBank


class TextProjection(nn.Module):
    """RareCLIP's TPB linear layers (``trainable_linearlayer``): one ``width -> embed`` layer per text layer."""

    def __init__(self, width: int, embed_dim: int, n_layers: int) -> None:
        super().__init__()
        self.fc = nn.ModuleList([nn.Linear(width, embed_dim) for _ in range(n_layers)])

    def forward(self, tokens: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Project each text layer's tokens ``[B, L, width]`` with its own layer."""
        return [fc(t) for fc, t in zip(self.fc, tokens, strict=True)]


def load_tpb_weights(source: str | Path | Mapping[str, torch.Tensor], head: TextProjection) -> None:
    """Load RareCLIP's TPB weights into ``head``, with key and shape checks.

    The source is a file of the authors' (``{"trainable_linearlayer": {...}}``), a state dict file, or a state dict
    with ``fc.{i}.weight`` and ``fc.{i}.bias``.

    Files are read without executing pickled code (:func:`~anomalib_adaclip.weights.loading.torch_load`).

    Raises:
        FileNotFoundError: A path that does not exist.
        CheckpointError: An unreadable file, or keys or shapes that do not fit (another backbone or layer count).
    """
    if isinstance(source, Mapping):
        what, content = "The TPB state dict", source
    else:
        path = Path(source).expanduser()
        if not path.is_file():
            msg = (
                f"TPB weights file not found: {path} (absolute: {path.absolute()}). RareCLIP's authors release "
                "weights/visa_pretrained.pth (for MVTec AD) and weights/mvtec_pretrained.pth (for VisA and other "
                "data sets) in the weights/ folder of their repository (commit a8e6d46, whose history "
                "github.com/hy28hy/RareCLIP_v1 carries); text_branch='adaclip' needs no TPB weights."
            )
            raise FileNotFoundError(msg)
        what = f"The TPB weights {path}"
        content = load_state_dict_file(path) if path.suffix == ".safetensors" else torch_load(path)
    if isinstance(content, Mapping) and isinstance(content.get(_TPB_KEY), Mapping):
        content = content[_TPB_KEY]
    if not isinstance(content, Mapping) or not all(isinstance(v, torch.Tensor) for v in content.values()):
        msg = f"{what} holds no state dict of tensors (expected fc.{{i}}.weight/bias, or a '{_TPB_KEY}' entry)."
        raise CheckpointError(msg)
    expected = head.state_dict()
    check_state_dict(expected, content, f"{what} (one linear layer per text layer, width -> embed_dim)")
    head.load_state_dict({key: value.float() for key, value in content.items()})


def _patch(vision: nn.Module) -> int:
    patch = vision.conv1.kernel_size
    return int(patch[0] if isinstance(patch, tuple | list) else patch)


def _grid(config: Mapping[str, Any], image_size: int) -> int:
    patch = config["vision_cfg"].get("patch_size", 16)
    return image_size // int(patch[0] if isinstance(patch, list | tuple) else patch)


class RarityScoring(nn.Module):
    """RareCLIP's online zero-shot anomaly maps and scores: each image scored against the images before it.

    The scorer owns a frozen CLIP vision tower, RareCLIP's text features and TPB layers, and the bank
    (:attr:`bank`, a :class:`~.rarity_bank.RarityBank`). Images must come one at a time, in order; each output
    depends on the images before it. :meth:`reset` empties the bank (one bank per category, as the authors'
    ``renew_memory``).

    Admission control: :meth:`score` returns a :class:`ScoredImage` (the outputs and the bank the image would leave)
    and changes nothing; :meth:`commit` admits the image. Its outputs are those of the authors' online mode whether or
    not it is then admitted. :meth:`step` scores and admits (``update=True``), or scores with the bank as it is
    (``update=False``, the authors' ``online=0``: the foreground map then does not include the image). :meth:`score`
    and :meth:`step` read the CLIP pass themselves; :meth:`score_tokens` and :meth:`step_tokens` take precomputed
    plain-pass tokens (:class:`~anomalib_adaclip.model.mutual_scoring.PlainTokens` at :attr:`token_blocks`), so a model
    that already runs the plain pass (AdaCLIP) runs CLIP once per image.

    Snapshots: ``torch.save(scorer.bank.state_dict(), path)``, then ``scorer.load_bank(torch.load(path,
    weights_only=True))``; the restored scorer continues bit for bit. (The module's own ``state_dict()`` holds its
    frozen weights, not the bank.)

    Example of admission control (an image above a threshold is scored but kept out of the bank)::

        scored = scorer.score(image)
        if scored.output is None or scored.output.pred_score.item() < threshold:
            scorer.commit(scored)

    Args:
        backbone: An open_clip ViT model name or a config dict. Defaults to ``"ViT-L-14-336"``, RareCLIP's.
        backbone_weights: CLIP weights (a pretrained tag, a path, a state dict, or ``None`` for random weights).
        image_size: Input side length. Defaults to 518, RareCLIP's.
        text_layers: 1-based blocks of the text branch (:class:`~anomalib_adaclip.config.RarityScoringConfig`).
        rarity_layers: 1-based blocks of the rarity branches.
        tpb_weights: The TPB linear layers: the authors' weight file (``weights/mvtec_pretrained.pth`` holds a
            ``trainable_linearlayer`` entry), a state dict file, or a state dict; ``None`` leaves them random (the
            text map is then meaningless; tests only).
        **settings: The other fields of :class:`~anomalib_adaclip.config.RarityScoringConfig` (``keep_ftime``,
            ``topk``, ``rescoring``, ``k_shot``, ...).

    Raises:
        ValueError: An invalid setting, or a layer outside the backbone.
        CheckpointError: TPB weights that do not fit.
    """

    def __init__(
        self,
        backbone: str | Mapping[str, Any] = "ViT-L-14-336",
        backbone_weights: BackboneWeights = "openai",
        image_size: int = 518,
        text_layers: Sequence[int] = RarityScoringConfig.text_layers,
        rarity_layers: Sequence[int] = RarityScoringConfig.rarity_layers,
        tpb_weights: str | Path | Mapping[str, torch.Tensor] | None = None,
        **settings: Any,
    ) -> None:
        super().__init__()
        unknown = sorted(set(settings) - {f.name for f in dataclasses.fields(RarityScoringConfig)})
        if unknown:
            msg = f"RarityScoring got unknown settings {unknown}; see RarityScoringConfig for the fields."
            raise TypeError(msg)
        self.settings = RarityScoringConfig(text_layers=text_layers, rarity_layers=rarity_layers, **settings)
        config = backbone_config(backbone)
        self.settings.check_backbone(int(config["vision_cfg"].get("layers", 12)), _grid(config, image_size) ** 2)
        # RareCLIP's vendored open_clip resizes the positions with open_clip's default antialiasing.
        clip = create_clip(backbone, backbone_weights, image_size=image_size, antialias_positions=True)
        self._build(clip, image_size, tpb_weights, text_branch=True)
        self.visual = clip.visual

    @classmethod
    def on_clip(
        cls,
        clip: CLIP,
        image_size: int,
        settings: RarityScoringConfig,
        tpb_weights: str | Path | Mapping[str, torch.Tensor] | None = None,
        *,
        text_branch: bool = True,
    ) -> RarityScoring:
        """A scorer that reads the tokens of its host's plain pass (:meth:`score_tokens`): it holds no vision tower.

        The host (AdaCLIP) runs the CLIP pass once per image and hands the tokens of :attr:`token_blocks` over; the
        scorer keeps only RareCLIP's text features and TPB layers (with ``text_branch``) and the bank. Its
        :meth:`tokens`, :meth:`score` and :meth:`step` (which read an image) are refused.

        Args:
            clip: The host's open_clip CLIP (its text tower gives RareCLIP's text features; nothing is kept of it).
            image_size: The host's input size.
            settings: RareCLIP's settings.
            tpb_weights: As for the constructor.
            text_branch: ``False`` when the host supplies the text side (:meth:`score_tokens`'s ``text``): no text
                features and no TPB layers are built.

        Raises:
            ValueError: Layers outside the tower, or banks smaller than ``topk``.
        """
        vision = clip.visual
        scorer = cls.__new__(cls)
        nn.Module.__init__(scorer)
        scorer.settings = settings
        grid = image_size // _patch(vision)
        settings.check_backbone(len(vision.transformer.resblocks), grid * grid)
        scorer._build(clip, image_size, tpb_weights, text_branch=text_branch)
        scorer.visual = None
        return scorer

    def _build(
        self,
        clip: CLIP,
        image_size: int,
        tpb_weights: str | Path | Mapping[str, torch.Tensor] | None,
        *,
        text_branch: bool,
    ) -> None:
        """Everything but the vision tower: text features, TPB layers, token blocks, neighbourhoods, an empty bank."""
        vision = clip.visual
        self.image_size = image_size
        self.grid = image_size // _patch(vision)
        self.width = int(vision.conv1.out_channels)
        self.embed_dim = int(vision.output_dim)
        n_text = len(self.settings.text_layers)
        if text_branch:
            self.register_buffer("text_features", rarity_text_features(clip).float(), persistent=False)
        else:  # the host gives the text side
            self.register_buffer("text_features", torch.zeros(self.embed_dim, 0), persistent=False)
        self.tpb = TextProjection(self.width, self.embed_dim, n_text if text_branch else 0)
        if not text_branch:
            pass
        elif tpb_weights is None:
            logger.warning("RarityScoring's TPB layers are RANDOM (tpb_weights=None): its text map is meaningless.")
        else:
            load_tpb_weights(tpb_weights, self.tpb)
        self.tpb.requires_grad_(False)
        blocks = sorted(set(self.settings.text_layers) | set(self.settings.rarity_layers))
        #: The 0-based blocks of the plain pass whose tokens :meth:`score_tokens` and :meth:`step_tokens` take, in
        #: order.
        self.token_blocks: tuple[int, ...] = tuple(block - 1 for block in blocks)
        self._text_index = [blocks.index(layer) for layer in self.settings.text_layers]
        self._rarity_index = [blocks.index(layer) for layer in self.settings.rarity_layers]
        self.register_buffer("neighbours", neighbourhood_index(self.grid, self.grid, 3), persistent=False)
        #: The images seen so far, as exact state (empty at first; :meth:`commit` and :meth:`step` replace it).
        self.bank = RarityBank.empty(len(self.settings.rarity_layers), len(_R_LIST))
        self.eval()

    def train(self, mode: bool = True) -> RarityScoring:
        """Nothing here trains: the modules always stay in eval mode."""
        return super().train(False)

    @property
    def prototypes_kept(self) -> int:
        """The prototypes each bank keeps after sampling, ``int(keep_ftime * h * w)``."""
        return int(self.settings.keep_ftime * self.grid * self.grid)

    def reset(self) -> None:
        """Empty the bank (a new category or line; the authors' ``renew_memory``)."""
        self.bank = RarityBank.empty(len(self.settings.rarity_layers), len(_R_LIST), self.text_features.device)

    def load_bank(self, state: Mapping[str, Any]) -> None:
        """Restore a bank saved with ``scorer.bank.state_dict()``; the scorer then continues bit for bit.

        Raises:
            ValueError: A bank of another setting (other layers, grid or width).
        """
        bank = RarityBank.from_state_dict(state, len(self.settings.rarity_layers), len(_R_LIST))
        device = self.text_features.device
        bank = bank.to(device)
        for features in bank.features:
            for feature in features:
                if feature.numel() and feature.shape[-1] != self.width:
                    msg = (
                        f"The rarity bank holds prototypes of width {feature.shape[-1]}, this scorer's tower has "
                        f"width {self.width} (a snapshot of another backbone?)."
                    )
                    raise ValueError(msg)
        if bank.foreground.numel() not in (0, self.grid * self.grid):
            msg = (
                f"The rarity bank's foreground map has {bank.foreground.numel()} patches, this scorer's images have "
                f"{self.grid * self.grid} (a snapshot of another image size?)."
            )
            raise ValueError(msg)
        self.bank = bank

    @torch.no_grad()
    def tokens(self, image: torch.Tensor) -> PlainTokens:
        """The plain CLIP pass of one normalised image ``[1, 3, S, S]`` at :attr:`token_blocks` (0-based)."""
        if self.visual is None:
            msg = (
                "This scorer reads the tokens of its host's CLIP pass (RarityScoring.on_clip): give them to "
                "score_tokens()/step_tokens()."
            )
            raise RuntimeError(msg)
        self._check_image(image)
        embedding, kept = vision_forward(self.visual, image, keep_blocks=set(self.token_blocks), native_blocks=True)
        return PlainTokens([kept[block] for block in self.token_blocks], unit_embedding(embedding))

    def score(self, image: torch.Tensor) -> ScoredImage:
        """Score one image as in the online mode without changing the bank; :meth:`commit` admits it."""
        return self.score_tokens(self.tokens(image))

    def commit(self, scored: ScoredImage) -> None:
        """Admit a scored image: install the bank it leaves.

        Raises:
            ValueError: The bank changed since the image was scored (another image was committed or the scorer
                reset or restored in between): committing would drop that change.
        """
        if scored.base is not self.bank:
            msg = (
                "This scored image was computed from another state of the bank (an image was committed, or the "
                "bank reset or restored, since): score it again."
            )
            raise ValueError(msg)
        self.bank = scored.bank

    def step(self, image: torch.Tensor, *, update: bool = True) -> InferenceBatch | None:
        """Score one normalised image ``[1, 3, S, S]``; with ``update`` it then enters the bank.

        Returns:
            ``InferenceBatch(anomaly_map [1, S, S], pred_score [1])``, or ``None`` for the first ``k_shot`` images.
        """
        return self.step_tokens(self.tokens(image), update=update)

    @torch.no_grad()
    def step_tokens(self, tokens: PlainTokens, *, update: bool = True) -> InferenceBatch | None:
        """:meth:`step` from precomputed plain-pass tokens of one image (at :attr:`token_blocks`, in that order).

        :meth:`tokens` runs open_clip's own blocks (the authors' numbers to the bit); tokens of the lean pass
        (:func:`~anomalib_adaclip.model.vision.vision_forward` without ``native_blocks``, AdaCLIP's) differ by
        rounding (about 3e-6), which can change a near-tie of the re-scoring's neighbours.
        """
        if update:
            scored = self.score_tokens(tokens)
            self.bank = scored.bank
            return scored.output
        if self.bank.seen < self.settings.k_shot:
            msg = (
                f"The first k_shot={self.settings.k_shot} images are the normal references and always enter the "
                f"bank ({self.bank.seen} so far): step(image, update=False) is refused until then."
            )
            raise ValueError(msg)
        return self._run(tokens, update=False).output

    @torch.no_grad()
    def score_tokens(self, tokens: PlainTokens, text: tuple[torch.Tensor, torch.Tensor] | None = None) -> ScoredImage:
        """:meth:`score` from precomputed plain-pass tokens of one image (at :attr:`token_blocks`, in that order).

        Args:
            tokens: The plain-pass tokens.
            text: The text side given by the host instead of RareCLIP's text branch: a patch map ``[1, h*w]`` and an
                image probability ``[1]`` (AdaCLIP's, for ``rarity.text_branch="adaclip"``); ``None`` computes
                RareCLIP's (TPB). It enters everywhere RareCLIP's does: the foreground map, the combination, the score.
        """
        return self._run(tokens, update=True, text=text)

    def _check_image(self, image: torch.Tensor) -> None:
        check_images(image, "image", image_size=self.image_size)
        if image.shape[0] != 1:
            msg = (
                f"RarityScoring scores one image at a time, in order (each depends on the ones before), got a batch "
                f"of {image.shape[0]}: call step() for each image[i : i + 1]."
            )
            raise ValueError(msg)

    def _check_tokens(self, tokens: PlainTokens) -> None:
        blocks = [block + 1 for block in self.token_blocks]
        if len(tokens.patch_tokens) != len(blocks):
            msg = f"Got {len(tokens.patch_tokens)} layers of tokens; this scorer reads the blocks {blocks} (1-based)."
            raise ValueError(msg)
        shape = (1, self.grid * self.grid, self.width)
        for block, layer in zip(blocks, tokens.patch_tokens, strict=True):
            if tuple(layer.shape) != shape:
                msg = f"The tokens of block {block} have shape {tuple(layer.shape)}; expected {shape} (one image)."
                raise ValueError(msg)
        if tokens.embedding.shape != (1, self.embed_dim):
            msg = f"The embedding has shape {tuple(tokens.embedding.shape)}; expected (1, {self.embed_dim})."
            raise ValueError(msg)

    def _run(  # noqa: PLR0912, PLR0915
        self, tokens: PlainTokens, *, update: bool, text: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> ScoredImage:
        """One image of the authors' ``process_image_and_update``, as a function of the bank (which stays as it is)."""
        self._check_tokens(tokens)
        cfg, base = self.settings, self.bank
        seen, k_shot = base.seen, cfg.k_shot
        layers = [t.float() for t in tokens.patch_tokens]
        embedding = tokens.embedding.float()
        rescore = cfg.rescoring and seen >= k_shot
        embeddings, sim = base.embeddings, None
        if rescore:
            embeddings = _cat(base.embeddings, embedding)
            sim = embedding @ embeddings.T

        # Text branch.
        if text is not None:
            text_map, text_prob = text[0].float().reshape(1, -1), text[1].float().reshape(1)
        elif self.text_features.shape[-1] == 0:
            msg = "This scorer was built without RareCLIP's text branch (text_branch=False): give the text side."
            raise ValueError(msg)
        else:
            text_prob = (cfg.text_temp * embedding @ self.text_features).softmax(dim=-1)[:, 1]
            text_map = 0
            for projected in self.tpb([layers[i] for i in self._text_index]):
                unit = projected / projected.norm(dim=-1, keepdim=True)
                text_map = text_map + (cfg.text_temp * unit @ self.text_features).softmax(dim=-1)[:, :, 1]
            text_map = text_map / len(self._text_index)
        foreground = base.foreground
        if update:
            foreground = (foreground * seen + text_map[0]) / (seen + 1) if foreground.numel() else text_map[0]
        foreground_idx = None
        if foreground.numel():
            foreground_idx = torch.topk(foreground, k=int(foreground.shape[-1] * _FOREGROUND_RATIO), sorted=False)[1]
            text_map = torch.cat((text_map, foreground.unsqueeze(0)), dim=0).max(dim=0, keepdim=True)[0]

        # Patch rarity branch.
        rare_map, k_shot_map = 0, 0
        features_rl = [list(row) for row in base.features]
        measures_rl = [list(row) for row in base.measures]
        counts_rl = [list(row) for row in base.normal_counts]
        raw = torch.stack([layers[i] for i in self._rarity_index], dim=0)  # [n_layers, 1, L, C]
        for ri, r in enumerate(_R_LIST):
            features = raw[..., self.neighbours, :].mean(-2) if r > 1 else raw.clone()
            features = features / features.norm(dim=-1, keepdim=True)
            for li in range(len(self._rarity_index)):
                patches = features[li, 0]
                if seen == 0:
                    if update:
                        features_rl[ri][li] = patches
                        measures_rl[ri][li] = torch.ones(1, patches.shape[0], device=patches.device)
                        if seen < k_shot:
                            counts_rl[ri][li] += patches.shape[0]
                    continue
                bank_features, bank_measures = base.features[ri][li], base.measures[ri][li]
                similarity = torch.mm(patches, bank_features.t())
                top_sim, top_idx = torch.topk(similarity, k=cfg.topk, dim=-1, sorted=True)
                top_sim = loose_similarity(top_sim, cfg.ls_ratio)
                ref_prob = (top_sim * bank_measures[:, top_idx]).mean(dim=-1)
                rows = math.ceil(ref_prob.shape[0] * cfg.rare_thd)
                estimate = torch.topk(ref_prob, k=rows, dim=0, sorted=False)[0].mean(0)
                rare_map = rare_map + (1 - estimate).unsqueeze(0)
                ref_sim = loose_similarity(similarity.max(dim=0)[0], cfg.ls_ratio)
                if k_shot:
                    normal = loose_similarity(similarity[:, : counts_rl[ri][li]].max(dim=-1)[0], cfg.ls_ratio)
                    k_shot_map = k_shot_map + (1 - normal).unsqueeze(0)
                if update:
                    features_rl[ri][li] = torch.cat((bank_features, patches), dim=0)
                    ref_prob = torch.cat((ref_prob, torch.ones_like(estimate).unsqueeze(0)), dim=0)
                    grown = torch.cat((bank_measures, ref_sim.unsqueeze(0)), dim=0)
                    measures_rl[ri][li] = torch.cat((grown, ref_prob), dim=-1)
                    if seen < k_shot:
                        counts_rl[ri][li] += patches.shape[0]

        # Image rarity branch.
        foreground_score, k_shot_score = 0, 0
        aaif_memory = list(base.aaif)
        for li, index in enumerate(self._rarity_index):
            tokens_l = layers[index][0]
            aaif = (tokens_l[foreground_idx] if foreground_idx is not None else tokens_l).mean(dim=0, keepdim=True)
            aaif = aaif / aaif.norm(dim=-1, keepdim=True)
            if seen > 0:
                aaif_sim = torch.mm(aaif, base.aaif[li].t())
                top = torch.topk(aaif_sim, k=math.ceil(aaif_sim.shape[-1] * cfg.rare_thd), sorted=False)[0]
                foreground_score = foreground_score + 1 - top.mean(-1)
                if rescore:
                    sim = sim + torch.cat((aaif_sim[:, k_shot:], torch.ones((1, 1), device=aaif.device)), dim=1)
                if k_shot > 0:
                    k_shot_score = k_shot_score + 1 - torch.max(aaif_sim[:, :k_shot], dim=-1)[0]
            if update:
                aaif_memory[li] = _cat(base.aaif[li], aaif)

        keep = self.prototypes_kept
        minimum_normal = min(int(self.grid * self.grid * k_shot / 4), keep) if k_shot else 0

        def sample(bank: RarityBank) -> RarityBank:
            features, measures, counts = [], [], []
            for ri in range(len(_R_LIST)):
                row_f, row_m, row_c = [], [], []
                for li in range(len(self._rarity_index)):
                    count = counts_rl[ri][li]
                    protected = count if k_shot and count <= minimum_normal else 0
                    f, m, kept = sequential_coreset(features_rl[ri][li], measures_rl[ri][li], keep, protected)
                    if k_shot and count > minimum_normal and kept.numel() < features_rl[ri][li].shape[0]:
                        count = int((kept < count).sum())
                    row_f.append(f)
                    row_m.append(m)
                    row_c.append(count)
                features.append(tuple(row_f))
                measures.append(tuple(row_m))
                counts.append(tuple(row_c))
            return dataclasses.replace(
                bank, features=tuple(features), measures=tuple(measures), normal_counts=tuple(counts)
            )

        grown = dataclasses.replace(
            base, aaif=tuple(aaif_memory), foreground=foreground, embeddings=embeddings if update else base.embeddings
        )
        if seen < k_shot:  # a normal reference: no output
            return ScoredImage(None, dataclasses.replace(sample(grown), seen=seen + 1), base)

        # Combination.
        n_layers = len(self._rarity_index)
        rare_map = rare_map / (n_layers * len(_R_LIST))
        foreground_score = foreground_score / n_layers
        if k_shot:
            k_shot_map = k_shot_map / (n_layers * len(_R_LIST))
            k_shot_score = k_shot_score / n_layers
            weight, share = k_shot / 8, 1 - k_shot / seen
            rare_map = (share * rare_map + k_shot_map * weight) / (share + weight)
            foreground_score = (share * foreground_score + k_shot_score * weight) / (share + weight)
        if isinstance(foreground_score, torch.Tensor) and foreground_score > 0:
            rare_map = rare_map + foreground_score * (1 + _normalize01(foreground))
        if seen <= 0 or not isinstance(rare_map, torch.Tensor):
            anomaly_map = text_map
        elif seen <= 3:
            anomaly_map = rare_map * 2 / 3 + 2 / 3 * text_map
        else:
            anomaly_map = rare_map * 4 / 3 + 1 / 3 * text_map
        anomaly_map = F.interpolate(
            anomaly_map.view(-1, 1, self.grid, self.grid), size=self.image_size, mode="bilinear", align_corners=True
        )
        if cfg.sigma > 0:
            size = blur_kernel_size(cfg.sigma)
            anomaly_map = gaussian_blur(anomaly_map, [size, size], [cfg.sigma, cfg.sigma])
        score = anomaly_map.max() + text_prob

        # Re-scoring by the most similar remembered images.
        scores = base.scores
        if rescore:
            scores = _cat(base.scores, score)
            if sim.shape[-1] > cfg.rs_freq:
                count = min(math.ceil(sim.shape[-1] / cfg.rs_freq), cfg.max_rs_num + 1)
                sim = sim / sim.max()
                neighbour_sim, neighbour_idx = torch.topk(sim, k=count, sorted=False)
                score = ((cfg.rs_temp * neighbour_sim).softmax(dim=-1) * scores[neighbour_idx]).sum(dim=-1)
        output = InferenceBatch(
            pred_score=score.reshape(1), anomaly_map=anomaly_map.reshape(1, *anomaly_map.shape[-2:])
        )
        if not update:
            return ScoredImage(output, base, base)

        bank = dataclasses.replace(sample(grown), scores=scores, seen=seen + 1)
        bank = self._forget(bank)
        return ScoredImage(output, bank, base)

    def _forget(self, bank: RarityBank) -> RarityBank:
        """Drop the oldest rarity row past ``keep_snum``, and the oldest remembered image past ``keep_inum``."""
        cfg = self.settings
        if bank.measures[0][0].shape[0] > cfg.keep_snum:
            bank = dataclasses.replace(bank, measures=tuple(tuple(m[1:] for m in row) for row in bank.measures))
        k_shot = cfg.k_shot
        if bank.aaif[0].shape[0] - k_shot > cfg.keep_inum:
            # The oldest image after the normal references goes from every memory of images at once.
            aaif = tuple(torch.cat((a[:k_shot], a[k_shot + 1 :])) for a in bank.aaif)
            scores, embeddings = bank.scores, bank.embeddings
            if cfg.rescoring:
                scores, embeddings = scores[1:], embeddings[1:]
            bank = dataclasses.replace(bank, aaif=aaif, scores=scores, embeddings=embeddings)
        return bank
