"""``anomalib-adaclip watch FOLDER``: a running line on a camera's hot folder (:mod:`anomalib_adaclip.line`).

``anomalib-adaclip watch FOLDER --output DIR (--threshold T | --good GOOD_FOLDER) [--scorer ...]`` scores every
image the camera writes into ``FOLDER``, once, in arrival order, into ``DIR/predictions.csv`` (the same table as
``predict``). It runs until stopped (Ctrl-C or SIGTERM: a last snapshot is written) or, with ``--exit-when-idle``,
until no file arrived for that long. Started again on the same ``DIR`` (after a stop, a crash or ``kill -9``) it
continues: nothing scored is scored again, nothing unscored is lost. Delete ``DIR/bank.frozen`` to lift a freeze.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from dataclasses import fields
from pathlib import Path

from anomalib_adaclip.line import LineConfig, LineRunner, load_scorer

__all__ = ["build_parser", "main"]

# LineConfig field -> (option, type); the help text is the field's documentation.
_OPTIONS = {
    "class_name": ("--class-name", str),
    "settle_seconds": ("--settle", float),
    "poll_seconds": ("--poll", float),
    "snapshot_every": ("--snapshot-every", int),
    "threshold": ("--threshold", float),
    "calibration_percentile": ("--calibration-percentile", float),
    "calibration_warmup": ("--calibration-warmup", int),
    "freeze_streak": ("--freeze-streak", int),
    "rate_window": ("--rate-window", int),
    "rate_factor": ("--rate-factor", float),
    "max_backlog": ("--max-backlog", int),
    "report_every": ("--report-every", int),
    "json_lines": ("--json", str),
}

_HELP = {
    "class_name": "class name of the parts, written in every row (default %(default)s)",
    "settle_seconds": "seconds a file's size and time must stay unchanged before it is read; 0 when the camera "
    "renames finished files into the folder (default %(default)s)",
    "poll_seconds": "seconds between looks at the folder (default %(default)s)",
    "snapshot_every": "save the bank after this many rows, and at exit (default %(default)s)",
    "threshold": "image-score threshold: above it an image is NG and does not enter the bank (default: calibrated "
    "on --good, or the snapshot's)",
    "calibration_percentile": "calibrated threshold: this percentile of the known-good scores (default %(default)s)",
    "calibration_warmup": "known-good images that fill the bank before their scores count (default %(default)s)",
    "freeze_streak": "NG images in a row that freeze the bank (default %(default)s)",
    "rate_window": "images whose NG rate is compared with the rate before them (default %(default)s)",
    "rate_factor": "freeze when the recent NG rate exceeds this many times the earlier one; inf: off "
    "(default %(default)s)",
    "max_backlog": "at most this many files wait; the oldest beyond get a 'not scored' row (default: no bound)",
    "report_every": "log latency p50/p95 after this many images (default %(default)s)",
    "json_lines": "also one JSON line per image: '-' for standard output, or a file (appended to)",
}


def _scorer_settings(value: str) -> dict:
    """A JSON object given inline, or the path of a JSON or YAML file holding one."""
    path = Path(value)
    if path.suffix.lower() in {".json", ".yaml", ".yml"}:
        if not path.is_file():
            msg = f"--scorer-settings: no such file {path}"
            raise argparse.ArgumentTypeError(msg)
        import yaml  # noqa: PLC0415  (YAML is a superset of JSON)

        settings = yaml.safe_load(path.read_text(encoding="utf-8"))
    else:
        try:
            settings = json.loads(value)
        except json.JSONDecodeError as error:
            msg = f"--scorer-settings: not a JSON object ({error}) nor a .json/.yaml file"
            raise argparse.ArgumentTypeError(msg) from error
    if not isinstance(settings, dict):
        msg = f"--scorer-settings must hold a mapping of the scorer's keyword arguments, got {type(settings).__name__}"
        raise argparse.ArgumentTypeError(msg)
    return settings


def build_parser() -> argparse.ArgumentParser:
    """The ``anomalib-adaclip watch`` parser."""
    parser = argparse.ArgumentParser(
        prog="anomalib-adaclip watch",
        description=(
            "A running line: score each image a camera writes into FOLDER once, in arrival order, into the "
            "predictions table of --output; the bank learns only from OK images, freezes on a streak of NG images "
            "and survives kill -9 (guide: A running line)."
        ),
    )
    parser.add_argument("folder", type=Path, help="the hot folder the camera writes into")
    parser.add_argument("--output", type=Path, required=True, help="the line's folder: table, bank snapshot, locks")
    parser.add_argument("--good", type=Path, default=None, help="known-good images that fill a new bank first")
    parser.add_argument(
        "--scorer",
        default="rarity",
        help=(
            "'rarity' (the rarity scorer), 'adaclip' (AdaCLIP with its rarity group) or 'package.module:factory' "
            "returning a LineScorer (default %(default)s)"
        ),
    )
    parser.add_argument(
        "--scorer-settings",
        type=_scorer_settings,
        default={},
        help="the scorer's keyword arguments: a JSON object, or a .json/.yaml file holding one",
    )
    parser.add_argument(
        "--exit-when-idle", type=float, default=None, help="stop when no file arrived for this many seconds"
    )
    defaults = LineConfig()
    for field in fields(LineConfig):
        if field.name not in _OPTIONS:
            continue
        option, kind = _OPTIONS[field.name]
        parser.add_argument(
            option, dest=field.name, type=kind, default=getattr(defaults, field.name), help=_HELP[field.name]
        )
    return parser


def main(arguments: list[str]) -> int:
    """Run ``anomalib-adaclip watch``; returns the exit code."""
    from anomalib_adaclip.components.prediction_table import PredictionTableError  # noqa: PLC0415
    from anomalib_adaclip.line import LineError, ScorerError, SnapshotError  # noqa: PLC0415
    from anomalib_adaclip.locks import LockError  # noqa: PLC0415

    options = build_parser().parse_args(arguments)
    try:
        config = LineConfig(**{name: getattr(options, name) for name in _OPTIONS})
        scorer = load_scorer(options.scorer, options.scorer_settings)
        runner = LineRunner(options.folder, options.output, scorer, config, good_folder=options.good)
        runner.start()
    except (LineError, ScorerError, SnapshotError, LockError, PredictionTableError, ValueError) as error:
        print(f"anomalib-adaclip watch: error: {error}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def request_stop(signum: int, frame: object) -> None:
        del signum, frame
        stop.set()

    previous = {number: signal.signal(number, request_stop) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        runner.run(stop, exit_when_idle=options.exit_when_idle)
    finally:
        runner.close()
        for number, handler in previous.items():
            signal.signal(number, handler)
    return 0
