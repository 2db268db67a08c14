"""Lightning checkpoints of AdaCLIP without the frozen CLIP: a few megabytes instead of hundreds.

The CLIP never changes, so :class:`FrozenBackboneCheckpoints` leaves its tensors out of every Lightning checkpoint
and accepts state dicts without them; the CLIP is rebuilt from ``backbone`` and ``backbone_weights`` (saved with the
hyper-parameters). Every other key is checked, and keys and shapes are checked before anything is copied, so a
checkpoint that does not fit leaves the model as it was (``torch.nn.Module.load_state_dict`` would copy the fitting
tensors before raising).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from anomalib_adaclip.weights import CheckpointError, check_state_dict

__all__ = ["FROZEN_PREFIX", "FrozenBackboneCheckpoints"]

#: The state-dict prefix of the frozen CLIP, whose tensors Lightning checkpoints leave out.
FROZEN_PREFIX = "model.clip."


class FrozenBackboneCheckpoints:
    """How AdaCLIP's Lightning checkpoints leave out a frozen part and load without it (AdaCLIP owns one).

    Args:
        prefix: The state-dict prefix of the frozen tensors. Defaults to :data:`FROZEN_PREFIX` (the CLIP).
    """

    def __init__(self, prefix: str = FROZEN_PREFIX) -> None:
        self.prefix = prefix

    def trainable(self, state_dict: Mapping[str, Any]) -> dict[str, Any]:
        """The entries of ``state_dict`` outside the frozen part."""
        return {key: value for key, value in state_dict.items() if not key.startswith(self.prefix)}

    def strip(self, checkpoint: dict[str, Any]) -> None:
        """Drop the frozen tensors from a Lightning checkpoint about to be saved."""
        checkpoint["state_dict"] = self.trainable(checkpoint.get("state_dict", {}))

    def check(self, own: Mapping[str, Any], state_dict: Mapping[str, Any], strict: bool = True) -> None:
        """Check a state dict that may lack the frozen part against the module's own, before anything is copied.

        Args:
            own: The module's state dict.
            state_dict: The state dict to load.
            strict: Whether every trainable key must be given and no other.

        Raises:
            RuntimeError: With ``strict``, missing or unexpected keys; always, shapes that differ.
        """
        trainable = self.trainable(own)
        expected = {key: value for key, value in own.items() if key in state_dict or (strict and key in trainable)}
        given = state_dict if strict else {key: value for key, value in state_dict.items() if key in own}
        try:
            check_state_dict(expected, dict(given), "The checkpoint")
        except CheckpointError as error:
            msg = f"Checkpoint does not fit AdaCLIP; nothing was loaded. {error}"
            raise RuntimeError(msg) from error
