"""Every setting of AdaCLIP, declared, documented, validated and saved in one place: frozen dataclasses.

:class:`~anomalib_adaclip.AdaCLIP` takes its settings in groups, one dataclass each, given as the dataclass or as a
mapping of its fields (anomalib's CLI and YAML configs nest them: ``--model.few_shot.k_shot 4``):
:class:`PromptConfig` (``prompts``), :class:`FewShotConfig` (``few_shot``), :class:`MutualGroupConfig` (``mutual``),
:class:`TilingConfig` (``tiling``), :class:`ClassConfig` (``classes``) and :class:`ThresholdConfig` (``thresholds``).
:class:`AdaCLIPConfig` is what :class:`~anomalib_adaclip.model.AdaCLIPModel` is built from and what checkpoints store
next to the trained tensors (the prompt group with the backbone and the image size); :class:`MutualScoringConfig` is
the standalone :class:`~anomalib_adaclip.model.mutual_scoring.MutualScoring`'s. The flat arguments AdaCLIP took
before are listed in :data:`MOVED_ARGUMENTS` with their new place.

Example:
    >>> from anomalib_adaclip.config import AdaCLIPConfig, PromptConfig
    >>> config = AdaCLIPConfig(backbone="ViT-B-16", image_size=224, prompting_type="S")
    >>> config.prompting_branch, config.k_clusters
    ('VL', 20)
    >>> AdaCLIPConfig.from_dict(config.to_dict()) == config
    True
    >>> PromptConfig(type="S").model_config("ViT-B-16", 224) == config
    True
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any, Literal, get_args

__all__ = [
    "ABNORMAL_STATES",
    "DEFAULT_CLASS_NAME",
    "MOVED_ARGUMENTS",
    "NORMAL_STATES",
    "SMOKE_BACKBONE",
    "SMOKE_IMAGE_SIZE",
    "SMOKE_NOTE",
    "TEMPLATES",
    "AdaCLIPConfig",
    "ClassConfig",
    "FewShotConfig",
    "MutualGroupConfig",
    "MutualScoringConfig",
    "OptimizerSettings",
    "PromptConfig",
    "PromptingBranch",
    "PromptingType",
    "RarityGroupConfig",
    "RarityScoringConfig",
    "RarityTextBranch",
    "ThresholdConfig",
    "ThresholdingMode",
    "TileScore",
    "TilingConfig",
    "check_phrases",
    "moved_argument_message",
    "quarter_blocks",
    "settings_group",
]

PromptingType = Literal["S", "D", "SD"]
PromptingBranch = Literal["V", "L", "VL"]
TileScore = Literal["max", "whole"]
ThresholdingMode = Literal["auto", "fixed", "adaptive"]
RarityTextBranch = Literal["tpb", "adaclip"]

# The class name of the prompts when neither the user nor the data gives one (anomalib's WinCLIP uses the same).
DEFAULT_CLASS_NAME = "object"

# The smoke runs (`quickstart --smoke`, `demo --smoke`): a tiny CLIP (4 + 4 blocks, 112 px input) with random weights,
# so nothing is downloaded; every output of such a run carries SMOKE_NOTE.
SMOKE_BACKBONE: dict[str, Any] = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 112, "layers": 4, "width": 64, "head_width": 32, "patch_size": 14},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 4},
}
SMOKE_IMAGE_SIZE = 112
SMOKE_NOTE = (
    "SMOKE TEST: a tiny random backbone on generated images. These numbers mean nothing; "
    "they only show that the pipeline runs."
)

# The paper's prompt ensemble: 7 normal and 5 abnormal state words, each put in 4 templates.
NORMAL_STATES: tuple[str, ...] = (
    "{}",
    "flawless {}",
    "perfect {}",
    "unblemished {}",
    "{} without flaw",
    "{} without defect",
    "{} without damage",
)
ABNORMAL_STATES: tuple[str, ...] = (
    "damaged {}",
    "broken {}",
    "{} with flaw",
    "{} with defect",
    "{} with damage",
)
TEMPLATES: tuple[str, ...] = (
    "a bad photo of a {}.",
    "a low resolution photo of the {}.",
    "a bad photo of the {}.",
    "a cropped photo of the {}.",
)


def check_phrases(phrases: Sequence[str], argument: str) -> tuple[str, ...]:
    """Return ``phrases`` as a tuple after checking that each holds exactly one ``{}`` placeholder.

    Raises:
        ValueError: No phrase, or a phrase without exactly one ``{}``.
    """
    if isinstance(phrases, str):
        msg = f"`{argument}` must be a list of phrases, got the single string {phrases!r}."
        raise ValueError(msg)
    phrases = tuple(phrases)
    if not phrases:
        msg = f"`{argument}` must hold at least one phrase, got an empty list."
        raise ValueError(msg)
    for phrase in phrases:
        if not isinstance(phrase, str) or phrase.count("{}") != 1:
            msg = f"Every phrase of `{argument}` needs exactly one '{{}}' placeholder, got {phrase!r}."
            raise ValueError(msg)
    return phrases


def _check_choice(value: Any, choices: Any, argument: str) -> None:
    allowed = get_args(choices)
    if value not in allowed:
        msg = f"{argument} must be one of {allowed}, got {value!r}."
        raise ValueError(msg)


def _check_integer(value: Any, argument: str, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        msg = f"{argument} must be an integer of at least {minimum}, got {value!r}."
        raise ValueError(msg)


@dataclass(frozen=True)
class AdaCLIPConfig:
    """The hyper-parameters of the AdaCLIP model; the defaults are the paper's.

    Attributes:
        backbone: open_clip ViT model name, or a config dict with ``embed_dim``, ``vision_cfg`` and ``text_cfg``.
            Always built with exact GELU, as the reference. Defaults to ``"ViT-L-14-336"``.
        image_size: Input side length, a multiple of the patch size. Defaults to 518.
        feature_layers: 1-based vision blocks whose patch tokens make the maps. Defaults to n/4, n/2, 3n/4, n.
        prompting_depth: Prompted blocks per branch. Defaults to 4.
        prompting_length: Prompt tokens. Defaults to 5.
        prompting_type: Static prompts (``"S"``), dynamic prompts generated per image (``"D"``) or both (``"SD"``).
            Defaults to ``"SD"``.
        prompting_branch: Prompted branch: vision (``"V"``), text (``"L"``) or both (``"VL"``). Defaults to ``"VL"``.
        use_hsf: Hybrid Semantic Fusion (k-means over the most abnormal patches) in the image score. Defaults to
            ``True``.
        k_clusters: HSF clusters (``5 * k_clusters`` patches are clustered). Defaults to 20.
        blur_sigma: Gaussian blur of the anomaly map in pixels; 0 disables it. Defaults to 4.
        normal_states: State words of a normal object, each with one ``{}``. Defaults to the paper's seven.
        abnormal_states: State words of an abnormal object, each with one ``{}``. Defaults to the paper's five.
        templates: Sentence templates, each with one ``{}``. Defaults to the paper's four.

    Raises:
        ValueError: A value outside its allowed range; :meth:`check_backbone` also checks the values that depend on
            the backbone's depth and patch size.
    """

    backbone: str | Mapping[str, Any] = "ViT-L-14-336"
    image_size: int = 518
    feature_layers: tuple[int, ...] | None = None
    prompting_depth: int = 4
    prompting_length: int = 5
    prompting_type: PromptingType = "SD"
    prompting_branch: PromptingBranch = "VL"
    use_hsf: bool = True
    k_clusters: int = 20
    blur_sigma: float = 4.0
    normal_states: tuple[str, ...] = NORMAL_STATES
    abnormal_states: tuple[str, ...] = ABNORMAL_STATES
    templates: tuple[str, ...] = TEMPLATES

    def __post_init__(self) -> None:
        """Check every value that does not depend on the backbone and store sequences as tuples."""
        if not isinstance(self.backbone, str | Mapping):
            msg = f"`backbone` must be an open_clip model name or a config dict, got {type(self.backbone).__name__}."
            raise TypeError(msg)
        _check_integer(self.image_size, "image_size", 1)
        _check_integer(self.prompting_depth, "prompting_depth", 1)
        _check_integer(self.prompting_length, "prompting_length", 1)
        _check_integer(self.k_clusters, "k_clusters", 1)
        _check_choice(self.prompting_type, PromptingType, "prompting_type")
        _check_choice(self.prompting_branch, PromptingBranch, "prompting_branch")
        if not isinstance(self.use_hsf, bool):
            msg = f"use_hsf must be true or false, got {self.use_hsf!r}."
            raise ValueError(msg)
        if isinstance(self.blur_sigma, bool) or not isinstance(self.blur_sigma, int | float) or self.blur_sigma < 0:
            msg = f"blur_sigma must be a number of at least 0 (0 disables the blur), got {self.blur_sigma!r}."
            raise ValueError(msg)
        if self.feature_layers is not None:
            layers = tuple(self.feature_layers)
            if not layers or any(isinstance(layer, bool) or not isinstance(layer, int) for layer in layers):
                msg = f"feature_layers must be a non-empty list of 1-based block indices, got {self.feature_layers!r}."
                raise ValueError(msg)
            if len(set(layers)) != len(layers):
                msg = f"feature_layers must not repeat a block, got {list(layers)}."
                raise ValueError(msg)
            object.__setattr__(self, "feature_layers", layers)
        object.__setattr__(self, "blur_sigma", float(self.blur_sigma))
        for name in ("normal_states", "abnormal_states", "templates"):
            object.__setattr__(self, name, check_phrases(getattr(self, name), name))

    def check_backbone(self, n_vision_blocks: int, n_text_blocks: int) -> None:
        """Check the values that depend on the backbone's depth: prompted depth and feature layers.

        (The backbone factory checks that ``image_size`` is a multiple of the patch size.)

        Raises:
            ValueError: ``prompting_depth`` beyond a tower's blocks, or a feature layer outside the vision tower.
        """
        if self.prompting_depth > min(n_vision_blocks, n_text_blocks):
            msg = (
                f"prompting_depth must be in [1, {min(n_vision_blocks, n_text_blocks)}] (blocks), got "
                f"{self.prompting_depth}."
            )
            raise ValueError(msg)
        if any(not 1 <= layer <= n_vision_blocks for layer in self.resolved_feature_layers(n_vision_blocks)):
            msg = (
                f"feature_layers must be 1-based block indices in [1, {n_vision_blocks}], got "
                f"{list(self.feature_layers or ())}."
            )
            raise ValueError(msg)

    def resolved_feature_layers(self, n_vision_blocks: int) -> tuple[int, ...]:
        """The feature layers, else the paper's blocks n/4, n/2, 3n/4 and n (6, 12, 18 and 24 for ViT-L)."""
        return self.feature_layers if self.feature_layers is not None else quarter_blocks(n_vision_blocks)

    @property
    def uses_paper_prompts(self) -> bool:
        """Whether the sentences are the ones the released checkpoints were trained with."""
        return (self.normal_states, self.abnormal_states, self.templates) == (NORMAL_STATES, ABNORMAL_STATES, TEMPLATES)

    def to_dict(self) -> dict[str, Any]:
        """Plain types only (lists, dicts, strings, numbers), for checkpoints, YAML and JSON."""
        values = dataclasses.asdict(self)
        for name, value in values.items():
            if isinstance(value, tuple):
                values[name] = list(value)
            elif isinstance(value, Mapping):
                values[name] = dict(value)
        return values

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> AdaCLIPConfig:
        """Build a config from :meth:`to_dict`'s output (or any subset of the fields).

        Raises:
            ValueError: A key that is not a hyper-parameter.
        """
        fields = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - fields)
        if unknown:
            msg = f"Unknown AdaCLIP hyper-parameter(s) {unknown}; known: {sorted(fields)}."
            raise ValueError(msg)
        return cls(**dict(values))

    def replace(self, **changes: Any) -> AdaCLIPConfig:
        """A copy with some values changed, validated like a new config.

        Raises:
            ValueError: A key that is not a hyper-parameter, or an invalid value.
        """
        return AdaCLIPConfig.from_dict({**self.to_dict(), **changes})


