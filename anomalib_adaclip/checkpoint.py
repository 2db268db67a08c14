"""AdaCLIP checkpoints: safe file loading, the released checkpoints, and the two key layouts.

Two layouts hold the same trainable tensors (prompts, prompt generators, projections; never the frozen CLIP):

- the *released* layout of the authors' files: a flat state dict whose keys start with ``clip_model.``;
- *our* layout: ``{"format": "anomalib_adaclip", "version": 1, "config": {...}, "state_dict": {...}}`` with the keys
  of :class:`~anomalib_adaclip.torch_model.AdaCLIPModel` (no prefix) and the model configuration next to them.

Files are read without executing pickled code: ``.safetensors`` through safetensors, everything else through
``torch.load(weights_only=True)``.

The released checkpoints are fetched from the Hugging Face hub (repository ``cubert-gmbh/adaclip``) into the standard
Hugging Face cache, or found in the folder named by the ``ADACLIP_WEIGHTS_DIR`` environment variable.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import socket
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from urllib.request import getproxies

import torch

logger = logging.getLogger(__name__)

__all__ = [
    "CHECKPOINT_FORMAT",
    "HF_REPO_ID",
    "RELEASED_CHECKPOINTS",
    "RELEASED_PREFIX",
    "WEIGHTS_DIR_ENV",
    "CheckpointError",
    "ReleasedCheckpoint",
    "WeightsNotFoundError",
    "check_state_dict",
    "download_released_checkpoint",
    "from_released_layout",
    "host_reachable",
    "hub_access",
    "hub_cache_only",
    "load_state_dict_file",
    "read_checkpoint",
    "save_checkpoint",
    "to_released_layout",
]

HF_REPO_ID = "cubert-gmbh/adaclip"
RELEASED_PREFIX = "clip_model."
CHECKPOINT_FORMAT = "anomalib_adaclip"
CHECKPOINT_VERSION = 1
WEIGHTS_DIR_ENV = "ADACLIP_WEIGHTS_DIR"
WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")


class CheckpointError(ValueError):
    """A weights or checkpoint file that cannot be used (corrupt, unsafe, wrong layout or shapes)."""


class WeightsNotFoundError(FileNotFoundError):
    """Weights that are neither on disk nor downloadable (for example offline with an empty cache)."""


@dataclass(frozen=True)
class ReleasedCheckpoint:
    """A checkpoint released by the AdaCLIP authors.

    Attributes:
        name: Short name used for ``checkpoint=...``.
        filename: File name in the hub repository and in ``ADACLIP_WEIGHTS_DIR``.
        trained_on: Auxiliary data the prompts were trained on.
        use_for: Target data the checkpoint is meant for in the paper's protocol.
    """

    name: str
    filename: str
    trained_on: str
    use_for: str


RELEASED_CHECKPOINTS: dict[str, ReleasedCheckpoint] = {
    checkpoint.name: checkpoint
    for checkpoint in (
        ReleasedCheckpoint(
            "mvtec_colondb",
            "pretrained_mvtec_colondb.pth",
            "MVTec AD + ColonDB (test splits)",
            "every data set except MVTec AD and ColonDB (VisA, MPDD, BTAD, medical, ...)",
        ),
        ReleasedCheckpoint(
            "visa_clinicdb",
            "pretrained_visa_clinicdb.pth",
            "VisA + ClinicDB (test splits)",
            "MVTec AD and ColonDB",
        ),
        ReleasedCheckpoint(
            "all",
            "pretrained_all.pth",
            "every data set of the paper",
            "demos only: it has seen the test data of every benchmark",
        ),
    )
}


def _unwrap_state_dict(content: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(content, Mapping) and "state_dict" in content and isinstance(content["state_dict"], Mapping):
        content = content["state_dict"]
    if not isinstance(content, Mapping) or not all(isinstance(value, torch.Tensor) for value in content.values()):
        msg = f"{path} does not hold a state dict (a mapping of names to tensors); got {type(content).__name__}."
        raise CheckpointError(msg)
    state_dict = dict(content)
    if state_dict and all(key.startswith("module.") for key in state_dict):
        state_dict = {key.removeprefix("module."): value for key, value in state_dict.items()}
    return state_dict


def _is_torchscript_archive(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.split("/", 2)[1:2] == ["constants.pkl"] for name in archive.namelist())


def _torch_load(path: Path) -> Any:
    """``torch.load`` that never executes pickled code and turns every failure into one clear error."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        msg = (
            f"Refusing to load {path}: it holds more than tensors and unpickling it could execute code "
            f"(torch.load(weights_only=True) rejected it: {str(error).splitlines()[0]}). Convert it to a state dict "
            f"of tensors or to .safetensors where you trust its origin."
        )
        raise CheckpointError(msg) from error
    except Exception as error:  # torch raises RuntimeError, EOFError, KeyError, ... for damaged files
        msg = f"{path} cannot be read as a torch file (truncated download or wrong format?): {error!r}"
        raise CheckpointError(msg) from error


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from a file without executing pickled code.

    Accepts ``.safetensors``, plain ``torch.save`` files (``.pt``, ``.pth``, ``.bin``, ``.ckpt``; a ``state_dict``
    entry is unwrapped, a ``module.`` prefix removed) and OpenAI's TorchScript CLIP archives.

    Args:
        path: The file.

    Returns:
        The tensors by name, on the CPU.

    Raises:
        FileNotFoundError: The file does not exist.
        CheckpointError: The file is truncated, corrupt, not a state dict, or would execute code when unpickled.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        msg = f"Weights file not found: {path}" + (" (it is a directory)" if path.is_dir() else "")
        raise FileNotFoundError(msg)
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError  # noqa: PLC0415
        from safetensors.torch import load_file  # noqa: PLC0415

        try:
            return load_file(path, device="cpu")
        except (SafetensorError, OSError) as error:
            msg = f"{path} is not a readable safetensors file (truncated or corrupt?): {error}"
            raise CheckpointError(msg) from error
    if _is_torchscript_archive(path):
        # OpenAI's original CLIP files are TorchScript archives: TorchScript code, not pickled Python objects.
        try:
            archive = torch.jit.load(str(path), map_location="cpu")
        except RuntimeError as error:
            msg = f"{path} is a TorchScript archive that cannot be read (truncated or corrupt?): {error}"
            raise CheckpointError(msg) from error
        state_dict = archive.state_dict()
        for key in ("input_resolution", "context_length", "vocab_size", "attn_mask"):
            state_dict.pop(key, None)
        return _unwrap_state_dict(state_dict, path)
    return _unwrap_state_dict(_torch_load(path), path)


