"""The prompted text tower (``model/text_encoder.py``) and its prefix trees: exact against the full 77-token context."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from anomalib_adaclip import AdaCLIPModel
from tests.conftest import random_images
from tests.helpers import full_context_text_embeddings


def test_dynamic_text_prompts_are_shared_by_the_sentences_of_an_image(make_model: Callable) -> None:
    """With dynamic text prompts, different images of one class get different text features (the reference's D+L
    crash is fixed by broadcasting one image's prompts over its 48 sentences)."""
    model = make_model(prompting_type="D", prompting_branch="L")
    with torch.no_grad():
        features = model.features(random_images(2, 224), ["bottle", "bottle"])
    assert not torch.allclose(features.text_features[0], features.text_features[1])


def test_static_text_features_do_not_depend_on_the_image(make_model: Callable) -> None:
    model = make_model(prompting_type="S", prompting_branch="VL")
    with torch.no_grad():
        features = model.features(random_images(3, 224), ["bottle", "screw", "bottle"])
    torch.testing.assert_close(features.text_features[0], features.text_features[2])
    assert not torch.allclose(features.text_features[0], features.text_features[1])


def test_class_name_dashes_become_spaces(make_model: Callable) -> None:
    model = make_model()
    with torch.no_grad():
        dashed = model.text_features(["pcb-board"])
        spaced = model.text_features(["pcb board"])
        underscored = model.text_features(["pcb_board"])
    torch.testing.assert_close(dashed, spaced)
    assert not torch.allclose(dashed, underscored)


@pytest.mark.parametrize(
    ("setting", "names", "dynamic"),
    [
        ({}, ["bottle", "a much longer class name with several words"], False),
        ({}, ["bottle", "screw", "bottle"], True),
        ({"prompting_type": "D", "prompting_depth": 1}, ["bottle", "pcb-board"], True),
        ({"prompting_length": 12, "templates": ["{}", "a {}."]}, ["cap", "metal_nut"], True),
        ({"prompting_branch": "V"}, ["bottle", "wood"], False),
        ({}, ["bottle"], True),
    ],
    ids=["static-mixed-classes", "dynamic", "depth-1", "prompts-past-end-of-text", "unprompted", "one-name-3-images"],
)
def test_trimmed_text_context_equals_full_context(
    make_model: Callable,
    setting: dict,
    names: list[str],
    dynamic: bool,
) -> None:
    """Encoding each distinct token prefix once, with block 0 cached and the last block at the end tokens only
    (the causal text tower makes this exact), equals the full 77-token context of the reference."""
    model = make_model(**setting)
    generator = torch.Generator().manual_seed(0)
    dynamic_prompts = None
    groups = 3 if len(names) == 1 else len(names)  # one name serves every image's prompts
    if dynamic:
        dynamic_prompts = 0.1 * torch.randn(groups, model.prompting_length, 64, generator=generator)
    prompts = model._block_prompts(model.text_prompter, dynamic_prompts) if model.prompt_text else None
    with torch.no_grad():
        expected = full_context_text_embeddings(model, names * (groups // len(names)), prompts)
        if prompts is not None and prompts.shape[1] == 1:
            prompts = prompts.expand(-1, len(names), -1, -1)
        packed = model.text_encoder.encode(names, prompts)
        again = model.text_encoder.encode(names, prompts)  # block 0 from the cache
    torch.testing.assert_close(packed, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(again, packed, atol=0, rtol=0)


@pytest.mark.slow
def test_prefix_tree_text_tower_on_a_real_size_backbone() -> None:
    """ViT-B-16's text tower (random weights): the prefix tree equals the 77-token context, per image prompts."""
    torch.manual_seed(0)
    model = AdaCLIPModel(backbone="ViT-B-16", backbone_weights=None, image_size=224).eval()
    names = ["bottle", "metal_nut", "bottle"]
    dynamic = 0.1 * torch.randn(3, model.prompting_length, 512, generator=torch.Generator().manual_seed(1))
    prompts = model._block_prompts(model.text_prompter, dynamic)
    with torch.no_grad():
        expected = full_context_text_embeddings(model, names, prompts)
        packed = model.text_encoder.encode(names, prompts)
    torch.testing.assert_close(packed, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("setting", [{}, {"prompting_branch": "V"}, {"prompting_type": "S"}], ids=str)
def test_caches_filled_in_inference_mode_serve_training(make_model: Callable, setting: dict) -> None:
    """Text caches filled under torch.inference_mode (validation) must not break a later training step."""
    model = make_model(**setting)
    images = random_images(2, 224)
    with torch.inference_mode():
        model(images, ["bottle", "screw"])
    model.train()
    output = model(images, ["bottle", "screw"])
    (output.layer_maps.mean() + output.image_probs[:, 1].sum()).backward()
    assert any(parameter.grad is not None for parameter in model.parameters())
