"""The exactly invertible coding of the reference fixtures in ``tests/data/reference``: the decoding side.

``compact_fixtures.py`` (beside this file) writes the files; this module restores their tensors to the authors'
original values and dtypes for the tests (``tests/conftest.py: load_reference``). ``tests/data/README.md`` describes
each coding and why it exists (a small repository).
"""

from __future__ import annotations

import hashlib
import zlib
from typing import Any

import numpy as np
import pytest
import torch

__all__ = ["bilinear_grid_prediction", "decode_fixture", "sigmoid_grid_prediction"]

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


def bilinear_grid_prediction(grid: np.ndarray, height: int, width: int) -> np.ndarray:
    """float32 of a float64 grid upsampled bilinearly (align_corners=True): what a MuSc map's residual is added to."""
    return _upsample(grid, height, width).astype(np.float32)


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
    elif codec == "uint8_normalised":  # images (k / 255 - mean) / std per channel, k a byte; some values verbatim
        k = np.frombuffer(zlib.decompress(encoded["data"].numpy().tobytes()), dtype=np.uint8).reshape(shape)
        mean = np.array(encoded["mean"], dtype=np.float32)[:, None, None]
        std = np.array(encoded["std"], dtype=np.float32)[:, None, None]
        array = (k.astype(np.float32) / np.float32(255) - mean) / std
        array.reshape(-1)[encoded["exception_index"].numpy()] = encoded["exception_values"].numpy()
    elif codec == "bilinear_grid":  # maps upsampled from a float64 grid (align_corners=True), stored as float32
        predicted = bilinear_grid_prediction(encoded["grid"].numpy(), *shape[-2:])
        array = (predicted.view(np.uint32) + _words(encoded["residual"], shape, zigzag=True)).view(np.float32)
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
