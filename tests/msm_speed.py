r"""Speed of the mutual scoring step: :func:`~anomalib_adaclip.model.mutual_patch_scores` against MuSc's own loop.

A developer's check of the claim in the mutual scoring guide, in the tests because MuSc's loop is the tests' oracle
(``tests/musc_oracle.py``, not shipped). The speed of mutual scoring as a user runs it (the CLIP passes and each
group's scoring) is the speed benchmark's ``--mutual-group-sizes`` mode (:mod:`anomalib_adaclip.benchmark.speed`).

Both run on the same random unit vectors, one after the other in turn (``--repeats`` rounds), with the same number of
threads, so that a change of the machine's load falls on both alike; the report gives the best and median time of
each, their ratio, the largest absolute difference of the scores, the host and its load. The default size is the one
of issue 20: ``N = 24`` images of ``L = 1369`` patches (ViT-L/14 at 518 px) with ``C = 1024`` channels, CPU fp32.

Example::

    python -m tests.msm_speed --images 24 --patches 1369 --channels 1024 --repeats 2
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from anomalib_adaclip.benchmark.environment import environment, load_average
from anomalib_adaclip.benchmark.speed.measure import Timing, time_runs
from anomalib_adaclip.model import mutual_patch_scores
from anomalib_adaclip.output_files import write_new_file
from tests.musc_oracle import musc_msm_loop

__all__ = ["main", "measure"]


def measure(
    images: int = 24, patches: int = 1369, channels: int = 1024, repeats: int = 2, seed: int = 0
) -> dict[str, Any]:
    """Time both implementations on the same tensor, alternating; return the figures.

    Args:
        images: ``N``, the group size.
        patches: ``L``, patches per image.
        channels: ``C``, channels per patch.
        repeats: Rounds; each round times MuSc's loop, then this package's function.
        seed: Seed of the random unit vectors.
    """
    generator = torch.Generator().manual_seed(seed)
    z = torch.nn.functional.normalize(torch.randn(images, patches, channels, generator=generator), dim=-1)
    report: dict[str, Any] = {"images": images, "patches": patches, "channels": channels}
    report.update(environment("cpu"))
    functions = {"musc_loop": musc_msm_loop, "mutual_patch_scores": mutual_patch_scores}
    runs: dict[str, list[Timing]] = {name: [] for name in functions}
    results: dict[str, torch.Tensor] = {}
    for _ in range(repeats):
        for name, function in functions.items():
            runs[name].append(time_runs(lambda name=name, function=function: results.update({name: function(z)})))
    for name, timings in runs.items():
        values = [timing.total for timing in timings]
        report[f"{name}_s"] = values
        report[f"{name}_best_s"] = min(values)
        report[f"{name}_median_s"] = Timing(tuple(values), ()).median
    report["ratio_best"] = report["musc_loop_best_s"] / report["mutual_patch_scores_best_s"]
    report["ratio_median"] = report["musc_loop_median_s"] / report["mutual_patch_scores_median_s"]
    difference = results["musc_loop"].double() - results["mutual_patch_scores"].double()
    report["max_abs_difference"] = difference.abs().max().item()
    report["load_average_after"] = load_average()
    return report


def format_report(report: dict[str, Any]) -> str:
    """The figures as a few lines of text."""
    return "\n".join(
        [
            f"MSM, N={report['images']} L={report['patches']} C={report['channels']}, CPU fp32, "
            f"{report['torch_threads']} threads on {report['device_name']} ({report['cpu_count']} CPUs)",
            f"load average before {report['load_average']}, after {report['load_average_after']}",
            f"MuSc's loop:          best {report['musc_loop_best_s']:.2f} s, median "
            f"{report['musc_loop_median_s']:.2f} s  {[round(t, 2) for t in report['musc_loop_s']]}",
            f"mutual_patch_scores:  best {report['mutual_patch_scores_best_s']:.2f} s, median "
            f"{report['mutual_patch_scores_median_s']:.2f} s  {[round(t, 2) for t in report['mutual_patch_scores_s']]}",
            f"ratio (MuSc / ours):  best {report['ratio_best']:.2f}x, median {report['ratio_median']:.2f}x",
            f"max abs difference:   {report['max_abs_difference']:.3g}",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: run :func:`measure` and print the figures (and write them as JSON with ``--json``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--patches", type=int, default=1369)
    parser.add_argument("--channels", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--json", type=Path, default=None, help="also write the figures here (an existing file is kept: then -v1, ...)"
    )
    args = parser.parse_args(argv)
    report = measure(args.images, args.patches, args.channels, args.repeats, args.seed)
    print(format_report(report))
    if args.json is not None:
        print(f"figures written to {write_new_file(args.json, json.dumps(report, indent=1) + chr(10))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
