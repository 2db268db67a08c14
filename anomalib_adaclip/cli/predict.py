"""``anomalib-adaclip predict``: anomalib's predict, set up for archives of any size.

Two things differ from ``anomalib predict`` (the arguments are rewritten before anomalib's parser sees them):

- predictions are not returned by default (``--return_predictions false``): the visualiser and the predictions table
  write every batch to disk, and Lightning would otherwise keep every batch's outputs (images, maps) in memory until
  the run ends. ``--return_predictions true`` (or a config file that sets it) still returns them;
- ``--resume [TABLE]`` carries on an interrupted run: it appends to the run's predictions table (the one in the
  results folder, or ``TABLE``) and leaves out the images that already have a row
  (:class:`~anomalib_adaclip.components.PredictionCSVWriter` with ``resume``). One run writes a table at a time: a
  ``--resume`` of a table that another run is writing stops before it scores anything, with one line naming that run
  (host, PID, since when) and exit code 1; a table whose run was killed is taken over (``<table>.lock``, see
  :mod:`anomalib_adaclip.locks` and the concurrency guide).

Several processes, GPUs or nodes are Lightning's own: ``--trainer.strategy ddp --trainer.devices N
--trainer.num_nodes M`` (under ``srun`` or ``torchrun`` too); Lightning starts the other local processes with the
rewritten arguments.
"""

from __future__ import annotations

import json

__all__ = ["RESUME_FLAG", "WRITER_CLASS", "predict_arguments"]

RESUME_FLAG = "--resume"
WRITER_CLASS = "anomalib_adaclip.components.PredictionCSVWriter"


def _has_option(arguments: list[str], name: str) -> bool:
    return any(argument == name or argument.startswith(f"{name}=") for argument in arguments)


def predict_arguments(arguments: list[str]) -> list[str]:
    """Anomalib's predict arguments for AdaCLIP's: ``--resume`` turned into a writer, predictions not returned.

    Args:
        arguments: The arguments after ``predict``.

    Returns:
        The arguments for anomalib's parser (without ``predict``).

    Raises:
        SystemExit: ``--resume`` given twice (exit code 2, with a message).
    """
    arguments = list(arguments)
    resume: str | bool | None = None
    kept: list[str] = []
    index = 0
    while index < len(arguments):
        argument = arguments[index]
        if argument == RESUME_FLAG or argument.startswith(f"{RESUME_FLAG}="):
            if resume is not None:
                raise SystemExit(f"anomalib-adaclip predict: {RESUME_FLAG} was given twice.")
            if "=" in argument:
                resume = argument.split("=", 1)[1]
            elif index + 1 < len(arguments) and not arguments[index + 1].startswith("-"):
                index += 1
                resume = arguments[index]
            else:
                resume = True
        else:
            kept.append(argument)
        index += 1
    # First, so that a config file or a later flag of the user's overrides it.
    prefix = [] if _has_option(kept, "--return_predictions") else ["--return_predictions", "false"]
    if resume is not None:
        writer = {"class_path": WRITER_CLASS, "init_args": {"resume": resume}}
        kept += [f"--trainer.callbacks+={json.dumps(writer)}"]
    return [*prefix, *kept]
