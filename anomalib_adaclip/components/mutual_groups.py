"""Mutual scoring (MuSc) inside AdaCLIP: which images form a group, who scores it, scoring and fusing a group.

MuSc (Li et al., ICLR 2024) scores each image against the *other* unlabelled images of its class: a normal patch has
close look-alikes in most of them, a defect has none (:mod:`~anomalib_adaclip.model.mutual_scoring` computes it,
equal to the authors' code). Inside AdaCLIP this module decides everything that is not the arithmetic.

**One planning rule** (:func:`plan_groups`), for every entry point: ``Engine.test``, ``validate`` and ``predict``,
both command lines, ``AdaCLIP.forward`` on raw images, the demo (:func:`~.image_scoring.score_images`). The images of
one class name are scored together, in their order. A class of ``n`` images is split into ``ceil(n / group_size)``
groups of consecutive images whose sizes differ by at most one (33 images with a group size of 32 give groups of 17
and 16, never 32 and 1); ``group_size=None`` makes one group of each class (MuSc's protocol). A class with a single
image cannot be scored (an error names the class and the image); a class of 2 to 4 images is scored with the core's
rule for small groups and a warning. The same images in the same order with the same settings get the same groups,
so the same scores bit for bit, whichever the path.

**A group's scores** (:func:`score_fused_group`). One frozen CLIP pass per image gives both AdaCLIP's outputs and MuSc's
plain tokens (:meth:`AdaCLIPModel.score_with_plain_tokens
<anomalib_adaclip.model.AdaCLIPModel.score_with_plain_tokens>`), run in chunks of :data:`CHUNK_SIZE` images; then MuSc
scores the group's tokens and :func:`fuse` combines the two.

**Fusion and scale** (:func:`fuse`). AdaCLIP's map and score are probabilities in [0, 1]. MuSc's map holds distances
between unit vectors, in [0, 2]; it enters halved, ``d / 2`` (2 is the largest distance two unit vectors can have, so
the factor is a constant: rankings, AUROC, AUPRO and F1-max of MuSc's map are unchanged, and ``d / 2 = 0.5`` means
that the patch's closest look-alikes in the other images are at cosine 0.5). MuSc's image score after RsCIN is
already in [0, 1] (min-max normalised over the group, then averaged); without RsCIN (``rscin_k`` holding 0) it is the
map's maximum, halved likewise. The fused values are ``(1 - w) * AdaCLIP + w * MuSc`` with ``w = mutual.weight``;
``w = 0`` returns AdaCLIP's tensors themselves and ``w = 1`` MuSc's on that scale. MuSc's image score is relative to
its group (the group's most anomalous-looking image gets the highest), so a fixed image threshold on the fused score
mixes AdaCLIP's probability with a rank inside the group: thresholds are best learned from labelled validation data
(``thresholding="auto"``/``"adaptive"``) or from a calibration run with the same setting.

**Runs: the group is the unit of work** (:class:`MutualGroupStage`, a Lightning callback that
:class:`~anomalib_adaclip.AdaCLIP` owns). When a run asks for its data loaders, the stage plans the groups of each
loader's data set (paths and class names, read without loading an image) and gives the loader a
:class:`GroupBatchSampler`: every batch is one whole group, read and pre-processed once, as any batch. The step scores
the batch as its group (:meth:`MutualGroupStage.score_batch`); metrics, the visualiser and the predictions table
receive the final values. On several processes each group goes to exactly one process (:func:`assign_groups`), so
the processes together run one CLIP pass per image and score each group once. A validation run followed by a test run
of the same model (``Engine.test`` validates first, for the thresholds) does not score a group twice: the validation's
outputs are kept, by the group's images and class name, until the test run ends.
"""

from __future__ import annotations

import logging
import math
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from anomalib.data import InferenceBatch
from lightning.pytorch import Callback
from torch.utils.data import BatchSampler, DataLoader, Sampler, SequentialSampler

from anomalib_adaclip.compat import regroup_loaders, restore_loaders
from anomalib_adaclip.config import MutualGroupConfig, MutualScoringConfig
from anomalib_adaclip.model.mutual_scoring import PlainTokens, musc_blocks
from anomalib_adaclip.model.mutual_scoring import score_group as musc_scores

from .prediction_table import path_key

if TYPE_CHECKING:
    from lightning.pytorch import LightningModule, Trainer

    from anomalib_adaclip.model import AdaCLIPModel

logger = logging.getLogger(__name__)

