"""anomalib's CLI as ``anomalib-adaclip`` runs it: one console handler, ``--seed_everything`` honoured, a hook.

anomalib's ``main`` configures the console twice (a plain handler and a rich one on the root logger: every line is
printed twice) and its CLI declares ``--seed_everything`` without calling :func:`lightning.seed_everything`.
:func:`run` does both once: the logs through :func:`anomalib_adaclip.quiet.configure_logging`, and the seed before
any class is built, in every process (Lightning starts a distributed run's other processes with the same arguments),
so that two processes, or a run and its resume, build the same model even with random weights. A command may also
look at the parsed configuration before anything is built (``predict --resume`` takes its table's lock there, so that a
table in use is refused before the model is loaded).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from anomalib.cli import AnomalibCLI
from lightning.pytorch import seed_everything

from anomalib_adaclip.quiet import configure_logging

__all__ = ["AdaCLIPCLI", "run"]


class AdaCLIPCLI(AnomalibCLI):
    """anomalib's CLI with ``--seed_everything N`` seeding Python, NumPy and torch before the classes are built.

    ``true`` (anomalib's default) and ``false`` leave the random state as the process drew it.

    Args:
        args: The command line, without the program (default: ``sys.argv[1:]``).
        run: Run the subcommand once the classes are built (anomalib's argument); ``False`` only builds them.
        before_instantiate: Called with the subcommand's parsed configuration (a jsonargparse ``Namespace``) after
            parsing and seeding, before any class of it, the model included, is built.
    """

    def __init__(
        self,
        args: Sequence[str] | None = None,
        run: bool = True,
        before_instantiate: Callable[[Any], None] | None = None,
    ) -> None:
        self._before_instantiate = before_instantiate  # set first: the base class parses and builds in __init__
        super().__init__(args, run=run)

    def before_instantiate_classes(self) -> None:
        """Anomalib's preparation of the config, the seed (before the model's random weights are drawn), the hook."""
        super().before_instantiate_classes()
        subcommand = self.config.get("subcommand")
        config = self.config.get(subcommand) if subcommand else None
        seed = config.get("seed_everything") if config is not None else None
        if isinstance(seed, int) and not isinstance(seed, bool):
            seed_everything(seed, workers=True)
        if self._before_instantiate is not None and config is not None:
            self._before_instantiate(config)


def run(arguments: Sequence[str] | None = None, before_instantiate: Callable[[Any], None] | None = None) -> None:
    """Configure the console logs once, then run :class:`AdaCLIPCLI` on ``arguments`` (default: ``sys.argv[1:]``).

    Args:
        arguments: The command line, without the program (default: ``sys.argv[1:]``).
        before_instantiate: See :class:`AdaCLIPCLI`.
    """
    configure_logging()
    AdaCLIPCLI(None if arguments is None else list(arguments), before_instantiate=before_instantiate)
