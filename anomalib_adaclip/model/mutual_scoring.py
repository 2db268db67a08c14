"""Mutual scoring (MuSc): each unlabelled image of a group scored against the other images of the group.

MuSc (Li et al., "MuSc: Zero-Shot Industrial Anomaly Classification and Segmentation with Mutual Scoring of the
Unlabeled Images", ICLR 2024; code github.com/xrli-U/MuSc at commit b76b93d, MIT licence) needs no training and no
normal reference images. A normal patch has close look-alikes in most other images of its category; a defect has
none. This module computes what the authors' code computes (its ``models/modules/_LNAMD.py``, ``_MSM.py``,
``_RsCIN.py`` and the glue of ``MuSc.make_category_data``), re-implemented, not copied:

1. **Tokens** (:func:`plain_tokens`): the plain, un-prompted CLIP vision pass; for every feature layer ``l`` the
   residual stream after block ``l`` **counted from 1** (the paper's block numbers, as AdaCLIP's ``feature_layers``;
   MuSc's config writes ``l - 1``, and :func:`musc_blocks` is the one place that converts), before ``ln_post``, class
   token dropped; and the image
   embedding ``ln_post(class token of the last block) @ proj``, L2-normalised. The positional embedding is resized
   to the input grid as for AdaCLIP (bicubic, ``align_corners=False``, no antialias;
   :func:`~anomalib_adaclip.model.backbone.create_clip`). AdaCLIP's frozen pass is the same function
   (:func:`~anomalib_adaclip.model.vision.vision_forward`), so AdaCLIP with mutual scoring runs CLIP once.
2. **LNAMD** (:func:`lnamd`), per layer and per ``r`` of ``r_list``: a layer norm over all of an image's (C, h, w)
   values at once (one mean and variance per image and layer; weight 1, bias 0, eps 1e-5, as MuSc's freshly built
   ``nn.LayerNorm``), the mean of every channel over each patch's r x r neighbourhood **with the zero padding
   counted** (r = 1 keeps the patches), and an L2 normalisation of every patch vector.
3. **MSM** (:func:`mutual_patch_scores`), per layer and ``r``: for patch ``p`` of image ``i`` and every other image
   ``j``, the distance to its nearest patch of ``j``; the patch's score is the mean of the sorted distances of the
   interval ``[int((N - 1) * topmin_min), int((N - 1) * topmin_max))`` (the lowest 30 % of the other images by
   default; a bound of at least 1 is a count of images, as in MuSc).
4. **Map** (:func:`group_patch_scores`, :func:`anomaly_maps`): the mean of the MSM scores over the layers, then over
   the ``r`` values (float64), upsampled to the input size bilinearly with ``align_corners=True``; no blur. The image
   score before re-scoring is the map's maximum.
5. **RsCIN** (:func:`rscin`): the image scores, min-max normalised over the group, re-scored by each image's ``k``
   most similar images (cosine of the embeddings, itself included) for every ``k`` of ``rscin_k``, averaged over the
   ``k``; a list holding 0 keeps the maxima.

Equality with MuSc's code. On the authors' reference outputs (``tests/data/reference/musc_reference.pt``: their
modules run on a tiny random CLIP and 15 tire images, CPU fp32) the maps and both image scores agree within 1e-4
(measured: maps 7.5e-6, scores 2.5e-6; the reference's own MSM scores carry float32 ``cdist`` rounding of up to
4.3e-5 there, see below). The MSM step agrees with MuSc's ``compute_scores_fast`` loop within 1e-6 on random unit
vectors (``tests/musc_oracle.py`` transcribes that loop; ``tests/msm_speed.py`` times both); its
arithmetic differs on purpose:

- every pair of images is compared once: one matrix of cosines ``z_i @ z_j.T`` per pair, whose row maxima give the
  nearest patches of ``j`` for the patches of ``i`` and whose column maxima give those of ``i`` for ``j`` (MuSc
  computes each pair twice, with ``torch.cdist``); the pairs go through in chunks of at most ``max_elements``
  cosines, so memory stays bounded (the table of nearest distances, ``N * L * N`` values, is all that grows);
- distances come from the largest cosines, ``sqrt(2 - 2 cos)``, except where that cosine exceeds 0.995 (a distance
  below 0.1): there the formula (and cdist's own ``|x|^2 + |y|^2 - 2 x.y``) loses its digits to cancellation where
  two patches nearly coincide (an error of 1e-7 in ``d^2`` is one of 3e-4 in ``d`` at ``d = 0``), so the distance of
  that nearest pair is computed directly, ``||z_i[p] - z_j[q]||``. There the value here is the exact one and MuSc's
  carries cdist's rounding (up to about 3e-4); elsewhere both agree to float32 rounding (about 1e-6).

Everything is computed in float32 (the map averages in float64, as MuSc), also when the tokens come from a pass
under autocast. MuSc's vendored vision tower also reads the attention of block 12 (so it needs 12 blocks); nothing
here uses it, and any depth works. The memory of a group is bounded layer by layer: :func:`group_patch_scores` reads
one layer's tokens at a time (a generator may load them from disk).

MuSc assumes that most images of a group are normal. A defect that recurs, alike, in more than about 30 % of the
group finds look-alikes among the lowest 30 % of the other images and scores low: in a mostly anomalous group such
defects are missed, and only defects rarer than that stand out.

Rules of our own where MuSc's code fails (each documented where it applies):

- a group of one image cannot be scored (there is nothing to compare it with): :class:`ValueError`;
- groups of 2 to 4 images: ``int((N - 1) * 0.3)`` is 0 and MuSc averages an empty set (NaN). Here the interval is
  widened to one image, the nearest one beyond ``topmin_min`` (the nearest other image with the defaults), with a
  warning; a count larger than the other images is cut to them, also with a warning;
- RsCIN over a group whose image scores are all equal (MuSc divides 0 by 0): the re-scored scores are all 0; a ``k``
  larger than the group keeps every image.

Example:
    >>> import torch
    >>> from anomalib_adaclip.model import mutual_patch_scores
    >>> z = torch.nn.functional.normalize(torch.randn(6, 16, 8), dim=-1)
    >>> mutual_patch_scores(z).shape
    torch.Size([6, 16])
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import torch
from anomalib.data import InferenceBatch
from open_clip.transformer import VisionTransformer
from torch import nn
from torch.nn import functional as F  # noqa: N812

from anomalib_adaclip.config import MutualScoringConfig

from .backbone import BackboneWeights, backbone_config, create_clip
from .blocks import full_precision
from .inputs import check_images
from .vision import vision_forward

__all__ = [
    "MutualScoring",
    "PlainTokens",
    "anomaly_maps",
    "averaged_interval",
    "group_patch_scores",
    "lnamd",
    "musc_blocks",
    "mutual_patch_scores",
    "plain_tokens",
    "rscin",
    "score_group",
    "unit_embedding",
]

# Cosines per chunk of image pairs in mutual_patch_scores (2**25 float32 values: 128 MiB).
MAX_ELEMENTS = 1 << 25


class PlainTokens(NamedTuple):
    """What the mutual scoring reads from the plain (un-prompted) CLIP vision pass of a batch of images.

    Attributes:
        patch_tokens: One tensor per MuSc feature layer (in the order of the layers asked for), ``[B, h*w, C]``: the
            output of that block, before ``ln_post``, class token dropped.
        embedding: The image embedding ``ln_post(class token of the last block) @ proj``, L2-normalised, ``[B, D]``.
    """

    patch_tokens: list[torch.Tensor]
    embedding: torch.Tensor


def _group_label(count: int, names: Sequence[str] | None, group: str | None) -> str:
    where = f" of {group!r}" if group else ""
    listed = f": {', '.join(map(str, names))}" if names else ""
    return f"group{where} of {count} image{'s' if count != 1 else ''}{listed}"


def _check_group(count: int, names: Sequence[str] | None, group: str | None) -> None:
    if count < 2:
        msg = (
            f"Mutual scoring cannot score a {_group_label(count, names, group)}: each image is scored against the "
            f"other images of its group, so a group needs at least 2 images (MuSc's own rule, the lowest 30 % of the "
            f"others, needs 5)."
        )
        raise ValueError(msg)


def averaged_interval(n_other: int, topmin_min: float = 0.0, topmin_max: float = 0.3) -> tuple[int, int, str | None]:
    """The averaged interval ``[k_min, k_max)`` of each patch's sorted distances to the ``n_other`` other images.

    MuSc's rule: a bound below 1 is a fraction of the other images, ``int(n_other * bound)``; a bound of at least 1 is a
    count; the two are swapped when the lower one is larger. Where that interval is empty (groups of 2 to 4 images
    with the defaults: MuSc averages an empty set, NaN) it is widened to the one image beyond ``k_min`` (the nearest
    other image with the defaults); a count beyond the other images is cut to them.

    Returns:
        ``k_min``, ``k_max`` and, where MuSc's rule was changed, why (else ``None``).
    """
    k_max = int(n_other * topmin_max) if topmin_max < 1 else int(topmin_max)
    k_min = int(n_other * topmin_min) if topmin_min < 1 else int(topmin_min)
    if k_max < k_min:
        k_min, k_max = k_max, k_min
    reason = None
    if k_max > n_other:
        reason = f"the interval's upper end {k_max} exceeds the {n_other} other images; it is cut to them"
        k_max = n_other
    if k_max <= k_min:
        k_min = min(k_min, n_other - 1)
        k_max = k_min + 1
        reason = (
            f"MuSc's interval of averaged images (topmin_min={topmin_min}, topmin_max={topmin_max}) is empty for "
            f"{n_other} other images (MuSc's code gives NaN); each patch is scored by the distance to the "
            f"{'' if k_max == 1 else _ordinal(k_max) + ' '}nearest other image instead"
        )
    return k_min, k_max, reason


def _ordinal(position: int) -> str:
    return {1: "1st", 2: "2nd", 3: "3rd"}.get(position, f"{position}th")


# Cosines above this (distances below 0.1) are too close to 1 for sqrt(2 - 2 cos): those distances are recomputed.
CLOSE_COSINE = 0.995


def _nearest_distances(
    cosines: torch.Tensor, image: torch.Tensor, others: torch.Tensor, *, by_rows: bool
) -> torch.Tensor:
    """Distances to the nearest patches from a block of cosines ``[L, m, L]`` between ``image`` and ``others``.

    ``by_rows``: for every patch of ``image`` (rows) its nearest patch of each of the ``m`` other images, ``[L, m]``;
    else for every patch of each other image its nearest patch of ``image``, ``[m, L]``. The distance is
    ``sqrt(2 - 2 cos)`` of the largest cosine; where that cosine is near 1 the formula loses its digits to
    cancellation, and the distance of the nearest pair is computed directly instead.
    """
    dim = 2 if by_rows else 0
    largest = cosines.amax(dim=dim)
    distances = (2 - 2 * largest).clamp_(min=0).sqrt_()
    close = largest > CLOSE_COSINE
    if close.any():
        first, second = close.nonzero().unbind(1)
        partner = cosines.argmax(dim=dim)[first, second]
        # Rows: (patch p of image, other image j) and j's nearest patch; columns: (j, its patch q) and image's.
        difference = image[first] - others[second, partner] if by_rows else others[first, second] - image[partner]
        distances[first, second] = torch.linalg.vector_norm(difference, dim=-1)
    return distances


def mutual_patch_scores(
    z: torch.Tensor,
    topmin_min: float = 0.0,
    topmin_max: float = 0.3,
    *,
    names: Sequence[str] | None = None,
    group: str | None = None,
    max_elements: int = MAX_ELEMENTS,
) -> torch.Tensor:
    """MuSc's mutual scoring (MSM) of the patches of a group of images.

    For patch ``p`` of image ``i`` and every other image ``j``: ``d(i, p, j)``, the Euclidean distance to the nearest
    patch of ``j``; the patch's score is the mean of the sorted ``d(i, p, .)`` over :func:`averaged_interval`
    (the lowest ``int((N - 1) * 0.3)`` with the defaults). Each pair of images is compared once, through one matrix
    of cosines read by rows and by columns (module docstring: the equality with MuSc's code and its exceptions).

    Groups of 2 to 4 images (with the defaults) follow a rule of our own, with a :class:`UserWarning`: MuSc's
    interval holds no image there, and each patch is scored by the distance to the nearest other image instead.

    Args:
        z: Unit patch vectors of the ``N`` images of a group, ``[N, L, C]`` (computed in float32).
        topmin_min: Lower end of the averaged interval: a fraction in [0, 1) of the ``N - 1`` other images, or a count.
        topmin_max: Upper end, the same way. Defaults to 0.3, MuSc's.
        names: The images' names, for the error message of a group of one image.
        group: The group's name (its class), for the same message.
        max_elements: Most cosines held at once (pairs of images are processed in chunks of this size).

    Returns:
        The patch scores ``[N, L]``, float32.

    Raises:
        ValueError: Not ``[N, L, C]``, or a group of one image.
    """
    if not isinstance(z, torch.Tensor) or z.ndim != 3:
        shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
        msg = f"mutual_patch_scores needs the unit patch vectors of a group as a tensor [N, L, C], got {shape}."
        raise ValueError(msg)
    count = z.shape[0]
    _check_group(count, names, group)
    k_min, k_max, reason = averaged_interval(count - 1, topmin_min, topmin_max)
    if reason is not None:
        warnings.warn(f"Mutual scoring of a {_group_label(count, None, group)}: {reason}.", UserWarning, stacklevel=2)
    with full_precision(z.device):  # float32 cosines also under autocast
        return _mutual_patch_scores(z.float().contiguous(), k_min, k_max, max_elements)


def _mutual_patch_scores(z: torch.Tensor, k_min: int, k_max: int, max_elements: int) -> torch.Tensor:
    """:func:`mutual_patch_scores` on checked float32 vectors, for the interval ``[k_min, k_max)``."""
    count, n_patches, _ = z.shape
    # nearest[i, p, j] = d(i, p, j); the diagonal stays +inf, so that sorting puts it last (k_max <= N - 1).
    nearest = torch.full((count, n_patches, count), math.inf, dtype=z.dtype, device=z.device)
    per_chunk = max(1, max_elements // (n_patches * n_patches))
    for i in range(count - 1):
        for start in range(i + 1, count, per_chunk):
            stop = min(count, start + per_chunk)
            others = z[start:stop]  # [m, L, C]
            cosines = (z[i] @ others.reshape(-1, others.shape[-1]).T).view(n_patches, stop - start, n_patches)
            # Rows: each patch of image i against its nearest patch of every other image j; columns: the reverse.
            nearest[i, :, start:stop] = _nearest_distances(cosines, z[i], others, by_rows=True)
            nearest[start:stop, :, i] = _nearest_distances(cosines, z[i], others, by_rows=False)
            del cosines
    lowest = nearest.topk(k_max, dim=2, largest=False, sorted=True).values
    return lowest[..., k_min:].mean(dim=2)


def _grid_side(n_patches: int, what: str) -> int:
    side = math.isqrt(n_patches)
    if side * side != n_patches:
        msg = f"{what}: {n_patches} patch tokens do not form a square grid (drop the class token first)."
        raise ValueError(msg)
    return side


def lnamd(tokens: torch.Tensor, r: int) -> torch.Tensor:
    """MuSc's LNAMD of one layer's patch tokens: layer norm per image, r x r neighbourhood mean, L2 normalisation.

    Args:
        tokens: Patch tokens of one layer ``[N, h*w, C]`` (class token dropped), any float dtype.
        r: Odd neighbourhood size; 1 keeps every patch as it is.

    Returns:
        Unit patch vectors ``[N, h*w, C]``, float32.
    """
    if tokens.ndim != 3:
        msg = f"lnamd needs one layer's patch tokens [N, h*w, C], got shape {tuple(tokens.shape)}."
        raise ValueError(msg)
    if isinstance(r, bool) or not isinstance(r, int) or r < 1 or r % 2 == 0:
        msg = f"lnamd's neighbourhood size r must be a positive odd integer, got {r!r}."
        raise ValueError(msg)
    count, n_patches, channels = tokens.shape
    side = _grid_side(n_patches, "lnamd")
    tokens = tokens.float()
    # One mean and one variance per image over all its (C, h, w) values: the same set as (h*w, C).
    features = F.layer_norm(tokens, (n_patches, channels), eps=1e-5)
    if r > 1:
        grid = features.transpose(1, 2).reshape(count, channels, side, side)
        # Zero padding counted in the mean, as MuSc's unfold + average over the r*r values of each channel.
        grid = F.avg_pool2d(grid, r, stride=1, padding=(r - 1) // 2, count_include_pad=True)
        features = grid.reshape(count, channels, n_patches).transpose(1, 2)
    return features / torch.linalg.vector_norm(features, dim=-1, keepdim=True)


def _check_layers(tokens: torch.Tensor, reference: torch.Tensor | None, index: int) -> None:
    if tokens.ndim != 3:
        msg = f"Layer {index} of the group's patch tokens must be [N, h*w, C], got shape {tuple(tokens.shape)}."
        raise ValueError(msg)
    if reference is not None and tokens.shape[:2] != reference.shape[:2]:
        msg = (
            f"Layer {index} of the group's patch tokens has {tuple(tokens.shape[:2])} images x patches, layer 0 has "
            f"{tuple(reference.shape[:2])}: every layer must hold the same images at the same grid (images of "
            f"different sizes cannot be scored in one group)."
        )
        raise ValueError(msg)


def group_patch_scores(
    layer_tokens: Iterable[torch.Tensor],
    r_list: Sequence[int] = (1, 3, 5),
    topmin_min: float = 0.0,
    topmin_max: float = 0.3,
    *,
    names: Sequence[str] | None = None,
    group: str | None = None,
) -> torch.Tensor:
    """The patch scores of a group: MSM of the LNAMD features, averaged over the layers, then over ``r_list``.

    Layers are read one at a time, so ``layer_tokens`` may be a generator that loads each layer from disk: memory
    holds one layer's tokens, one set of LNAMD features and the scores.

    Args:
        layer_tokens: Each feature layer's patch tokens ``[N, h*w, C]`` (class token dropped).
        r_list: LNAMD neighbourhood sizes.
        topmin_min: See :func:`mutual_patch_scores`.
        topmin_max: See :func:`mutual_patch_scores`.
        names: The images' names, for error messages.
        group: The group's name (its class), for messages.

    Returns:
        The patch scores ``[N, h*w]``, float64 (MuSc averages in float64).
    """
    r_list = list(r_list)
    sums: torch.Tensor | None = None  # [len(r_list), N, L]: per r, the sum over the layers
    first = None
    n_layers = 0
    for index, tokens in enumerate(layer_tokens):
        _check_layers(tokens, first, index)
        first = tokens if first is None else first
        scores = torch.stack(
            [
                mutual_patch_scores(lnamd(tokens, r), topmin_min, topmin_max, names=names, group=group).double()
                for r in r_list
            ]
        )
        sums = scores if sums is None else sums + scores
        n_layers += 1
    if sums is None:
        msg = "group_patch_scores got no feature layer."
        raise ValueError(msg)
    return (sums / n_layers).mean(dim=0)


def anomaly_maps(patch_scores: torch.Tensor, image_size: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """MuSc's anomaly maps and their maxima from the patch scores of a group.

    The patch grid is upsampled to the input size bilinearly with ``align_corners=True`` in float64, one image at a
    time; no blur.

    Args:
        patch_scores: ``[N, h*w]`` (from :func:`group_patch_scores`).
        image_size: The input side length, or ``(height, width)``.

    Returns:
        The maps ``[N, H, W]`` (float32) and each map's maximum ``[N]`` (float64): the image scores before RsCIN.
    """
    side = _grid_side(patch_scores.shape[-1], "anomaly_maps")
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    maps, maxima = [], []
    for scores in patch_scores.double().split(1):
        upsampled = F.interpolate(scores.view(1, 1, side, side), size=size, mode="bilinear", align_corners=True)
        maxima.append(upsampled.amax())
        maps.append(upsampled[0, 0].float())
    return torch.stack(maps), torch.stack(maxima)


def rscin(scores: torch.Tensor, embeddings: torch.Tensor | None, k_list: Sequence[int] = (1, 2, 3)) -> torch.Tensor:
    """MuSc's RsCIN: image scores re-scored by each image's most similar images of the group.

    The scores are min-max normalised over the group; ``W = e @ e.T`` holds the cosines of the (unit) embeddings,
    itself included; for each ``k``, every row of ``W`` keeps its ``k`` largest entries and is divided by their sum,
    and ``S_k = W_k @ scores``; the result is the mean of the ``S_k``. If all scores are equal (MuSc: 0 / 0) they
    normalise to 0; a ``k`` beyond the group keeps every image.

    Args:
        scores: Image scores ``[N]`` (the maps' maxima).
        embeddings: Unit image embeddings ``[N, D]``; ``None`` returns the scores as they are (as MuSc).
        k_list: The ``k`` values; a list holding 0 returns the scores as they are.

    Returns:
        The re-scored scores ``[N]``, float32 (the input, unchanged, when RsCIN is off).
    """
    if embeddings is None or 0 in k_list:
        return scores
    if embeddings.ndim != 2 or embeddings.shape[0] != scores.shape[0]:
        msg = f"rscin needs one embedding per image score: {tuple(embeddings.shape)} for {scores.shape[0]} scores."
        raise ValueError(msg)
    scores = scores.double()
    spread = scores.max() - scores.min()
    normalised = (scores - scores.min()) / spread if spread > 0 else torch.zeros_like(scores)
    normalised = normalised.float().unsqueeze(-1)
    with full_precision(embeddings.device):
        similarity = embeddings.float() @ embeddings.float().T
    count = similarity.shape[0]
    rescored = []
    for k in k_list:
        values, index = similarity.topk(min(k, count), dim=1)
        kept = torch.zeros_like(similarity).scatter_(1, index, values)
        # MuSc multiplies by the inverse row sums (a diagonal matrix product), not divides.
        transition = kept * (1 / kept.sum(dim=1, keepdim=True))
        with full_precision(embeddings.device):
            rescored.append(transition @ normalised)
    return torch.cat(rescored, dim=-1).mean(dim=-1)


def score_group(
    layer_tokens: Iterable[torch.Tensor],
    embedding: torch.Tensor,
    image_size: int | tuple[int, int],
    settings: MutualScoringConfig | None = None,
    *,
    names: Sequence[str] | None = None,
    group: str | None = None,
) -> InferenceBatch:
    """Score a group from its plain-pass tokens: MuSc's maps and image scores.

    Args:
        layer_tokens: Each feature layer's patch tokens ``[N, h*w, C]`` (e.g. :attr:`PlainTokens.patch_tokens`, or a
            generator that reads them from disk one layer at a time).
        embedding: The images' unit embeddings ``[N, D]`` (:attr:`PlainTokens.embedding`).
        image_size: The input side length (or ``(height, width)``) the maps are upsampled to.
        settings: MuSc's settings (its ``feature_layers`` are not read here: the tokens are the layers'). Defaults to
            MuSc's.
        names: The images' names, for error messages.
        group: The group's name (its class), for messages.

    Returns:
        ``InferenceBatch(pred_score [N], anomaly_map [N, H, W])``: the score after RsCIN (the map's maximum when
        ``rscin_k`` holds 0), float32.
    """
    settings = settings or MutualScoringConfig()
    patch_scores = group_patch_scores(
        layer_tokens, settings.r_list, settings.topmin_min, settings.topmin_max, names=names, group=group
    )
    maps, maxima = anomaly_maps(patch_scores, image_size)
    scores = rscin(maxima, embedding, settings.rscin_k).float()
    return InferenceBatch(pred_score=scores, anomaly_map=maps)


def musc_blocks(feature_layers: Sequence[int]) -> list[int]:
    """The 0-based block indices of MuSc's code (and of the vision pass) for 1-based feature layers.

    The one place where the paper's block numbers (``feature_layers``, 1-based, as everywhere in this package) meet
    MuSc's config convention (``[5, 11, 17, 23]`` for the blocks 6, 12, 18 and 24 of ViT-L).
    """
    return [layer - 1 for layer in feature_layers]


def plain_tokens(
    visual: VisionTransformer, images: torch.Tensor, feature_layers: Sequence[int], max_batch: int = 8
) -> PlainTokens:
    """The plain (un-prompted) pass of the vision tower: MuSc's patch tokens and the unit image embedding.

    Args:
        visual: The CLIP vision tower.
        images: Normalised images ``[N, 3, H, W]``.
        feature_layers: 1-based block numbers (converted by :func:`musc_blocks`).
        max_batch: Most images per pass (bounds memory).
    """
    layers = musc_blocks(feature_layers)
    chunks_tokens: list[list[torch.Tensor]] = [[] for _ in layers]
    embeddings = []
    for start in range(0, images.shape[0], max_batch):
        embedding, kept = vision_forward(
            visual, images[start : start + max_batch], keep_blocks=set(layers), class_row_embedding=True
        )
        embeddings.append(embedding)
        for position, layer in enumerate(layers):
            chunks_tokens[position].append(kept[layer])
    return PlainTokens([torch.cat(chunks) for chunks in chunks_tokens], unit_embedding(torch.cat(embeddings)))


def unit_embedding(embedding: torch.Tensor) -> torch.Tensor:
    """The L2-normalised image embedding ``[B, D]`` in float32 (as MuSc: divided by its norm)."""
    embedding = embedding.float()
    return embedding / torch.linalg.vector_norm(embedding, dim=-1, keepdim=True)


class MutualScoring(nn.Module):
    """MuSc's zero-shot anomaly maps and scores of a group of unlabelled images, scored against each other.

    Args:
        backbone: An open_clip ViT model name or a config dict (as :class:`~anomalib_adaclip.model.AdaCLIPModel`).
            Defaults to ``"ViT-L-14-336"``, MuSc's.
        backbone_weights: CLIP weights as ``AdaCLIPModel`` takes them (a pretrained tag, a path, a state dict, or
            ``None`` for random weights); a state dict of the vision tower alone (``visual.*`` keys) is enough.
            Defaults to ``"openai"``.
        image_size: Input side length; the positional embedding is resized to its grid. Defaults to 518, MuSc's.
        feature_layers: Blocks whose outputs are scored, counted from 1 (the paper's numbers; MuSc's config writes
            them from 0). Defaults to ``None``: MuSc's choice for the tower, the last block of each quarter
            (:func:`~anomalib_adaclip.config.quarter_blocks`; ``[6, 12, 18, 24]`` for ViT-L-14-336).
        r_list: LNAMD neighbourhood sizes. Defaults to ``(1, 3, 5)``.
        topmin_min: Lower end of the averaged interval of the other images (:func:`mutual_patch_scores`).
        topmin_max: Upper end. Defaults to 0.3.
        rscin_k: RsCIN's ``k`` values; a list holding 0 switches it off. Defaults to ``(1, 2, 3)``.
        max_batch: Most images per CLIP pass (bounds memory).

    Raises:
        ValueError: An invalid setting, or a feature layer outside the backbone.

    Example:
        >>> import torch
        >>> tiny = {"embed_dim": 32, "vision_cfg": {"image_size": 64, "layers": 4, "width": 64, "head_width": 32,
        ...         "patch_size": 16}, "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32,
        ...         "heads": 2, "layers": 1}}
        >>> model = MutualScoring(backbone=tiny, backbone_weights=None, image_size=64, feature_layers=[2, 4])
        >>> out = model(torch.randn(5, 3, 64, 64))
        >>> out.anomaly_map.shape, out.pred_score.shape
        (torch.Size([5, 64, 64]), torch.Size([5]))
    """

    def __init__(
        self,
        backbone: str | Mapping[str, Any] = "ViT-L-14-336",
        backbone_weights: BackboneWeights = "openai",
        image_size: int = 518,
        feature_layers: Sequence[int] | None = None,
        r_list: Sequence[int] = (1, 3, 5),
        topmin_min: float = 0.0,
        topmin_max: float = 0.3,
        rscin_k: Sequence[int] = (1, 2, 3),
        max_batch: int = 8,
    ) -> None:
        super().__init__()
        settings = MutualScoringConfig(
            feature_layers=feature_layers, r_list=r_list, topmin_min=topmin_min, topmin_max=topmin_max, rscin_k=rscin_k
        )
        self.settings = settings.for_backbone(int(backbone_config(backbone)["vision_cfg"].get("layers", 12)))
        self.image_size = image_size
        self.max_batch = max_batch
        # Only the vision tower is kept; the text tower of the built CLIP is dropped with it.
        self.visual = create_clip(backbone, backbone_weights, image_size=image_size, vision_only=True).visual

    def train(self, mode: bool = True) -> MutualScoring:
        """The frozen tower always stays in eval mode (nothing here trains)."""
        super().train(mode)
        self.visual.eval()
        return self

    @torch.no_grad()
    def tokens(self, images: torch.Tensor) -> PlainTokens:
        """The plain-pass tokens of images (:func:`plain_tokens`) at this model's feature layers."""
        check_images(images, image_size=self.image_size)
        return plain_tokens(self.visual, images, self.settings.feature_layers, self.max_batch)

    @torch.no_grad()
    def score_tokens(
        self,
        tokens: PlainTokens,
        image_size: int | tuple[int, int] | None = None,
        *,
        names: Sequence[str] | None = None,
        group: str | None = None,
    ) -> InferenceBatch:
        """Score a group from precomputed plain-pass tokens (e.g. AdaCLIP's frozen pass: CLIP runs once).

        Args:
            tokens: The group's tokens at this model's feature layers, in their order.
            image_size: Size of the maps. Defaults to this model's ``image_size``.
            names: The images' names, for error messages.
            group: The group's name, for messages.
        """
        if len(tokens.patch_tokens) != len(self.settings.feature_layers):
            layers = list(self.settings.feature_layers)
            msg = f"score_tokens got {len(tokens.patch_tokens)} layers of tokens for the feature layers {layers}."
            raise ValueError(msg)
        size = self.image_size if image_size is None else image_size
        return score_group(tokens.patch_tokens, tokens.embedding, size, self.settings, names=names, group=group)

    def forward(
        self, images: torch.Tensor, *, names: Sequence[str] | None = None, group: str | None = None
    ) -> InferenceBatch:
        """Score the ``N`` normalised images of one group against each other.

        Args:
            images: ``[N, 3, image_size, image_size]``, normalised with CLIP's mean and std; ``N >= 2``.
            names: The images' names, for error messages.
            group: The group's name (its class), for messages.

        Returns:
            ``InferenceBatch(pred_score [N], anomaly_map [N, H, W])``: MuSc's map (no blur) and its score after RsCIN.
        """
        check_images(images, image_size=self.image_size)
        _check_group(images.shape[0], names, group)
        return self.score_tokens(self.tokens(images), names=names, group=group)
