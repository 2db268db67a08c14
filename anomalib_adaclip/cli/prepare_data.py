"""``anomalib-adaclip prepare-data NAME --source SRC --dest DEST``: a public release into the data module's tree.

The conversion is :func:`anomalib_adaclip.data.preparation.prepare_dataset`; this module parses the arguments,
prints what was written next to the paper's test counts, and how to use it. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The ``anomalib-adaclip prepare-data`` parser."""
    from anomalib_adaclip.data.paper_datasets import PAPER_DATASETS  # noqa: PLC0415

    lines = [
        f"  {key:<13} {entry.raw_layout}" if entry.preparable else f"  {key:<13} (no preparation: {entry.datamodule})"
        for key, entry in PAPER_DATASETS.items()
    ]
    parser = argparse.ArgumentParser(
        prog="anomalib-adaclip prepare-data",
        description=(
            "Convert the public release of one of the paper's data sets into the MVTec-style tree its data module "
            "reads (DEST/<category>/{train,test}/..., ground_truth/...). Never overwrites: DEST/<category> must not "
            "exist. The authors' processed copies need no preparation."
        ),
        epilog="Data sets and the release layouts expected as --source:\n" + "\n".join(lines),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("name", metavar="NAME", help="the data set: " + ", ".join(PAPER_DATASETS))
    parser.add_argument("--source", type=Path, required=True, help="the unpacked release")
    parser.add_argument("--dest", type=Path, required=True, help="the data module's root (gets DEST/<category>/)")
    return parser


def main(arguments: list[str]) -> int:
    """Run ``anomalib-adaclip prepare-data``; returns the exit code (2 on any error, with the reason on stderr)."""
    options = build_parser().parse_args(arguments)

    from anomalib_adaclip.data.paper_datasets import paper_dataset  # noqa: PLC0415
    from anomalib_adaclip.data.preparation import prepare_dataset  # noqa: PLC0415

    try:
        dataset = paper_dataset(options.name)
        prepared = prepare_dataset(dataset.key, options.source, options.dest)
    except KeyError as error:
        print(f"error: {error.args[0]}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for category in prepared:
        print(
            f"{category.path}: train/good {category.train}, test/good {category.normal}, "
            f"anomalous test images {category.anomalous}"
        )
    normal = sum(category.normal for category in prepared)
    anomalous = sum(category.anomalous for category in prepared)
    print(f"test images (normal, anomalous): ({normal}, {anomalous}); the paper's: {dataset.test_counts}")
    if dataset.notes:
        print(f"note: {dataset.notes}")
    print(f"use: --data {dataset.datamodule} --data.root {options.dest} --data.category {prepared[0].category}")
    return 0
