"""Backbone building and weights resolution: names, config dicts, files, tags, offline errors, position resizing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import open_clip
import pytest
import torch
from open_clip.model import CLIP
from open_clip.transformer import QuickGELU
from safetensors.torch import save_file
from torch import nn
from torch.nn import functional as F  # noqa: N812

from anomalib_adaclip.model.backbone import (
    backbone_config,
    create_clip,
    load_backbone_weights,
    resize_vision_positional_embedding,
)
from anomalib_adaclip.weights import WEIGHTS_DIR_ENV, CheckpointError, WeightsNotFoundError
from tests.conftest import TINY_BACKBONE

TINY_NAME = "AdaCLIP-Test-Tiny"


def _same_weights(model: CLIP, state_dict: dict[str, torch.Tensor]) -> bool:
    own = model.state_dict()
    return all(torch.equal(own[key], value.to(own[key].dtype)) for key, value in state_dict.items())


@pytest.fixture
def registered_tiny_model(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_clip_state_dict: dict) -> list:
    """Register the tiny CLIP under a model name with an 'openai' tag whose hub file is a local file.

    Returns the list of (repo_id, filename) hub calls made.
    """
    from open_clip import factory, pretrained

    monkeypatch.setitem(factory._MODEL_CONFIGS, TINY_NAME, dict(TINY_BACKBONE))
    monkeypatch.setitem(pretrained._PRETRAINED, TINY_NAME, {"openai": pretrained._pcfg(hf_hub="test-org/tiny-clip/")})
    weights = tmp_path / "hub" / "open_clip_pytorch_model.bin"
    weights.parent.mkdir()
    torch.save(tiny_clip_state_dict, weights)
    calls = []

    def fake_hub_download(repo_id: str, filename: str, **_: object) -> str:
        calls.append((repo_id, filename))
        if filename != "open_clip_pytorch_model.bin":
            raise FileNotFoundError(filename)
        return str(weights)

    monkeypatch.setattr(pretrained, "hf_hub_download", fake_hub_download)
    return calls


def test_known_names_resolve_to_vit_configs() -> None:
    config = backbone_config("ViT-L-14-336")
    assert config["embed_dim"] == 768
    assert config["vision_cfg"]["width"] == 1024 and config["vision_cfg"]["image_size"] == 336
    assert backbone_config("ViT-B-16")["vision_cfg"]["patch_size"] == 16


@pytest.mark.parametrize(
    ("backbone", "message"),
    [
        ("ViT-Nonexistent-99", "Unknown open_clip model"),
        ("RN50", "ViT vision tower"),
        ({"embed_dim": 64, "vision_cfg": {}}, "missing \\['text_cfg'\\]"),
        ({**TINY_BACKBONE, "text_cfg": {**TINY_BACKBONE["text_cfg"], "hf_model_name": "bert"}}, "text transformer"),
    ],
)
def test_unsupported_backbones_are_clear_errors(backbone: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        backbone_config(backbone)


def test_always_exact_gelu_even_when_config_says_quick_gelu() -> None:
    model = create_clip({**TINY_BACKBONE, "quick_gelu": True}, weights=None)
    activations = [module for module in model.modules() if isinstance(module, nn.GELU | QuickGELU)]
    assert activations and all(type(module) is nn.GELU for module in activations)


def test_clip_is_frozen_in_eval_mode() -> None:
    model = create_clip(TINY_BACKBONE, weights=None)
    assert not model.training
    assert not any(parameter.requires_grad for parameter in model.parameters())


def test_random_weights_warn(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING"):
        create_clip(TINY_BACKBONE, weights=None)
    assert "RANDOM weights" in caplog.text


def test_positional_embedding_resize_is_plain_bicubic_without_antialias() -> None:
    torch.manual_seed(0)
    positions = torch.randn(1 + 16 * 16, 8)
    resized = resize_vision_positional_embedding(positions, 20)
    grid = positions[1:].reshape(1, 16, 16, 8).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, size=(20, 20), mode="bicubic", align_corners=False)
    expected = expected.permute(0, 2, 3, 1).reshape(400, 8)
    torch.testing.assert_close(resized[1:], expected)
    torch.testing.assert_close(resized[0], positions[0])
    antialiased = F.interpolate(grid, size=(20, 20), mode="bicubic", align_corners=False, antialias=True)
    assert not torch.allclose(antialiased.permute(0, 2, 3, 1).reshape(400, 8), expected, atol=1e-3)


def test_weights_at_native_size_are_resized_and_already_resized_weights_are_kept(tiny_clip_state_dict: dict) -> None:
    native = create_clip(TINY_BACKBONE, weights=tiny_clip_state_dict, image_size=280)
    assert native.visual.positional_embedding.shape == (1 + 20 * 20, 128)
    assert native.visual.grid_size == (20, 20)
    expected = resize_vision_positional_embedding(tiny_clip_state_dict["visual.positional_embedding"], 20)
    torch.testing.assert_close(native.visual.positional_embedding.data, expected)
    again = create_clip(TINY_BACKBONE, weights=native.state_dict(), image_size=280)
    torch.testing.assert_close(again.visual.positional_embedding.data, expected)


def test_antialiased_positions_are_open_clip_default_resize(tiny_clip_state_dict: dict) -> None:
    # RareCLIP's vendored open_clip resizes with open_clip's defaults (bicubic, antialias=True), also when upsampling.
    model = create_clip(TINY_BACKBONE, weights=tiny_clip_state_dict, image_size=280, antialias_positions=True)
    expected = {"visual.positional_embedding": tiny_clip_state_dict["visual.positional_embedding"].clone()}
    open_clip.model.resize_pos_embed(expected, model)
    assert torch.equal(model.visual.positional_embedding.data, expected["visual.positional_embedding"])
    plain = create_clip(TINY_BACKBONE, weights=tiny_clip_state_dict, image_size=280)
    assert not torch.allclose(plain.visual.positional_embedding.data, model.visual.positional_embedding.data)


def test_image_size_must_be_a_multiple_of_the_patch_size() -> None:
    with pytest.raises(ValueError, match="multiple of the backbone's patch size 14"):
        create_clip(TINY_BACKBONE, weights=None, image_size=225)


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".bin", ".safetensors", ".wrapped.pt", ".module.pt"])
def test_weights_files_load(tmp_path: Path, tiny_clip_state_dict: dict, suffix: str) -> None:
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in tiny_clip_state_dict.items()}, path)
    elif suffix == ".wrapped.pt":
        torch.save({"state_dict": tiny_clip_state_dict, "epoch": 3}, path)
    elif suffix == ".module.pt":
        torch.save({f"module.{k}": v for k, v in tiny_clip_state_dict.items()}, path)
    else:
        torch.save(tiny_clip_state_dict, path)
    model = create_clip(TINY_BACKBONE, weights=str(path))
    assert _same_weights(model, tiny_clip_state_dict)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::FutureWarning")
def test_openai_torchscript_archive_loads(tmp_path: Path, tiny_clip_state_dict: dict) -> None:
    """OpenAI's original files are TorchScript archives holding the CLIP state dict (partly in fp16)."""
    source = CLIP(**TINY_BACKBONE)
    source.load_state_dict(tiny_clip_state_dict)
    source.eval()
    scripted = torch.jit.trace_module(
        source,
        {"encode_image": (torch.randn(1, 3, 224, 224),), "encode_text": (torch.zeros(1, 77, dtype=torch.long),)},
        check_trace=False,
    )
    path = tmp_path / "ViT-Tiny.pt"
    scripted.save(str(path))
    model = create_clip(TINY_BACKBONE, weights=path)
    assert _same_weights(model, tiny_clip_state_dict)


