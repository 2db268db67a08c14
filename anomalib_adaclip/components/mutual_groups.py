"""Mutual scoring (MuSc) inside AdaCLIP's runs: which images form a group, scoring a group, fusing, caching.

MuSc (Li et al., ICLR 2024) scores each image against the *other* unlabelled images of its class: a normal patch has
close look-alikes in most of them, a defect has none (:mod:`~anomalib_adaclip.model.mutual_scoring` computes it,
equal to the authors' code). Inside AdaCLIP this module decides everything that is not the arithmetic:

**Groups** (:func:`plan_groups`). The images of one class name are scored together, in data-set order. A class of
``n`` images is split into ``ceil(n / mutual_group_size)`` groups of consecutive images whose sizes differ by at most
one (33 images with a group size of 32 give groups of 17 and 16, never 32 and 1). A class with a single image cannot
be scored (an error names the class and the image); a class of 2 to 4 images is scored with the core's rule for
small groups and a warning. The plan is made from the whole data set, before a resumed run leaves out the images
that already have a row, so a group always has the same members: outputs do not depend on a resume.

**A group's scores** (:func:`score_fused_group`). One frozen CLIP pass per image gives both AdaCLIP's outputs and MuSc's
plain tokens (:meth:`AdaCLIPModel.score_with_plain_tokens
<anomalib_adaclip.model.AdaCLIPModel.score_with_plain_tokens>`), run in chunks of :data:`CHUNK_SIZE` images whatever
the loader's batch size; then MuSc scores the group's tokens and :func:`fuse` combines the two.

**Fusion and scale** (:func:`fuse`). AdaCLIP's map and score are probabilities in [0, 1]. MuSc's map holds distances
between unit vectors, in [0, 2]; it enters halved, ``d / 2`` (2 is the largest distance two unit vectors can have, so
the factor is a constant: rankings, AUROC, AUPRO and F1-max of MuSc's map are unchanged, and ``d / 2 = 0.5`` means
that the patch's closest look-alikes in the other images are at cosine 0.5). MuSc's image score after RsCIN is
already in [0, 1] (min-max normalised over the group, then averaged); without RsCIN (``rscin_k`` holding 0) it is the
map's maximum, halved likewise. The fused values are ``(1 - w) * AdaCLIP + w * MuSc`` with ``w = mutual_weight``;
``w = 0`` returns AdaCLIP's tensors themselves and ``w = 1`` MuSc's on that scale. MuSc's image score is relative to
its group (the group's most anomalous-looking image gets the highest), so a fixed image threshold on the fused score
mixes AdaCLIP's probability with a rank inside the group: thresholds are best learned from labelled validation data
(``thresholding="auto"``/``"adaptive"``) or from a calibration run with the same setting.

**Runs** (:class:`MutualGroupStage`, a Lightning callback that :class:`~anomalib_adaclip.AdaCLIP` installs). When a
step meets an image whose group has not been scored, the stage reads the whole group's items from the loader's data
set (the same pre-processing as the batches), scores it and keeps the group's final maps and scores by image path;
the step returns those. Each image's CLIP pass runs once per group scoring; metrics, the visualiser and the
predictions table receive the final values. Memory: one group's tokens while it is scored (beyond
:data:`SPILL_BYTES` they go to a temporary folder and are read back one layer at a time), and the final outputs of at
most :data:`CACHED_GROUPS` groups, whatever the number of groups. On several processes each process scores the
groups its images belong to: Lightning's distributed sampler deals the images out in turn, so every process meets
nearly every group and the group work is repeated on each process (the outputs are identical, the time is not: run
mutual scoring on one process per data set, or split the data sets between processes yourself).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import tempfile
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from anomalib.data import InferenceBatch
from lightning.pytorch import Callback

from anomalib_adaclip.config import MutualGroupConfig, MutualScoringConfig
from anomalib_adaclip.model.mutual_scoring import PlainTokens
from anomalib_adaclip.model.mutual_scoring import score_group as musc_scores

from .input_files import loader_list
from .prediction_table import path_key

if TYPE_CHECKING:
    from lightning.pytorch import LightningModule, Trainer

    from anomalib_adaclip.model import AdaCLIPModel

logger = logging.getLogger(__name__)

__all__ = [
    "CACHED_GROUPS",
    "CHUNK_SIZE",
    "SPILL_BYTES",
    "GroupPlan",
    "MutualGroupStage",
    "MutualScoringError",
    "check_mutual_scoring",
    "fuse",
    "mutual_settings",
    "mutual_stage",
    "plan_groups",
    "score_fused_group",
]

MUTUAL_SCORING_SETTINGS = tuple(field.name for field in dataclasses.fields(MutualScoringConfig))
#: Images per CLIP pass inside a group, fixed so that a group's numbers never depend on the loader's batch size.
CHUNK_SIZE = 8
#: Groups whose final outputs are kept; two lets a batch span a group boundary; a class name that comes back after
#: others (images of several classes interleaved in the data set) re-scores its group, with the same result.
CACHED_GROUPS = 2
#: A group's plain tokens above this size go to a temporary folder; MSM then reads one layer at a time from it.
SPILL_BYTES = 2 << 30
# MuSc averages the lowest 30 % of the other images' distances: fewer than 5 images leave it none (the core's rule).
SMALL_GROUP = 5


class MutualScoringError(ValueError):
    """Input that mutual scoring cannot score: a class with one image, images without paths, mixed sizes."""


def check_mutual_scoring(mutual_scoring: bool, tiling: bool) -> None:
    """Refuse mutual scoring with tiling.

    Raises:
        ValueError: Both are on.
    """
    if mutual_scoring and tiling:
        msg = (
            "mutual_scoring cannot be combined with tiling=True: MuSc compares patches of whole images at one "
            "resolution across a group, while tiling scores each image in tiles of its own grid. Use one of them."
        )
        raise ValueError(msg)


# ----------------------------------------------------------------------------------------------------------------------
# Groups
# ----------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GroupPlan:
    """The groups of one data set.

    Attributes:
        paths: The image path of every data-set index (as the data set gives it).
        class_names: The class name of every data-set index.
        groups: The data-set indices of each group, in data-set order.
        group_of: :func:`~.prediction_table.path_key` of an image -> its group.
    """

    paths: tuple[str, ...]
    class_names: tuple[str, ...]
    groups: tuple[tuple[int, ...], ...]
    group_of: dict[str, int]


def plan_groups(paths: Sequence[str], class_names: Sequence[str], group_size: int | None) -> GroupPlan:
    """Split the images of each class name into near-equal groups of consecutive images (data-set order).

    A class of ``n`` images gets ``ceil(n / group_size)`` groups; their sizes differ by at most one, the larger
    first. Classes follow the order of their first image; within a class the data-set order is kept.

    Args:
        paths: The image path of every data-set index.
        class_names: The class name of every data-set index.
        group_size: Most images per group (at least 2); ``None``: each class is one group.

    Raises:
        MutualScoringError: A class name has a single image (nothing to score it against).
    """
    by_class: dict[str, list[int]] = {}
    for index, name in enumerate(class_names):
        by_class.setdefault(name, []).append(index)
    groups: list[tuple[int, ...]] = []
    for name, indices in by_class.items():
        count = len(indices)
        if count == 1:
            msg = (
                f"Mutual scoring compares each image with the other images of its class, but the class {name!r} has "
                f"a single image: {paths[indices[0]]}. Add images of that class to the run, give it another class "
                "name (classes.map), or score it with mutual=None."
            )
            raise MutualScoringError(msg)
        n_groups = 1 if group_size is None else math.ceil(count / group_size)
        base, larger = divmod(count, n_groups)
        start = 0
        for position in range(n_groups):
            size = base + (1 if position < larger else 0)
            groups.append(tuple(indices[start : start + size]))
            start += size
    small = sorted({len(group) for group in groups if len(group) < SMALL_GROUP})
    if small:
        logger.warning(
            "Mutual scoring: groups of %s image(s). MuSc averages the distances to the closest 30 %% of the other "
            "images, which rounds to none below %d images: in such groups each patch is scored by its distance to "
            "the single closest other image, and the scores rest on very few comparisons.",
            "/".join(map(str, small)),
            SMALL_GROUP,
        )
    group_of = {path_key(paths[index]): number for number, group in enumerate(groups) for index in group}
    return GroupPlan(tuple(map(str, paths)), tuple(class_names), tuple(groups), group_of)


# ----------------------------------------------------------------------------------------------------------------------
# A group's scores
# ----------------------------------------------------------------------------------------------------------------------
def _unit_scale(musc: InferenceBatch, settings: MutualScoringConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """MuSc's map (distances, [0, 2]) halved; its score as it is after RsCIN, halved where it is the map's maximum."""
    rescored = 0 not in tuple(settings.rscin_k)
    return musc.anomaly_map / 2, musc.pred_score if rescored else musc.pred_score / 2


def fuse(adaclip: InferenceBatch, musc: InferenceBatch, weight: float, settings: MutualScoringConfig) -> InferenceBatch:
    """``(1 - weight) * AdaCLIP + weight * MuSc`` for map and score, MuSc on the unit scale (see the module).

    ``weight == 0`` returns AdaCLIP's tensors unchanged and ``weight == 1`` MuSc's (halved distances), so both ends
    are exact.
    """
    if weight == 0:
        return InferenceBatch(pred_score=adaclip.pred_score, anomaly_map=adaclip.anomaly_map)
    musc_map, musc_score = _unit_scale(musc, settings)
    musc_map = musc_map.to(adaclip.anomaly_map)
    musc_score = musc_score.to(adaclip.pred_score)
    if weight == 1:
        return InferenceBatch(pred_score=musc_score, anomaly_map=musc_map)
    return InferenceBatch(
        pred_score=(1 - weight) * adaclip.pred_score + weight * musc_score,
        anomaly_map=(1 - weight) * adaclip.anomaly_map + weight * musc_map,
    )


class _TokenStore:
    """A group's plain tokens, chunk by chunk: in memory, or in a temporary folder once they exceed ``limit`` bytes."""

    def __init__(self, n_layers: int, limit: int) -> None:
        self.limit, self.size = limit, 0
        self.layers: list[list[torch.Tensor | Path]] = [[] for _ in range(n_layers)]
        self.embeddings: list[torch.Tensor] = []
        self.folder: tempfile.TemporaryDirectory | None = None

    def add(self, tokens: PlainTokens) -> None:
        self.embeddings.append(tokens.embedding)
        self.size += sum(layer.numel() * layer.element_size() for layer in tokens.patch_tokens)
        for chunks, layer in zip(self.layers, tokens.patch_tokens, strict=True):
            chunks.append(layer)
        if self.size > self.limit:
            self.folder = self.folder or tempfile.TemporaryDirectory(prefix="adaclip-mutual-")
            for position, chunks in enumerate(self.layers):
                for index, chunk in enumerate(chunks):
                    if isinstance(chunk, torch.Tensor):
                        path = Path(self.folder.name) / f"layer{position}_chunk{index}.pt"
                        torch.save(chunk.cpu(), path)
                        chunks[index] = path

    def layer_tokens(self, device: torch.device) -> Any:
        """Each layer's tokens of the whole group, one layer at a time."""
        for chunks in self.layers:
            yield torch.cat(
                [chunk if isinstance(chunk, torch.Tensor) else torch.load(chunk, weights_only=True) for chunk in chunks]
            ).to(device)

    def close(self) -> None:
        if self.folder is not None:
            self.folder.cleanup()


