"""Verified released weights: the download is pinned to a revision and every released file is checked by sha256.

No real weights are fetched: the hub call is replaced, and the "released" file is a tiny generated checkpoint whose
sha256 is put into the expected-hash table for the test.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from anomalib_adaclip.weights import (
    HF_REPO_ID,
    RELEASED_CHECKPOINTS,
    RELEASED_REVISION,
    WEIGHTS_DIR_ENV,
    WeightsIntegrityError,
    download_released_checkpoint,
    file_sha256,
    read_checkpoint,
    to_released_layout,
)

# The values published by the mirror (issue 21), written out here so that a changed table fails this test.
PUBLISHED_SHA256 = {
    "all": "33e8d3db1cb4aab030866b8b70a46e10aa27ebf2c23b5463cb07f2574addd98c",
    "mvtec_colondb": "be51a42c052bd4cf060e54f503a1f5d0b2a3b899bc8dc2e243042f18b215427e",
    "visa_clinicdb": "3deabbbaf1e412cfdfcb42923a500b986f4b9ee96ccbc7a735d89dbc87df44c8",
}
WRONG_BYTES = b"not the released checkpoint"


@pytest.fixture
def tiny_released_file(make_model: Callable, tmp_path: Path) -> Path:
    """A tiny checkpoint in the released layout, saved as ``pretrained_visa_clinicdb.pth`` in its own folder."""
    torch.manual_seed(11)
    state = to_released_layout({k: torch.randn_like(v) for k, v in make_model().trainable_state_dict().items()})
    folder = tmp_path / "weights"
    folder.mkdir()
    torch.save(state, folder / "pretrained_visa_clinicdb.pth")
    return folder / "pretrained_visa_clinicdb.pth"


def _expect_sha256(monkeypatch: pytest.MonkeyPatch, name: str, path: Path) -> None:
    """Make ``path``'s bytes the published ones of ``name`` (the hash computed independently of the package)."""
    sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
    monkeypatch.setitem(RELEASED_CHECKPOINTS, name, dataclasses.replace(RELEASED_CHECKPOINTS[name], sha256=sha256))


def _no_hub(**_: object) -> str:
    pytest.fail("the hub must not be called")


def test_the_published_hashes_are_the_ones_checked() -> None:
    assert {name: released.sha256 for name, released in RELEASED_CHECKPOINTS.items()} == PUBLISHED_SHA256


def test_wrong_bytes_in_weights_dir_are_refused_naming_both_hashes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_model: Callable
) -> None:
    path = tmp_path / "pretrained_visa_clinicdb.pth"
    path.write_bytes(WRONG_BYTES)
    monkeypatch.setenv(WEIGHTS_DIR_ENV, str(tmp_path))
    monkeypatch.setattr("huggingface_hub.hf_hub_download", _no_hub)
    with pytest.raises(WeightsIntegrityError) as caught:
        make_model(checkpoint="visa_clinicdb")
    message = str(caught.value)
    assert str(path) in message
    assert hashlib.sha256(WRONG_BYTES).hexdigest() in message
    assert PUBLISHED_SHA256["visa_clinicdb"] in message
    assert f"huggingface-cli download {HF_REPO_ID} pretrained_visa_clinicdb.pth" in message  # what to do
    assert WEIGHTS_DIR_ENV in message


def test_right_bytes_in_weights_dir_load(
    tiny_released_file: Path, monkeypatch: pytest.MonkeyPatch, make_model: Callable
) -> None:
    _expect_sha256(monkeypatch, "visa_clinicdb", tiny_released_file)
    monkeypatch.setenv(WEIGHTS_DIR_ENV, str(tiny_released_file.parent))
    monkeypatch.setattr("huggingface_hub.hf_hub_download", _no_hub)
    model = make_model(checkpoint="visa_clinicdb")
    saved = torch.load(tiny_released_file, weights_only=True)
    for key, value in model.trainable_state_dict().items():
        torch.testing.assert_close(value, saved[f"clip_model.{key}"], rtol=0, atol=0)


def test_own_file_given_by_path_is_not_checked(tiny_released_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same bytes, refused under the released name, are the user's own file when given by path."""
    monkeypatch.setenv(WEIGHTS_DIR_ENV, str(tiny_released_file.parent))
    with pytest.raises(WeightsIntegrityError):
        read_checkpoint("visa_clinicdb")
    state_dict, config = read_checkpoint(tiny_released_file)
    assert config is None and "cls_token_layer.head.0.weight" in state_dict


def test_hub_download_is_pinned_and_verified(
    tiny_released_file: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls: list[dict[str, object]] = []

    def fake_hub_download(**kwargs: object) -> str:
        calls.append(kwargs)
        return str(tiny_released_file)

    monkeypatch.delenv(WEIGHTS_DIR_ENV, raising=False)
    monkeypatch.setattr("huggingface_hub.hf_hub_download", fake_hub_download)
    monkeypatch.setattr("anomalib_adaclip.weights.hub.host_reachable", lambda *_: True)
    assert re.fullmatch("[0-9a-f]{40}", RELEASED_REVISION), "the download is pinned to a commit, not a branch"
    with pytest.raises(WeightsIntegrityError, match="--force-download") as caught:  # a damaged cached download
        download_released_checkpoint("visa_clinicdb")
    assert hashlib.sha256(tiny_released_file.read_bytes()).hexdigest() in str(caught.value)
    _expect_sha256(monkeypatch, "visa_clinicdb", tiny_released_file)
    assert download_released_checkpoint("visa_clinicdb") == tiny_released_file
    expected = {"repo_id": HF_REPO_ID, "filename": "pretrained_visa_clinicdb.pth", "revision": RELEASED_REVISION}
    assert calls == [expected, expected]


def test_a_file_is_hashed_once_while_its_size_and_mtime_hold(tmp_path: Path) -> None:
    path = tmp_path / "weights.pth"
    path.write_bytes(b"A" * 1000)
    first = file_sha256(path)
    assert first == hashlib.sha256(b"A" * 1000).hexdigest()
    stat = path.stat()
    path.write_bytes(b"B" * 1000)  # same size; the mtime is set back, so the cached hash answers without reading
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert file_sha256(path) == first
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # a new mtime: hashed again
    assert file_sha256(path) == hashlib.sha256(b"B" * 1000).hexdigest()
