"""AdaCLIPConfig: the one place where the model's hyper-parameters are checked, saved and restored."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from anomalib_adaclip import AdaCLIP, AdaCLIPConfig, AdaCLIPModel
from anomalib_adaclip.config import ABNORMAL_STATES, NORMAL_STATES, TEMPLATES, OptimizerSettings
from tests.conftest import MICRO_BACKBONE


def test_defaults_are_the_papers() -> None:
    config = AdaCLIPConfig()
    assert config.backbone == "ViT-L-14-336" and config.image_size == 518
    assert (config.prompting_depth, config.prompting_length) == (4, 5)
    assert (config.prompting_type, config.prompting_branch) == ("SD", "VL")
    assert config.use_hsf is True and config.k_clusters == 20 and config.blur_sigma == 4.0
    assert len(NORMAL_STATES) == 7 and len(ABNORMAL_STATES) == 5 and len(TEMPLATES) == 4
    assert config.uses_paper_prompts
    assert config.resolved_feature_layers(24) == (6, 12, 18, 24)
    assert OptimizerSettings() == OptimizerSettings(lr=0.01, betas=(0.5, 0.999), weight_decay=0.01)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"prompting_type": "X"}, r"prompting_type must be one of \('S', 'D', 'SD'\), got 'X'"),
        ({"prompting_branch": "LV"}, r"prompting_branch must be one of \('V', 'L', 'VL'\)"),
        ({"prompting_depth": 0}, "prompting_depth must be an integer of at least 1, got 0"),
        ({"prompting_length": 2.5}, "prompting_length must be an integer"),
        ({"k_clusters": True}, "k_clusters must be an integer"),
        ({"image_size": -14}, "image_size must be an integer of at least 1"),
        ({"blur_sigma": -1}, "blur_sigma must be a number of at least 0"),
        ({"use_hsf": "yes"}, "use_hsf must be true or false"),
        ({"feature_layers": []}, "feature_layers must be a non-empty list"),
        ({"feature_layers": [2, 2]}, r"must not repeat a block, got \[2, 2\]"),
        ({"normal_states": ["no placeholder"]}, "needs exactly one '{}' placeholder"),
        ({"templates": "a photo of a {}."}, "must be a list of phrases"),
        ({"abnormal_states": []}, "must hold at least one phrase"),
    ],
)
def test_invalid_values_name_the_argument_and_what_was_expected(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AdaCLIPConfig(**changes)


def test_values_that_depend_on_the_backbone_are_checked_against_it() -> None:
    AdaCLIPConfig(prompting_depth=4, feature_layers=[1, 4]).check_backbone(4, 4)
    with pytest.raises(ValueError, match=r"prompting_depth must be in \[1, 3\]"):
        AdaCLIPConfig(prompting_depth=4).check_backbone(12, 3)
    with pytest.raises(ValueError, match=r"feature_layers must be 1-based block indices in \[1, 4\], got \[0, 4\]"):
        AdaCLIPConfig(feature_layers=[0, 4]).check_backbone(4, 4)


def test_to_dict_is_plain_json_and_round_trips() -> None:
    config = AdaCLIPConfig(backbone=MICRO_BACKBONE, image_size=112, feature_layers=[2, 4], templates=["a {}."])
    values = config.to_dict()
    assert json.loads(json.dumps(values)) == values  # lists, dicts, strings and numbers only
    assert values["feature_layers"] == [2, 4] and values["templates"] == ["a {}."]
    assert AdaCLIPConfig.from_dict(values) == config
    assert set(values) == {field.name for field in dataclasses.fields(AdaCLIPConfig)}


def test_replace_validates_and_unknown_names_are_refused() -> None:
    config = AdaCLIPConfig()
    assert config.replace(k_clusters=7).k_clusters == 7 and config.k_clusters == 20
    with pytest.raises(ValueError, match=r"Unknown AdaCLIP hyper-parameter\(s\) \['k_cluster'\]"):
        config.replace(k_cluster=7)
    with pytest.raises(ValueError, match="k_clusters must be an integer"):
        config.replace(k_clusters=0)


def test_model_takes_a_config_or_the_same_values_as_keywords() -> None:
    config = AdaCLIPConfig(backbone=MICRO_BACKBONE, image_size=112, prompting_type="S", k_clusters=3)
    torch.manual_seed(0)
    from_config = AdaCLIPModel(config, backbone_weights=None)
    torch.manual_seed(0)
    from_keywords = AdaCLIPModel(backbone=MICRO_BACKBONE, backbone_weights=None, image_size=112, prompting_type="S",
                                 k_clusters=3)  # fmt: skip
    assert from_config.config == from_keywords.config
    assert from_config.config.feature_layers == (1, 2, 3, 4)  # the defaults it ran with are saved
    for (name, a), (_, b) in zip(from_config.state_dict().items(), from_keywords.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_lightning_model_defaults_are_read_from_the_config() -> None:
    import inspect

    from anomalib_adaclip.config import PromptConfig

    parameters = inspect.signature(AdaCLIP).parameters
    defaults = AdaCLIPConfig()
    assert (parameters["backbone"].default, parameters["image_size"].default) == (defaults.backbone, 518)
    assert PromptConfig().model_config() == defaults  # the prompt group's defaults are the model's (the paper's)
    assert PromptConfig(depth=2, type="S").model_config().prompting_depth == 2


def test_default_feature_layers() -> None:
    config = AdaCLIPConfig()
    assert config.resolved_feature_layers(24) == (6, 12, 18, 24)
    assert config.resolved_feature_layers(12) == (3, 6, 9, 12)
    assert config.resolved_feature_layers(4) == (1, 2, 3, 4)
    assert config.resolved_feature_layers(2) == (1, 2)


def test_paper_defaults() -> None:
    import inspect

    defaults = {name: p.default for name, p in inspect.signature(AdaCLIPConfig).parameters.items()}
    assert defaults["backbone"] == "ViT-L-14-336"
    assert defaults["image_size"] == 518
    assert defaults["prompting_depth"] == 4
    assert defaults["prompting_length"] == 5
    assert defaults["prompting_type"] == "SD"
    assert defaults["prompting_branch"] == "VL"
    assert defaults["use_hsf"] is True
    assert defaults["k_clusters"] == 20
    assert defaults["blur_sigma"] == 4.0
