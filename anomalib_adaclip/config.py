"""Every hyper-parameter of the AdaCLIP model, declared, documented, validated and saved in one place.

:class:`AdaCLIPConfig` is what :class:`~anomalib_adaclip.model.AdaCLIPModel` is built from and what checkpoints store
next to the trained tensors. :class:`~anomalib_adaclip.AdaCLIP` takes the same values as plain arguments (so that
anomalib's CLI and YAML configs set them) and builds the config from them; its defaults are read from here.

Example:
    >>> from anomalib_adaclip.config import AdaCLIPConfig
    >>> config = AdaCLIPConfig(backbone="ViT-B-16", image_size=224, prompting_type="S")
    >>> config.prompting_branch, config.k_clusters
    ('VL', 20)
    >>> AdaCLIPConfig.from_dict(config.to_dict()) == config
    True
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

__all__ = [
    "ABNORMAL_STATES",
    "DEFAULT_CLASS_NAME",
    "NORMAL_STATES",
    "SMOKE_BACKBONE",
    "SMOKE_IMAGE_SIZE",
    "SMOKE_NOTE",
    "TEMPLATES",
    "AdaCLIPConfig",
    "FewShotConfig",
    "MutualGroupConfig",
    "MutualScoringConfig",
    "OptimizerSettings",
    "PromptingBranch",
    "PromptingType",
    "check_phrases",
    "quarter_blocks",
]

PromptingType = Literal["S", "D", "SD"]
PromptingBranch = Literal["V", "L", "VL"]

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
    """The few-shot settings of AdaCLIP: how many normal reference images, and how their memory is used.

    With ``k_shot > 0`` the model keeps a memory of the references' patch features per class name and feature layer
    (the frozen, un-prompted vision pass's patch tokens, projected by the trained patch projections and normalised:
    the same function of the image for a reference and a query, unlike the prompted pass whose dynamic prompts depend
    on each image). The few-shot map is, per layer, 1 - the largest cosine similarity of a query patch to the class's
    memory, averaged over the layers and scaled to [0, 1) by the distance the references themselves get
    (:mod:`~anomalib_adaclip.model.few_shot`). ``k_shot=0`` is the zero-shot model, unchanged.

    Attributes:
        k_shot: Normal reference images per class name; 0 is zero-shot AdaCLIP. The references are drawn from the
            data module's normal training images, or from ``few_shot_source``. Defaults to 0.
        few_shot_seed: Seed of the draw of the ``k_shot`` references (the same seed draws the same images). Defaults
            to 0.
        few_shot_map_weight: Weight ``w`` of the few-shot map in the anomaly map, ``(1 - w) * zero-shot + w *
            few-shot``. WinCLIP+ averages its zero- and few-shot maps (``0.5``); APRIL-GAN adds them (the same
            ranking). Defaults to 0.5.
        few_shot_score_weight: Weight of the few-shot map's maximum in the image score, ``(1 - w) * zero-shot score +
            w * max(few-shot map)`` (WinCLIP+ averages too). Defaults to 0.5.
        few_shot_augment: Also store the references rotated by 90, 180 and 270 degrees and flipped (AnomalyDINO's
            augmentation; 8 views per reference). Defaults to ``False``.
        few_shot_coreset_ratio: Fraction of each class's memory kept by greedy k-center coreset subsampling
            (PatchCore's); 1 keeps every patch. Defaults to 1.0.
        few_shot_top_percent: The few-shot part of the image score is the mean of the highest ``p`` percent of the
            few-shot map instead of its maximum; 0 takes the maximum. Defaults to 0.

    Raises:
        ValueError: A value outside its allowed range.
    """

    k_shot: int = 0
    few_shot_seed: int = 0
    few_shot_map_weight: float = 0.5
    few_shot_score_weight: float = 0.5
    few_shot_augment: bool = False
    few_shot_coreset_ratio: float = 1.0
    few_shot_top_percent: float = 0.0

    def __post_init__(self) -> None:
        """Check every value."""
        _check_integer(self.k_shot, "k_shot", 0)
        if isinstance(self.few_shot_seed, bool) or not isinstance(self.few_shot_seed, int):
            msg = f"few_shot_seed must be an integer, got {self.few_shot_seed!r}."
            raise ValueError(msg)
        if not isinstance(self.few_shot_augment, bool):
            msg = f"few_shot_augment must be true or false, got {self.few_shot_augment!r}."
            raise ValueError(msg)
        for name, low, high, low_open in (
            ("few_shot_map_weight", 0.0, 1.0, False),
            ("few_shot_score_weight", 0.0, 1.0, False),
            ("few_shot_coreset_ratio", 0.0, 1.0, True),
            ("few_shot_top_percent", 0.0, 100.0, False),
        ):
            object.__setattr__(self, name, _check_fraction(getattr(self, name), name, low, high, low_open))

    def to_dict(self) -> dict[str, Any]:
        """Plain types only, for checkpoints, YAML and JSON."""
        return dataclasses.asdict(self)


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
    """How AdaCLIP uses mutual scoring (MuSc): on or off, its weight, and the size of the groups of images.

    With ``mutual_scoring`` the images of one class name are scored against each other in groups of about
    ``mutual_group_size`` (data-set order), MuSc's way (:mod:`~anomalib_adaclip.model.mutual_scoring`, with the settings
    of ``MutualScoringConfig``), and fused with AdaCLIP's own outputs
    (:mod:`~anomalib_adaclip.components.mutual_groups` says how, and on which scale).

    Attributes:
        mutual_scoring: Score each image against the other images of its group too. Defaults to ``False``.
        mutual_weight: Weight ``w`` of the mutual part: ``(1 - w) * AdaCLIP + w * MuSc`` for the map and the image
            score, MuSc's distances halved onto [0, 1]; 0 gives AdaCLIP's outputs, 1 MuSc's. Defaults to 0.5.
        mutual_group_size: Most images per group; a class name's images are split into near-equal groups of at most
            this many (MSM costs grow with its square). ``None``: the whole class at once, one group per class name
            (MuSc's protocol). Defaults to 32.

    Raises:
        ValueError: A value outside its allowed range.
    """

    mutual_scoring: bool = False
    mutual_weight: float = 0.5
    mutual_group_size: int | None = 32

    def __post_init__(self) -> None:
        """Check every value."""
        if not isinstance(self.mutual_scoring, bool):
            msg = f"mutual_scoring must be true or false, got {self.mutual_scoring!r}."
            raise ValueError(msg)
        object.__setattr__(self, "mutual_weight", _check_fraction(self.mutual_weight, "mutual_weight", 0.0, 1.0))
        if self.mutual_group_size is not None:
            _check_integer(self.mutual_group_size, "mutual_group_size", 2)

    def to_dict(self) -> dict[str, Any]:
        """Plain types only, for checkpoints, YAML and JSON."""
        return dataclasses.asdict(self)
