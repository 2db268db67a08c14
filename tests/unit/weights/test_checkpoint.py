"""AdaCLIP checkpoints: released and our layout, released names through the hub, safety, and clear errors."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pickle
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from anomalib_adaclip import AdaCLIPModel
from anomalib_adaclip.weights import (
    HF_REPO_ID,
    RELEASED_CHECKPOINTS,
    WEIGHTS_DIR_ENV,
    CheckpointError,
    WeightsNotFoundError,
    hub_access,
    load_state_dict_file,
    read_checkpoint,
    save_checkpoint,
    to_released_layout,
)
from tests.conftest import REFERENCE_DIR, TINY_BACKBONE

MANIFEST = REFERENCE_DIR / "released_checkpoint_manifest.json"


class CodeOnUnpickle:
    """Unpickling this object would run a shell command: a malicious 'checkpoint'."""

    def __reduce__(self) -> tuple:
        import os

        return (os.system, ("echo pwned > /dev/null",))


@pytest.fixture
def released_checkpoint(make_model: Callable) -> dict[str, torch.Tensor]:
    """A checkpoint in the released layout with random (seeded) values."""
    torch.manual_seed(7)
    return to_released_layout({k: torch.randn_like(v) for k, v in make_model().trainable_state_dict().items()})


def _outputs(model: AdaCLIPModel) -> torch.Tensor:
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        out = model(images, ["bottle", "screw"])
    return torch.cat([out.pred_score, out.anomaly_map.flatten()])


def test_released_layout_loads(make_model: Callable, released_checkpoint: dict) -> None:
    model = make_model(checkpoint=released_checkpoint)
    for key, value in model.trainable_state_dict().items():
        torch.testing.assert_close(value, released_checkpoint[f"clip_model.{key}"], rtol=0, atol=0)


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
@pytest.mark.parametrize("released_layout", [False, True])
def test_save_and_reload_gives_identical_outputs(
    make_model: Callable,
    released_checkpoint: dict,
    tmp_path: Path,
    suffix: str,
    released_layout: bool,
) -> None:
    model = make_model(checkpoint=released_checkpoint)
    path = save_checkpoint(
        model.trainable_state_dict(),
        model.config.to_dict(),
        tmp_path / f"adaclip{suffix}",
        released_layout=released_layout,
    )
    _, config = read_checkpoint(path)
    assert (config is None) == released_layout
    if config is not None:
        assert config["prompting_type"] == "SD" and config["feature_layers"] == [1, 2, 3, 4]
    reloaded = make_model(checkpoint=path)
    torch.testing.assert_close(_outputs(reloaded), _outputs(model), rtol=0, atol=0)


def test_save_never_overwrites(make_model: Callable, tmp_path: Path) -> None:
    model = make_model()
    path = save_checkpoint(model.trainable_state_dict(), model.config.to_dict(), tmp_path / "a.pt")
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="already exists"):
        save_checkpoint(model.trainable_state_dict(), model.config.to_dict(), path)
    assert path.read_bytes() == before


def test_missing_unexpected_and_mismatched_keys_are_listed_and_nothing_loads(
    make_model: Callable,
    released_checkpoint: dict,
) -> None:
    broken = dict(released_checkpoint)
    del broken["clip_model.cls_token_layer.head.0.bias"]
    broken["clip_model.something_else"] = torch.zeros(2)
    broken["clip_model.patch_token_layer.head.0.weight"] = torch.zeros(64, 64)
    model = make_model()
    before = {k: v.clone() for k, v in model.trainable_state_dict().items()}
    with pytest.raises(CheckpointError) as caught:
        model.load_checkpoint(broken)
    message = str(caught.value)
    assert "1 missing keys" in message and "cls_token_layer.head.0.bias" in message
    assert "1 unexpected keys" in message and "something_else" in message
    assert "patch_token_layer.head.0.weight: expected (64, 128), got (64, 64)" in message
    for key, value in model.trainable_state_dict().items():
        assert torch.equal(value, before[key]), f"{key} changed although loading failed"


def test_checkpoint_of_other_setting_is_an_error(make_model: Callable, released_checkpoint: dict) -> None:
    with pytest.raises(CheckpointError, match=r"static_prompts\.3"):
        make_model(prompting_depth=3, checkpoint=released_checkpoint)


def test_unused_generator_of_reference_is_tolerated(make_model: Callable, released_checkpoint: dict) -> None:
    """The reference builds both generators for dynamic prompting even for an unprompted branch."""
    checkpoint = {
        k: v
        for k, v in released_checkpoint.items()
        if ("text_prompter" not in k and "visual_prompter" not in k) or "visual" in k
    }
    model = make_model(prompting_type="SD", prompting_branch="V", checkpoint=checkpoint)
    assert model.dynamic_text_prompt_generator is None


def test_pickle_that_executes_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"clip_model.x": torch.zeros(1), "payload": CodeOnUnpickle()}, path)
    with pytest.raises(CheckpointError, match="Refusing to load"):
        read_checkpoint(path)
    with pytest.raises(CheckpointError, match="Refusing to load"):
        load_state_dict_file(path)


def test_plain_pickle_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(CodeOnUnpickle()))
    with pytest.raises(CheckpointError):
        read_checkpoint(path)


def test_truncated_file_is_a_clear_error(make_model: Callable, tmp_path: Path) -> None:
    model = make_model()
    path = save_checkpoint(model.trainable_state_dict(), model.config.to_dict(), tmp_path / "full.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        read_checkpoint(truncated)
    safetensors = save_checkpoint(model.trainable_state_dict(), model.config.to_dict(), tmp_path / "full.safetensors")
    truncated_safe = tmp_path / "truncated.safetensors"
    truncated_safe.write_bytes(safetensors.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="truncated"):
        read_checkpoint(truncated_safe)


def test_not_a_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    text = tmp_path / "notes.pth"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match=r"notes\.pth"):
        read_checkpoint(text)
    numbers = tmp_path / "numbers.pt"
    torch.save([1, 2, 3], numbers)
    with pytest.raises(CheckpointError, match="not an AdaCLIP checkpoint"):
        read_checkpoint(numbers)


def test_missing_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="released names"):
        read_checkpoint(tmp_path / "nope.pth")


def test_released_names_resolve_through_the_hub(
    monkeypatch: pytest.MonkeyPatch,
    released_checkpoint: dict,
    tmp_path: Path,
    make_model: Callable,
) -> None:
    calls = []
    for name, released in RELEASED_CHECKPOINTS.items():  # the files the fake hub serves, and their hashes
        torch.save(released_checkpoint, tmp_path / released.filename)
        sha256 = hashlib.sha256((tmp_path / released.filename).read_bytes()).hexdigest()
        monkeypatch.setitem(RELEASED_CHECKPOINTS, name, dataclasses.replace(released, sha256=sha256))

    def fake_hub_download(repo_id: str, filename: str, **_: object) -> str:
        calls.append((repo_id, filename))
        return str(tmp_path / filename)

    monkeypatch.setattr("huggingface_hub.hf_hub_download", fake_hub_download)
    monkeypatch.delenv(WEIGHTS_DIR_ENV, raising=False)
    for name, released in RELEASED_CHECKPOINTS.items():
        model = make_model(checkpoint=name)
        assert calls[-1] == (HF_REPO_ID, released.filename)
        key = "cls_token_layer.head.0.weight"
        torch.testing.assert_close(model.trainable_state_dict()[key], released_checkpoint[f"clip_model.{key}"])
    assert [filename for _, filename in calls] == [
        "pretrained_mvtec_colondb.pth",
        "pretrained_visa_clinicdb.pth",
        "pretrained_all.pth",
    ]


def test_released_name_found_in_weights_dir(
    monkeypatch: pytest.MonkeyPatch,
    released_checkpoint: dict,
    tmp_path: Path,
    make_model: Callable,
) -> None:
    torch.save(released_checkpoint, tmp_path / "pretrained_visa_clinicdb.pth")
    sha256 = hashlib.sha256((tmp_path / "pretrained_visa_clinicdb.pth").read_bytes()).hexdigest()
    released = dataclasses.replace(RELEASED_CHECKPOINTS["visa_clinicdb"], sha256=sha256)
    monkeypatch.setitem(RELEASED_CHECKPOINTS, "visa_clinicdb", released)
    monkeypatch.setenv(WEIGHTS_DIR_ENV, str(tmp_path))
    monkeypatch.setattr("huggingface_hub.hf_hub_download", lambda **_: pytest.fail("the hub must not be called"))
    make_model(checkpoint="visa_clinicdb")


def test_released_name_offline_without_cache_is_one_clear_error(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    make_model: Callable,
) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.delenv(WEIGHTS_DIR_ENV, raising=False)
    with pytest.raises(WeightsNotFoundError) as caught:
        make_model(checkpoint="mvtec_colondb")
    message = str(caught.value)
    assert "pretrained_mvtec_colondb.pth" in message and HF_REPO_ID in message
    assert WEIGHTS_DIR_ENV in message and "--model.checkpoint" in message


def test_unknown_released_name_is_a_clear_error(make_model: Callable) -> None:
    with pytest.raises(FileNotFoundError, match="mvtec_colondb"):
        make_model(checkpoint="mvtec")


def test_unreachable_hub_switches_to_offline_mode_for_the_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without network the hub client would retry for a minute; the probe makes it answer from the cache at once."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr("anomalib_adaclip.weights.hub.host_reachable", lambda *_: False)
    with hub_access():
        assert huggingface_hub.constants.HF_HUB_OFFLINE is True
    assert huggingface_hub.constants.HF_HUB_OFFLINE is False
    monkeypatch.setattr("anomalib_adaclip.weights.hub.host_reachable", lambda *_: True)
    with hub_access():
        assert huggingface_hub.constants.HF_HUB_OFFLINE is False


def test_released_manifest_checkpoint_loads_key_for_key() -> None:
    """A checkpoint with exactly the keys and shapes of a released file loads into the paper's configuration."""
    manifest = json.loads(MANIFEST.read_text())
    torch.manual_seed(0)
    checkpoint = {key: torch.randn(shape) for key, shape in manifest["checkpoint_keys"].items()}
    model = AdaCLIPModel(backbone="ViT-L-14-336", image_size=518, backbone_weights=None, checkpoint=checkpoint)
    assert model.feature_layers == manifest["feature_layers"] == [6, 12, 18, 24]
    trainable = model.trainable_state_dict()
    assert {f"clip_model.{key}" for key in trainable} == set(manifest["checkpoint_keys"])
    for key, value in trainable.items():
        torch.testing.assert_close(value, checkpoint[f"clip_model.{key}"], rtol=0, atol=0)
    clip_shapes = {key: list(value.shape) for key, value in model.clip.state_dict().items()}
    assert clip_shapes == manifest["clip_state_dict_keys"]
    assert sum(value.numel() for value in trainable.values()) == 10_665_472

    with pytest.raises(
        CheckpointError, match=r"visual_prompter.static_prompts.0: expected \(5, 128\), got \(5, 1024\)"
    ):
        AdaCLIPModel(backbone=TINY_BACKBONE, image_size=224, backbone_weights=None, checkpoint=checkpoint)
