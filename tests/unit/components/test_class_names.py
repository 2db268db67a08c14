"""Class names: what the prompts accept, and that the prefix-tree text tower agrees with the 77-token context for all.

Defined behaviour: dashes become spaces; underscores, digits, upper case and non-ASCII characters are given to CLIP's
tokenizer as they are (it lower-cases and splits into byte-level BPE tokens). An empty or blank name, and a name so
long that a prompt sentence would not fit into the 77-token context (the tokenizer would cut the sentence's end,
and with it the state words that tell "normal" from "abnormal"), are refused with a ValueError.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from open_clip.model import CLIP
from open_clip.tokenizer import SimpleTokenizer

from anomalib_adaclip import AdaCLIP
from anomalib_adaclip.components.class_names import ClassNameRules
from tests.conftest import MICRO_BACKBONE
from tests.helpers import full_context_text_embeddings

CONTEXT = 77
TOKENIZER = SimpleTokenizer()


def _longest_sentence_tokens(model: torch.nn.Module, name: str) -> int:
    """Tokens of the name's longest sentence with start and end tokens, counted by open_clip's tokenizer."""
    normal, abnormal = model.ensemble.sentences(name)
    return max(len(TOKENIZER.encode(sentence)) for sentence in normal + abnormal) + 2


def _longest_name_that_fits(model: torch.nn.Module) -> int:
    """How many one-token words ("bolt") a name may have, from open_clip's token count of a one-word name."""
    return CONTEXT - (_longest_sentence_tokens(model, "bolt") - 1)


@pytest.mark.parametrize(
    "names",
    [
        ["metal_nut", "m8-bolt", "pcb4"],  # underscores stay, dashes become spaces, digits stay
        ["Schraube_ä", "螺丝", "café-crème"],  # non-ASCII
    ],
    ids=["underscores-dashes-digits", "non-ascii"],
)
def test_unusual_names_work_and_the_prefix_tree_equals_the_full_context(make_model: Callable, names: list[str]) -> None:
    model = make_model()
    dynamic = 0.1 * torch.randn(len(names), model.prompting_length, 64, generator=torch.Generator().manual_seed(0))
    prompts = model._block_prompts(model.text_prompter, dynamic)
    with torch.no_grad():
        expected = full_context_text_embeddings(model, names, prompts)
        packed = model.text_encoder.encode(names, prompts)
        output = model(torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(1)), names)
    torch.testing.assert_close(packed, expected, atol=1e-5, rtol=0)
    assert torch.isfinite(output.anomaly_map).all() and ((output.pred_score >= 0) & (output.pred_score <= 1)).all()


def test_digits_and_case(make_model: Callable) -> None:
    model = make_model()
    with torch.no_grad():
        upper, lower = model.text_features(["Bottle"]), model.text_features(["bottle"])
        digit = model.text_features(["bottle2"])
    torch.testing.assert_close(upper, lower, atol=0, rtol=0)  # CLIP's tokenizer lower-cases
    assert not torch.allclose(digit, lower)  # digits are part of the name


def test_longest_name_that_fits_the_context_works_and_one_more_token_is_refused(make_model: Callable) -> None:
    model = make_model()
    words = _longest_name_that_fits(model)
    fits, too_long = " ".join(["bolt"] * words), " ".join(["bolt"] * (words + 1))
    assert _longest_sentence_tokens(model, fits) == CONTEXT  # the longest sentence fills the context exactly
    assert _longest_sentence_tokens(model, too_long) == CONTEXT + 1
    prompts = model._block_prompts(model.text_prompter, None)
    with torch.no_grad():
        expected = full_context_text_embeddings(model, [fits], prompts)
        packed = model.text_encoder.encode([fits], prompts)
        model(torch.zeros(1, 3, 224, 224), fits)
    torch.testing.assert_close(packed, expected, atol=1e-5, rtol=0)
    message = rf"too long: it is {words + 1} tokens, .* {CONTEXT + 1} tokens .* reads {CONTEXT}. Use at most {words}"
    with pytest.raises(ValueError, match=message):
        model(torch.zeros(1, 3, 224, 224), too_long)
    with pytest.raises(ValueError, match="too long"):
        model(torch.zeros(2, 3, 224, 224), ["bottle", too_long])


