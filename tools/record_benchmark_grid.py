"""Record the benchmark's numbers on a tiny grid, to compare them before and after a change of the benchmark.

The grid (issue 28's "done when"): the MVTec 3D tire sample of tests/data as an anomalib ``Folder``; AdaCLIP zero-shot,
4-shot and with mutual scoring on the tiny random CLIP of the smoke runs (``SMOKE_BACKBONE``, no download); anomalib's
PaDiM on an untrained ResNet-18. The weights are random (seeded by the run's seed): the numbers mean nothing, only
whether they stay the same.

Usage (from the repository root)::

    python tools/record_benchmark_grid.py [--output DIR] [--table FILE]

It runs ``anomalib-adaclip benchmark`` on a fresh output folder and writes one table: the report's ``results.md``,
then every metric of every run record at full precision (``repr`` of the float), which is what two runs are compared
by. The model settings are in ``MODELS`` below.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
TIRE = ROOT / "tests" / "data" / "mvtec3d_tire_sample"
DEFECTS = ("contamination", "cut", "hole")

# The tiny random CLIP of the smoke runs, at its 112 px input.
ADACLIP: dict[str, Any] = {"backbone": "SMOKE", "backbone_weights": None, "image_size": 112, "k_clusters": 4}
# The model settings of the grid: name -> (class path, init_args). Keep them here, in one place.
MODELS: dict[str, tuple[str, dict[str, Any]]] = {
    "AdaCLIP": ("anomalib_adaclip.AdaCLIP", ADACLIP),
    "AdaCLIP-4shot": ("anomalib_adaclip.AdaCLIP", {**ADACLIP, "k_shot": 4}),
    "AdaCLIP-mutual": ("anomalib_adaclip.AdaCLIP", {**ADACLIP, "mutual_scoring": True, "mutual_weight": 0.5}),
    "PaDiM": (
        "anomalib.models.Padim",
        {"backbone": "resnet18", "pre_trained": False, "layers": ["layer1"], "n_features": 16},
    ),
}


def grid(output: Path) -> dict[str, Any]:
    """The benchmark configuration of the grid, writing into ``output``."""
    from anomalib_adaclip.config import SMOKE_BACKBONE  # noqa: PLC0415

    models = []
    for name, (class_path, init_args) in MODELS.items():
        arguments = {key: SMOKE_BACKBONE if value == "SMOKE" else value for key, value in init_args.items()}
        models.append({"name": name, "class_path": class_path, "init_args": arguments})
    return {
        "output": str(output),
        "seeds": [0],
        "engine": {"accelerator": "cpu"},
        "models": models,
        "data": [
            {
                "name": "tire_folder",
                "class_path": "anomalib.data.Folder",
                "init_args": {
                    "name": "tire_folder",
                    "root": str(TIRE / "{category}"),
                    "normal_dir": "train/good",
                    "normal_test_dir": "test/good",
                    "abnormal_dir": [f"test/{defect}" for defect in DEFECTS],
                    "mask_dir": [f"ground_truth/{defect}" for defect in DEFECTS],
                    "val_split_mode": "same_as_test",
                    "num_workers": 0,
                    "eval_batch_size": 8,
                },
                "categories": ["tire"],
            },
        ],
    }


def table(output: Path) -> str:
    """The report's results.md and every run's metrics at full precision."""
    report = max((output / "reports").glob("v[0-9]*"), key=lambda path: int(path.name[1:]))
    markdown = (report / "results.md").read_text(encoding="utf-8").replace(str(output), "<output>").rstrip()
    lines = [markdown, "", "## Run records, full precision", ""]
    lines += ["| run | status | metric | value |", "|---|---|---|---|"]
    for path in sorted((output / "runs").rglob("*.json")):
        record = json.loads(path.read_text(encoding="utf-8"))
        run = f"{record['model']} · {record['dataset']}/{record['category']} · seed {record['seed']}"
        for metric, value in sorted(record["metrics"].items()):
            lines.append(f"| {run} | {record['status']} | {metric} | {value!r} |")
        for metric, reason in sorted(record["not_applicable"].items()):
            lines.append(f"| {run} | {record['status']} | {metric} | n/a ({reason}) |")
        if record["status"] != "finished":
            lines.append(f"| {run} | {record['status']} | error | {record['error']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the grid and write its table; returns the benchmark's exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=None, help="a new benchmark folder (default: a temporary one)")
    parser.add_argument("--table", type=Path, default=None, help="write the table here (default: print it)")
    arguments = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from anomalib_adaclip import cli  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as temporary:
        output = arguments.output or Path(temporary) / "benchmark"
        if output.exists():
            parser.error(f"{output} exists; the grid is recorded in a new folder")
        output.mkdir(parents=True)
        config = output / "grid.yaml"
        config.write_text(yaml.safe_dump(grid(output), sort_keys=False), encoding="utf-8")
        log = io.StringIO()
        with contextlib.redirect_stdout(log):
            code = cli.main(["benchmark", "--config", str(config)])
        print(log.getvalue(), file=sys.stderr)
        text = table(output)
    if arguments.table is None:
        print(text, end="")
    else:
        arguments.table.write_text(text, encoding="utf-8")
    return code


if __name__ == "__main__":
    sys.exit(main())
