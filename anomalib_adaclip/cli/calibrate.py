"""``anomalib-adaclip calibrate``: AdaCLIP's decision thresholds from known-good images.

``anomalib-adaclip calibrate --data <known-good folder> --percentile 99 [anomalib model arguments]`` scores the
images and prints a config snippet with the calibrated thresholds (``--output`` also writes it to a new file, never
replacing one: written by another calibration meanwhile, the next free ``-vN`` name is taken and named). The
model comes from the same arguments as ``anomalib predict`` (``--model``, ``--model.X``, ``--config``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from anomalib_adaclip.output_files import write_new_file

__all__ = ["build_parser", "main"]

DEVICES = {"auto": None, "cpu": "cpu", "gpu": "cuda"}


def build_parser() -> argparse.ArgumentParser:
    """The ``anomalib-adaclip calibrate`` parser (its own options; the rest goes to anomalib's parser)."""
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


def main(arguments: list[str]) -> int:
    """Run ``anomalib-adaclip calibrate``; returns the exit code."""
    options, rest = build_parser().parse_known_args(arguments)
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

    from anomalib_adaclip import AdaCLIP  # noqa: PLC0415  (registers the short name AdaCLIP too)

    from .anomalib_cli import AdaCLIPCLI  # noqa: PLC0415

    cli = AdaCLIPCLI(["predict", *rest], run=False)  # --seed_everything seeds the model's random draws too
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
    code = 0
    if options.output is not None:
        try:
            # Complete or absent, never replacing: another calibration may have taken the name meanwhile.
            written = write_new_file(options.output, snippet)
        except OSError as error:
            print(
                f"error: cannot write {options.output}: {error.strerror or error}; the snippet is printed below.",
                file=sys.stderr,
            )
            code = 1
        else:
            if written != options.output:
                print(f"{options.output} was written by another run meanwhile; this one is {written}.", file=sys.stderr)
            print(f"Wrote {written}; use it with: anomalib predict --config {written} ...", file=sys.stderr)
    flags = f"--model.thresholds.image {result.image_threshold!r}"
    if result.pixel_threshold is not None:
        flags += f" --model.thresholds.pixel {result.pixel_threshold!r}"
    print(f"Or on the command line: {flags} --model.thresholds.mode fixed", file=sys.stderr)
    print(snippet, end="")
    return code