__all__ = [
    "CHUNK_SIZE",
    "SPILL_BYTES",
    "GroupBatchSampler",
    "GroupPlan",
    "MutualGroupStage",
    "MutualScoringError",
    "assign_groups",
    "check_mutual_scoring",
    "fuse",
    "mutual_settings",
    "mutual_stage",
    "plan_groups",
    "score_fused_group",
]

#: Images per CLIP pass inside a group, fixed so that a group's numbers never depend on the loader's batch size.
CHUNK_SIZE = 8
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
# Groups: the one planning rule, and which process scores which group
# ----------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GroupPlan:
    """The groups of a sequence of images (a data set, or a batch scored outside a run).

    Attributes:
        paths: The image path (or name) of every index.
        class_names: The class name of every index.
        groups: The indices of each group, in the images' order.
    """

    paths: tuple[str, ...]
    class_names: tuple[str, ...]
    groups: tuple[tuple[int, ...], ...]

    def key(self, group: int) -> tuple[str, tuple[str, ...]]:
        """A group's identity: its class name and its images' :func:`~.prediction_table.path_key`."""
        indices = self.groups[group]
        return self.class_names[indices[0]], tuple(path_key(self.paths[index]) for index in indices)


def plan_groups(paths: Sequence[str], class_names: Sequence[str], group_size: int | None) -> GroupPlan:
    """Split the images of each class name into near-equal groups of consecutive images (their order kept).

    A class of ``n`` images gets ``ceil(n / group_size)`` groups; their sizes differ by at most one, the larger
    first. Classes follow the order of their first image; within a class the order is kept.

    Args:
        paths: The image path (or a name, for messages) of every index.
        class_names: The class name of every index.
        group_size: Most images per group (at least 2), or ``None`` for one group of each class.

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
                f"a single image: {paths[indices[0]]}. Add images of that class, give it another class name "
                "(classes.map), or score it with mutual=None."
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
    return GroupPlan(tuple(map(str, paths)), tuple(class_names), tuple(groups))


def assign_groups(sizes: Sequence[int], world_size: int) -> list[list[int]]:
    """Which process scores which group: every group goes to exactly one process.

    The largest groups are dealt first, each to the process with the fewest images so far (the lowest rank on a tie),
    so that the processes' CLIP passes differ by at most one group; each process then scores its groups in plan
    order. The rule depends only on the sizes and the number of processes, so every process computes the same.

    Args:
        sizes: The number of images of each group, in plan order.
        world_size: The number of processes.

    Returns:
        The group numbers of each process (rank), in plan order.
    """
    loads = [0] * world_size
    assigned: list[list[int]] = [[] for _ in range(world_size)]
    for group in sorted(range(len(sizes)), key=lambda number: (-sizes[number], number)):
        rank = min(range(world_size), key=lambda candidate: (loads[candidate], candidate))
        assigned[rank].append(group)
        loads[rank] += sizes[group]
    return [sorted(groups) for groups in assigned]


class GroupBatchSampler(BatchSampler):
    """Batches that are whole groups: the groups of one process, each as one batch of data-set indices.

    Lightning re-creates a loader's batch sampler with a (distributed) sampler of its own when it runs on several
    processes or predicts; this one takes it (``sampler``) and ignores it: the groups of the process are fixed when
    the stage builds it (``groups``, shared by the copies, so that a resume's :meth:`leave_out` reaches them all).

    Args:
        sampler: The sampler Lightning passes; not read.
        plan: The data set's groups.
        groups: The group numbers of this process, in plan order.
        drop_last: Part of ``BatchSampler``'s signature (Lightning sets it); a group is never cut.
    """

    def __init__(
        self, sampler: Sampler | Sequence[int], plan: GroupPlan, groups: list[int], drop_last: bool = False
    ) -> None:
        super().__init__(sampler, batch_size=1, drop_last=drop_last)
        self.plan, self.groups = plan, groups

    def __iter__(self) -> Iterator[list[int]]:
        for group in list(self.groups):
            yield list(self.plan.groups[group])

    def __len__(self) -> int:
        return len(self.groups)

    def leave_out(self, finished: set[str]) -> int:
        """Leave out the groups whose images all have a :func:`~.prediction_table.path_key` in ``finished``.

        A group with some finished images is scored whole (its members never change), and its finished images'
        rows are the caller's to skip.

        Returns:
            The number of images left out.
        """
        kept = [group for group in self.groups if any(key not in finished for key in self.plan.key(group)[1])]
        left_out = sum(len(self.plan.groups[group]) for group in self.groups if group not in kept)
        self.groups[:] = kept
        return left_out


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
    images: torch.Tensor,
    class_name: str,
    settings: MutualScoringConfig,
    weight: float,
    paths: Sequence[str] | None = None,
    spill_bytes: int = SPILL_BYTES,
) -> InferenceBatch:
    """AdaCLIP's and MuSc's outputs of one group, fused: the final map ``[N, H, W]`` and score ``[N]``.

    The CLIP passes run in chunks of :data:`CHUNK_SIZE` images, whatever the group's size or the loader's batch size.
    The group's plain tokens stay in memory up to ``spill_bytes`` (all layers together); beyond, they go to a
    temporary folder (deleted afterwards), and MSM reads them back one layer at a time.

    Args:
        model: The AdaCLIP model (eval mode).
        images: The group's normalised images ``[N, 3, S, S]`` (``S`` the model's ``image_size``).
        class_name: The group's class name (one for all its images).
        settings: MuSc's settings, feature layers resolved (1-based,
            :meth:`~anomalib_adaclip.config.MutualScoringConfig.for_backbone`).
        weight: ``mutual.weight``.
        paths: The images' paths, for error messages.
        spill_bytes: Most bytes of plain tokens kept in memory. Defaults to :data:`SPILL_BYTES` (2 GiB).

    Raises:
        MutualScoringError: Fewer than two images, or images not at ``image_size``.
    """
    _check_group_images(images, model.image_size, class_name, paths)
    blocks = musc_blocks(settings.feature_layers)
    outputs: list[InferenceBatch] = []
    store = _TokenStore(len(blocks), spill_bytes)
    try:
        for start in range(0, len(images), CHUNK_SIZE):
            chunk = images[start : start + CHUNK_SIZE]
            batch, tokens = model.score_with_plain_tokens(chunk, [class_name] * len(chunk), plain_layers=blocks)
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
def dataset_paths(dataset: Any) -> tuple[list[str], list[str | None]]:
    """Every image path of a data set and each item's own class name (``None`` where it has none), in index order.

    anomalib's ``PredictDataset`` (``image_filenames``) and ``AnomalibDataset`` (``samples``) are read without loading
    an image; other data sets are read item by item once.

    Raises:
        MutualScoringError: An item without ``image_path``.
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
                "has no image_path. Use a data set that gives paths (anomalib's do), or score the images with "
                "AdaCLIP.forward or anomalib_adaclip.components.image_scoring.score_images."
            )
            raise MutualScoringError(msg)
        paths.append(str(path))
        own.append(getattr(item, "class_name", None))
    return paths, own


