"""Weights and checkpoints that must not load: code in pickles is never run, failed loads change nothing.

The other cases of this group live next to the code they test: missing files, truncated downloads, wrong formats,
checkpoints of another setting and released names offline without cache in ``test_checkpoint.py``; backbone weights
of another backbone, missing keys and pretrained tags offline without cache in ``test_backbone.py``; a Lightning
state dict that does not fit in ``tests/unit/components/test_lightning_checkpoints.py``.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from open_clip.model import CLIP
from PIL import Image

from anomalib_adaclip import AdaCLIP, AdaCLIPModel
from anomalib_adaclip.model.backbone import create_clip
from anomalib_adaclip.weights import CheckpointError, read_checkpoint, save_checkpoint
from tests.conftest import MICRO_BACKBONE, TINY_BACKBONE
from tests.helpers import make_engine


class CreatesFile:
    """Unpickling this object creates a file: the stand-in for any code a malicious pickle would run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    """The file the payload would create; the payload is real: plain unpickling creates it."""
    control = tmp_path / "control-marker"
    pickle.loads(pickle.dumps(CreatesFile(control)))  # proves the payload works
    assert control.exists()
    return tmp_path / "pwned"


def test_pickled_code_in_adaclip_and_backbone_files_is_refused_and_never_runs(
    make_model: Callable, marker: Path, tmp_path: Path
) -> None:
    model = make_model()
    evil = tmp_path / "prompts.pt"
    torch.save({**model.trainable_state_dict(), "payload": CreatesFile(marker)}, evil)
    plain = tmp_path / "prompts.pkl"
    plain.write_bytes(pickle.dumps(CreatesFile(marker)))
    before = {key: value.clone() for key, value in model.trainable_state_dict().items()}
    for path in (evil, plain):
        with pytest.raises(CheckpointError, match=f"{path}"):
            read_checkpoint(path)
        with pytest.raises(CheckpointError):
            model.load_checkpoint(path)
        with pytest.raises(CheckpointError):
            create_clip(TINY_BACKBONE, weights=path)
    assert not marker.exists()
    for key, value in model.trainable_state_dict().items():
        assert torch.equal(value, before[key]), key


def test_pickled_code_in_a_lightning_checkpoint_is_refused_and_never_runs(marker: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    weights = tmp_path / "micro.pt"
    torch.save(CLIP(**MICRO_BACKBONE).state_dict(), weights)
    model = AdaCLIP(backbone=MICRO_BACKBONE, backbone_weights=str(weights), image_size=112)
    evil = tmp_path / "model.ckpt"
    torch.save(
        {"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams), "payload": CreatesFile(marker)},
        evil,
    )
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        AdaCLIP.load_from_checkpoint(evil)  # anomalib loads with weights_only=True
    image = tmp_path / "image.png"
    Image.new("RGB", (32, 32)).save(image)
    engine = make_engine(tmp_path / "run")
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        engine.predict(model, data_path=image, ckpt_path=evil)
    assert not marker.exists()


def test_failed_adaclip_checkpoint_load_leaves_the_model_unchanged(make_model: Callable, tmp_path: Path) -> None:
    model = make_model()
    path = save_checkpoint(model.trainable_state_dict(), model.config.to_dict(), tmp_path / "full.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    other = AdaCLIPModel(backbone=MICRO_BACKBONE, backbone_weights=None, image_size=112)
    foreign = save_checkpoint(other.trainable_state_dict(), other.config.to_dict(), tmp_path / "other.pt")
    torch.manual_seed(5)
    target = make_model(seed=5)
    before = {key: value.clone() for key, value in target.state_dict().items()}
    for bad in (truncated, foreign):
        with pytest.raises(CheckpointError):
            target.load_checkpoint(bad)
    for key, value in target.state_dict().items():
        assert torch.equal(value, before[key]), key
