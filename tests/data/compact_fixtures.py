"""Maintainer tool: build the compacted test data in ``tests/data`` from the original files (not used by the tests).

Run from the repository root::

    python tests/data/compact_fixtures.py --source ../shared --dest tests/data

``--source`` holds ``reference/`` (the authors' reference outputs and the released-checkpoint manifest) and
``data/mvtec3d_tire_sample/``. Existing files in ``--dest`` are never overwritten unless ``--force`` is given.
What it does, and why it is lossless for everything the tests compare, is described in ``tests/data/README.md``:

- reference files: the token-embedding rows that no prompt sentence of the tests' class names reads are dropped
  (they read as zero); every other tensor keeps its exact values and is stored in a smaller, exactly invertible form:
  float bits as zlib-compressed byte planes; probability maps as a prediction from a fitted 16x16 logit grid plus
  the bit residual; 24-bit integers for the uniform-random images; uint8 for 0/1 masks. Each coded tensor
  carries the SHA-256 of its original bytes, which ``tests/data/fixture_codec.py`` checks when it decodes it; this
  script decodes every file again with that code and compares it with the original bit for bit.
- tire sample: masks, LICENSE.txt and the file layout are kept byte for byte; every image keeps its size (600x800)
  but its detail is reduced to 4x4-pixel blocks (the mean colour of each block), which PNG stores in a tenth of
  the space.

- RareCLIP's reference (``reference/rareclip_reference.pt``; ``--rareclip-only`` writes just it): the token
  table keeps the rows of the tokens of RareCLIP's prompt sentences, the images are stored as bytes, the other large
  tensors (CLIP weights, maps) as byte planes.
- MuSc's reference (``reference/musc_reference.pt``; ``--musc-only`` writes just it): what can be recomputed is
  dropped, the images are stored as bytes plus the values that are not, the maps as their float64 patch grid plus
  the bit residual, the other large tensors as byte planes.

A record of the sources, the outputs and the kept token ids is written to ``tests/data/MANIFEST.json``.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import io
import json
import shutil
import sys
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

from open_clip.tokenizer import SimpleTokenizer  # noqa: E402

try:  # the package layout being introduced (anomalib_adaclip/model/), else the flat one
    from anomalib_adaclip.model.prompting import PromptEnsemble
except ImportError:
    from anomalib_adaclip.prompting import PromptEnsemble
from tests.data.fixture_codec import (  # noqa: E402  (the tests' decoder)
    bilinear_grid_prediction,
    decode_fixture,
    sigmoid_grid_prediction,
)

REFERENCE_FILES = (
    "adaclip_tiny_reference.pt",
    "adaclip_variant_S_V.pt",
    "adaclip_variant_D_V.pt",
    "adaclip_variant_SD_V_depth2.pt",
)
VERBATIM_REFERENCE_FILES = ("released_checkpoint_manifest.json",)
# MuSc's reference outputs (tests/data/README.md, "MuSc reference"): compacted by compact_musc_reference.
MUSC_FILE = "musc_reference.pt"
# RareCLIP's reference outputs (tests/data/README.md, "RareCLIP reference"): compacted by compact_rareclip_reference.
RARECLIP_FILE = "rareclip_reference.pt"
TOKEN_TABLE = "token_embedding.weight"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
MIN_CODED_ELEMENTS = 4096  # smaller tensors are stored as they are
IMAGE_BLOCK = 4  # tire images: detail reduced to blocks of 4x4 pixels
# Class names (and other words) the tests give to models on the fixture's CLIP, beyond the string literals of the
# test files, which are all collected too (see class_name_candidates).
EXTRA_NAMES = (
    "bottle", "cable", "capsule", "carpet", "grid", "hazelnut", "leather", "metal_nut", "pill", "screw", "tile",
    "toothbrush", "transistor", "wood", "zipper", "candle", "capsules", "cashew", "chewinggum", "fryum", "macaroni1",
    "macaroni2", "pcb1", "pcb2", "pcb3", "pcb4", "pipe_fryum", "tire", "object", "part", "widget", "metal-nut",
    "pcb-board", "rubber tyre", "bolt", "nut", "Bottle", "bottle2",
)  # fmt: skip


def sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()).hexdigest()


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ----------------------------------------------------------------------------------------------------------------------
# Token ids the tests can read
# ----------------------------------------------------------------------------------------------------------------------
def class_name_candidates(tests_dir: Path) -> set[str]:
    """Every short string literal of the test files: a superset of the class names (and prompt words) they use."""
    names = set(EXTRA_NAMES)
    data_dir = Path(__file__).resolve().parent
    for path in sorted(tests_dir.rglob("*.py")):
        if path.resolve().is_relative_to(data_dir):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                text = node.value.strip()
                if text and len(text) <= 64 and "\n" not in text and any(character.isalpha() for character in text):
                    names.add(text)
    return names


def kept_token_ids(names: set[str]) -> list[int]:
    """Token ids of every default prompt sentence of every name, of each name alone, start, end and padding (0)."""
    tokenizer = SimpleTokenizer()
    ensemble = PromptEnsemble()
    ids = {0, tokenizer.sot_token_id, tokenizer.eot_token_id}
    for name in sorted(names):
        normal, abnormal = ensemble.sentences(name)
        for text in [*normal, *abnormal, name.replace("{}", " ")]:
            ids.update(tokenizer.encode(text))
    return sorted(ids)


# ----------------------------------------------------------------------------------------------------------------------
# Lossless codings (decoded by tests/data/fixture_codec.py: decode_fixture)
# ----------------------------------------------------------------------------------------------------------------------
def planes(words: np.ndarray, zigzag: bool) -> torch.Tensor:
    """32-bit words (zigzag-coded if they are signed residuals) as 4 byte planes ``[4, N]`` (little-endian), the
    planes one after the other, zlib-compressed (level 9) into a uint8 tensor."""
    words = np.ascontiguousarray(words).view(np.uint32)
    if zigzag:
        signed = words.view(np.int32)
        words = ((signed << 1) ^ (signed >> 31)).view(np.uint32)
    byte_planes = np.ascontiguousarray(words.astype("<u4").view(np.uint8).reshape(-1, 4).T)
    return torch.from_numpy(np.frombuffer(zlib.compress(byte_planes.tobytes(), 9), dtype=np.uint8).copy())


def encode_planes(array: np.ndarray) -> dict[str, Any]:
    return {
        "__encoded__": "planes",
        "dtype": str(array.dtype),
        "shape": list(array.shape),
        "data": planes(array, zigzag=False),
        "sha256": sha256(array),
    }


def bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """``[n_out, n_in]``: bilinear interpolation with align_corners=True, as a matrix (for the least-squares fit)."""
    source = np.arange(n_out) * (n_in - 1) / (n_out - 1)
    first = np.minimum(np.floor(source).astype(np.int64), n_in - 2)
    weight = source - first
    matrix = np.zeros((n_out, n_in))
    matrix[np.arange(n_out), first] = 1 - weight
    matrix[np.arange(n_out), first + 1] += weight
    return matrix


def encode_sigmoid_grid(probabilities: np.ndarray, grid_size: int, complement: np.ndarray | None) -> dict[str, Any]:
    """A probability map ``[..., H, W]`` that is the softmax of bilinear-upsampled patch logits: a least-squares fit
    of the logit grid ``[..., grid, grid]`` (float64), and the bit difference between the map and the float32
    prediction from that grid (zigzag, byte planes). The prediction only makes the residual small; the decoder adds
    the residual back, so the map is restored exactly. ``complement`` (the other softmax channel) sharpens the fit."""
    height, width = probabilities.shape[-2:]
    tiny = np.float64(1e-45)
    p = np.maximum(probabilities.astype(np.float64), tiny)
    q = np.maximum(complement.astype(np.float64), tiny) if complement is not None else np.maximum(1.0 - p, tiny)
    logits = np.log(p) - np.log(q)
    rows = np.linalg.pinv(bilinear_matrix(grid_size, height))
    columns = np.linalg.pinv(bilinear_matrix(grid_size, width))
    grid = rows @ logits @ columns.T
    predicted = sigmoid_grid_prediction(grid, height, width)
    residual = probabilities.view(np.uint32) - predicted.view(np.uint32)  # mod 2**32
    return {
        "__encoded__": "sigmoid_grid",
        "dtype": "float32",
        "shape": list(probabilities.shape),
        "grid": torch.from_numpy(np.ascontiguousarray(grid)),
        "residual": planes(residual, zigzag=True),
        "sha256": sha256(probabilities),
    }


def encode_cast(array: np.ndarray) -> dict[str, Any] | None:
    """0/1 values (masks, labels) as uint8, if that is exact."""
    small = array.astype(np.uint8)
    if small.astype(array.dtype).tobytes() != array.tobytes():
        return None
    return {
        "__encoded__": "cast",
        "dtype": str(array.dtype),
        "shape": list(array.shape),
        "data": torch.from_numpy(small),
        "sha256": sha256(array),
    }


def encode_uniform24(images: np.ndarray) -> dict[str, Any] | None:
    """Images that are exactly ``(k / 2**24 - mean) / std`` with 24-bit integers k (uniform random pixels)."""
    mean = np.array(CLIP_MEAN, dtype=np.float32)[:, None, None]
    std = np.array(CLIP_STD, dtype=np.float32)[:, None, None]
    estimate = np.round((images.astype(np.float64) * std + mean) * 2.0**24).astype(np.int64)
    found = np.full(images.shape, -1, dtype=np.int64)
    for offset in (0, -1, 1, -2, 2):
        k = np.clip(estimate + offset, 0, 2**24 - 1)
        exact = ((k.astype(np.float32) * np.float32(2.0**-24) - mean) / std).view(np.uint32) == images.view(np.uint32)
        found = np.where((found < 0) & exact, k, found)
    if (found < 0).any():
        return None
    k = found.astype(np.uint32).ravel()
    data = np.stack([(k >> shift) & 0xFF for shift in (0, 8, 16)]).astype(np.uint8)
    return {
        "__encoded__": "uniform24",
        "dtype": "float32",
        "shape": list(images.shape),
        "mean": list(CLIP_MEAN),
        "std": list(CLIP_STD),
        "data": torch.from_numpy(data),
        "sha256": sha256(images),
    }


def encode_softmax2(maps: np.ndarray, grid_size: int) -> dict[str, Any]:
    """``[..., 2, H, W]`` softmax maps: channel 1 as a sigmoid grid, channel 0 as its bit difference to
    ``1 - channel 1`` (exact in float32 wherever channel 1 is not close to 1)."""
    abnormal = np.ascontiguousarray(maps[..., 1, :, :])
    normal = np.ascontiguousarray(maps[..., 0, :, :])
    residual = normal.view(np.uint32) - (np.float32(1) - abnormal).view(np.uint32)  # mod 2**32
    return {
        "__encoded__": "softmax2",
        "dtype": "float32",
        "shape": list(maps.shape),
        "abnormal": encode_sigmoid_grid(abnormal, grid_size, complement=normal),
        "normal_residual": planes(residual, zigzag=True),
        "sha256": sha256(maps),
    }


def encode_rows(table: np.ndarray, index: list[int]) -> dict[str, Any]:
    """An embedding table of which only the rows ``index`` are kept (the others read as zero)."""
    kept = np.zeros_like(table)
    kept[index] = table[index]
    return {
        "__encoded__": "rows",
        "dtype": str(table.dtype),
        "shape": list(table.shape),
        "index": torch.tensor(index, dtype=torch.int64),
        "rows": encode_planes(np.ascontiguousarray(table[index])),
        "sha256": sha256(kept),
    }


def encode_tensor(tensor: torch.Tensor, key: str, grid_size: int) -> torch.Tensor | dict[str, Any]:
    """The smallest lossless form this script knows for one tensor, chosen by what it holds."""
    array = tensor.detach().cpu().numpy()
    if tensor.dtype != torch.float32 or tensor.numel() < MIN_CODED_ELEMENTS:
        return tensor
    if key in ("masks", "labels"):
        return encode_cast(array) or encode_planes(array)
    if key == "images":
        return encode_uniform24(array) or encode_planes(array)
    if key == "train_maps":
        return encode_softmax2(array, grid_size)
    if key == "test_map":
        return encode_sigmoid_grid(array, grid_size, complement=None)
    return encode_planes(array)


def compact_reference(data: dict[str, Any], token_ids: list[int]) -> dict[str, Any]:
    """The reference dict with every large tensor coded; the token table keeps only ``token_ids``."""
    settings = data["settings"]
    grid_size = settings["image_size"] // settings["vision_cfg"]["patch_size"]

    def walk(value: Any, key: str) -> Any:
        if isinstance(value, dict):
            return {name: walk(item, name) for name, item in value.items()}
        if isinstance(value, list):
            return [walk(item, key) for item in value]
        if isinstance(value, torch.Tensor):
            if key == TOKEN_TABLE:
                return encode_rows(value.numpy(), token_ids)
            return encode_tensor(value, key, grid_size)
        return value

    return walk(data, "")


def assert_restored(original: Any, restored: Any, token_ids: list[int], key: str = "") -> None:
    """Every tensor bitwise equal (same dtype and shape), except the token table's dropped rows, which are zero."""
    assert type(original) is type(restored), key
    if isinstance(original, dict):
        assert list(original) == list(restored), key
        for name in original:
            assert_restored(original[name], restored[name], token_ids, name)
    elif isinstance(original, list):
        assert len(original) == len(restored), key
        for a, b in zip(original, restored, strict=True):
            assert_restored(a, b, token_ids, key)
    elif isinstance(original, torch.Tensor):
        assert original.dtype == restored.dtype and original.shape == restored.shape, key
        if key == TOKEN_TABLE:
            kept = torch.zeros_like(original)
            kept[token_ids] = original[token_ids]
            original = kept
        assert original.numpy().tobytes() == restored.numpy().tobytes(), key
    else:
        assert original == restored, key