class _GroupCollate:
    """The loader's collate, with each image of a group of several sizes first resized on its own (``resize``)."""

    def __init__(
        self, collate: Callable[[list[Any]], Any], resize: Callable[[torch.Tensor], torch.Tensor] | None
    ) -> None:
        self.collate, self.resize = collate, resize

    def __call__(self, items: list[Any]) -> Any:
        images = [getattr(item, "image", None) for item in items]
        sizes = {tuple(image.shape[-2:]) for image in images if isinstance(image, torch.Tensor)}
        if self.resize is not None and len(sizes) > 1:
            for item in items:  # fresh items of this batch; the data set is not touched
                item.image = self.resize(item.image)
                if getattr(item, "gt_mask", None) is not None:
                    item.gt_mask = self.resize(item.gt_mask)
        return self.collate(items)


def mutual_settings(model: AdaCLIPModel, **settings: Any) -> MutualScoringConfig:
    """MuSc's settings for an AdaCLIP model's backbone: ``settings`` given, MuSc's defaults for the rest.

    The feature layers count blocks from 1; without them, MuSc's choice for the tower's depth
    (:func:`~anomalib_adaclip.config.quarter_blocks`: ``[6, 12, 18, 24]`` for 24 blocks, ``[3, 6, 9, 12]`` for 12).

    Raises:
        ValueError: An invalid setting, or feature layers the backbone does not have.
    """
    return MutualScoringConfig(**settings).for_backbone(model.n_vision_blocks)


