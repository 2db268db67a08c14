"""``anomalib-adaclip predict``: anomalib's predict, set up for archives of any size.

Two things differ from ``anomalib predict`` (the arguments are rewritten before anomalib's parser sees them):

- predictions are not returned by default (``--return_predictions false``): the visualiser and the predictions table
  write every batch to disk, and Lightning would otherwise keep every batch's outputs (images, maps) in memory until
  the run ends. ``--return_predictions true`` (or a config file that sets it) still returns them;
- ``--resume [TABLE]`` carries on an interrupted run: it appends to the run's predictions table (the one in the results
  folder, or ``TABLE``) and leaves out the images that already have a row
  (:class:`~anomalib_adaclip.components.prediction_writer.PredictionCSVWriter` with ``resume``). One run writes a table
  at a time: a ``--resume`` of a table that another run is writing stops before it scores anything, with one line naming
  that run (host, PID, command) and exit code 1, before the model is built (:func:`reserve_resumed_table`); a killed
  run's lock is free at once (``<table>.lock``, a kernel lock: :mod:`anomalib_adaclip.locks`, the concurrency guide).

Several processes, GPUs or nodes are Lightning's own: ``--trainer.strategy ddp --trainer.devices N
--trainer.num_nodes M`` (under ``srun`` or ``torchrun`` too); Lightning starts the other local processes with the
rewritten arguments.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from anomalib_adaclip.locks import OwnedLock

__all__ = ["RESUME_FLAG", "WRITER_CLASS", "predict_arguments", "reserve_resumed_table"]

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


def reserve_resumed_table(config: Any) -> OwnedLock | None:
    """Take the lock of the table a ``predict`` with ``resume`` appends to, from its parsed arguments.

    Called before anomalib's CLI builds the model (:class:`~anomalib_adaclip.cli.anomalib_cli.AdaCLIPCLI`), so a
    table in use is refused before the model is loaded. The writer of the run takes the held lock over
    (:func:`~anomalib_adaclip.components.prediction_table.table_lock`). Nothing is taken when no writer resumes, or
    in the processes of a distributed run other than global rank zero (rank zero's writer takes the lock).

    Args:
        config: The ``predict`` subcommand's parsed configuration.

    Returns:
        The held lock (the caller releases it at the end; the writer may have already), or ``None``.

    Raises:
        LockHeldError: Another run holds the table.
        PredictionTableError: Which table to resume cannot be told, or the named one does not exist.
    """
    from lightning.pytorch.utilities import rank_zero_only  # noqa: PLC0415

    from anomalib_adaclip.compat import engine_results_folder  # noqa: PLC0415
    from anomalib_adaclip.components.prediction_table import DEFAULT_CSV_NAME, reserve_table  # noqa: PLC0415

    writers = [
        callback
        for callback in config.get("trainer.callbacks") or []
        if getattr(callback, "class_path", "").rpartition(".")[2] == WRITER_CLASS.rpartition(".")[2]
    ]
    writer = writers[-1].init_args if writers else None  # the last one given wins (AdaCLIP.configure_callbacks)
    if writer is None or not writer.get("resume") or getattr(rank_zero_only, "rank", 0) != 0:
        return None
    folder = writer.get("output_dir")
    if folder is None:
        data = config.get("data")
        name, category = "", ""
        if getattr(data, "class_path", None):  # a data module: anomalib names the folder after it and its category
            arguments = data.get("init_args") or {}
            name = arguments.get("name") or data.class_path.rpartition(".")[2]
            category = arguments.get("category") or ""
        model = config.get("model.class_path") or ""
        folder = engine_results_folder(
            config.get("default_root_dir") or "results", model.rpartition(".")[2], name, category
        )
    return reserve_table(folder, writer.get("filename") or DEFAULT_CSV_NAME, writer["resume"])