# ----------------------------------------------------------------------------------------------------------------------
# MuSc reference
# ----------------------------------------------------------------------------------------------------------------------
def encode_uint8_normalised(images: np.ndarray) -> dict[str, Any]:
    """Images that are ``(k / 255 - mean) / std`` with bytes k (decoded image files), except some values (a pasted
    square of float noise), which are kept verbatim with their flat indices."""
    mean = np.array(CLIP_MEAN, dtype=np.float32)[:, None, None]
    std = np.array(CLIP_STD, dtype=np.float32)[:, None, None]
    k = np.clip(np.round((images.astype(np.float64) * std + mean) * 255), 0, 255).astype(np.uint8)
    predicted = (k.astype(np.float32) / np.float32(255) - mean) / std
    exceptions = np.flatnonzero(predicted.view(np.uint32) != images.view(np.uint32))
    return {
        "__encoded__": "uint8_normalised",
        "dtype": "float32",
        "shape": list(images.shape),
        "mean": list(CLIP_MEAN),
        "std": list(CLIP_STD),
        "data": torch.from_numpy(np.frombuffer(zlib.compress(k.tobytes(), 9), dtype=np.uint8).copy()),
        "exception_index": torch.from_numpy(exceptions.astype(np.int64)),
        "exception_values": torch.from_numpy(images.reshape(-1)[exceptions].copy()),
        "sha256": sha256(images),
    }