def _check_group_images(images: torch.Tensor, image_size: int, class_name: str, paths: Sequence[str] | None) -> None:
    if images.ndim != 4 or tuple(images.shape[-2:]) != (image_size, image_size):
        where = f" ({paths[0]}, ...)" if paths else ""
        msg = (
            f"The images of the group of class {class_name!r}{where} have the size {tuple(images.shape[-2:])}, but "
            f"mutual scoring compares patches on one grid: every image must be {image_size}x{image_size} after "
            "pre-processing (AdaCLIP's pre-processor resizes each image to image_size; without it, resize them)."
        )
        raise MutualScoringError(msg)


@torch.no_grad()
def score_fused_group(
    model: AdaCLIPModel,
    chunks: Callable[[], Any] | torch.Tensor,
    class_name: str,
    settings: MutualScoringConfig,
    weight: float,
    paths: Sequence[str] | None = None,
    spill_bytes: int = SPILL_BYTES,
) -> InferenceBatch:
    """AdaCLIP's and MuSc's outputs of one group, fused: the final map ``[N, H, W]`` and score ``[N]``.

    The group's plain tokens stay in memory up to ``spill_bytes`` (all layers together); beyond, they go to a
    temporary folder (deleted afterwards), and MSM reads them back one layer at a time.

    Args:
        model: The AdaCLIP model (eval mode).
        chunks: The group's normalised images ``[N, 3, S, S]`` (``S`` the model's ``image_size``), or a callable that
            yields them in chunks (the run's stage reads them from the data set one chunk at a time).
        class_name: The group's class name (one for all its images).
        settings: MuSc's settings.
        weight: ``mutual_weight``.
        paths: The images' paths, for error messages.
        spill_bytes: Most bytes of plain tokens kept in memory. Defaults to :data:`SPILL_BYTES` (2 GiB).

    Raises:
        MutualScoringError: Fewer than two images, or images not at ``image_size``.
    """
    if isinstance(chunks, torch.Tensor):
        images = chunks
        chunks = lambda: (images[start : start + CHUNK_SIZE] for start in range(0, len(images), CHUNK_SIZE))  # noqa: E731
    outputs: list[InferenceBatch] = []
    store = _TokenStore(len(settings.feature_layers), spill_bytes)
    try:
        for images in chunks():
            _check_group_images(images, model.image_size, class_name, paths)
            batch, tokens = model.score_with_plain_tokens(
                images, [class_name] * len(images), plain_layers=list(settings.feature_layers)
            )
            outputs.append(batch)
            if weight > 0:
                store.add(tokens)
            del tokens
        return _fuse_group(model, outputs, store, class_name, settings, weight, paths)
    finally:
        store.close()


