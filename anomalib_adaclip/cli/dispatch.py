"""The ``anomalib-adaclip`` command: anomalib's CLI with AdaCLIP registered, plus AdaCLIP's own subcommands.

``anomalib-adaclip test --model AdaCLIP ...`` is exactly ``anomalib test --model anomalib_adaclip.AdaCLIP ...``: the
plugin is imported before anomalib builds its parser, so the short model name resolves. Subcommands listed in
:data:`COMMANDS` are AdaCLIP's own and are handled here instead of by anomalib. ``predict`` is anomalib's with two
defaults for large archives (:mod:`.predict`: predictions not kept in memory, ``--resume``). For every command, a
``--config`` value that is no file may name a configuration shipped with the package (``--config paper_full``; see
:mod:`anomalib_adaclip.config_files`).
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from anomalib_adaclip.config_files import UnknownConfigError, resolve_config_arguments

__all__ = ["COMMANDS", "PREDICT_HELP", "command_parsers", "main"]

#: The subcommands, name -> (handler taking the remaining arguments and returning an exit code, one-line help)
COMMANDS: dict[str, tuple[Callable[[list[str]], int], str]] = {}


def _train(arguments: list[str]) -> int:
    from .train import main as train_main  # noqa: PLC0415  (imports Lightning and anomalib only when used)

    return train_main(arguments)


COMMANDS["train"] = (_train, "train AdaCLIP's prompts on auxiliary annotated data (--config configs/train/...)")


def _quickstart(arguments: list[str]) -> int:
    from .quickstart import main as quickstart_main  # noqa: PLC0415  (imported only when the command runs)

    return quickstart_main(arguments)


COMMANDS["quickstart"] = (
    _quickstart,
    "zero-shot AdaCLIP on MVTec AD 'bottle' with the released weights (--smoke: offline check, meaningless numbers)",
)


def _benchmark(arguments: list[str]) -> int:
    from anomalib_adaclip.benchmark.compare import main as benchmark_main  # noqa: PLC0415  (imported only when the command runs)

    return benchmark_main(arguments)


COMMANDS["benchmark"] = (
    _benchmark,
    "AdaCLIP against other anomalib models on a grid of data sets (--config configs/benchmark/...); "
    "replaces anomalib's benchmark, which cannot run zero-shot models",
)


def _calibrate(arguments: list[str]) -> int:
    from .calibrate import main as calibrate_main  # noqa: PLC0415

    return calibrate_main(arguments)


def _prompts(arguments: list[str]) -> int:
    from .prompts import main as prompts_main  # noqa: PLC0415

    return prompts_main(arguments)


COMMANDS["calibrate"] = (
    _calibrate,
    "set the thresholds from known-good images (--data FOLDER --percentile 99); prints a config snippet",
)
COMMANDS["prompts"] = (
    _prompts,
    "print the prompt sentences of a class name (--class-name NAME [--config cfg.yaml] [--image PATH])",
)


def _demo(arguments: list[str]) -> int:
    from .demo import main as demo_main  # noqa: PLC0415  (imports gradio only when the command runs)

    return demo_main(arguments)


COMMANDS["demo"] = (
    _demo,
    "a local web page: upload images, name the object, see heatmaps, scores and OK/NG (--smoke: no weights needed)",
)


def _prepare_data(arguments: list[str]) -> int:
    from .prepare_data import main as prepare_data_main  # noqa: PLC0415  (imported only when the command runs)

    return prepare_data_main(arguments)


COMMANDS["prepare-data"] = (
    _prepare_data,
    "convert a public release of one of the paper's 14 data sets into its data module's tree "
    "(NAME --source SRC --dest DEST; never overwrites, never downloads)",
)


def _watch(arguments: list[str]) -> int:
    from .watch import main as watch_main  # noqa: PLC0415  (imported only when the command runs)

    return watch_main(arguments)


COMMANDS["watch"] = (
    _watch,
    "a running line: score each image a camera writes into FOLDER once, in arrival order (--output DIR; "
    "survives kill -9; guide: A running line)",
)


PREDICT_HELP = (
    "anomalib's predict; predictions are not kept in memory (--return_predictions true keeps them), "
    "--resume [TABLE] carries on an interrupted run"
)


def command_parsers() -> dict[str, Callable[[], argparse.ArgumentParser]]:
    """The argument parser of each own command line, built on demand (for the CLI reference of the documentation).

    Returns:
        Command line (``"train"``, ``"benchmark report"``) -> a function that builds its parser. Every key starts with
        a name of :data:`COMMANDS`, and every name of :data:`COMMANDS` has at least one key.
    """
    # Imported here: the modules import Lightning, anomalib and the model, which a plain dispatch does not need.
    from anomalib_adaclip.benchmark import cli as benchmark_cli  # noqa: PLC0415

    from . import calibrate, demo, prepare_data, prompts, quickstart, train, watch  # noqa: PLC0415

    return {
        "quickstart": quickstart.build_parser,
        "demo": demo.build_parser,
        "train": train.build_parser,
        "calibrate": calibrate.build_parser,
        "prompts": prompts.build_parser,
        "benchmark": benchmark_cli.build_parser,
        "benchmark report": benchmark_cli.build_report_parser,
        "prepare-data": prepare_data.build_parser,
        "watch": watch.build_parser,
    }


def print_commands() -> None:
    print("AdaCLIP subcommands (everything else goes to anomalib's CLI, with AdaCLIP registered):")
    for name, (_, help_text) in sorted(COMMANDS.items()):
        print(f"  {name:<12} {help_text}")
    print(f"  {'predict':<12} {PREDICT_HELP}")


def moved_model_argument(arguments: Sequence[str]) -> str | None:
    """The message for an old flat AdaCLIP argument in flags (``--model.k_shot``) or a ``--config`` file, else ``None``.

    The settings of :class:`~anomalib_adaclip.AdaCLIP` are grouped (``--model.few_shot.k_shot``); the old names are
    listed in :data:`anomalib_adaclip.config.MOVED_ARGUMENTS`.
    """
    from anomalib_adaclip.config import MOVED_ARGUMENTS, moved_argument_message  # noqa: PLC0415

    names: list[str] = []
    for index, argument in enumerate(arguments):
        flag = argument.split("=", 1)[0]
        for prefix in ("--model.init_args.", "--model."):
            if flag.startswith(prefix):
                names.append(flag.removeprefix(prefix))
                break
        if flag == "--config" and index + 1 < len(arguments):
            names.extend(_config_model_keys(Path(arguments[index + 1])))
        elif flag == "--config" and "=" in argument:
            names.extend(_config_model_keys(Path(argument.split("=", 1)[1])))
    moved = [name for name in names if name in MOVED_ARGUMENTS]
    return moved_argument_message(moved[0]) if moved else None


def _config_model_keys(path: Path) -> list[str]:
    """The keys of a configuration file's ``model`` section (under ``init_args`` if it has one); none if unreadable."""
    import yaml  # noqa: PLC0415

    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return []  # the command itself reports an unreadable file
    model = content.get("model") if isinstance(content, dict) else None
    if isinstance(model, dict) and isinstance(model.get("init_args"), dict):
        model = model["init_args"]
    return [str(key) for key in model] if isinstance(model, dict) else []


