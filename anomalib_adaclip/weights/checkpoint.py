"""AdaCLIP checkpoint files: the trainable tensors in two key layouts, read and written without surprises.

Two layouts hold the same trainable tensors (prompts, prompt generators, projections; never the frozen CLIP):

- the *released* layout of the authors' files: a flat state dict whose keys start with ``clip_model.``;
- *our* layout: ``{"format": "anomalib_adaclip", "version": 1, "config": {...}, "state_dict": {...}}`` with the keys
  of :class:`~anomalib_adaclip.model.AdaCLIPModel` (no prefix) and the model configuration next to them.

Files are read through :mod:`.loading` (no pickled code runs); released names resolve through :mod:`.hub`.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from anomalib_adaclip.output_files import write_new_file

from .hub import RELEASED_CHECKPOINTS, download_released_checkpoint
from .loading import CheckpointError, load_state_dict_file, torch_load

__all__ = [
    "CHECKPOINT_FORMAT",
    "RELEASED_PREFIX",
    "from_released_layout",
    "read_checkpoint",
    "save_checkpoint",
    "to_released_layout",
]

RELEASED_PREFIX = "clip_model."
CHECKPOINT_FORMAT = "anomalib_adaclip"
CHECKPOINT_VERSION = 1


def to_released_layout(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Prefix every key with ``clip_model.``, the layout the authors' code loads."""
    return {RELEASED_PREFIX + key: value for key, value in state_dict.items()}


def from_released_layout(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip the ``clip_model.`` prefix of a released checkpoint; keys without it are kept as they are."""
    return {key.removeprefix(RELEASED_PREFIX): value for key, value in state_dict.items()}


def read_checkpoint(
    checkpoint: str | Path | Mapping[str, Any],
) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """Resolve an AdaCLIP checkpoint to its trainable tensors (our key layout) and its configuration if it has one.

    Args:
        checkpoint: A released checkpoint name (its file is verified against the published sha256, see
            :func:`~anomalib_adaclip.weights.hub.download_released_checkpoint`), a path (a file of your own: read
            as it is, not checked against any hash), a state dict in either layout, or a dict in our format.

    Returns:
        The state dict with keys of :class:`~anomalib_adaclip.model.AdaCLIPModel` and the stored model
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
    return torch_load(path)


def save_checkpoint(
    state_dict: Mapping[str, torch.Tensor],
    config: Mapping[str, Any],
    path: str | Path,
    *,
    released_layout: bool = False,
) -> Path:
    """Write trainable tensors to a file, in our format (with the configuration) or in the released layout.

    Args:
        state_dict: Trainable tensors with AdaCLIPModel keys.
        config: Model configuration (ignored for the released layout, which has no place for it).
        path: Target file; ``.safetensors`` writes safetensors (the configuration goes into its metadata).
        released_layout: Write ``clip_model.``-prefixed keys only, loadable by the authors' code.

    Returns:
        The written path.

    Raises:
        FileExistsError: ``path`` exists: a file is never replaced.
    """
    tensors = {key: value.detach().cpu().contiguous() for key, value in state_dict.items()}
    if released_layout:
        tensors = to_released_layout(tensors)
    if Path(path).suffix == ".safetensors":
        from safetensors.torch import save  # noqa: PLC0415

        metadata = None if released_layout else {"format": CHECKPOINT_FORMAT, "config": json.dumps(dict(config))}
        data = save(tensors, metadata=metadata)
    else:
        content: Any = tensors
        if not released_layout:
            content = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "config": dict(config)}
            content["state_dict"] = tensors
        buffer = io.BytesIO()
        torch.save(content, buffer)
        data = buffer.getvalue()
    try:
        return write_new_file(Path(path).expanduser(), data, next_free=False)
    except FileExistsError as error:
        msg = f"{Path(path).expanduser()} already exists; choose another path (a file is never replaced)."
        raise FileExistsError(msg) from error