def test_pretrained_tag_downloads_through_open_clip(registered_tiny_model: list, tiny_clip_state_dict: dict) -> None:
    model = create_clip(TINY_NAME, weights="openai")
    assert _same_weights(model, tiny_clip_state_dict)
    assert ("test-org/tiny-clip", "open_clip_pytorch_model.bin") in registered_tiny_model


def test_pretrained_tag_found_in_weights_dir(
    monkeypatch: pytest.MonkeyPatch,
    registered_tiny_model: list,
    tmp_path: Path,
    tiny_clip_state_dict: dict,
) -> None:
    folder = tmp_path / "weights"
    folder.mkdir()
    torch.save(tiny_clip_state_dict, folder / f"{TINY_NAME}-openai.pt")
    monkeypatch.setenv(WEIGHTS_DIR_ENV, str(folder))
    model = create_clip(TINY_NAME, weights="openai")
    assert _same_weights(model, tiny_clip_state_dict)
    assert registered_tiny_model == []  # no hub call


def test_offline_without_cache_is_one_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The real hub code path, offline with an empty cache: the error names backbone, tag and the three remedies."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.delenv(WEIGHTS_DIR_ENV, raising=False)
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(WeightsNotFoundError) as caught:
        load_backbone_weights("openai", "ViT-L-14-336")
    message = str(caught.value)
    assert "'ViT-L-14-336'" in message and "'openai'" in message
    assert "backbone_weights=" in message and WEIGHTS_DIR_ENV in message and "HF_HOME" in message
    assert "timm/vit_large_patch14_clip_336.openai" in message


def test_unknown_tag_lists_known_tags() -> None:
    with pytest.raises(ValueError, match=r"known tags: .*openai"):
        load_backbone_weights("no-such-tag", "ViT-L-14-336")


def test_tag_with_config_dict_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"pretrained tag, which needs a backbone given by name"):
        load_backbone_weights("openai", TINY_BACKBONE)


def test_missing_weights_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"missing\.pt"):
        create_clip(TINY_BACKBONE, weights=tmp_path / "missing.pt")


def test_weights_of_another_backbone_list_the_shape_mismatches(tiny_clip_state_dict: dict) -> None:
    other = {**TINY_BACKBONE, "embed_dim": 32}
    with pytest.raises(CheckpointError, match=r"text_projection: expected \(64, 32\), got \(64, 64\)"):
        create_clip(other, weights=tiny_clip_state_dict)


def test_weights_with_missing_keys_list_them(tiny_clip_state_dict: dict) -> None:
    partial = {k: v for k, v in tiny_clip_state_dict.items() if not k.startswith("ln_final")}
    partial["extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"(?s)2 missing keys.*ln_final.bias.*1 unexpected keys.*extra.weight"):
        create_clip(TINY_BACKBONE, weights=partial)


def test_named_backbone_weights_builds_model_only_after_resolving(
    monkeypatch: pytest.MonkeyPatch,
    make_model: Callable,
) -> None:
    """A missing tag fails before the (large) model is built."""
    built = []
    monkeypatch.setattr("anomalib_adaclip.model.backbone.CLIP", lambda *a, **k: built.append(1))
    monkeypatch.setattr(open_clip, "download_pretrained", lambda *a, **k: (_ for _ in ()).throw(OSError("offline")))
    with pytest.raises(WeightsNotFoundError):
        create_clip("ViT-B-16", weights="openai")
    assert built == []
