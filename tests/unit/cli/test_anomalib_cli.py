"""anomalib's CLI as ``anomalib-adaclip`` runs it: ``--seed_everything`` seeds the model's random weights.

The console's single handler is tested with :func:`~anomalib_adaclip.quiet.configure_logging`
(``tests/unit/test_quiet.py``); a resume that equals an uninterrupted run is ``tests/integration/test_streaming.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from anomalib_adaclip.cli.anomalib_cli import AdaCLIPCLI
from tests.helpers import IMAGE_SIZE, MICRO_BACKBONE, write_part_images


def built_model(data: Path, *seed: str) -> dict[str, torch.Tensor]:
    """The state of the random-weights AdaCLIP that ``predict`` builds (nothing is run)."""
    arguments = ["predict", "--model", "AdaCLIP", "--model.backbone", json.dumps(MICRO_BACKBONE)]
    arguments += ["--model.backbone_weights", "null", "--model.image_size", str(IMAGE_SIZE), "--data", str(data)]
    arguments += ["--trainer.accelerator", "cpu", "--default_root_dir", str(data.parent / "run"), *seed]
    return AdaCLIPCLI(arguments, run=False).model.state_dict()


def same(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> bool:
    """Bit for bit (the post-processor's unset thresholds are NaN on both sides)."""
    return all(torch.allclose(first[key], second[key], rtol=0, atol=0, equal_nan=True) for key in first)


def test_seed_everything_makes_the_random_weights_the_same(tmp_path: Path) -> None:
    data = tmp_path / "images"
    write_part_images(data, 1)
    first, again = built_model(data, "--seed_everything", "3"), built_model(data, "--seed_everything", "3")
    other = built_model(data, "--seed_everything", "4")
    assert first.keys() == again.keys() == other.keys()
    assert same(first, again)
    # Not vacuous: another seed (and anomalib's default, no seed) draws other weights.
    assert not same(first, other)
    unseeded = built_model(data)
    assert not same(first, unseeded)