def encode_bilinear_grid(maps: np.ndarray, grid: np.ndarray) -> dict[str, Any]:
    """float32 maps ``[N, 1, H, W]`` upsampled from the float64 grid ``[N, 1, h, w]``: the grid and the bit difference
    between the maps and the float32 prediction from it (zero almost everywhere)."""
    predicted = bilinear_grid_prediction(grid, *maps.shape[-2:])
    return {
        "__encoded__": "bilinear_grid",
        "dtype": "float32",
        "shape": list(maps.shape),
        "grid": torch.from_numpy(np.ascontiguousarray(grid)),
        "residual": planes(maps.view(np.uint32) - predicted.view(np.uint32), zigzag=True),
        "sha256": sha256(maps),
    }


# What the MuSc file leaves out (tests/data/README.md says how each is recomputed exactly or why it is not needed).
MUSC_DROPPED = ("state_dict_at_image_size", "patch_tokens[1:]", "lnamd_features['r5_layer0']")


def compact_musc_reference(data: dict[str, Any]) -> dict[str, Any]:
    """MuSc's reference outputs with what can be recomputed dropped and the large tensors coded losslessly."""
    config = data["config"]
    if config["model_image_size"] != config["image_size"] or any(
        not torch.equal(data["state_dict"][key], value) for key, value in data["state_dict_at_image_size"].items()
    ):
        msg = "state_dict_at_image_size differs from state_dict: it cannot be dropped"
        raise ValueError(msg)
    side = config["image_size"] // config["patch_size"]
    grid = data["patch_scores"].numpy().reshape(-1, 1, side, side)
    compact = {key: value for key, value in data.items() if key != "state_dict_at_image_size"}
    compact["dropped"] = list(MUSC_DROPPED)
    compact["state_dict"] = {key: encode_tensor(value, key, side) for key, value in data["state_dict"].items()}
    compact["images"] = encode_uint8_normalised(data["images"].numpy())
    compact["patch_tokens"] = [encode_planes(data["patch_tokens"][0].numpy())]
    compact["lnamd_features"] = {
        key: encode_planes(value.numpy()) for key, value in data["lnamd_features"].items() if key != "r5_layer0"
    }
    compact["anomaly_maps"] = encode_bilinear_grid(data["anomaly_maps"].numpy(), grid)
    return compact