def check_state_dict(
    expected: Mapping[str, torch.Tensor],
    given: Mapping[str, torch.Tensor],
    what: str,
    ignore_unexpected: tuple[str, ...] = (),
) -> None:
    """Raise one error listing every missing key, unexpected key and shape mismatch between two state dicts.

    Args:
        expected: The state dict of the module to load into.
        given: The state dict to load.
        what: Names the source in the error (a file, "the backbone weights", ...).
        ignore_unexpected: Key prefixes whose presence in ``given`` is tolerated.

    Raises:
        CheckpointError: Keys or shapes differ.
    """
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(key for key in set(given) - set(expected) if not key.startswith(ignore_unexpected))
    mismatched = [
        f"{key}: expected {tuple(expected[key].shape)}, got {tuple(given[key].shape)}"
        for key in expected
        if key in given and tuple(expected[key].shape) != tuple(given[key].shape)
    ]
    if not (missing or unexpected or mismatched):
        return
    problems = []
    for title, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", mismatched)):
        if items:
            shown = "\n    ".join(items[:20]) + (f"\n    ... and {len(items) - 20} more" if len(items) > 20 else "")
            problems.append(f"  {len(items)} {title}:\n    {shown}")
    if mismatched:
        problems.append("  (shape mismatches mean another backbone, image size or prompt setting than the model's)")
    msg = f"{what} does not fit the model:\n" + "\n".join(problems)
    raise CheckpointError(msg)