def _fuse_group(
    model: AdaCLIPModel,
    outputs: list[InferenceBatch],
    store: _TokenStore,
    class_name: str,
    settings: MutualScoringConfig,
    weight: float,
    paths: Sequence[str] | None,
) -> InferenceBatch:
    """The group's AdaCLIP outputs concatenated, MuSc's scores of its tokens, fused."""
    count = sum(len(batch.pred_score) for batch in outputs)
    if count < 2:
        where = f": {paths[0]}" if paths else ""
        msg = f"Mutual scoring needs at least two images of a class; the class {class_name!r} has {count}{where}."
        raise MutualScoringError(msg)
    adaclip = InferenceBatch(
        pred_score=torch.cat([batch.pred_score for batch in outputs]),
        anomaly_map=torch.cat([batch.anomaly_map for batch in outputs]),
    )
    if weight == 0:
        return fuse(adaclip, adaclip, weight, settings)
    # One layer at a time: the core reads a generator, so only one layer's concatenated tokens exist at once.
    device = adaclip.anomaly_map.device
    embedding = torch.cat(store.embeddings)
    names = [str(path) for path in paths] if paths else None
    musc = musc_scores(store.layer_tokens(device), embedding, model.image_size, settings, names=names, group=class_name)
    return fuse(adaclip, musc, weight, settings)