def assert_musc_restored(original: dict[str, Any], restored: dict[str, Any]) -> None:
    """Every kept tensor of the MuSc file bitwise equal to the original."""
    expected = dict(original)
    del expected["state_dict_at_image_size"]
    expected["patch_tokens"] = original["patch_tokens"][:1]
    expected["lnamd_features"] = {k: v for k, v in original["lnamd_features"].items() if k != "r5_layer0"}
    expected["dropped"] = list(MUSC_DROPPED)
    assert_restored(expected, restored, [])


# ----------------------------------------------------------------------------------------------------------------------
# RareCLIP reference
# ----------------------------------------------------------------------------------------------------------------------
def rareclip_token_ids(context_length: int) -> list[int]:
    """The token ids of RareCLIP's prompt sentences (the only rows of the token table its text features read)."""
    from anomalib_adaclip.model.rarity import rareclip_sentences

    normal, abnormal = rareclip_sentences()
    tokens = SimpleTokenizer(context_length=context_length)(normal + abnormal)
    return sorted(int(token) for token in torch.unique(tokens))


def compact_rareclip_reference(data: dict[str, Any]) -> tuple[dict[str, Any], list[int]]:
    """RareCLIP's reference outputs with the unread token rows dropped and the large tensors coded losslessly."""
    config = data["settings"]["config"]
    side = data["settings"]["image_size"] // config["vision_cfg"]["patch_size"]
    token_ids = rareclip_token_ids(config["text_cfg"]["context_length"])
    compact = dict(data)
    compact["clip_state_dict"] = {
        key: encode_rows(value.numpy(), token_ids) if key == TOKEN_TABLE else encode_tensor(value, key, side)
        for key, value in data["clip_state_dict"].items()
    }
    compact["images"] = encode_uint8_normalised(data["images"].numpy())
    compact["maps"] = encode_planes(data["maps"].numpy())
    return compact, token_ids


