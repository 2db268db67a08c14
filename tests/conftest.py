"""Shared fixtures: the reference outputs of the authors' code, tiny random CLIP backbones, and model factories.

The tests never download anything and read nothing outside the repository: the reference outputs and the tire sample
are in ``tests/data`` (see ``tests/data/README.md``), backbones are tiny random CLIPs built from open_clip config
dicts, and the Hugging Face hub is switched to offline mode for the whole session.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.data.fixture_codec import decode_fixture

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a test that reaches for the network is a bug

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = PROJECT_ROOT / "tests" / "data"
REFERENCE_DIR = DATA_DIR / "reference"
TIRE_ROOT = DATA_DIR / "mvtec3d_tire_sample"

REFERENCE_FILE = "adaclip_tiny_reference.pt"
VARIANT_FILES = ("adaclip_variant_S_V.pt", "adaclip_variant_D_V.pt", "adaclip_variant_SD_V_depth2.pt")

# The tiny CLIP of the reference fixture. Its token-embedding table is stored with only the rows that the prompt
# sentences of the tests' class names read (tests/data/README.md); other rows are zero.
TINY_BACKBONE: dict[str, Any] = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 224, "layers": 4, "width": 128, "head_width": 32, "patch_size": 14},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 4},
}
# An even smaller one for end-to-end runs: 112 px input, 8x8 patches.
MICRO_BACKBONE: dict[str, Any] = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 112, "layers": 4, "width": 64, "head_width": 32, "patch_size": 14},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 4},
}
# Two blocks per tower: the ONNX exports of the default suite (a small graph, a short export).
NANO_BACKBONE: dict[str, Any] = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 112, "layers": 2, "width": 64, "head_width": 32, "patch_size": 14},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


def random_images(count: int, size: int, seed: int = 0) -> torch.Tensor:
    """Seeded standard-normal stand-ins for normalised images ``[count, 3, size, size]``."""
    return torch.randn(count, 3, size, size, generator=torch.Generator().manual_seed(seed))


def load_reference(name: str = REFERENCE_FILE) -> dict[str, Any]:
    """Load a reference file of the authors' implementation from tests/data/reference; a missing one is a failure."""
    path = REFERENCE_DIR / name
    if not path.is_file():
        pytest.fail(f"reference outputs missing: {path} (tests/data is part of the repository; see its README.md)")
    return decode_fixture(torch.load(path, weights_only=True), name)


RARECLIP_FILE = "rareclip_reference.pt"


def rarity_reference_scorer(data: dict[str, Any], **overrides: Any) -> Any:
    """The RarityScoring of RareCLIP's reference file: its CLIP, TPB weights and settings (the authors' names mapped
    to ours); ``overrides`` replace settings."""
    from anomalib_adaclip import RarityScoring

    s = data["settings"]
    arguments: dict[str, Any] = {
        "backbone": s["config"],
        "backbone_weights": data["clip_state_dict"],
        "image_size": s["image_size"],
        "text_layers": s["features_list_text"],
        "rarity_layers": s["features_list_rare"],
        "tpb_weights": data["tpb_state_dict"],
        "keep_ftime": s["keep_ftime"],
        "keep_snum": s["keep_snum"],
        "keep_inum": s["keep_inum"],
        "topk": s["topk"],
        "ls_ratio": s["LS_ratio"],
        "rescoring": bool(s["Rs"]),
        "rs_freq": s["Rs_freq"],
        "max_rs_num": s["max_Rs_num"],
        "rs_temp": s["Rs_temp"],
        "text_temp": s["text_temp"],
        "sigma": s["sigma"],
        "rare_thd": s["rare_thd"],
        "sampler": s["sampler"],
        "k_shot": s["k_shot"],
    }
    arguments.update(overrides)
    return RarityScoring(**arguments)


def reference_model(data: dict[str, Any], **overrides: Any) -> Any:
    """The AdaCLIPModel of a reference file: its settings, its CLIP weights and its AdaCLIP checkpoint (eval mode).

    Variant files without CLIP weights of their own name the file that has them (``clip_state_dict_from``).
    """
    from anomalib_adaclip import AdaCLIPModel

    settings = data["settings"]
    clip_state_dict = data["clip_state_dict"]
    if clip_state_dict is None:
        clip_state_dict = load_reference(data["clip_state_dict_from"])["clip_state_dict"]
    arguments = {
        "backbone": {key: settings[key] for key in ("embed_dim", "vision_cfg", "text_cfg")},
        "image_size": settings["image_size"],
        "feature_layers": settings["feature_layers"],
        "prompting_depth": settings["prompting_depth"],
        "prompting_length": settings["prompting_length"],
        "prompting_type": settings["prompting_type"],
        "prompting_branch": settings["prompting_branch"],
        "use_hsf": settings["use_hsf"],
        "k_clusters": settings["k_clusters"],
        "backbone_weights": clip_state_dict,
        "checkpoint": data["adaclip_checkpoint"],
    }
    arguments.update(overrides)
    return AdaCLIPModel(**arguments).eval()


@pytest.fixture(scope="session")
def micro_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seeded random micro CLIP saved as a weights file, so that every model (and process) gets the same CLIP."""
    from open_clip.model import CLIP

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "micro_clip.pt"
    torch.save(CLIP(**MICRO_BACKBONE).state_dict(), path)
    return path


@pytest.fixture(scope="session")
def prompt_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two checkpoint files of random prompts for the micro CLIP (seeds 1 and 2): models that differ in prompts."""
    from anomalib_adaclip import AdaCLIPModel
    from anomalib_adaclip.weights import save_checkpoint

    folder = tmp_path_factory.mktemp("prompts")
    paths = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        donor = AdaCLIPModel(backbone=MICRO_BACKBONE, backbone_weights=None, image_size=112)
        paths.append(folder / f"prompts_{seed}.pt")
        save_checkpoint(donor.trainable_state_dict(), donor.config.to_dict(), paths[-1])
    return paths


@pytest.fixture(scope="session")
def demo_settings(micro_weights: Path, prompt_checkpoints: list[Path]) -> Any:
    """The demo's model settings of the micro CLIP with the first prompts checkpoint, at 112 px (zero-shot)."""
    from anomalib_adaclip.demo import DemoModelSettings

    return DemoModelSettings(json.dumps(MICRO_BACKBONE), str(micro_weights), str(prompt_checkpoints[0]), 112)


@pytest.fixture(scope="session")
def reference() -> dict[str, Any]:
    return load_reference()


@pytest.fixture(scope="session")
def tiny_clip_state_dict() -> dict[str, torch.Tensor]:
    """Weights of the tiny CLIP of the reference fixture."""
    return load_reference()["clip_state_dict"]


@pytest.fixture
def make_model(tiny_clip_state_dict: dict[str, torch.Tensor]) -> Callable[..., Any]:
    """Build an AdaCLIPModel on the tiny CLIP (eval mode), with the reference's defaults unless overridden."""
    from anomalib_adaclip import AdaCLIPModel

    def factory(**overrides: Any) -> AdaCLIPModel:
        torch.manual_seed(overrides.pop("seed", 0))
        arguments = {
            "backbone": TINY_BACKBONE,
            "backbone_weights": tiny_clip_state_dict,
            "image_size": 224,
            "feature_layers": [1, 2, 3, 4],
        }
        arguments.update(overrides)
        return AdaCLIPModel(**arguments).eval()

    return factory
