"""``anomalib-adaclip quickstart``'s checks before anything is built: every missing input named, nothing downloaded.

The smoke run itself (an Engine run through the console script) is in ``tests/integration/test_cli.py``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from pathlib import Path
from typing import Any

import pytest

from anomalib_adaclip import cli
from anomalib_adaclip.cli import quickstart
from anomalib_adaclip.data.synthetic import generate_defect_dataset
from anomalib_adaclip.weights import RELEASED_CHECKPOINTS


def _isolated_caches(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No weights anywhere: an empty Hugging Face cache and no ADACLIP_WEIGHTS_DIR."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    monkeypatch.delenv("ADACLIP_WEIGHTS_DIR", raising=False)


def test_quickstart_offline_stops_at_once_and_names_every_missing_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from huggingface_hub import constants

    # Unreachable hosts, not an offline switch: the check must not wait for the hub client's retries.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(quickstart, "host_reachable", lambda *args, **kwargs: False)
    monkeypatch.delenv(quickstart.OFFLINE_ENV, raising=False)
    _isolated_caches(monkeypatch, tmp_path)
    root = tmp_path / "MVTecAD"
    start = time.perf_counter()
    exit_code = cli.main(["quickstart", "--root", str(root), "--output", str(tmp_path / "out")])
    elapsed = time.perf_counter() - start
    message = capsys.readouterr().err
    assert exit_code == 2
    assert elapsed < 10, f"the offline check took {elapsed:.1f} s"
    assert "3 input(s) are missing" in message
    assert f"{root / 'bottle'} does not exist" in message and "--root" in message
    assert "pretrained_visa_clinicdb.pth" in message and "ADACLIP_WEIGHTS_DIR" in message
    assert "'openai' weights of backbone 'ViT-L-14-336'" in message
    assert not (tmp_path / "out").exists()  # nothing was built or written
    assert constants.HF_HUB_OFFLINE is False  # the cache-only switch is undone


def test_quickstart_names_only_what_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv(quickstart.OFFLINE_ENV, "1")
    _isolated_caches(monkeypatch, tmp_path)
    root = tmp_path / "MVTecAD"
    generate_defect_dataset(root, "bottle", n_train=1, n_good=1, n_defect=1, size=32)
    assert cli.main(["quickstart", "--root", str(root)]) == 2
    message = capsys.readouterr().err
    assert "2 input(s) are missing" in message and "downloads are disabled (ADACLIP_OFFLINE=1)" in message
    assert "MVTec AD category" not in message
    # A category folder without test images is reported as incomplete, not downloaded over.
    (root / "screw").mkdir()
    assert cli.main(["quickstart", "--root", str(root), "--category", "screw"]) == 2
    assert f"{root / 'screw'} exists but" in capsys.readouterr().err


def test_quickstart_uses_local_files_without_any_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _isolated_caches(monkeypatch, tmp_path)
    monkeypatch.setattr(quickstart, "host_reachable", lambda *args, **kwargs: pytest.fail("no probe needed"))
    weights_dir = tmp_path / "weights"
    weights_dir.mkdir()
    for name in ("pretrained_visa_clinicdb.pth", "ViT-L-14-336-openai.safetensors"):
        (weights_dir / name).write_bytes(b"")  # only located (and the checkpoint's sha256 checked) here
    empty = dataclasses.replace(RELEASED_CHECKPOINTS["visa_clinicdb"], sha256=hashlib.sha256(b"").hexdigest())
    monkeypatch.setitem(RELEASED_CHECKPOINTS, "visa_clinicdb", empty)
    monkeypatch.setenv("ADACLIP_WEIGHTS_DIR", str(weights_dir))
    root = tmp_path / "MVTecAD"
    generate_defect_dataset(root, "bottle", n_train=1, n_good=1, n_defect=1, size=32)
    inputs = quickstart.resolve_inputs(root, "bottle")
    assert inputs.checkpoint == weights_dir / "pretrained_visa_clinicdb.pth"
    assert inputs.backbone_weights == weights_dir / "ViT-L-14-336-openai.safetensors"
    assert inputs.dataset_root == root and not inputs.download_dataset


def test_quickstart_downloads_nothing_while_the_dataset_is_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    _isolated_caches(monkeypatch, tmp_path)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv(quickstart.OFFLINE_ENV, raising=False)
    # The hub answers, the data set's host does not.
    monkeypatch.setattr(quickstart, "host_reachable", lambda url, *args, **kwargs: url == constants.ENDPOINT)
    lookups = []
    original = quickstart.locate_weights

    def cache_only(*args: Any, local_only: bool) -> Any:
        lookups.append(local_only)
        return original(*args, local_only=True)

    monkeypatch.setattr(quickstart, "locate_weights", cache_only)
    with pytest.raises(quickstart.MissingInputsError) as error:
        quickstart.resolve_inputs(tmp_path / "MVTecAD", "bottle")
    assert lookups == [True]  # the cache only: no download of the weights
    assert "1 input(s) are missing" in str(error.value)
    assert "weights are downloadable" in str(error.value)