def to_released_layout(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Prefix every key with ``clip_model.``, the layout the authors' code loads."""
    return {RELEASED_PREFIX + key: value for key, value in state_dict.items()}


def from_released_layout(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip the ``clip_model.`` prefix of a released checkpoint; keys without it are kept as they are."""
    return {key.removeprefix(RELEASED_PREFIX): value for key, value in state_dict.items()}


def _weights_dir_candidate(filename: str) -> Path | None:
    folder = os.environ.get(WEIGHTS_DIR_ENV)
    if folder and (Path(folder).expanduser() / filename).is_file():
        return Path(folder).expanduser() / filename
    return None


def _hf_cache_dir() -> str:
    try:
        from huggingface_hub.constants import HF_HUB_CACHE  # noqa: PLC0415
    except ImportError:  # pragma: no cover - huggingface_hub comes with open_clip
        return "~/.cache/huggingface/hub"
    return str(HF_HUB_CACHE)


def host_reachable(url: str, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the host of ``url`` (or to the configured proxy) opens within ``timeout`` s."""
    target = urlparse(url)
    proxy = getproxies().get(target.scheme)
    if proxy:
        target = urlparse(proxy if "://" in proxy else f"http://{proxy}")
    port = target.port or (443 if target.scheme == "https" else 80)
    try:
        with socket.create_connection((target.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def hub_cache_only(active: bool = True) -> Iterator[None]:
    """Inside the block (when ``active``), Hugging Face lookups answer from the local cache only: no requests."""
    from huggingface_hub import constants  # noqa: PLC0415

    if not active or constants.HF_HUB_OFFLINE:
        yield
        return
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = False


@contextlib.contextmanager
def hub_access() -> Iterator[None]:
    """Let Hugging Face hub calls inside the block fail at once when the hub is unreachable.

    Without network the hub client retries for about a minute before it gives up; when a quick connection test
    fails, the block runs in the client's offline mode instead, which answers from the cache or fails immediately.
    """
    from huggingface_hub import constants  # noqa: PLC0415

    unreachable = not constants.HF_HUB_OFFLINE and not host_reachable(constants.ENDPOINT)
    if unreachable:
        logger.info("%s is unreachable: looking up Hugging Face files in the local cache only.", constants.ENDPOINT)
    with hub_cache_only(unreachable):
        yield


def download_released_checkpoint(name: str) -> Path:
    """Return the local path of a released checkpoint, downloading it into the Hugging Face cache when missing.

    ``ADACLIP_WEIGHTS_DIR`` is searched first for the checkpoint's file name.

    Args:
        name: ``"mvtec_colondb"``, ``"visa_clinicdb"`` or ``"all"``.

    Raises:
        ValueError: Unknown name.
        WeightsNotFoundError: Not on disk and not downloadable (offline, no cache).
    """
    if name not in RELEASED_CHECKPOINTS:
        msg = f"Unknown released AdaCLIP checkpoint {name!r}; choose one of {sorted(RELEASED_CHECKPOINTS)} or a path."
        raise ValueError(msg)
    filename = RELEASED_CHECKPOINTS[name].filename
    if (local := _weights_dir_candidate(filename)) is not None:
        return local
    from huggingface_hub import hf_hub_download  # noqa: PLC0415

    try:
        with hub_access():
            return Path(hf_hub_download(repo_id=HF_REPO_ID, filename=filename))
    except Exception as error:  # the hub raises many types (offline, HTTP, missing file)
        msg = (
            f"The released AdaCLIP checkpoint {name!r} ({filename}) is not available: it is not in the Hugging Face "
            f"cache ({_hf_cache_dir()}) and downloading it from https://huggingface.co/{HF_REPO_ID} failed "
            f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}).\n"
            f"Supply it in one of these ways:\n"
            f"  - pass its path: checkpoint='/path/to/{filename}' (--model.checkpoint /path/to/{filename});\n"
            f"  - put {filename} into a folder and set {WEIGHTS_DIR_ENV}=/that/folder;\n"
            f"  - download it once online: huggingface-cli download {HF_REPO_ID} {filename} "
            f"(fills the cache; set HF_HOME or HF_HUB_CACHE to move it)."
        )
        raise WeightsNotFoundError(msg) from error


def read_checkpoint(
    checkpoint: str | Path | Mapping[str, Any],
) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """Resolve an AdaCLIP checkpoint to its trainable tensors (our key layout) and its configuration if it has one.

    Args:
        checkpoint: A released checkpoint name, a path, a state dict in either layout, or a dict in our format.

    Returns:
        The state dict with keys of :class:`~anomalib_adaclip.torch_model.AdaCLIPModel` and the stored model
        configuration (``None`` for the released layout, which stores none).
    """
    if isinstance(checkpoint, Mapping):
        content: Any = checkpoint
        source = "the given state dict"
    else:
        path = (
            download_released_checkpoint(checkpoint)
            if isinstance(checkpoint, str) and checkpoint in RELEASED_CHECKPOINTS
            else Path(checkpoint).expanduser()
        )
        if not path.is_file():
            msg = (
                f"AdaCLIP checkpoint not found: {path}. Give a file path or one of the released names "
                f"{sorted(RELEASED_CHECKPOINTS)}."
            )
            raise FileNotFoundError(msg)
        content = _read_checkpoint_file(path)
        source = str(path)
    config = None
    if isinstance(content, Mapping) and content.get("format") == CHECKPOINT_FORMAT:
        config = dict(content.get("config") or {})
        content = content.get("state_dict", {})
    if not isinstance(content, Mapping) or not all(isinstance(value, torch.Tensor) for value in content.values()):
        msg = f"{source} is not an AdaCLIP checkpoint: expected a mapping of names to tensors."
        raise CheckpointError(msg)
    return from_released_layout(content), config


def _read_checkpoint_file(path: Path) -> Any:
    if path.suffix == ".safetensors":
        state_dict = load_state_dict_file(path)
        from safetensors import safe_open  # noqa: PLC0415

        with safe_open(path, framework="pt") as handle:
            metadata = handle.metadata() or {}
        if metadata.get("format") == CHECKPOINT_FORMAT:
            return {"format": CHECKPOINT_FORMAT, "config": json.loads(metadata["config"]), "state_dict": state_dict}
        return state_dict
    return _torch_load(path)


def save_checkpoint(
    state_dict: Mapping[str, torch.Tensor],
    config: Mapping[str, Any],
    path: str | Path,
    *,
    released_layout: bool = False,
    overwrite: bool = False,
) -> Path:
    """Write trainable tensors to a file, in our format (with the configuration) or in the released layout.

    Args:
        state_dict: Trainable tensors with AdaCLIPModel keys.
        config: Model configuration (ignored for the released layout, which has no place for it).
        path: Target file; ``.safetensors`` writes safetensors (the configuration goes into its metadata).
        released_layout: Write ``clip_model.``-prefixed keys only, loadable by the authors' code.
        overwrite: Replace an existing file; by default an existing file is an error.

    Returns:
        The written path.
    """
    path = Path(path).expanduser()
    if path.exists() and not overwrite:
        msg = f"{path} already exists; choose another path or pass overwrite=True."
        raise FileExistsError(msg)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {key: value.detach().cpu().contiguous() for key, value in state_dict.items()}
    if released_layout:
        tensors = to_released_layout(tensors)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file  # noqa: PLC0415

        metadata = None if released_layout else {"format": CHECKPOINT_FORMAT, "config": json.dumps(dict(config))}
        save_file(tensors, path, metadata=metadata)
    elif released_layout:
        torch.save(tensors, path)
    else:
        torch.save(
            {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "config": dict(config), "state_dict": tensors},
            path,
        )
    return path