def write_rareclip_reference(reference_source: Path, dest: Path, force: bool) -> int:
    """Write the compacted RareCLIP reference and record it in ``MANIFEST.json`` (which must exist)."""
    target = dest / "reference" / RARECLIP_FILE
    if target.exists() and not force:
        print(f"{target} exists already; use --force to overwrite", file=sys.stderr)
        return 1
    source = reference_source / RARECLIP_FILE
    original = torch.load(source, weights_only=True)
    compact, token_ids = compact_rareclip_reference(original)
    buffer = io.BytesIO()
    torch.save(compact, buffer)
    assert_restored(original, decode_fixture(torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)), token_ids)
    target.write_bytes(buffer.getvalue())
    manifest_path = dest / "MANIFEST.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    manifest["files"][f"reference/{RARECLIP_FILE}"] = {
        "source_sha256": file_sha256(source),
        "sha256": file_sha256(target),
        "kept_token_ids": token_ids,
    }
    manifest_path.write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"reference/{RARECLIP_FILE}: {source.stat().st_size} -> {len(buffer.getvalue())} bytes")
    return 0


# ----------------------------------------------------------------------------------------------------------------------
# Tire sample
# ----------------------------------------------------------------------------------------------------------------------
TIRE_README = """\
# MVTec 3D-AD "tire", RGB sample (real defect masks, images reduced in detail)

A small subset of the RGB images of the "tire" category of MVTec 3D-AD, in the MVTec AD folder
layout, so that anomalib's `MVTecAD(root=<this folder>, category="tire")` and `Folder` data
modules read it without any download:

- `tire/train/good/`: 4 defect-free images
- `tire/test/good/`: 6 defect-free images
- `tire/test/{cut,hole,contamination}/`: 3 defective images each
- `tire/ground_truth/<defect>/<stem>_mask.png`: one mask per defective image

Images are 600x800 (width x height) RGB PNG; masks are single-channel with values 0 and one
non-zero value (255 for contamination, 254 for cut, 253 for hole), and the defects are small
(well under 1% of the image).

**Changes from the original** (made by `tests/data/compact_fixtures.py` of anomalib-adaclip, to keep
the repository small): every image's detail is reduced to blocks of {block}x{block} pixels: each block
holds the mean colour of the original block (Pillow `Image.reduce({block})`, then a nearest-neighbour
resize back to 600x800), re-encoded as PNG. Sizes, file names, layout and the masks (byte for byte)
are the original ones. The masks still mark the defects exactly; in the images the defects are blurred.

Source: MVTec 3D-AD (Bergmann et al., 2021), Copyright 2021 MVTec Software GmbH, licensed under
CC BY-NC-SA 4.0 (see LICENSE.txt). The adapted images are shared under the same licence. Test data
only: it is not part of the package (not installed, not in the wheel) and not covered by the
project's Apache-2.0 licence.
"""


