"""Safe reading of weight files: state dicts from safetensors, torch and TorchScript files, never executing pickles.

Every failure becomes one :class:`CheckpointError` that names the file and what to do; :func:`check_state_dict`
compares a state dict with the module it is meant for before anything is copied.
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

__all__ = ["WEIGHT_SUFFIXES", "CheckpointError", "check_state_dict", "load_state_dict_file", "torch_load"]


WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")


class CheckpointError(ValueError):
    """A weights or checkpoint file that cannot be used (corrupt, unsafe, wrong layout or shapes)."""


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


def torch_load(path: Path) -> Any:
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
    return _unwrap_state_dict(torch_load(path), path)


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
