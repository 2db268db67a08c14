"""Lightning checkpoints without the frozen CLIP (``components/lightning_checkpoints.py``).

A checkpoint keeps every tensor but the CLIP's; loading checks keys and shapes before anything is copied, so a state
dict that does not fit leaves every tensor of the model as it was. Models are the Lightning AdaCLIP on the micro CLIP;
checkpoints through anomalib's Engine are in ``tests/integration/test_engine.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from anomalib_adaclip import AdaCLIP
from tests.conftest import MICRO_BACKBONE
from tests.helpers import make_adaclip

CLIP = "model.clip."


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.clone() for key, value in model.state_dict().items()}


def assert_tensors_equal(model: torch.nn.Module, expected: dict[str, torch.Tensor]) -> None:
    """Every tensor of ``model`` equals ``expected``'s bit for bit (NaN where it was NaN: unset statistics)."""
    state = model.state_dict()
    assert set(state) == set(expected)
    for key, value in state.items():
        torch.testing.assert_close(value, expected[key], rtol=0, atol=0, equal_nan=True, msg=key)


def saved(model: AdaCLIP) -> dict[str, torch.Tensor]:
    """The state dict of a Lightning checkpoint of ``model``, as the mixin leaves it."""
    checkpoint: dict = {"state_dict": model.state_dict()}
    model.on_save_checkpoint(checkpoint)
    return checkpoint["state_dict"]


def test_a_saved_checkpoint_holds_every_tensor_but_the_frozen_clips(micro_weights: Path) -> None:
    model = make_adaclip(micro_weights)
    full, kept = model.state_dict(), saved(model)
    assert any(key.startswith(CLIP) for key in full)  # there was a CLIP to leave out
    assert not any(key.startswith(CLIP) for key in kept)
    assert set(kept) == {key for key in full if not key.startswith(CLIP)}  # nothing else left out
    assert all(not parameter.requires_grad for parameter in model.model.clip.parameters())  # the CLIP is frozen
    trainable = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
    assert trainable and trainable <= set(kept)  # every trained tensor is saved
    assert sum(value.numel() for value in kept.values()) < sum(value.numel() for value in full.values()) / 2


def test_a_checkpoint_without_the_clip_loads_strictly_into_a_model_of_the_same_clip(micro_weights: Path) -> None:
    source, target = make_adaclip(micro_weights, seed=0), make_adaclip(micro_weights, seed=1)
    expected = snapshot(source)
    assert any(not torch.equal(value, expected[key]) for key, value in target.state_dict().items())  # seeds differ
    target.load_state_dict(saved(source))  # strict: the frozen CLIP's keys may be absent
    assert_tensors_equal(target, expected)
    target.load_state_dict(source.state_dict())  # a state dict with the CLIP loads too
    assert_tensors_equal(target, expected)


def test_one_tensor_of_a_wrong_shape_raises_and_leaves_every_tensor_unchanged(micro_weights: Path) -> None:
    """Every other tensor fits (torch's own load_state_dict would have copied them before raising)."""
    source, target = make_adaclip(micro_weights, seed=0), make_adaclip(micro_weights, seed=1)
    before = snapshot(target)
    state = saved(source)
    wrong = sorted(key for key in state if key.startswith("model.visual_prompter."))[-1]
    state[wrong] = torch.zeros(*state[wrong].shape[:-1], state[wrong].shape[-1] + 1)
    for strict in (True, False):  # shapes are checked also without strict
        with pytest.raises(RuntimeError, match=rf"(?s)nothing was loaded.*shape mismatches:\n    {wrong}: expected"):
            target.load_state_dict(state, strict=strict)
        assert_tensors_equal(target, before)
    clip_key = next(key for key in source.state_dict() if key.startswith(CLIP))
    with_clip = {**source.state_dict(), clip_key: torch.zeros(3)}
    with pytest.raises(RuntimeError, match=rf"(?s)nothing was loaded.*{clip_key}"):  # a CLIP tensor given is checked
        target.load_state_dict(with_clip, strict=False)
    assert_tensors_equal(target, before)


def test_strict_loading_names_missing_and_unexpected_keys_and_loose_loading_skips_them(micro_weights: Path) -> None:
    source, target = make_adaclip(micro_weights, seed=0), make_adaclip(micro_weights, seed=1)
    before, expected = snapshot(target), snapshot(source)
    state = saved(source)
    dropped = sorted(key for key in state if key.startswith("model.visual_prompter."))[0]
    del state[dropped]
    with pytest.raises(RuntimeError, match=rf"(?s)nothing was loaded.*1 missing keys:\n    {dropped}"):
        target.load_state_dict(state)
    state["model.not_a_tensor_of_adaclip"] = torch.zeros(1)
    with pytest.raises(RuntimeError, match=r"(?s)1 unexpected keys:\n    model\.not_a_tensor_of_adaclip"):
        target.load_state_dict(state)
    assert_tensors_equal(target, before)
    target.load_state_dict(state, strict=False)  # the missing key keeps its own tensor; the unknown one is ignored
    assert_tensors_equal(target, {**expected, dropped: before[dropped]})


def test_checkpoint_of_another_backbone_leaves_the_lightning_model_unchanged(tmp_path: Path) -> None:
    """torch's load_state_dict copies every fitting tensor before it raises; AdaCLIP checks first."""
    torch.manual_seed(0)
    model = AdaCLIP(backbone=MICRO_BACKBONE, backbone_weights=None, image_size=112)
    wider = {**MICRO_BACKBONE, "vision_cfg": {**MICRO_BACKBONE["vision_cfg"], "width": 128}}
    torch.manual_seed(1)
    other = AdaCLIP(backbone=wider, backbone_weights=None, image_size=112)
    before = {key: value.clone() for key, value in model.state_dict().items()}
    foreign = {key: value for key, value in other.state_dict().items() if not key.startswith("model.clip.")}
    with pytest.raises(RuntimeError, match=r"(?s)nothing was loaded.*shape mismatches.*visual_prompter"):
        model.load_state_dict(foreign)
    with pytest.raises(RuntimeError, match="nothing was loaded"):
        model.load_state_dict(foreign, strict=False)  # shapes are checked also without strict
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]) or (value.isnan().all() and before[key].isnan().all()), key


def test_the_part_strips_and_checks_a_state_dict_on_its_own() -> None:
    """``FrozenBackboneCheckpoints`` is told the state dicts; it reads nothing of a model."""
    from anomalib_adaclip.components.lightning_checkpoints import FrozenBackboneCheckpoints

    part = FrozenBackboneCheckpoints(prefix="model.clip.")
    own = {"model.clip.w": torch.zeros(2), "model.prompt": torch.zeros(3)}
    checkpoint = {"state_dict": dict(own)}
    part.strip(checkpoint)
    assert list(checkpoint["state_dict"]) == ["model.prompt"]
    part.check(own, {"model.prompt": torch.ones(3)})  # the frozen part may be missing
    with pytest.raises(RuntimeError, match="nothing was loaded"):
        part.check(own, {"model.prompt": torch.ones(4)})  # a shape that differs
    with pytest.raises(RuntimeError, match="nothing was loaded"):
        part.check(own, {})  # strict: a trainable key is missing
    part.check(own, {"other": torch.ones(1)}, strict=False)  # not strict: unknown keys are ignored