def reduce_detail(source: Path) -> bytes:
    """The image with each ``IMAGE_BLOCK``-pixel block replaced by its mean colour, same size, as PNG bytes."""
    image = Image.open(source)
    mode = image.mode
    image = image.convert("RGB")
    width, height = image.size
    if width % IMAGE_BLOCK or height % IMAGE_BLOCK:
        msg = f"{source}: {width}x{height} is not a multiple of {IMAGE_BLOCK}"
        raise ValueError(msg)
    blocky = image.reduce(IMAGE_BLOCK).resize((width, height), Image.Resampling.NEAREST).convert(mode)
    buffer = io.BytesIO()
    blocky.save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


def tire_outputs(source: Path) -> dict[str, bytes]:
    """Relative path -> bytes of every file of the compacted sample."""
    outputs: dict[str, bytes] = {}
    for path in sorted(source.rglob("*")):
        if not path.is_file():
            continue
        relative = path.relative_to(source).as_posix()
        if relative == "README.md":
            outputs[relative] = TIRE_README.replace("{block}", str(IMAGE_BLOCK)).encode()
        elif path.suffix == ".png" and "/ground_truth/" not in f"/{relative}":
            outputs[relative] = reduce_detail(path)
        else:  # masks, LICENSE.txt
            outputs[relative] = path.read_bytes()
    return outputs


