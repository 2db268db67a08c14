"""The ``anomalib-adaclip`` command: anomalib's CLI with AdaCLIP registered, plus AdaCLIP's own subcommands.

:mod:`.dispatch` routes a command line; each own subcommand has its module: :mod:`.quickstart`, :mod:`.train`,
:mod:`.calibrate`, :mod:`.prompts`, :mod:`.demo`, and ``benchmark`` (:mod:`anomalib_adaclip.benchmark.compare`).
"""

from .dispatch import COMMANDS, main

__all__ = ["COMMANDS", "main"]