@pytest.mark.parametrize("name", ["", "   "])
def test_empty_names_are_refused(make_model: Callable, name: str) -> None:
    model = make_model()
    for class_names in (name, ["bottle", name]):
        with pytest.raises(ValueError, match=rf"A class name must be a non-empty string, got {name!r}"):
            model(torch.zeros(2, 3, 224, 224), class_names)


def test_lightning_empty_argument_means_not_given_and_blank_is_refused_at_setup(tmp_path: Path) -> None:
    torch.manual_seed(0)
    path = tmp_path / "micro.pt"
    torch.save(CLIP(**MICRO_BACKBONE).state_dict(), path)

    def model(class_name: str) -> AdaCLIP:
        adaclip = AdaCLIP(
            backbone=MICRO_BACKBONE, backbone_weights=str(path), image_size=112, classes={"name": class_name}
        )
        adaclip._trainer = SimpleNamespace(datamodule=SimpleNamespace(category="bottle"))  # what Lightning attaches
        return adaclip

    empty = model("")
    empty.setup("test")
    assert empty.model.class_name == "bottle"
    with pytest.raises(ValueError, match="A class name must be a non-empty string, got '  '"):
        model("  ").setup("test")


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/data/line1/screws/001.png", ("screw", "folder 'screws' of classes.map")),
        ("/data/line1/screws_old/001.png", ("screws_old", "the parent folder")),  # whole folder names only
        ("/data/nuts/top/002.png", ("metal-nut", "pattern '*/nuts/*' of classes.map")),
        ("/data/line2/bolt_7.png", ("bolt", "pattern 'bolt_*.png' of classes.map")),  # matches the path's end
        ("relative/washers/a.png", ("washers", "the parent folder")),
        ("/data/line2/screws/bolt_1.png", ("screw", "folder 'screws' of classes.map")),  # first entry wins
    ],
)
def test_class_name_rules(path: str, expected: tuple[str, str]) -> None:
    rules = ClassNameRules({"screws": "screw", "*/nuts/*": "metal-nut", "bolt_*.png": "bolt"}, from_parent=True)
    assert rules.match(path) == expected
    assert ClassNameRules({"screws": "screw"}).match("/data/washers/a.png") is None
    with pytest.raises(ValueError, match="must be a non-empty class name"):
        ClassNameRules({"screws": ""})
    with pytest.raises(ValueError, match="keys must be glob patterns or folder names"):
        ClassNameRules({"/": "x"})


def test_the_class_names_part_is_told_the_data_module_the_checkpoint_and_the_check() -> None:
    from anomalib_adaclip.components.class_names import CHECKPOINT_CLASS_NAME_KEY, ClassNames
    from anomalib_adaclip.config import ClassConfig

    checked = []
    part = ClassNames(ClassConfig(map={"nuts": "metal-nut"}, export_names=["a", "b"]), checked.append)
    assert part.export_names == ("a", "b") and checked == ["a", "b"]
    assert part.run_name(SimpleNamespace(category="bottle")) == "bottle" and checked[-1] == "bottle"
    part.load({CHECKPOINT_CLASS_NAME_KEY: "tire"})
    assert part.run_name(None) == "tire"  # no data module: the checkpoint's name
    assert part.of_path("/data/nuts/1.png", "bottle") == "metal-nut"
    assert part.of_path("/data/bolts/1.png", "bottle") == "bottle"
    batch = SimpleNamespace(image_path=["/data/nuts/1.png", "/x/2.png"], class_name=None)
    assert part.of(batch, "bottle") == ["metal-nut", "bottle"]
    checkpoint: dict = {}
    ClassNames.save(checkpoint, "widget")
    assert checkpoint == {CHECKPOINT_CLASS_NAME_KEY: "widget"}
    assert ClassNames(ClassConfig(name="screw"), checked.append).run_name(SimpleNamespace(category="bottle")) == "screw"