# ----------------------------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, required=True, help="folder with reference/ and data/")
    parser.add_argument("--dest", type=Path, required=True, help="tests/data")
    parser.add_argument("--tests", type=Path, default=REPO_ROOT / "tests", help="test files to collect names from")
    parser.add_argument("--force", action="store_true", help="overwrite existing files")
    parser.add_argument(
        "--musc-only", action="store_true", help=f"write only reference/{MUSC_FILE} and its entry of MANIFEST.json"
    )
    parser.add_argument(
        "--rareclip-only",
        action="store_true",
        help=f"write only reference/{RARECLIP_FILE} and its entry of MANIFEST.json",
    )
    args = parser.parse_args(argv)
    if args.rareclip_only:
        return write_rareclip_reference(args.source / "reference", args.dest, args.force)
    if args.musc_only:
        return write_musc_reference(args.source / "reference", args.dest, args.force)

    reference_source = args.source / "reference"
    tire_source = args.source / "data" / "mvtec3d_tire_sample"
    reference_dest = args.dest / "reference"
    tire_dest = args.dest / "mvtec3d_tire_sample"
    manifest_path = args.dest / "MANIFEST.json"

    tire_files = tire_outputs(tire_source)
    targets = [
        reference_dest / name for name in (*REFERENCE_FILES, *VERBATIM_REFERENCE_FILES, MUSC_FILE, RARECLIP_FILE)
    ]
    targets += [tire_dest / relative for relative in tire_files]
    targets.append(manifest_path)
    existing = [path for path in targets if path.exists()]
    if existing and not args.force:
        print(f"{len(existing)} files exist already, e.g. {existing[0]}; use --force to overwrite", file=sys.stderr)
        return 1

    originals = {name: torch.load(reference_source / name, weights_only=True) for name in REFERENCE_FILES}
    names = class_name_candidates(args.tests)
    for data in originals.values():
        names.update(data["settings"]["class_names"])
        names.update(data["classes"])
    token_ids = kept_token_ids(names)
    print(f"{len(names)} candidate names -> {len(token_ids)} token ids kept")

    manifest: dict[str, Any] = {
        "tool": "tests/data/compact_fixtures.py",
        "kept_token_ids": token_ids,
        "candidate_names": sorted(names),
        "files": {},
    }
    reference_dest.mkdir(parents=True, exist_ok=True)
    for name, data in originals.items():
        compact = compact_reference(data, token_ids)
        buffer = io.BytesIO()
        torch.save(compact, buffer)
        restored = decode_fixture(torch.load(io.BytesIO(buffer.getvalue()), weights_only=True), name)
        assert_restored(data, restored, token_ids)
        (reference_dest / name).write_bytes(buffer.getvalue())
        manifest["files"][f"reference/{name}"] = {
            "source_sha256": file_sha256(reference_source / name),
            "sha256": file_sha256(reference_dest / name),
        }
        print(f"reference/{name}: {(reference_source / name).stat().st_size} -> {len(buffer.getvalue())} bytes")
    for name in VERBATIM_REFERENCE_FILES:
        shutil.copyfile(reference_source / name, reference_dest / name)
        manifest["files"][f"reference/{name}"] = {"source_sha256": file_sha256(reference_source / name), "copy": True}
    for relative, content in tire_files.items():
        target = tire_dest / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        manifest["files"][f"mvtec3d_tire_sample/{relative}"] = {
            "source_sha256": file_sha256(tire_source / relative),
            "sha256": hashlib.sha256(content).hexdigest(),
        }
    manifest_path.write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    write_musc_reference(reference_source, args.dest, force=True)
    write_rareclip_reference(reference_source, args.dest, force=True)
    print(f"wrote {len(targets)} files under {args.dest}")
    return 0


def write_musc_reference(reference_source: Path, dest: Path, force: bool) -> int:
    """Write the compacted MuSc reference and record it in ``MANIFEST.json`` (which must exist)."""
    target = dest / "reference" / MUSC_FILE
    if target.exists() and not force:
        print(f"{target} exists already; use --force to overwrite", file=sys.stderr)
        return 1
    source = reference_source / MUSC_FILE
    original = torch.load(source, weights_only=True)
    buffer = io.BytesIO()
    torch.save(compact_musc_reference(original), buffer)
    assert_musc_restored(original, decode_fixture(torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)))
    target.write_bytes(buffer.getvalue())
    manifest_path = dest / "MANIFEST.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    manifest["files"][f"reference/{MUSC_FILE}"] = {
        "source_sha256": file_sha256(source),
        "sha256": file_sha256(target),
        "dropped": list(MUSC_DROPPED),
    }
    manifest_path.write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"reference/{MUSC_FILE}: {source.stat().st_size} -> {len(buffer.getvalue())} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
