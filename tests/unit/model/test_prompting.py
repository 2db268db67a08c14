"""AdaCLIP's prompts (``model/prompting.py``): the sentence ensemble and the learnable prompt layers.

The sentences are checked against the paper's state words and templates (``config.py``) and sentences written out
here; the layers' names and shapes against the released checkpoint's manifest (``tests/data/reference/``).
"""

from __future__ import annotations

import doctest
import json

import pytest
import torch

from anomalib_adaclip.config import ABNORMAL_STATES, NORMAL_STATES, TEMPLATES, AdaCLIPConfig
from anomalib_adaclip.model import prompting
from anomalib_adaclip.model.prompting import (
    DynamicPromptGenerator,
    PromptEnsemble,
    StaticPrompts,
    format_class_name,
    sentences_text,
)
from tests.conftest import REFERENCE_DIR
from tests.helpers import OWN_PROMPTS, OWN_SENTENCES


def test_the_modules_example_holds() -> None:
    result = doctest.testmod(prompting, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 4 and result.failed == 0


def test_the_papers_ensemble_is_each_state_in_each_template_state_by_state() -> None:
    normal, abnormal = PromptEnsemble().sentences("metal-nut")
    assert (len(normal), len(abnormal)) == (7 * 4, 5 * 4)  # the paper: 7 normal and 5 abnormal states, 4 templates
    assert (len(NORMAL_STATES), len(ABNORMAL_STATES), len(TEMPLATES)) == (7, 5, 4)
    assert normal[:5] == [
        "a bad photo of a metal nut.",
        "a low resolution photo of the metal nut.",
        "a bad photo of the metal nut.",
        "a cropped photo of the metal nut.",
        "a bad photo of a flawless metal nut.",  # the next state, in the first template again
    ]
    assert normal[-1] == "a cropped photo of the metal nut without damage."
    assert abnormal[0] == "a bad photo of a damaged metal nut."
    assert abnormal[-1] == "a cropped photo of the metal nut with damage."
    for index, sentence in enumerate(normal):
        template, state = TEMPLATES[index % 4], NORMAL_STATES[index // 4]
        assert sentence == template.format(state.format("metal nut"))


def test_dashes_become_spaces_and_underscores_stay() -> None:
    assert format_class_name("metal-nut") == "metal nut" and format_class_name("metal_nut") == "metal_nut"
    assert PromptEnsemble().sentences("metal_nut")[0][0] == "a bad photo of a metal_nut."
    assert format_class_name("pcb-board-v2") == "pcb board v2"


def test_own_phrases_come_from_the_configuration_and_are_checked() -> None:
    assert PromptEnsemble.of(AdaCLIPConfig(**OWN_PROMPTS)).sentences("metal-nut") == OWN_SENTENCES
    with pytest.raises(ValueError, match=r"exactly one '\{\}' placeholder"):
        PromptEnsemble(templates=("a photo of a thing.",))
    with pytest.raises(ValueError, match="single string"):
        PromptEnsemble(normal_states="{}")
    with pytest.raises(ValueError, match="at least one phrase"):
        PromptEnsemble(abnormal_states=())


def test_sentences_text_has_a_header_then_each_state_with_its_count() -> None:
    lines = sentences_text(AdaCLIPConfig(), "metal-nut").splitlines()
    assert len(lines) == 1 + 1 + 28 + 1 + 20
    assert lines[0] == "# class name 'metal-nut' -> prompt text 'metal nut'; the paper's prompts"
    assert lines[1] == "normal (28 sentences):" and lines[30] == "abnormal (20 sentences):"
    assert lines[2] == "  a bad photo of a metal nut."
    assert lines[-1] == "  a cropped photo of the metal nut with damage."
    own = sentences_text(AdaCLIPConfig(**OWN_PROMPTS), "metal-nut").splitlines()
    assert own == [
        "# class name 'metal-nut' -> prompt text 'metal nut'; own prompts (not the paper's)",
        "normal (2 sentences):",
        "  a photo of a metal nut.",
        "  a photo of a good metal nut.",
        "abnormal (1 sentences):",
        "  a photo of a bad metal nut.",
    ]


def released_shapes(module: str) -> dict[str, list[int]]:
    """The shapes of one module's tensors in the released checkpoint (ViT-L/14@336: depth 4, length 5)."""
    manifest = json.loads((REFERENCE_DIR / "released_checkpoint_manifest.json").read_text())
    prefix = f"clip_model.{module}."
    keys = manifest["checkpoint_keys"]
    return {key.removeprefix(prefix): shape for key, shape in keys.items() if key.startswith(prefix)}


def shapes(module: torch.nn.Module) -> dict[str, list[int]]:
    return {key: list(value.shape) for key, value in module.state_dict().items()}


def test_the_prompt_layers_have_the_released_checkpoints_names_and_shapes() -> None:
    with torch.device("meta"):  # shapes only: nothing is allocated
        assert shapes(StaticPrompts(4, 5, 1024)) == released_shapes("visual_prompter")
        assert shapes(StaticPrompts(4, 5, 768)) == released_shapes("text_prompter")
        assert shapes(DynamicPromptGenerator(5, 768, 1024)) == released_shapes("dynamic_visual_prompt_generator")
        assert shapes(DynamicPromptGenerator(5, 768, 768)) == released_shapes("dynamic_text_prompt_generator")
    assert len(released_shapes("visual_prompter")) == 4  # the manifest holds what the names say


def test_static_prompts_start_small_and_random() -> None:
    torch.manual_seed(0)
    prompts = StaticPrompts(2, 100, 200).static_prompts
    assert [tuple(prompt.shape) for prompt in prompts] == [(100, 200), (100, 200)]
    assert all(prompt.requires_grad for prompt in prompts)
    values = torch.cat([prompt.detach().flatten() for prompt in prompts])
    assert values.std().item() == pytest.approx(0.02, rel=0.02) and abs(values.mean().item()) < 1e-3
    assert not torch.equal(prompts[0], prompts[1])


def test_dynamic_prompts_are_one_linear_layer_per_token_of_the_image_embedding() -> None:
    torch.manual_seed(0)
    generator = DynamicPromptGenerator(3, 8, 16)
    embedding = torch.randn(2, 8)
    with torch.no_grad():
        prompts = generator(embedding)
    assert prompts.shape == (2, 3, 16)
    for token, layer in enumerate(generator.head):
        expected = embedding @ layer.weight.T + layer.bias
        torch.testing.assert_close(prompts[:, token], expected, rtol=0, atol=1e-6)
    assert not torch.allclose(prompts[:, 0], prompts[:, 1])  # independent layers