# ----------------------------------------------------------------------------------------------------------------------
# Runs
# ----------------------------------------------------------------------------------------------------------------------
def _snapshot(dataset: Any) -> Any:
    """A copy of a data set that keeps its full list of images when a resumed run cuts the original."""
    snapshot = copy.copy(dataset)
    filenames = getattr(dataset, "image_filenames", None)
    if isinstance(filenames, list):
        snapshot.image_filenames = list(filenames)
    return snapshot


def _dataset_paths(dataset: Any) -> tuple[list[str], list[str | None]]:
    """Every image path of a data set and each item's own class name (``None`` where it has none).

    anomalib's ``PredictDataset`` (``image_filenames``) and ``AnomalibDataset`` (``samples``) are read without loading
    an image; other data sets are read item by item once.
    """
    filenames = getattr(dataset, "image_filenames", None)
    if isinstance(filenames, list):
        return [str(path) for path in filenames], [None] * len(filenames)
    samples = getattr(dataset, "samples", None)
    if samples is not None and "image_path" in getattr(samples, "columns", ()):
        own = list(samples["class_name"]) if "class_name" in samples.columns else [None] * len(samples)
        return [str(path) for path in samples["image_path"]], own
    paths, own = [], []
    for index in range(len(dataset)):
        item = dataset[index]
        path = getattr(item, "image_path", None)
        if path is None:
            msg = (
                f"Mutual scoring finds each image's group by its path, but item {index} of {type(dataset).__name__} "
                "has no image_path. Use a data set that gives paths (anomalib's do), or score a group of tensors with "
                "anomalib_adaclip.components.mutual_groups.score_fused_group."
            )
            raise MutualScoringError(msg)
        paths.append(str(path))
        own.append(getattr(item, "class_name", None))
    return paths, own


