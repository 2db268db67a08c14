"""AdaCLIP's own subcommands of ``anomalib-adaclip``: ``calibrate`` and ``prompts``.

- ``anomalib-adaclip calibrate --data <known-good folder> --percentile 99 [anomalib model arguments]`` scores the
  images and prints a config snippet with the calibrated thresholds (``--output`` also writes it to a new file).
  The model comes from the same arguments as ``anomalib predict`` (``--model``, ``--model.X``, ``--config``).
- ``anomalib-adaclip prompts --class-name metal-nut [--config cfg.yaml] [--model.normal_states ...]`` prints the
  exact sentences the prompts use, without building the model; ``--image PATH`` shows which class name an image
  gets from ``class_name_map`` / ``class_name_from_parent``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

__all__ = ["calibrate_main", "prompts_main"]

PROMPT_KEYS = ("normal_states", "abnormal_states", "templates")
DEVICES = {"auto": None, "cpu": "cpu", "gpu": "cuda"}


# ----------------------------------------------------------------------------------------------------------------------
# calibrate
# ----------------------------------------------------------------------------------------------------------------------
def _calibrate_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="anomalib-adaclip calibrate",
        description=(
            "Set AdaCLIP's decision thresholds from known-good images: the image threshold at a percentile of their "
            "scores, optionally the pixel threshold at a percentile of their pixel probabilities. Prints a config "
            "snippet for `anomalib ... --config`."
        ),
        epilog=(
            "Every other argument is anomalib's, as for `anomalib predict`: --data <image or folder of known-good "
            "images> (or a data module, whose training split is used), --model (default anomalib_adaclip.AdaCLIP), "
            "--model.X, --config."
        ),
    )
    parser.add_argument("--percentile", type=float, default=99.0, help="percentile of the image scores (default 99)")
    parser.add_argument(
        "--pixel-percentile",
        type=float,
        default=None,
        help="percentile of the pixel probabilities for the pixel threshold (default: keep the pixel threshold)",
    )
    parser.add_argument("--output", type=Path, default=None, help="also write the snippet to this new YAML file")
    parser.add_argument("--batch-size", type=int, default=1, help="images per batch (default 1: any image sizes)")
    parser.add_argument("--num-workers", type=int, default=0, help="data loader processes (default 0)")
    parser.add_argument("--device", choices=sorted(DEVICES), default="auto", help="device (default: GPU if any)")
    return parser


def calibrate_main(arguments: list[str]) -> int:
    """Run ``anomalib-adaclip calibrate``; returns the exit code."""
    options, rest = _calibrate_parser().parse_known_args(arguments)
    if options.output is not None and options.output.exists():
        print(f"error: {options.output} already exists; choose a new file for --output.", file=sys.stderr)
        return 2
    flags = {argument.split("=")[0] for argument in rest}
    has_config = bool(flags & {"--config", "-c"})
    if "--data" not in flags and not has_config:
        print("error: --data <image or folder of known-good images> is required.", file=sys.stderr)
        return 2
    if "--model" not in flags and not has_config:
        rest = ["--model", "anomalib_adaclip.AdaCLIP", *rest]

    import torch  # noqa: PLC0415
    from anomalib.cli import AnomalibCLI  # noqa: PLC0415

    from .lightning_model import AdaCLIP  # noqa: PLC0415  (registers the short name AdaCLIP too)

    cli = AnomalibCLI(["predict", *rest], run=False)
    model = cli.model
    if not isinstance(model, AdaCLIP):
        print(f"error: calibrate needs an AdaCLIP model, got {type(model).__name__}.", file=sys.stderr)
        return 2
    device = DEVICES[options.device] or ("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    try:
        result = model.calibrate(
            cli.datamodule,
            options.percentile,
            options.pixel_percentile,
            batch_size=options.batch_size,
            num_workers=options.num_workers,
        )
    except (ValueError, FileNotFoundError, TypeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    snippet = result.to_yaml()
    print(result.summary(), file=sys.stderr)
    if options.output is not None:
        options.output.parent.mkdir(parents=True, exist_ok=True)
        with options.output.open("x", encoding="utf-8") as handle:
            handle.write(snippet)
        print(f"Wrote {options.output}; use it with: anomalib predict --config {options.output} ...", file=sys.stderr)
    flags = f"--model.image_threshold {result.image_threshold!r}"
    if result.pixel_threshold is not None:
        flags += f" --model.pixel_threshold {result.pixel_threshold!r}"
    print(f"Or on the command line: {flags} --model.thresholding fixed", file=sys.stderr)
    print(snippet, end="")
    return 0


# ----------------------------------------------------------------------------------------------------------------------
# prompts
# ----------------------------------------------------------------------------------------------------------------------
def _prompts_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="anomalib-adaclip prompts",
        description="Print the sentences AdaCLIP's prompts use for a class name (nothing is built or downloaded).",
    )
    parser.add_argument("--class-name", action="append", default=[], help="class name (repeatable)")
    parser.add_argument("--image", action="append", default=[], help="show the class name this image gets (repeatable)")
    parser.add_argument("-c", "--config", type=Path, default=None, help="anomalib config file with an AdaCLIP model")
    for key in (*PROMPT_KEYS, "class_name", "class_name_map", "class_name_from_parent", "checkpoint"):
        parser.add_argument(f"--model.{key}", dest=f"model_{key}", default=None, help=f"AdaCLIP's {key} (YAML/JSON)")
    return parser


def _model_arguments(config_path: Path | None) -> dict[str, Any]:
    """The AdaCLIP init arguments of an anomalib config file (``model.init_args``), or of none."""
    if config_path is None:
        return {}
    if not config_path.is_file():
        msg = f"Config file not found: {config_path}"
        raise FileNotFoundError(msg)
    content = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    model = content.get("model", {}) if isinstance(content, Mapping) else {}
    if isinstance(model, Mapping) and "init_args" in model:
        model = model["init_args"] or {}
    if not isinstance(model, Mapping):
        msg = f"{config_path} has no `model` mapping with AdaCLIP's arguments."
        raise ValueError(msg)
    return dict(model)


def prompts_main(arguments: list[str]) -> int:
    """Run ``anomalib-adaclip prompts``; returns the exit code."""
    from .class_names import ClassNameRules  # noqa: PLC0415
    from .prompting import ABNORMAL_STATES, NORMAL_STATES, TEMPLATES, PromptEnsemble, format_class_name  # noqa: PLC0415

    options = _prompts_parser().parse_args(arguments)
    try:
        settings = _model_arguments(options.config)
        for key in (*PROMPT_KEYS, "class_name", "class_name_map", "class_name_from_parent", "checkpoint"):
            value = getattr(options, f"model_{key}")
            if value is not None:
                settings[key] = value if key in {"class_name", "checkpoint"} else yaml.safe_load(value)
        defaults = {"normal_states": NORMAL_STATES, "abnormal_states": ABNORMAL_STATES, "templates": TEMPLATES}
        ensemble = PromptEnsemble(*(tuple(settings.get(key) or defaults[key]) for key in PROMPT_KEYS))
        rules = ClassNameRules(settings.get("class_name_map") or {}, bool(settings.get("class_name_from_parent")))
    except (OSError, ValueError, TypeError, yaml.YAMLError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    run_name = str(settings.get("class_name") or "object")
    names = list(options.class_name)
    for image in options.image:
        match = rules.match(image)
        name, rule = match if match else (run_name, "no rule matches: the run's class name")
        print(f"{image} -> class name {name!r} ({rule})")
        names.append(name)
    if not names:
        names = [run_name]
    origin = "the paper's prompts" if ensemble.is_default else "own prompts (not the paper's)"
    if not ensemble.is_default and settings.get("checkpoint"):
        print(
            "warning: the released checkpoints were trained with the paper's prompts; own sentences may not fit "
            "their learned prompts.",
            file=sys.stderr,
        )
    for name in dict.fromkeys(names):
        normal, abnormal = ensemble.sentences(name)
        print(f"# class name {name!r} -> prompt text {format_class_name(name)!r}; {origin}")
        print(f"normal ({len(normal)} sentences):")
        print("\n".join(f"  {sentence}" for sentence in normal))
        print(f"abnormal ({len(abnormal)} sentences):")
        print("\n".join(f"  {sentence}" for sentence in abnormal))
    return 0
