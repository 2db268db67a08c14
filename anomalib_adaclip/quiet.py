"""Log output held back for a block: the one helper that raises loggers' levels and restores them afterwards."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["quiet_loggers"]


@contextmanager
def quiet_loggers(*names: str, level: int = logging.ERROR) -> Iterator[None]:
    """Only records of ``level`` and above from the named loggers and their descendants while the block runs.

    Descendants that exist already get the level too: anomalib's CLI gives some of Lightning's loggers levels and
    handlers of their own, so the parent's level alone does not hold them back. Every level is restored afterwards.

    Args:
        *names: Logger names (``"lightning"``, ``"anomalib_adaclip.model.backbone"``).
        level: The lowest level let through. Defaults to ``logging.ERROR``.
    """
    existing = [name for name in logging.root.manager.loggerDict if any(_within(name, parent) for parent in names)]
    loggers = [logging.getLogger(name) for name in dict.fromkeys([*names, *existing])]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(level)
    try:
        yield
    finally:
        for logger, previous in zip(loggers, levels, strict=True):
            logger.setLevel(previous)


def _within(name: str, parent: str) -> bool:
    return name == parent or name.startswith(parent + ".")