def main(argv: Sequence[str] | None = None) -> int:
    """Run an AdaCLIP subcommand, or anomalib's CLI with ``--model AdaCLIP`` available.

    Args:
        argv: Arguments without the program name. Defaults to ``sys.argv[1:]``.

    Returns:
        The exit code.
    """
    arguments = list(sys.argv[1:] if argv is None else argv)
    kind = {"benchmark": "benchmark", "train": "train"}.get(arguments[0] if arguments else "", "anomalib")
    try:  # a --config value may name a shipped configuration (anomalib_adaclip/configs/) instead of a file
        arguments = resolve_config_arguments(arguments, kind)
    except UnknownConfigError as error:
        # Named as the command's own errors are ("anomalib-adaclip benchmark report: error: ..."): its words before
        # the first option.
        command = " ".join(["anomalib-adaclip", *itertools.takewhile(lambda word: not word.startswith("-"), arguments)])
        print(f"{command}: error: {error}", file=sys.stderr)
        return 2
    moved = moved_model_argument(arguments)
    if moved is not None:  # jsonargparse would only say "not accepted": name the new place, in one line
        print(f"anomalib-adaclip: error: {moved}", file=sys.stderr)
        return 2
    if arguments and arguments[0] in COMMANDS:
        from anomalib_adaclip import quiet  # noqa: PLC0415

        handler, _ = COMMANDS[arguments[0]]
        quiet.configure_logging()  # every subcommand's log lines, once each, in anomalib's format
        return handler(arguments[1:])
    if arguments[:1] in (["--help"], ["-h"]):
        print_commands()
        print()

    import anomalib_adaclip  # noqa: F401, PLC0415  (registers AdaCLIP as an anomalib model)

    from . import anomalib_cli  # noqa: PLC0415
    from .predict import predict_arguments, reserve_resumed_table  # noqa: PLC0415

    reserved = []

    def before_instantiate(config: object) -> None:
        # A resumed table in use is refused here, before the model is built; the lock is held through the run.
        reserved.append(reserve_resumed_table(config))

    if arguments[:1] == ["predict"]:
        # Rewritten in sys.argv too: Lightning starts the other DDP processes with this process's sys.argv.
        arguments = ["predict", *predict_arguments(arguments[1:])]

    from anomalib_adaclip.components.prediction_table import PredictionTableError  # noqa: PLC0415
    from anomalib_adaclip.locks import LockError  # noqa: PLC0415

    program = sys.argv[0] if sys.argv else "anomalib-adaclip"
    sys.argv = [program, *arguments]
    try:
        anomalib_cli.run(before_instantiate=before_instantiate if arguments[:1] == ["predict"] else None)
    except (LockError, PredictionTableError) as error:
        # Another run holds the output, or the table cannot be resumed: one line, what to do, no traceback.
        print(f"anomalib-adaclip {arguments[0] if arguments else ''}: error: {error}", file=sys.stderr)
        return 1
    finally:
        for lock in filter(None, reserved):
            lock.release()
        _close_process_group()
    return 0


def _close_process_group() -> None:
    """End a distributed run's process group before the interpreter exits.

    Lightning leaves it open after a run; a gloo group torn down only by the interpreter's exit can abort the process
    ("terminate called without an active exception", exit code -6) after all its work is done.
    """
    import torch.distributed  # noqa: PLC0415  (only when anomalib's CLI ran, which imported torch already)

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
