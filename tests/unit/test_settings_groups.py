"""AdaCLIP's settings in groups (issue 27): the arity, a group as its dataclass or a dict, the old names' one line.

The command-line and YAML forms of every setting are tested through anomalib's CLI in
``tests/integration/test_cli.py`` (``test_every_constructor_argument_is_settable``,
``test_every_mutual_setting_is_settable``, ``test_an_old_flat_argument_names_its_new_place_in_one_line``).
"""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import pytest
import torch

from anomalib_adaclip import AdaCLIP
from anomalib_adaclip.config import (
    MOVED_ARGUMENTS,
    AdaCLIPConfig,
    ClassConfig,
    FewShotConfig,
    MutualGroupConfig,
    PromptConfig,
    RarityGroupConfig,
    RarityScoringConfig,
    ThresholdConfig,
    TilingConfig,
    settings_group,
)
from tests.helpers import SETTINGS_GROUPS, make_adaclip


def test_the_constructor_takes_a_handful_of_arguments_in_anomalibs_shape() -> None:
    parameters = list(inspect.signature(AdaCLIP.__init__).parameters)[1:]
    assert len(parameters) <= 15  # WinClip takes 8, AnomalyDINO 10
    assert parameters == [
        "backbone", "backbone_weights", "image_size", "checkpoint",
        *SETTINGS_GROUPS,
        "pre_processor", "post_processor", "evaluator", "visualizer",
    ]  # fmt: skip
    for name, group in SETTINGS_GROUPS.items():
        assert dataclasses.is_dataclass(group) and group.__dataclass_params__.frozen, name


def test_a_group_is_the_same_model_as_its_dataclass_or_its_dict(micro_weights: Path) -> None:
    settings = {
        "prompts": {"depth": 2, "use_hsf": False, "k_clusters": 5},
        "few_shot": {"k_shot": 2, "seed": 3, "map_weight": 0.25},
        "classes": {"name": "widget", "from_parent": True},
        "thresholds": {"image": 0.25, "mode": "fixed"},
    }
    as_dicts = make_adaclip(micro_weights, **settings)
    as_classes = make_adaclip(
        micro_weights, **{name: SETTINGS_GROUPS[name](**value) for name, value in settings.items()}
    )
    assert dict(as_dicts.hparams) == dict(as_classes.hparams)
    assert as_dicts.hparams["prompts"]["depth"] == 2 and as_dicts.hparams["mutual"] is None  # plain types
    assert as_dicts.model.config == as_classes.model.config
    assert as_dicts.model.config.prompting_depth == 2 and as_dicts.model.config.k_clusters == 5
    assert as_dicts.model.few_shot == FewShotConfig(k_shot=2, seed=3, map_weight=0.25)
    assert float(as_dicts.post_processor.fixed_image_threshold) == 0.25 and as_dicts.post_processor.mode == "fixed"
    for key, value in as_dicts.state_dict().items():  # the same seed: the same prompts
        torch.testing.assert_close(value, as_classes.state_dict()[key], rtol=0, atol=0, equal_nan=True, msg=key)


def test_none_means_off_or_the_defaults(micro_weights: Path) -> None:
    model = make_adaclip(micro_weights)
    assert model.model.few_shot.k_shot == 0 and model.model.few_shot_memory is None  # zero-shot
    assert model.mutual_groups is None and not model.tiling.enabled and model.rarity is None
    assert model.hparams["prompts"] == PromptConfig().to_dict()  # the paper's
    assert model.class_names.settings == ClassConfig() and model.post_processor.mode == "auto"
    on = make_adaclip(micro_weights, mutual={}, thresholds=ThresholdConfig(mode="fixed"))
    assert on.mutual_groups is not None and on.mutual_groups.config == MutualGroupConfig()
    assert make_adaclip(micro_weights, tiling=True).tiling.settings == TilingConfig()
    assert make_adaclip(micro_weights, tiling={"overlap": 8}).tiling.overlap == 8


