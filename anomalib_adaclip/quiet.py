"""The console logs: configured once (:func:`configure_logging`), and held back for a block (:func:`quiet_loggers`)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["LOG_FORMAT", "configure_logging", "quiet_loggers"]

#: anomalib's console format (anomalib.loggers.configure_logger), so that lines read as in anomalib's own commands.
LOG_FORMAT = "%(asctime)s - %(name)s - %(levelname)s - %(message)s"


def configure_logging(level: int = logging.INFO) -> None:
    """One console handler (stderr, :data:`LOG_FORMAT`) for every log line of a command: each line printed once.

    anomalib's ``configure_logger`` adds a rich handler beside the plain one on the root logger, so that every line
    appears twice; this is the same configuration with one handler. Lightning's own handlers take the format too.
    Where the root logger has handlers already (an embedding application, pytest), they are kept and none is added.

    Args:
        level: The lowest level printed. Defaults to ``logging.INFO``.
    """
    logging.basicConfig(format=LOG_FORMAT, level=level)
    for handler in logging.getLogger("lightning.pytorch").handlers:
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        handler.setLevel(level)


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
