"""Shared fixtures: the reference outputs of the authors' code, tiny random CLIP backbones, and model factories.

The tests never download anything and read nothing outside the repository: the reference outputs and the tire sample
are in ``tests/data`` (see ``tests/data/README.md``), backbones are tiny random CLIPs built from open_clip config
dicts, and the Hugging Face hub is switched to offline mode for the whole session.
"""

from __future__ import annotations

import hashlib
import os
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

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


# The reference files are stored in a smaller, exactly invertible form (tests/data/compact_fixtures.py writes them,
# tests/data/README.md describes it). Decoding uses only NumPy's element-wise +, -, *, / and exact operations (no libm,
# no BLAS, no reductions), so it gives the same bits on any IEEE-754 host (checked with NumPy's AVX-512, AVX2 and
# baseline SSE loops); each tensor's SHA-256 is checked, so a host where it did not would fail loudly.
_LN2 = 0.6931471805599453


def _words(planes: torch.Tensor, shape: list[int], zigzag: bool) -> np.ndarray:
    """uint32 words from zlib-compressed byte planes ``[4, N]`` (little-endian), zigzag-decoded for signed residuals."""
    planes = np.frombuffer(zlib.decompress(planes.numpy().tobytes()), dtype=np.uint8).reshape(4, -1)
    words = np.ascontiguousarray(planes.T).view("<u4").reshape(shape).astype(np.uint32)
    return (words >> np.uint32(1)) ^ (np.uint32(0) - (words & np.uint32(1))) if zigzag else words


def _exp(x: np.ndarray) -> np.ndarray:
    """exp in float64 from +, -, *, / and ldexp only (a degree-16 Taylor polynomial after range reduction)."""
    n = np.round(x / _LN2)
    r = x - n * _LN2
    p = np.ones_like(r)
    for k in range(16, 0, -1):
        p = 1.0 + r * p / k
    return np.ldexp(p, n.astype(np.int32))


def _upsample(grid: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear upsampling of the last two axes with align_corners=True, in float64."""

    def weights(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
        source = np.arange(n_out, dtype=np.float64) * ((n_in - 1) / (n_out - 1))
        first = np.minimum(np.floor(source).astype(np.int64), n_in - 2)
        return first, source - first

    (row, row_weight), (column, column_weight) = weights(grid.shape[-2], height), weights(grid.shape[-1], width)
    rows = grid[..., row, :] * (1.0 - row_weight)[:, None] + grid[..., row + 1, :] * row_weight[:, None]
    return rows[..., column] * (1.0 - column_weight) + rows[..., column + 1] * column_weight


def sigmoid_grid_prediction(grid: np.ndarray, height: int, width: int) -> np.ndarray:
    """float32 sigmoid of a bilinear-upsampled logit grid: what a probability map's stored residual is added to."""
    logits = np.clip(_upsample(grid, height, width), -700.0, 700.0)
    return (1.0 / (1.0 + _exp(-logits))).astype(np.float32)


def _decode_tensor(encoded: dict[str, Any], where: str) -> torch.Tensor:
    """One coded tensor, restored to its original values and dtype, and checked against its SHA-256."""
    codec, shape = encoded["__encoded__"], encoded["shape"]
    if codec == "cast":  # 0/1 values stored as uint8
        array = encoded["data"].numpy().astype(encoded["dtype"])
    elif codec == "planes":  # float32 bits as 4 byte planes, so that zlib compresses the exponent bytes
        array = _words(encoded["data"], shape, zigzag=False).view(encoded["dtype"])
    elif codec == "rows":  # an embedding table of which only some rows are kept; the others are zero
        array = np.zeros(shape, dtype=encoded["dtype"])
        array[encoded["index"].numpy()] = _decode_tensor(encoded["rows"], where).numpy()
    elif codec == "uniform24":  # images (k / 2**24 - mean) / std per channel, k a 24-bit integer
        planes = encoded["data"].numpy().astype(np.uint32)
        k = (planes[0] | planes[1] << np.uint32(8) | planes[2] << np.uint32(16)).reshape(shape)
        mean = np.array(encoded["mean"], dtype=np.float32)[:, None, None]
        std = np.array(encoded["std"], dtype=np.float32)[:, None, None]
        array = (k.astype(np.float32) * np.float32(2.0**-24) - mean) / std
    elif codec == "sigmoid_grid":  # a probability map: a prediction from a logit grid plus the bit residual
        predicted = sigmoid_grid_prediction(encoded["grid"].numpy(), *shape[-2:])
        array = (predicted.view(np.uint32) + _words(encoded["residual"], shape, zigzag=True)).view(np.float32)
    elif codec == "softmax2":  # softmax maps [..., 2, H, W]: the abnormal channel, and the normal one against 1 - it
        abnormal = _decode_tensor(encoded["abnormal"], where).numpy()
        residual = _words(encoded["normal_residual"], list(abnormal.shape), zigzag=True)
        normal = ((np.float32(1) - abnormal).view(np.uint32) + residual).view(np.float32)
        array = np.stack([normal, abnormal], axis=-3)
    else:
        pytest.fail(f"{where}: unknown fixture coding {codec!r}")
    array = np.ascontiguousarray(array, dtype=encoded["dtype"]).reshape(shape)
    if hashlib.sha256(array.astype(array.dtype.newbyteorder("<")).tobytes()).hexdigest() != encoded["sha256"]:
        pytest.fail(f"{where}: decoded tensor differs from the original (SHA-256); see tests/data/README.md")
    return torch.from_numpy(array)


def decode_fixture(value: Any, where: str = "fixture") -> Any:
    """A reference file's content with its coded tensors restored to the authors' original values and dtypes."""
    if isinstance(value, dict):
        if "__encoded__" in value:
            return _decode_tensor(value, where)
        return {key: decode_fixture(item, f"{where}[{key!r}]") for key, item in value.items()}
    if isinstance(value, list):
        return [decode_fixture(item, f"{where}[{index}]") for index, item in enumerate(value)]
    return value


def load_reference(name: str = REFERENCE_FILE) -> dict[str, Any]:
    """Load a reference file of the authors' implementation from tests/data/reference; a missing one is a failure."""
    path = REFERENCE_DIR / name
    if not path.is_file():
        pytest.fail(f"reference outputs missing: {path} (tests/data is part of the repository; see its README.md)")
    return decode_fixture(torch.load(path, weights_only=True), name)


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