def test_the_rarity_group_nests_rareclips_settings_and_checks_its_own() -> None:
    group = settings_group(
        {"weight": 0.25, "scoring": {"topk": 2, "rarity_layers": [1, 3]}}, RarityGroupConfig, "rarity"
    )
    assert group.scoring == RarityScoringConfig(topk=2, rarity_layers=(1, 3))  # the nested mapping is its dataclass
    assert RarityGroupConfig(**group.to_dict()) == group  # plain types round-trip (checkpoints, YAML)
    assert group.to_dict()["scoring"]["rarity_layers"] == [1, 3]
    with pytest.raises(ValueError, match=r"rarity.weight must be a number in \[0.0, 1.0\]"):
        RarityGroupConfig(weight=1.5)
    with pytest.raises(ValueError, match=r"rarity\.text_branch must be 'tpb'"):
        RarityGroupConfig(text_branch="clip")
    with pytest.raises(TypeError, match=r"`rarity.scoring` has no setting 'layers'"):
        RarityGroupConfig(scoring={"layers": [1]})


def test_mutual_group_size_none_is_the_whole_class() -> None:
    assert MutualGroupConfig(group_size=None).group_size is None
    with pytest.raises(ValueError, match=r"mutual\.group_size must be an integer of at least 2"):
        MutualGroupConfig(group_size=1)


def test_mutual_feature_layers_are_one_based_and_become_muscs_zero_based_blocks(micro_weights: Path) -> None:
    """The micro CLIP has 4 blocks: 1-based [1, 4] stay 1-based in MuSc's settings and are MuSc's blocks 0 and 3 where
    they meet its code (``musc_blocks``); MuSc's default is every quarter."""
    from anomalib_adaclip.model.mutual_scoring import musc_blocks

    model = make_adaclip(micro_weights, mutual={"feature_layers": [1, 4]})
    assert list(model.mutual_groups.settings.feature_layers) == [1, 4]
    assert musc_blocks(model.mutual_groups.settings.feature_layers) == [0, 3]
    assert list(make_adaclip(micro_weights, mutual={}).mutual_groups.settings.feature_layers) == [1, 2, 3, 4]
    with pytest.raises(ValueError, match="1-based block numbers"):
        MutualGroupConfig(feature_layers=[0, 3])  # block 0 does not exist in the 1-based numbering
    with pytest.raises(ValueError, match="feature_layers"):
        make_adaclip(micro_weights, mutual={"feature_layers": [5]})  # beyond the 4 blocks


@pytest.mark.parametrize("name", sorted(MOVED_ARGUMENTS))
def test_an_old_flat_name_gives_one_line_that_names_its_new_place(name: str) -> None:
    with pytest.raises(TypeError) as raised:
        AdaCLIP(backbone_weights=None, **{name: None})  # refused before anything is built
    message = str(raised.value)
    assert "\n" not in message
    assert f"`{name}` is now `{MOVED_ARGUMENTS[name]}`" in message
    group = MOVED_ARGUMENTS[name].split(".")[0].split(" ")[0]
    assert group in SETTINGS_GROUPS
    assert "0.x" in message


def test_a_prefixed_name_inside_a_group_names_the_field() -> None:
    with pytest.raises(TypeError, match=r"`mutual\.mutual_weight` is now `mutual\.weight`"):
        settings_group({"mutual_weight": 0.5}, MutualGroupConfig, "mutual")
    with pytest.raises(TypeError, match=r"`few_shot` has no setting 'shots'"):
        settings_group({"shots": 2}, FewShotConfig, "few_shot")
    with pytest.raises(TypeError, match="must be a TilingConfig, a mapping of its fields or None"):
        settings_group(3, TilingConfig, "tiling")


def test_every_old_flat_name_has_a_new_place_that_exists() -> None:
    for name, place in MOVED_ARGUMENTS.items():
        group, _, setting = place.split(" ")[0].partition(".")
        fields = {field.name for field in dataclasses.fields(SETTINGS_GROUPS[group])}
        assert not setting or setting in fields, name
    prompt_fields = {field.name for field in dataclasses.fields(AdaCLIPConfig)} - {"backbone", "image_size"}
    assert prompt_fields <= set(MOVED_ARGUMENTS)  # every hyper-parameter that used to be flat is mapped
