"""The Trainer a Lightning module is attached to, if any, and its data module.

Lightning's ``LightningModule.trainer`` raises outside a run; the model's helpers (the class name of a run, the
few-shot references, the callbacks) ask the question without a ``try`` each.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch import LightningModule, Trainer

__all__ = ["attached_datamodule", "attached_trainer"]


def attached_trainer(module: LightningModule) -> Trainer | None:
    """The Trainer ``module`` is attached to, or ``None`` (Lightning's ``trainer`` property raises then)."""
    try:
        return module.trainer
    except RuntimeError:
        return None


def attached_datamodule(module: LightningModule) -> Any:
    """The data module of the Trainer ``module`` is attached to, or ``None``."""
    return getattr(attached_trainer(module), "datamodule", None)