def mutual_stage(
    config: MutualGroupConfig | None,
    model: AdaCLIPModel,
    class_name_of: Callable[[str], str],
    resize: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> MutualGroupStage | None:
    """The group stage of an AdaCLIP with the mutual group ``config``, or ``None`` without mutual scoring.

    Args:
        config: The ``mutual`` group (``None``: off). Its MuSc settings are :meth:`MutualGroupConfig.scoring
            <anomalib_adaclip.config.MutualGroupConfig.scoring>`, resolved for the backbone by :func:`mutual_settings`.
        model: The torch model (its tower resolves the default feature layers).
        class_name_of: The class name a run gives an image, from its path.
        resize: The pre-processor's resize (see :class:`MutualGroupStage`).

    Raises:
        ValueError: Feature layers the backbone does not have.
    """
    if config is None:
        return None
    settings = config.scoring().for_backbone(model.n_vision_blocks)
    return MutualGroupStage(config, settings, class_name_of, resize)


class MutualGroupStage(Callback):
    """Mutual scoring in runs and outside them: plans groups, regroups a run's loaders, scores and fuses each group.

    :class:`~anomalib_adaclip.AdaCLIP` owns one when its ``mutual`` group is given and returns it from
    ``configure_callbacks`` (before the predictions writer); its steps call :meth:`score_batch`, ``forward`` and
    :func:`~.image_scoring.score_images` call :meth:`score_tensors`.

    Counts, for this process (the totals of a run on several processes are their sums): :attr:`images_passed`, the
    CLIP passes; :attr:`groups_scored`, the groups scored; :attr:`groups_reused`, groups of a test run whose outputs
    the validation run before it had scored.

    Args:
        config: The ``mutual`` group: weight, group size and MuSc's settings.
        settings: MuSc's settings, feature layers resolved (:func:`mutual_settings`).
        class_name_of: The class name a run gives an image, from its path (the owner's class-name rules); used where
            the data set gives none.
        resize: The pre-processor's resize to the model's input. A group whose images differ in size gets each image
            resized by it when the batch is collated (the pre-processor's own resize then leaves them as they are), so
            that every image is resized once, on its own, as outside a run; without it anomalib's collate first brings
            them all to the largest size. Defaults to ``None``.
    """

    def __init__(
        self,
        config: MutualGroupConfig,
        settings: MutualScoringConfig,
        class_name_of: Callable[[str], str],
        resize: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        self.config, self.settings, self.class_name_of, self.resize = config, settings, class_name_of, resize
        self.images_passed = self.groups_scored = self.groups_reused = 0
        self._samplers: dict[int, GroupBatchSampler] = {}  # id(data set) -> its groups, for the run
        self._planned: set[tuple[str, tuple[str, ...]]] = set()
        # A validation run's outputs, by group key, for the test run that follows it (Engine.test validates first).
        self._validated: dict[tuple[str, tuple[str, ...]], InferenceBatch] = {}
        self._validated_by: int | None = None  # id() of the validating Trainer (no reference kept)
        self._stage: str | None = None
        self.running = False  # inside a Trainer's run: batches are whole groups

    # -- a run ---------------------------------------------------------------------------------------------------------
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Regroup the loaders this run will ask for; keep a validation's outputs only for the test run after it."""
        del pl_module
        self.images_passed = self.groups_scored = self.groups_reused = 0
        self._samplers, self._planned, self._stage, self.running = {}, set(), stage, True
        if stage != "test" or id(trainer) != self._validated_by:  # Engine.test: one Trainer validates, then tests
            self._validated = {}
        self._validated_by = id(trainer) if stage == "validate" else None
        regroup_loaders(trainer, stage, lambda loader: self._regrouped(trainer, loader))

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Forget the run's groups (a validation's outputs stay for the next run, which drops them unless a test)."""
        del pl_module
        restore_loaders(trainer)
        if self.groups_scored + self.groups_reused:
            logger.info(
                "Mutual scoring on process %d of %d: %d CLIP pass(es), %d group(s) scored, %d reused.",
                trainer.global_rank,
                trainer.world_size,
                self.images_passed,
                self.groups_scored,
                self.groups_reused,
            )
        if stage == "test":
            self._validated = {}
        self._samplers, self._planned, self.running = {}, set(), False

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        """A failed run leaves nothing behind."""
        self.teardown(trainer, pl_module, "")
        self._validated = {}

    def _regrouped(self, trainer: Trainer, loader: DataLoader) -> DataLoader:
        """The loader with whole groups for batches: this process's groups of its data set, one batch each."""
        dataset = loader.dataset
        sampler = self._samplers.get(id(dataset))
        if sampler is None:
            paths, own = dataset_paths(dataset)
            names = [name or self.class_name_of(path) for path, name in zip(paths, own, strict=True)]
            plan = plan_groups(paths, names, self.config.group_size)
            if len(plan.groups) < trainer.world_size and not trainer.predicting:
                # A process without a batch skips its loop, and the metrics' end-of-run synchronisation would wait.
                msg = (
                    f"Mutual scoring scores each group on one process, but this data set has {len(plan.groups)} "
                    f"group(s) for {trainer.world_size} processes: use at most {len(plan.groups)} device(s) for this "
                    "run, or a smaller mutual.group_size."
                )
                raise MutualScoringError(msg)
            mine = assign_groups([len(group) for group in plan.groups], trainer.world_size)[trainer.global_rank]
            sampler = GroupBatchSampler(SequentialSampler(dataset), plan, mine)
            self._samplers[id(dataset)] = sampler
            self._planned.update(plan.key(group) for group in range(len(plan.groups)))
            logger.info(
                "Mutual scoring: %d image(s) of %d class name(s) in %d group(s) (%s); %d group(s) on this process.",
                len(paths),
                len(set(names)),
                len(plan.groups),
                f"at most {self.config.group_size} images each" if self.config.group_size else "one per class",
                len(mine),
            )
        workers = loader.num_workers
        return DataLoader(
            dataset,
            batch_sampler=GroupBatchSampler(sampler.sampler, sampler.plan, sampler.groups),
            collate_fn=_GroupCollate(loader.collate_fn, self.resize),
            num_workers=workers,
            pin_memory=loader.pin_memory,
            timeout=loader.timeout,
            worker_init_fn=loader.worker_init_fn,
            multiprocessing_context=loader.multiprocessing_context if workers else None,
            generator=loader.generator,
            prefetch_factor=loader.prefetch_factor if workers else None,
            persistent_workers=loader.persistent_workers if workers else False,
        )

    @torch.no_grad()
    def score_batch(self, model: AdaCLIPModel, batch_images: torch.Tensor, class_names: Sequence[str] | None,
                    image_paths: Sequence[str] | None) -> InferenceBatch:  # fmt: skip
        """Score a run's batch, which is one whole group (the stage regrouped the loader), as that group.

        ``class_names``: the batch's, or ``None`` when every image has the model's class name.

        A group that the validation run before this test run scored is not scored again: its outputs are reused.

        Raises:
            MutualScoringError: The batch has no image paths, or is not one of the planned groups (its loader could
                not be regrouped: a data loader Lightning does not request from a ``DataLoader``).
        """
        if image_paths is None:
            msg = (
                "Mutual scoring finds each image's group by its path, but the batch carries no image_path. Use a data "
                "set that gives paths (anomalib's do), or score images with AdaCLIP.forward."
            )
            raise MutualScoringError(msg)
        paths = [image_paths] if isinstance(image_paths, str) else [str(path) for path in image_paths]
        class_name = class_names[0] if class_names else model.class_name
        key = (class_name, tuple(path_key(path) for path in paths))
        if key not in self._planned:
            msg = (
                f"This batch ({paths[0]}, ... {len(paths)} image(s)) is not one whole mutual-scoring group: the stage "
                "regroups every torch DataLoader a run requests, so that each batch is a group. Give the run "
                "DataLoaders over map-style data sets with image paths (anomalib's data modules and PredictDataset)."
            )
            raise MutualScoringError(msg)
        if key in self._validated:
            self.groups_reused += 1
            kept = self._validated[key]
            return InferenceBatch(pred_score=kept.pred_score.clone(), anomaly_map=kept.anomaly_map.clone())
        fused = self._score_group(model, batch_images, class_name, paths)
        if self._stage == "validate":
            self._validated[key] = InferenceBatch(
                pred_score=fused.pred_score.clone(), anomaly_map=fused.anomaly_map.clone()
            )
        return fused

    # -- outside a run ------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def score_tensors(
        self, model: AdaCLIPModel, images: torch.Tensor, class_names: str | Sequence[str]
    ) -> InferenceBatch:
        """Score pre-processed images outside a run: grouped by :func:`plan_groups`, as a run would group them.

        The demo and ``AdaCLIP.forward`` use it: the same images in the same order get the scores of a run.

        Raises:
            MutualScoringError: A class name with a single image.
        """
        names = [class_names] * len(images) if isinstance(class_names, str) else list(class_names)
        plan = plan_groups([f"image {index}" for index in range(len(images))], names, self.config.group_size)
        scores = torch.empty(len(images), device=images.device)
        maps = torch.empty(len(images), *images.shape[-2:], device=images.device)
        for indices in plan.groups:
            rows = list(indices)
            fused = self._score_group(model, images[rows], names[rows[0]], [plan.paths[row] for row in rows])
            scores[rows], maps[rows] = fused.pred_score.to(scores), fused.anomaly_map.to(maps)
        return InferenceBatch(pred_score=scores, anomaly_map=maps)

    def _score_group(
        self, model: AdaCLIPModel, images: torch.Tensor, class_name: str, paths: Sequence[str]
    ) -> InferenceBatch:
        fused = score_fused_group(model, images, class_name, self.settings, self.config.weight, paths)
        self.images_passed += len(images)
        self.groups_scored += 1
        logger.info("Mutual scoring: scored the group of %d image(s) of %r from %s.", len(images), class_name, paths[0])
        return fused