def _check_fraction(value: Any, argument: str, low: float, high: float, low_open: bool = False) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not low <= value <= high
        or (low_open and value == low)
    ):
        interval = f"{'(' if low_open else '['}{low}, {high}]"
        msg = f"{argument} must be a number in {interval}, got {value!r}."
        raise ValueError(msg)
    return float(value)


@dataclass(frozen=True)
class FewShotConfig:
    """AdaCLIP's few-shot group (``AdaCLIP(few_shot=...)``): how many normal references, where from, how used.

    With ``k_shot > 0`` the model keeps a memory of the references' patch features per class name and feature layer
    (the frozen, un-prompted vision pass's patch tokens, projected by the trained patch projections and normalised:
    the same function of the image for a reference and a query, unlike the prompted pass whose dynamic prompts depend
    on each image). The few-shot map is, per layer, 1 - the largest cosine similarity of a query patch to the class's
    memory, averaged over the layers and scaled to [0, 1) by the distance the references themselves get
    (:mod:`~anomalib_adaclip.model.few_shot`). ``k_shot=0`` (and ``few_shot=None``) is the zero-shot model, unchanged.

    Attributes:
        k_shot: Normal reference images per class name; 0 is zero-shot AdaCLIP. The references are drawn from the
            data module's normal training images, or from ``source``. Defaults to 0.
        source: Where the ``k_shot`` references are drawn from: a folder (of the run's class name), or a mapping of
            class name to folder (many classes in one run). Defaults to ``None``: the data module's normal training
            images.
        seed: Seed of the draw of the ``k_shot`` references (the same seed draws the same images). Defaults to 0.
        map_weight: Weight ``w`` of the few-shot map in the anomaly map, ``(1 - w) * zero-shot + w * few-shot``.
            WinCLIP+ averages its zero- and few-shot maps (``0.5``); APRIL-GAN adds them (the same ranking). Defaults
            to 0.5.
        score_weight: Weight of the few-shot map's maximum in the image score, ``(1 - w) * zero-shot score + w *
            max(few-shot map)`` (WinCLIP+ averages too). Defaults to 0.5.
        augment: Also store the references rotated by 90, 180 and 270 degrees and flipped (AnomalyDINO's
            augmentation; 8 views per reference). Defaults to ``False``.
        coreset_ratio: Fraction of each class's memory kept by greedy k-center coreset subsampling (PatchCore's); 1
            keeps every patch. Defaults to 1.0.
        top_percent: The few-shot part of the image score is the mean of the highest ``p`` percent of the few-shot
            map instead of its maximum; 0 takes the maximum. Defaults to 0.

    Raises:
        ValueError: A value outside its allowed range.
    """

    k_shot: int = 0
    source: str | dict[str, str] | None = None
    seed: int = 0
    map_weight: float = 0.5
    score_weight: float = 0.5
    augment: bool = False
    coreset_ratio: float = 1.0
    top_percent: float = 0.0

    def __post_init__(self) -> None:
        """Check every value."""
        _check_integer(self.k_shot, "few_shot.k_shot", 0)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            msg = f"few_shot.seed must be an integer, got {self.seed!r}."
            raise ValueError(msg)
        if not isinstance(self.augment, bool):
            msg = f"few_shot.augment must be true or false, got {self.augment!r}."
            raise ValueError(msg)
        if isinstance(self.source, Mapping):
            object.__setattr__(self, "source", dict(self.source))
        elif self.source is not None and not isinstance(self.source, str | PurePath):
            msg = f"few_shot.source must be a folder or a mapping of class name to folder, got {self.source!r}."
            raise ValueError(msg)
        for name, low, high, low_open in (
            ("map_weight", 0.0, 1.0, False),
            ("score_weight", 0.0, 1.0, False),
            ("coreset_ratio", 0.0, 1.0, True),
            ("top_percent", 0.0, 100.0, False),
        ):
            object.__setattr__(
                self, name, _check_fraction(getattr(self, name), f"few_shot.{name}", low, high, low_open)
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain types only, for checkpoints, YAML and JSON."""
        return _plain(self)


def _check_interval_bound(value: Any, argument: str) -> float | int:
    """MuSc's bound of the averaged interval: a fraction in [0, 1) of the other images, or a count of at least 1."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        msg = f"{argument} must be a fraction in [0, 1) of the other images or a whole count >= 1, got {value!r}."
        raise ValueError(msg)
    if value < 1:
        return float(value)
    if isinstance(value, float) and not value.is_integer():
        msg = f"{argument} of at least 1 is a count of images and must be whole, got {value!r}."
        raise ValueError(msg)
    return int(value)


def _check_int_list(values: Any, argument: str, minimum: int, what: str) -> tuple[int, ...]:
    if isinstance(values, str | bytes) or not isinstance(values, Sequence):
        msg = f"{argument} must be a non-empty list of {what}, got {values!r}."
        raise ValueError(msg)
    values = tuple(values)
    if not values or any(isinstance(v, bool) or not isinstance(v, int) or v < minimum for v in values):
        msg = f"{argument} must be a non-empty list of {what}, got {list(values)!r}."
        raise ValueError(msg)
    if len(set(values)) != len(values):
        msg = f"{argument} must not repeat a value, got {list(values)}."
        raise ValueError(msg)
    return values


def quarter_blocks(n_vision_blocks: int) -> tuple[int, ...]:
    """The last block of each quarter of a tower, 1-based: AdaCLIP's and MuSc's default feature layers.

    ``(6, 12, 18, 24)`` for 24 blocks, ``(3, 6, 9, 12)`` for 12; a tower of fewer than 4 blocks has fewer distinct
    quarters, and each block is kept once (``(1, 2)`` for 2). MuSc's config writes the same blocks 0-based
    (``[5, 11, 17, 23]``).
    """
    return tuple(sorted({max(1, n_vision_blocks * quarter // 4) for quarter in (1, 2, 3, 4)}))


@dataclass(frozen=True)
class MutualScoringConfig:
    """The settings of MuSc's mutual scoring (Li et al., ICLR 2024), with MuSc's defaults.

    Each image of a group is scored against the other images of the group
    (:mod:`~anomalib_adaclip.model.mutual_scoring` says how, step by step).

    Attributes:
        feature_layers: The vision blocks whose outputs are scored, **counted from 1** like
            :class:`AdaCLIPConfig`'s ``feature_layers`` (the paper's block numbers; MuSc's own config writes them from
            0, and :func:`~anomalib_adaclip.model.mutual_scoring.musc_blocks` converts). ``None``: MuSc's choice for
            the tower, the last block of each quarter (:func:`quarter_blocks`: ``[6, 12, 18, 24]`` for ViT-L's 24
            blocks, ``[3, 6, 9, 12]`` for ViT-B's 12). Defaults to ``None``.
        r_list: Sizes ``r`` of the r x r neighbourhoods the patch features are averaged over (odd; 1 keeps each
            patch as it is). Defaults to ``(1, 3, 5)``.
        topmin_min: Lower end of the averaged interval of each patch's sorted distances to the other images: a
            fraction in [0, 1) of the other images (``int((N - 1) * fraction)``) or a count of at least 1, as in
            MuSc. Defaults to 0.
        topmin_max: Upper end of that interval, the same way. MuSc averages the lowest 30 %. Defaults to 0.3.
        rscin_k: The ``k`` of RsCIN's re-scoring of the image scores by their ``k`` nearest images (MuSc uses
            ``[1, 2, 3]`` for MVTec AD and BTAD, ``[1, 8, 9]`` for VisA); a list holding 0 switches RsCIN off (the
            image score is then the map's maximum). Defaults to ``(1, 2, 3)``.

    Raises:
        ValueError: A value outside its allowed range.
    """

    feature_layers: tuple[int, ...] | None = None
    r_list: tuple[int, ...] = (1, 3, 5)
    topmin_min: float = 0.0
    topmin_max: float = 0.3
    rscin_k: tuple[int, ...] = (1, 2, 3)

    def __post_init__(self) -> None:
        """Check every value that does not depend on the backbone and store sequences as tuples."""
        if self.feature_layers is not None:
            layers = _check_int_list(self.feature_layers, "feature_layers", 1, "1-based block numbers")
            object.__setattr__(self, "feature_layers", layers)
        r_list = _check_int_list(self.r_list, "r_list", 1, "odd neighbourhood sizes")
        if any(r % 2 == 0 for r in r_list):
            msg = f"r_list must hold odd sizes (each r x r window is centred on its patch), got {list(r_list)}."
            raise ValueError(msg)
        rscin_k = _check_int_list(self.rscin_k, "rscin_k", 0, "neighbour counts (0 switches RsCIN off)")
        object.__setattr__(self, "r_list", r_list)
        object.__setattr__(self, "rscin_k", rscin_k)
        for name in ("topmin_min", "topmin_max"):
            object.__setattr__(self, name, _check_interval_bound(getattr(self, name), name))
        if self.topmin_min == self.topmin_max:
            msg = f"topmin_min and topmin_max are equal ({self.topmin_min}): the averaged interval would be empty."
            raise ValueError(msg)

    def resolved_feature_layers(self, n_vision_blocks: int) -> tuple[int, ...]:
        """The feature layers (1-based), else MuSc's choice for a tower of ``n_vision_blocks`` (:func:`quarter_blocks`).

        Raises:
            ValueError: A feature layer outside ``[1, n_vision_blocks]``.
        """
        if self.feature_layers is None:
            return quarter_blocks(n_vision_blocks)
        if any(layer > n_vision_blocks for layer in self.feature_layers):
            msg = (
                f"feature_layers count blocks from 1 and must lie in [1, {n_vision_blocks}] for this backbone of "
                f"{n_vision_blocks} blocks, got {list(self.feature_layers)}; MuSc's choice for it would be "
                f"{list(quarter_blocks(n_vision_blocks))}."
            )
            raise ValueError(msg)
        return self.feature_layers

    def for_backbone(self, n_vision_blocks: int) -> MutualScoringConfig:
        """These settings with the feature layers resolved for a tower of ``n_vision_blocks`` (checked)."""
        return dataclasses.replace(self, feature_layers=self.resolved_feature_layers(n_vision_blocks))

    def to_dict(self) -> dict[str, Any]:
        """Plain types only, for checkpoints, YAML and JSON."""
        return {
            key: list(value) if isinstance(value, tuple) else value for key, value in dataclasses.asdict(self).items()
        }


@dataclass(frozen=True)
class OptimizerSettings:
    """AdamW settings for training AdaCLIP's prompts on auxiliary data; the defaults are the paper's.

    Args:
        lr: Learning rate. Defaults to 0.01.
        betas: AdamW's moment coefficients. Defaults to ``(0.5, 0.999)``.
        weight_decay: Decoupled weight decay. Defaults to 0.01.
    """

    lr: float = 0.01
    betas: tuple[float, float] = (0.5, 0.999)
    weight_decay: float = 0.01

    def __post_init__(self) -> None:
        """Store ``betas`` as a tuple (YAML gives a list)."""
        object.__setattr__(self, "betas", tuple(self.betas))


@dataclass(frozen=True)
class MutualGroupConfig:
    """AdaCLIP's mutual-scoring group (``AdaCLIP(mutual=...)``; ``mutual=None`` is off): MuSc inside AdaCLIP's runs.

    The images of one class name are scored against each other in groups of at most ``group_size`` (data-set order),
    MuSc's way (:mod:`~anomalib_adaclip.model.mutual_scoring`), and fused with AdaCLIP's own outputs
    (:mod:`~anomalib_adaclip.components.mutual_groups` says how, and on which scale). The MuSc settings are those of
    :class:`MutualScoringConfig` (:meth:`scoring`), with ``feature_layers`` counting blocks from 1 in both, like
    ``PromptConfig.feature_layers``.

    Attributes:
        weight: Weight ``w`` of the mutual part: ``(1 - w) * AdaCLIP + w * MuSc`` for the map and the image score,
            MuSc's distances halved onto [0, 1]; 0 gives AdaCLIP's outputs, 1 MuSc's. Defaults to 0.5.
        group_size: Most images per group; a class name's images are split into near-equal groups of at most this
            many (MSM costs grow with its square). ``None`` scores the whole class at once (MuSc's protocol).
            Defaults to 32.
        feature_layers: The vision blocks whose outputs MuSc scores, **1-based** block numbers (the paper's, as
            ``PromptConfig.feature_layers``). Defaults to ``None``: MuSc's choice for the tower, the last block of
            each quarter (``[6, 12, 18, 24]`` for ViT-L, ``[3, 6, 9, 12]`` for ViT-B).
        r_list: Sizes ``r`` of the r x r neighbourhoods LNAMD averages the patch features over (odd). Defaults to
            ``(1, 3, 5)``.
        topmin_min: Lower end of the averaged interval of each patch's sorted distances to the other images: a
            fraction in [0, 1) of the other images or a count of at least 1. Defaults to 0.
        topmin_max: Upper end of that interval: the closest 30 % by default. Defaults to 0.3.
        rscin_k: RsCIN's ``k`` values (``[1, 8, 9]`` for VisA in MuSc; a list holding 0 switches RsCIN off).
            Defaults to ``(1, 2, 3)``.

    Raises:
        ValueError: A value outside its allowed range.
    """

    weight: float = 0.5
    group_size: int | None = 32
    feature_layers: tuple[int, ...] | None = None
    r_list: tuple[int, ...] = (1, 3, 5)
    topmin_min: float = 0.0
    topmin_max: float = 0.3
    rscin_k: tuple[int, ...] = (1, 2, 3)

    def __post_init__(self) -> None:
        """Check every value that does not depend on the backbone and store sequences as tuples."""
        object.__setattr__(self, "weight", _check_fraction(self.weight, "mutual.weight", 0.0, 1.0))
        if self.group_size is not None:
            _check_integer(self.group_size, "mutual.group_size", 2)
        if self.feature_layers is not None:
            layers = _check_int_list(self.feature_layers, "mutual.feature_layers", 1, "1-based block numbers")
            object.__setattr__(self, "feature_layers", layers)
        scoring = self.scoring()  # MuSc's own checks of the rest
        for name in ("r_list", "topmin_min", "topmin_max", "rscin_k"):
            object.__setattr__(self, name, getattr(scoring, name))

    def scoring(self) -> MutualScoringConfig:
        """MuSc's settings of this group (same fields, same 1-based layers)."""
        return MutualScoringConfig(
            feature_layers=self.feature_layers,
            r_list=self.r_list,
            topmin_min=self.topmin_min,
            topmin_max=self.topmin_max,
            rscin_k=self.rscin_k,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain types only, for checkpoints, YAML and JSON."""
        return _plain(self)


@dataclass(frozen=True)
class PromptConfig:
    """AdaCLIP's prompt group (``AdaCLIP(prompts=...)``): the hybrid prompts, the maps' layers and the image score.

    The values the released checkpoints were trained with are the defaults (the paper's); a checkpoint holds its own
    and is checked against these. :class:`AdaCLIPConfig` is the model's record of the same values, with the backbone
    and the image size (:meth:`model_config`).

    Attributes:
        feature_layers: 1-based vision blocks whose patch tokens make the maps. Defaults to ``None``: n/4, n/2, 3n/4
            and n (``[6, 12, 18, 24]`` for ViT-L).
        depth: Prompted blocks per branch. Defaults to 4.
        length: Prompt tokens. Defaults to 5.
        type: Static prompts (``"S"``), dynamic prompts generated per image (``"D"``) or both (``"SD"``). Defaults to
            ``"SD"``.
        branch: Prompted branch: vision (``"V"``), text (``"L"``) or both (``"VL"``). Defaults to ``"VL"``.
        use_hsf: Hybrid Semantic Fusion (k-means over the most abnormal patches) in the image score. Defaults to
            ``True``.
        k_clusters: HSF clusters (``5 * k_clusters`` patches are clustered). Defaults to 20.
        blur_sigma: Gaussian blur of the anomaly map in pixels; 0 disables it. Defaults to 4.
        normal_states: State words of a normal object, each with one ``{}``. Defaults to ``None``: the paper's seven.
        abnormal_states: State words of an abnormal object, each with one ``{}``. Defaults to ``None``: the paper's
            five.
        templates: Sentence templates, each with one ``{}``. Defaults to ``None``: the paper's four.

    Raises:
        ValueError: A value outside its allowed range (checked by :class:`AdaCLIPConfig`).
    """

    feature_layers: tuple[int, ...] | None = None
    depth: int = 4
    length: int = 5
    type: PromptingType = "SD"
    branch: PromptingBranch = "VL"
    use_hsf: bool = True
    k_clusters: int = 20
    blur_sigma: float = 4.0
    normal_states: tuple[str, ...] | None = None
    abnormal_states: tuple[str, ...] | None = None
    templates: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        """Check every value (through the model's record of them) and store sequences as tuples."""
        record = self.model_config()
        for name in ("feature_layers", "blur_sigma"):
            object.__setattr__(self, name, getattr(record, name))
        for name in ("normal_states", "abnormal_states", "templates"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, getattr(record, name))

    def model_config(
        self, backbone: str | Mapping[str, Any] | None = None, image_size: int | None = None
    ) -> AdaCLIPConfig:
        """The model's :class:`AdaCLIPConfig` with these values (and the default backbone and size unless given)."""
        values = {_PROMPT_TO_MODEL.get(name, name): value for name, value in _fields(self).items() if value is not None}
        if backbone is not None:
            values["backbone"] = backbone
        if image_size is not None:
            values["image_size"] = image_size
        return AdaCLIPConfig(**values)

    def to_dict(self) -> dict[str, Any]:
        """Plain types only, for checkpoints, YAML and JSON."""
        return _plain(self)


@dataclass(frozen=True)
class TilingConfig:
    """AdaCLIP's tiling group (``AdaCLIP(tiling=...)``; ``None`` is off, ``True`` these defaults).

    Full-resolution images are scored in overlapping tiles of ``image_size`` and the maps stitched
    (:mod:`~anomalib_adaclip.components.tiling`); the pre-processor then only normalises.

    Attributes:
        overlap: Overlap of neighbouring tiles in pixels, in ``[0, image_size)``. Defaults to ``None``: a quarter of
            ``image_size``.
        score: Image score: ``"max"`` over the tiles, or ``"whole"`` (the whole image resized). Defaults to
            ``"max"``.

    Raises:
        ValueError: A negative overlap or an unknown score (the overlap is checked against ``image_size`` by the
            model).
    """

    overlap: int | None = None
    score: TileScore = "max"

    def __post_init__(self) -> None:
        """Check every value that does not depend on the image size."""
        _check_choice(self.score, TileScore, "tiling.score")
        if self.overlap is not None:
            _check_integer(self.overlap, "tiling.overlap", 0)

    def to_dict(self) -> dict[str, Any]:
        """Plain types only, for checkpoints, YAML and JSON."""
        return _plain(self)


@dataclass(frozen=True)
class ClassConfig:
    """AdaCLIP's class-name group (``AdaCLIP(classes=...)``): the object named in the prompts, per run and per image.

    Attributes:
        name: Object name for the prompts. Defaults to ``None``: the data module's category, else the class name
            stored in a loaded Lightning checkpoint, else ``"object"``.
        map: Class name per image: glob pattern or folder name -> class name, first match wins (see
            :mod:`~anomalib_adaclip.components.class_names`). Defaults to ``None``.
        from_parent: Use each image's parent folder name as its class name where the map has no match. Defaults to
            ``False``.
        export_names: Several class names for one exported model (a line of products): ``forward`` on raw images
            (exports, ``TorchInferencer``) scores each image with the one CLIP's zero-shot classification picks among
            them (:mod:`~anomalib_adaclip.model.class_choice`). Runs through the Engine keep using ``name`` and the
            rules. Defaults to ``None``: one class name.

    Raises:
        ValueError: A name that is not a string (a blank one is refused when a run starts), or a map that is not a
            mapping.
    """

    name: str | None = None
    map: dict[str, str] | None = None
    from_parent: bool = False
    export_names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        """Check the simple values and keep plain copies of the containers."""
        if self.name is not None and not isinstance(self.name, str):
            msg = f"classes.name must be a string or None, got {self.name!r}."
            raise ValueError(msg)
        if self.name == "":  # an empty value on the command line or in YAML: not given
            object.__setattr__(self, "name", None)
        if not isinstance(self.from_parent, bool):
            msg = f"classes.from_parent must be true or false, got {self.from_parent!r}."
            raise ValueError(msg)
        if self.map is not None:
            if not isinstance(self.map, Mapping):
                msg = f"classes.map must be a mapping of glob pattern or folder name to class name, got {self.map!r}."
                raise ValueError(msg)
            object.__setattr__(self, "map", dict(self.map))
        if self.export_names is not None and not isinstance(self.export_names, str):
            object.__setattr__(self, "export_names", tuple(self.export_names))

    def to_dict(self) -> dict[str, Any]:
        """Plain types only, for checkpoints, YAML and JSON."""
        return _plain(self)


@dataclass(frozen=True)
class ThresholdConfig:
    """AdaCLIP's threshold group (``AdaCLIP(thresholds=...)``): how probabilities become decisions.

    Attributes:
        image: Fixed decision threshold of the image probability. Defaults to 0.5.
        pixel: Fixed decision threshold of the pixel probability. Defaults to 0.5.
        mode: ``"auto"`` (adaptive where validation labels allow, else fixed), ``"fixed"`` or ``"adaptive"``
            (anomalib's; :mod:`~anomalib_adaclip.components.post_processor`). Defaults to ``"auto"``.

    Raises:
        ValueError: A threshold outside [0, 1] or an unknown mode.
    """

    image: float = 0.5
    pixel: float = 0.5
    mode: ThresholdingMode = "auto"

    def __post_init__(self) -> None:
        """Check every value."""
        for name in ("image", "pixel"):
            object.__setattr__(self, name, _check_fraction(getattr(self, name), f"thresholds.{name}", 0.0, 1.0))
        _check_choice(self.mode, ThresholdingMode, "thresholds.mode")

    def to_dict(self) -> dict[str, Any]:
        """Plain types only, for checkpoints, YAML and JSON."""
        return _plain(self)


# PromptConfig's names -> AdaCLIPConfig's (the model's record keeps the paper's names).
_PROMPT_TO_MODEL = {"depth": "prompting_depth", "length": "prompting_length", "type": "prompting_type",
                    "branch": "prompting_branch"}  # fmt: skip

#: AdaCLIP's flat arguments before the settings were grouped -> their place now (a 0.x change).
MOVED_ARGUMENTS: dict[str, str] = {
    **{name: f"prompts.{name}" for name in ("feature_layers", "use_hsf", "k_clusters", "blur_sigma")},
    **{name: f"prompts.{name}" for name in ("normal_states", "abnormal_states", "templates")},
    **{model: f"prompts.{group}" for group, model in _PROMPT_TO_MODEL.items()},
    "k_shot": "few_shot.k_shot",
    **{f"few_shot_{name}": f"few_shot.{name}" for name in ("source", "seed", "map_weight", "score_weight", "augment")},
    **{f"few_shot_{name}": f"few_shot.{name}" for name in ("coreset_ratio", "top_percent")},
    "mutual_scoring": "mutual",
    **{f"mutual_{name}": f"mutual.{name}" for name in ("weight", "group_size", "r_list", "topmin_min", "topmin_max")},
    "mutual_rscin_k": "mutual.rscin_k",
    "mutual_feature_layers": "mutual.feature_layers (now 1-based block numbers: MuSc's [5, 11, 17, 23] is "
    "[6, 12, 18, 24])",
    "class_name": "classes.name",
    "class_name_map": "classes.map",
    "class_name_from_parent": "classes.from_parent",
    "export_class_names": "classes.export_names",
    "image_threshold": "thresholds.image",
    "pixel_threshold": "thresholds.pixel",
    "thresholding": "thresholds.mode",
    "tile_overlap": "tiling.overlap",
    "tile_score": "tiling.score",
}


def moved_argument_message(name: str) -> str:
    """The one line that tells where an old flat argument of AdaCLIP lives now (``name`` in :data:`MOVED_ARGUMENTS`)."""
    place = MOVED_ARGUMENTS[name]
    group, _, rest = place.partition(".")
    setting = rest.split(" ")[0]
    if setting:
        usage = (
            f"AdaCLIP({group}={{{setting!r}: ...}}) in Python, --model.{group}.{setting} on the command line, "
            f"`{group}:` nested under init_args in YAML"
        )
    else:  # the switch of a group: the group itself
        usage = f"AdaCLIP({group}={{}}) turns it on with the defaults, {group}=None off; `{group}: {{}}` in YAML"
    return f"AdaCLIP's argument `{name}` is now `{place}` (settings are grouped, a breaking change of 0.x): {usage}."


def settings_group(value: Any, group: type, argument: str) -> Any:
    """A settings group given as its dataclass, a mapping of its fields, or ``None``: the dataclass, or ``None``.

    Raises:
        TypeError: A value of another type, or a key the group does not have (an old flat name is named with its new
            place).
    """
    if value is None or isinstance(value, group):
        return value
    if not isinstance(value, Mapping):
        msg = f"`{argument}` must be a {group.__name__}, a mapping of its fields or None, got {value!r}."
        raise TypeError(msg)
    fields = {field.name for field in dataclasses.fields(group)}
    for key in value:
        if key not in fields:
            if key in MOVED_ARGUMENTS and MOVED_ARGUMENTS[key].split(" ")[0] in {f"{argument}.{f}" for f in fields}:
                msg = f"`{argument}.{key}` is now `{MOVED_ARGUMENTS[key]}` (the prefix went with the grouping)."
            else:
                msg = f"`{argument}` has no setting {key!r}; its settings: {sorted(fields)} ({group.__name__})."
            raise TypeError(msg)
    return group(**dict(value))


def _fields(settings: Any) -> dict[str, Any]:
    return {field.name: getattr(settings, field.name) for field in dataclasses.fields(settings)}


def _plain(settings: Any) -> dict[str, Any]:
    """A settings dataclass as plain types (lists, dicts, strings, numbers): checkpoints keep no custom class."""
    values = _fields(settings)
    for name, value in values.items():
        if isinstance(value, tuple):
            values[name] = list(value)
        elif isinstance(value, Mapping):
            values[name] = {str(key): str(item) if isinstance(item, PurePath) else item for key, item in value.items()}
        elif isinstance(value, PurePath):
            values[name] = str(value)
    return values


@dataclass(frozen=True)
class RarityScoringConfig:
    """The settings of RareCLIP's online rarity scoring (He et al., ICCV 2025), with the authors' defaults for ViT-L.

    Images are scored one after another against a bank of the patches of the images seen before
    (:mod:`~anomalib_adaclip.model.rarity` says how, step by step). The names are those of the authors' ``test.py``
    in lower case (``LS_ratio`` is ``ls_ratio``, ``Rs`` is ``rescoring``, ``Rs_freq`` is ``rs_freq``, ...).

    Attributes:
        text_layers: The vision blocks whose tokens feed the text branch (TPB), **counted from 1** (AdaCLIP's
            convention: the residual stream after block ``l``), one linear layer each. Defaults to
            ``(12, 16, 20, 24)``.
        rarity_layers: The vision blocks whose tokens feed the patch and image rarity branches, counted from 1.
            Defaults to ``(6, 12, 18, 24)``.
        keep_ftime: Prototypes kept per bank, in units of one image's patches (``int(keep_ftime * h * w)``).
            Defaults to 3.
        keep_snum: Rows of rarity measures kept per bank (one per earlier image; the oldest goes first).
            Defaults to 200.
        keep_inum: Earlier images remembered by the image rarity branch and the re-scoring (their score, embedding
            and foreground feature; the oldest goes first, the ``k_shot`` normal images are kept). Defaults to 1000.
        topk: Nearest prototypes per patch. Defaults to 3.
        ls_ratio: ``Y`` of the loose similarity: similarities are divided by their ``1 - Y`` quantile and clipped
            at 1; 0 divides by the maximum. Defaults to 0.01.
        rescoring: Re-score each image score by the scores of its most similar earlier images (``Rs``).
            Defaults to ``True``.
        rs_freq: One more re-scoring neighbour per ``rs_freq`` remembered images; re-scoring starts once more than
            ``rs_freq`` are remembered. Defaults to 20.
        max_rs_num: Most re-scoring neighbours besides the image itself. Defaults to 8.
        rs_temp: Softmax temperature of the re-scoring weights. Defaults to 200.
        text_temp: Temperature of the text branch's softmax over normal/abnormal. Defaults to 20.
        sigma: Standard deviation of the Gaussian blur of the map, in pixels (kernel ``int(6 * sigma + 1)``, made
            odd); 0 switches the blur off. Defaults to 4.
        rare_thd: Fraction of the rarity rows (and of the remembered images) whose largest values are averaged
            into the estimate. Defaults to 0.3.
        sampler: How a bank is thinned to ``keep_ftime`` images' worth of prototypes: ``"SCS"``, the paper's
            sequential coreset sampling (the only one implemented). Defaults to ``"SCS"``.
        k_shot: Normal images scored first that give no output and only fill the bank (the authors' k-normal-shot).
            Defaults to 0.

    Raises:
        ValueError: A value outside its allowed range.
    """

    text_layers: tuple[int, ...] = (12, 16, 20, 24)
    rarity_layers: tuple[int, ...] = (6, 12, 18, 24)
    keep_ftime: float = 3.0
    keep_snum: int = 200
    keep_inum: int = 1000
    topk: int = 3
    ls_ratio: float = 0.01
    rescoring: bool = True
    rs_freq: int = 20
    max_rs_num: int = 8
    rs_temp: float = 200.0
    text_temp: float = 20.0
    sigma: float = 4.0
    rare_thd: float = 0.3
    sampler: Literal["SCS"] = "SCS"
    k_shot: int = 0

    def __post_init__(self) -> None:
        """Check every value that does not depend on the backbone and store sequences as tuples."""
        for name in ("text_layers", "rarity_layers"):
            layers = _check_int_list(getattr(self, name), name, 1, "1-based block numbers")
            object.__setattr__(self, name, layers)
        for name, minimum in (("keep_snum", 1), ("keep_inum", 1), ("topk", 1), ("rs_freq", 1), ("max_rs_num", 0)):
            _check_integer(getattr(self, name), name, minimum)
        _check_integer(self.k_shot, "k_shot", 0)
        if isinstance(self.keep_ftime, bool) or not isinstance(self.keep_ftime, int | float) or self.keep_ftime <= 0:
            msg = f"keep_ftime must be a positive number of images' worth of patches, got {self.keep_ftime!r}."
            raise ValueError(msg)
        object.__setattr__(self, "keep_ftime", float(self.keep_ftime))
        object.__setattr__(self, "ls_ratio", _check_fraction(self.ls_ratio, "ls_ratio", 0.0, 1.0))
        if self.ls_ratio == 1.0:
            msg = "ls_ratio must be below 1 (it is the fraction of similarities above the divisor), got 1."
            raise ValueError(msg)
        object.__setattr__(self, "rare_thd", _check_fraction(self.rare_thd, "rare_thd", 0.0, 1.0, low_open=True))
        for name in ("rs_temp", "text_temp"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                msg = f"{name} must be a positive temperature, got {value!r}."
                raise ValueError(msg)
            object.__setattr__(self, name, float(value))
        if isinstance(self.sigma, bool) or not isinstance(self.sigma, int | float) or self.sigma < 0:
            msg = f"sigma must be a standard deviation >= 0 in pixels (0: no blur), got {self.sigma!r}."
            raise ValueError(msg)
        object.__setattr__(self, "sigma", float(self.sigma))
        if not isinstance(self.rescoring, bool):
            msg = f"rescoring must be true or false, got {self.rescoring!r}."
            raise ValueError(msg)
        if self.sampler != "SCS":
            msg = (
                f"sampler must be 'SCS' (the paper's sequential coreset sampling), got {self.sampler!r}; the authors' "
                f"code also has 'GCS', 'RS' and 'KCS' ablations, which are not implemented here."
            )
            raise ValueError(msg)

    def check_backbone(self, n_vision_blocks: int, grid_patches: int) -> None:
        """Check the layers against the vision tower's depth and the bank sizes against one image's patches.

        Raises:
            ValueError: A layer outside ``[1, n_vision_blocks]``, or fewer prototypes kept than ``topk``.
        """
        for name in ("text_layers", "rarity_layers"):
            layers = getattr(self, name)
            if any(layer > n_vision_blocks for layer in layers):
                msg = (
                    f"{name} count blocks from 1 (AdaCLIP's convention) and must lie in [1, {n_vision_blocks}] for "
                    f"this backbone of {n_vision_blocks} blocks, got {list(layers)}."
                )
                raise ValueError(msg)
        kept = int(self.keep_ftime * grid_patches)
        if kept < self.topk:
            msg = (
                f"keep_ftime={self.keep_ftime} keeps {kept} prototypes of {grid_patches}-patch images, fewer than "
                f"topk={self.topk} nearest ones per patch; raise keep_ftime or lower topk."
            )
            raise ValueError(msg)
        if self.topk > grid_patches:
            msg = f"topk={self.topk} exceeds the {grid_patches} patches of one image (the first bank's size)."
            raise ValueError(msg)

    def to_dict(self) -> dict[str, Any]:
        """Plain types only, for checkpoints, YAML and JSON."""
        return {
            key: list(value) if isinstance(value, tuple) else value for key, value in dataclasses.asdict(self).items()
        }


@dataclass(frozen=True)
class RarityGroupConfig:
    """AdaCLIP's rarity group (``AdaCLIP(rarity=...)``; ``rarity=None`` is off): RareCLIP's online scoring in AdaCLIP.

    Every image is scored, in the order it comes, against a bank of the images of its class name seen before (one
    bank per class name), from the plain CLIP pass AdaCLIP already runs, and fused with AdaCLIP's own outputs
    (:mod:`~anomalib_adaclip.components.rarity` says how, and on which scale). The RareCLIP settings are those of
    :class:`RarityScoringConfig` (``scoring``), layers counted from 1.

    Attributes:
        weight: Weight ``w`` of the rarity part: ``(1 - w) * AdaCLIP + w * rarity`` for the map and the image score,
            on the scale :mod:`~anomalib_adaclip.components.rarity` documents; 0 gives AdaCLIP's outputs bit for
            bit (the rarity branch is not run), 1 the rarity branch's alone. Defaults to 0.5.
        text_branch: The text side of the rarity branch: ``"tpb"``, RareCLIP's own text branch (its prompt ensemble
            and TPB linear layers, ``tpb_weights``), which reproduces its published setting; or ``"adaclip"``,
            AdaCLIP's own map (pooled onto the patch grid) and image probability in its place, so no TPB weights
            are needed. Defaults to ``"tpb"``.
        tpb_weights: RareCLIP's TPB weight file (the authors' ``weights/*.pth`` with a ``trainable_linearlayer``
            entry, or a state dict file), for ``text_branch="tpb"``; ``None`` leaves the layers random (a warning:
            the text map is then meaningless). Defaults to ``None``.
        scoring: RareCLIP's settings (:class:`RarityScoringConfig`, given as it or as a mapping of its fields:
            ``--model.rarity.scoring.topk 3``). Defaults to the authors' (layers for a 24-block ViT-L).

    Raises:
        ValueError: A value outside its allowed range.
    """

    weight: float = 0.5
    text_branch: RarityTextBranch = "tpb"
    tpb_weights: str | None = None
    scoring: RarityScoringConfig = dataclasses.field(default_factory=RarityScoringConfig)

    def __post_init__(self) -> None:
        """Check the weight and the text branch; a mapping of ``scoring`` becomes its dataclass."""
        object.__setattr__(self, "weight", _check_fraction(self.weight, "rarity.weight", 0.0, 1.0))
        if self.text_branch not in ("tpb", "adaclip"):
            msg = (
                f"rarity.text_branch must be 'tpb' (RareCLIP's) or 'adaclip' (AdaCLIP's map), got {self.text_branch!r}."
            )
            raise ValueError(msg)
        if self.tpb_weights is not None and not isinstance(self.tpb_weights, str | PurePath):
            msg = f"rarity.tpb_weights must be a path or None, got {self.tpb_weights!r}."
            raise ValueError(msg)
        if self.tpb_weights is not None:
            object.__setattr__(self, "tpb_weights", str(self.tpb_weights))
        scoring = settings_group(self.scoring, RarityScoringConfig, "rarity.scoring")
        object.__setattr__(self, "scoring", scoring if scoring is not None else RarityScoringConfig())

    def to_dict(self) -> dict[str, Any]:
        """Plain types only, for checkpoints, YAML and JSON."""
        values = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        values["scoring"] = self.scoring.to_dict()
        return values
