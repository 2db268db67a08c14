"""Lightning checkpoints of AdaCLIP without the frozen CLIP: a few megabytes instead of hundreds.

The CLIP never changes, so :class:`FrozenBackboneCheckpoints` leaves its tensors out of every Lightning checkpoint
and accepts state dicts without them; the CLIP is rebuilt from ``backbone`` and ``backbone_weights`` (saved with the
hyper-parameters). Every other key is checked, and keys and shapes are checked before anything is copied, so a
checkpoint that does not fit leaves the model as it was (``torch.nn.Module.load_state_dict`` would copy the fitting
tensors before raising).
"""

from __future__ import annotations

from typing import Any

from anomalib_adaclip.weights import CheckpointError, check_state_dict

__all__ = ["FROZEN_PREFIX", "FrozenBackboneCheckpoints"]

FROZEN_PREFIX = "model.clip."


def _trainable(state_dict: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in state_dict.items() if not key.startswith(FROZEN_PREFIX)}


class FrozenBackboneCheckpoints:
    """Mixin of a LightningModule whose ``model.clip`` is frozen: checkpoints keep only the other tensors."""

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Drop the frozen CLIP's tensors from the checkpoint."""
        super().on_save_checkpoint(checkpoint)
        checkpoint["state_dict"] = _trainable(checkpoint.get("state_dict", {}))

    def load_state_dict(self, state_dict: dict[str, Any], strict: bool = True, assign: bool = False) -> Any:
        """Load a state dict that may lack the frozen CLIP, checking keys and shapes before anything is copied.

        Raises:
            RuntimeError: With ``strict``, missing or unexpected keys; always, shapes that differ.
        """
        own = self.state_dict()
        trainable = _trainable(own)
        expected = {key: value for key, value in own.items() if key in state_dict or (strict and key in trainable)}
        given = state_dict if strict else {key: value for key, value in state_dict.items() if key in own}
        try:
            check_state_dict(expected, given, "The checkpoint")
        except CheckpointError as error:
            msg = f"Checkpoint does not fit AdaCLIP; nothing was loaded. {error}"
            raise RuntimeError(msg) from error
        return super().load_state_dict(state_dict, strict=False, assign=assign)
