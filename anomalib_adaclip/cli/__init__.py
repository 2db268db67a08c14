"""The ``anomalib-adaclip`` command: anomalib's CLI with AdaCLIP registered, plus AdaCLIP's own subcommands.

:mod:`.dispatch` routes a command line; each own subcommand has its module: :mod:`.quickstart`, :mod:`.demo`,
:mod:`.train`, :mod:`.calibrate`, :mod:`.prompts`, :mod:`.prepare_data`, :mod:`.watch`, and ``benchmark``
(:mod:`anomalib_adaclip.benchmark.cli`); :mod:`.predict` adapts anomalib's ``predict`` for large archives. The list is
:data:`~anomalib_adaclip.cli.dispatch.COMMANDS`; the documentation's CLI reference is generated from
:func:`.dispatch.command_parsers`.
"""

from .dispatch import COMMANDS, command_parsers, main

__all__ = ["COMMANDS", "command_parsers", "main"]