def mutual_settings(model: AdaCLIPModel, **settings: Any) -> MutualScoringConfig:
    """MuSc's settings for an AdaCLIP model's backbone: ``settings`` given, MuSc's defaults for the rest.

    The default feature layers are MuSc's choice for the backbone's depth, the last block of each quarter of the
    tower (``[5, 11, 17, 23]`` for 24 blocks, ``[2, 5, 8, 11]`` for 12).

    Raises:
        ValueError: An invalid setting, or feature layers the backbone does not have.
    """
    n_blocks = len(model.clip.visual.transformer.resblocks)
    # A tower of fewer than 4 blocks has fewer distinct quarters: each block is kept once.
    settings.setdefault("feature_layers", sorted({max(n_blocks * quarter // 4 - 1, 0) for quarter in (1, 2, 3, 4)}))
    scoring = MutualScoringConfig(**settings)
    scoring.check_backbone(n_blocks)
    return scoring


def mutual_stage(config: MutualGroupConfig | None, model: AdaCLIPModel) -> MutualGroupStage | None:
    """The group stage of an AdaCLIP with the mutual group ``config``, or ``None`` without mutual scoring.

    MuSc's settings are the group's; its 1-based ``feature_layers`` become MuSc's 0-based blocks here (``None`` keeps
    MuSc's default, see :func:`mutual_settings`).

    Raises:
        ValueError: An invalid setting, or feature layers the backbone does not have.
    """
    if config is None:
        return None
    given = {name: getattr(config, name) for name in MUTUAL_SCORING_SETTINGS if name != "feature_layers"}
    if config.feature_layers is not None:
        given["feature_layers"] = [layer - 1 for layer in config.feature_layers]
    return MutualGroupStage(config, mutual_settings(model, **given))


def _class_name_of(pl_module: Any, path: str) -> str:
    """The class name a batch would give the image: the module's class-name rules on its path, else the run's."""
    return pl_module.class_names.of_path(path, pl_module.model.class_name)


class MutualGroupStage(Callback):
    """The group stage of a run: plans the groups, scores each group once, hands out its images' final outputs.

    :class:`~anomalib_adaclip.AdaCLIP` owns one and returns it from ``configure_callbacks`` (before the predictions
    writer) when ``mutual_scoring`` is on; its steps call :meth:`score`.

    Args:
        config: On/off, weight and group size.
        settings: MuSc's settings.
    """

    def __init__(self, config: MutualGroupConfig, settings: MutualScoringConfig) -> None:
        self.config = config
        self.settings = settings
        self._datasets: dict[int, Any] = {}  # loader index -> the full data set (a snapshot for predict runs)
        self._plans: dict[int, GroupPlan] = {}
        self._cache: OrderedDict[tuple[int, int], dict[str, tuple[torch.Tensor, torch.Tensor]]] = OrderedDict()
        self.groups_scored = 0  # in this run (a group met again after it left the cache counts again)
        self.running = False  # inside a Trainer's run: batches are scored by their groups

    def _reset(self) -> None:
        self._datasets, self._plans, self._cache, self.groups_scored = {}, {}, OrderedDict(), 0

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Before a predict run: keep the full data sets, so that a resume's cut leaves every group whole."""
        del pl_module
        self._reset()
        self.running = True
        if stage != "predict":
            return
        # The predictions writer cuts finished images out of these same data set objects in its own setup, which runs
        # after this one; the groups are planned on the copies.
        trainer.predict_loop.setup_data()
        for index, loader in enumerate(loader_list(trainer.predict_dataloaders)):
            dataset = getattr(loader, "dataset", None)
            if dataset is not None:
                self._datasets[index] = _snapshot(dataset)

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Drop the plans and the cached outputs."""
        del trainer, pl_module, stage
        self._reset()
        self.running = False

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        """A failed run leaves nothing cached."""
        self.teardown(trainer, pl_module, "")

    def score_tensors(
        self, model: AdaCLIPModel, images: torch.Tensor, class_names: str | Sequence[str]
    ) -> InferenceBatch:
        """Score pre-processed images outside a run: the images of each class name form one group (any size).

        The demo and ``AdaCLIP.forward`` use it: the batch is the group, so it needs at least two images of each class.

        Raises:
            MutualScoringError: A class name with a single image.
        """
        names = [class_names] * len(images) if isinstance(class_names, str) else list(class_names)
        scores = torch.empty(len(images), device=images.device)
        maps = torch.empty(len(images), *images.shape[-2:], device=images.device)
        for name in dict.fromkeys(names):
            rows = [index for index, other in enumerate(names) if other == name]
            if len(rows) == 1:
                msg = (
                    f"Mutual scoring compares each image with the other images of its class, but the class {name!r} "
                    f"has a single image in this batch (image {rows[0]}): score at least two images of it together."
                )
                raise MutualScoringError(msg)
            if len(rows) < SMALL_GROUP:
                logger.warning(
                    "Mutual scoring: a group of %d images of %r (see the rule for small groups).", len(rows), name
                )
            fused = score_fused_group(model, images[rows], name, self.settings, self.config.weight)
            scores[rows], maps[rows] = fused.pred_score.to(scores), fused.anomaly_map.to(maps)
        return InferenceBatch(pred_score=scores, anomaly_map=maps)

    def _dataset(self, trainer: Trainer, loader_index: int) -> Any:
        if loader_index not in self._datasets:
            if trainer.predicting:
                loaders = trainer.predict_dataloaders
            elif trainer.testing:
                loaders = trainer.test_dataloaders
            else:
                loaders = trainer.val_dataloaders
            loaders = loader_list(loaders)
            dataset = getattr(loaders[loader_index], "dataset", None) if loader_index < len(loaders) else None
            if dataset is None:
                msg = "Mutual scoring reads each group from the loader's data set, but this loader has none."
                raise MutualScoringError(msg)
            self._datasets[loader_index] = dataset
        return self._datasets[loader_index]

    def _plan(self, pl_module: Any, loader_index: int) -> GroupPlan:
        if loader_index not in self._plans:
            dataset = self._dataset(pl_module.trainer, loader_index)
            paths, own = _dataset_paths(dataset)
            names = [name or _class_name_of(pl_module, path) for path, name in zip(paths, own, strict=True)]
            self._plans[loader_index] = plan_groups(paths, names, self.config.group_size)
            plan = self._plans[loader_index]
            logger.info(
                "Mutual scoring: %d image(s) of %d class name(s) in %d group(s) (at most %s images each).",
                len(paths),
                len(set(names)),
                len(plan.groups),
                self.config.group_size or "all",
            )
        return self._plans[loader_index]

    def _group_chunks(self, pl_module: Any, dataset: Any, indices: Sequence[int]) -> Callable[[], Any]:
        """The group's images, read from the data set and pre-processed one by one as the loader's batches are."""
        transform = getattr(getattr(pl_module, "pre_processor", None), "transform", None)
        device = pl_module.device

        def chunks() -> Any:
            for start in range(0, len(indices), CHUNK_SIZE):
                images = []
                for index in indices[start : start + CHUNK_SIZE]:
                    image = dataset[index].image.unsqueeze(0)
                    images.append(transform(image) if transform is not None else image)
                sizes = {tuple(image.shape[-2:]) for image in images}
                if len(sizes) > 1:
                    msg = (
                        f"The images of a mutual-scoring group have different sizes after pre-processing "
                        f"({sorted(sizes)}); AdaCLIP's pre-processor resizes every image to image_size, so this "
                        "happens only without it (pre_processor=False): resize the images to one size."
                    )
                    raise MutualScoringError(msg)
                yield torch.cat(images).to(device)

        return chunks

    def _group_outputs(
        self, pl_module: Any, loader_index: int, group: int
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        key = (loader_index, group)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        plan = self._plans[loader_index]
        indices = plan.groups[group]
        paths = [plan.paths[index] for index in indices]
        while len(self._cache) >= CACHED_GROUPS:  # dropped before the next group is scored: memory stays flat
            self._cache.popitem(last=False)
        fused = score_fused_group(
            pl_module.model,
            self._group_chunks(pl_module, self._datasets[loader_index], indices),
            plan.class_names[indices[0]],
            self.settings,
            self.config.weight,
            paths,
        )
        self.groups_scored += 1
        logger.info(
            "Mutual scoring: scored group %d of %d (class %r, %d images, from %s).",
            group + 1,
            len(plan.groups),
            plan.class_names[indices[0]],
            len(indices),
            paths[0],
        )
        outputs = {
            path_key(path): (fused.pred_score[position], fused.anomaly_map[position])
            for position, path in enumerate(paths)
        }
        self._cache[key] = outputs
        return outputs

    def score(self, pl_module: Any, image_paths: Sequence[str] | None, loader_index: int = 0) -> InferenceBatch:
        """The final outputs of a batch's images (their groups scored where needed), in the batch's order.

        Args:
            pl_module: The AdaCLIP module of the run.
            image_paths: The batch's image paths.
            loader_index: The index of the batch's data loader.

        Raises:
            MutualScoringError: The batch has no image paths, or an image is not in the loader's data set.
        """
        if image_paths is None:
            msg = (
                "Mutual scoring finds each image's group by its path, but the batch carries no image_path. Use a data "
                "set that gives paths (anomalib's do), or score a group of tensors with score_fused_group."
            )
            raise MutualScoringError(msg)
        paths = [image_paths] if isinstance(image_paths, str) else list(image_paths)
        plan = self._plan(pl_module, loader_index)
        scores, maps = [], []
        for path in paths:
            group = plan.group_of.get(path_key(path))
            if group is None:
                msg = f"{path} is not in the data set of data loader {loader_index}, so it has no mutual-scoring group."
                raise MutualScoringError(msg)
            score, anomaly_map = self._group_outputs(pl_module, loader_index, group)[path_key(path)]
            scores.append(score)
            maps.append(anomaly_map)
        return InferenceBatch(pred_score=torch.stack(scores), anomaly_map=torch.stack(maps))
