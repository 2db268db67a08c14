"""The README's table of the paper's 14 data sets is generated from the registry, so it cannot drift from the code.

The table between ``<!-- paper-datasets:start -->`` and ``<!-- paper-datasets:end -->`` is
:func:`dataset_table` of :data:`anomalib_adaclip.data.paper_datasets.PAPER_DATASETS`. When the registry changes,
regenerate it with::

    python tests/docs/test_readme_datasets.py --update
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script (--update): the checkout's root makes `tests` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.docs.readme_sections import read_section, write_section

PROJECT_ROOT = Path(__file__).resolve().parents[2]
README = PROJECT_ROOT / "README.md"
START = "<!-- paper-datasets:start -->"
END = "<!-- paper-datasets:end -->"
UPDATE_COMMAND = "python tests/docs/test_readme_datasets.py --update"
TASKS = {"both": "image + pixel", "image": "image only", "pixel": "pixel only"}


def dataset_table() -> str:
    """One row per data set: module, categories, task, the paper's test counts, source, licence, size, preparation."""
    sys.path.insert(0, str(PROJECT_ROOT))  # when run as a script from a checkout
    from anomalib_adaclip.data.paper_datasets import PAPER_DATASETS

    rows = [
        "| Data set | Data module (`root`) | Categories | Task | Paper's test (normal, anomalous) | Source | Licence | "
        "Size | Preparation |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for key, entry in PAPER_DATASETS.items():
        categories = ", ".join(entry.categories) if len(entry.categories) <= 3 else f"{len(entry.categories)}"
        prepare = (
            f"`anomalib-adaclip prepare-data {key} --source <release> --dest {entry.default_root}`"
            if entry.preparable
            else "none: the module reads the release"
        )
        rows.append(
            f"| {entry.name} | `{entry.datamodule}` (`{entry.default_root}`) | {categories} | {TASKS[entry.task]} | "
            f"{entry.test_counts} | {entry.source} | {entry.licence} | {entry.size} | {prepare} |"
        )
    return "\n".join(rows)


def test_dataset_table_is_the_generated_one() -> None:
    table = read_section(README.read_text(), START, END, "the table of the paper's 14 data sets")
    assert table == dataset_table(), f"the data set table is out of date: run {UPDATE_COMMAND}"


def _update() -> None:
    write_section(README, START, END, dataset_table())
    print(f"Updated the data set table in {README}")


if __name__ == "__main__":
    if sys.argv[1:] != ["--update"]:
        sys.exit(f"usage: {UPDATE_COMMAND}")
    _update()
