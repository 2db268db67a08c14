"""Sphinx extension of this site: writes the generated pages' parts and the notebook pages before the build reads.

- ``reference/_generated/{cli,parameters,datasets}.md``: :mod:`adaclip_docgen`'s Markdown, which the reference pages
  include (``{include}``), so the CLI reference, the parameter table and the data set table follow the code;
- ``notebooks/_generated/<name>.ipynb``: the notebooks of ``notebooks/`` as committed, with a note that their outputs
  are not stored (myst-nb renders them without executing anything).

Both folders are git-ignored and rewritten only when their contents change (so incremental builds stay incremental).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import adaclip_docgen
from sphinx.application import Sphinx

PROJECT_ROOT = Path(__file__).resolve().parents[3]
GENERATED = Path("reference") / "_generated"
NOTEBOOK_PAGES = Path("notebooks") / "_generated"

NOTEBOOK_NOTE = """```{{note}}
This page shows `notebooks/{name}` as it is committed: **its outputs are not stored** (the test suite keeps the
committed notebooks free of outputs and runs each one in its tiny mode, on a tiny random CLIP and generated images).
Run it to see its tables and figures: `pip install -e ".[test]" jupyterlab && jupyter lab notebooks/`, or set
`TINY = True` in its parameter cell for an offline run in about a minute with meaningless numbers.
```"""


def _write_if_changed(path: Path, text: str) -> None:
    if path.is_file() and path.read_text() == text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _notebook_page(source: Path) -> str:
    """The notebook with the note as a Markdown cell after its title cell."""
    notebook: dict[str, Any] = json.loads(source.read_text())
    cells = notebook["cells"]
    note = {"cell_type": "markdown", "metadata": {}, "source": NOTEBOOK_NOTE.format(name=source.name)}
    first = "".join(cells[0]["source"]) if cells else ""
    index = 1 if cells and cells[0]["cell_type"] == "markdown" and first.lstrip().startswith("# ") else 0
    cells.insert(index, note)
    return json.dumps(notebook, indent=1, ensure_ascii=False) + "\n"


def write_generated(app: Sphinx) -> None:
    """Write the generated parts into the source folder (``builder-inited``)."""
    source = Path(app.srcdir)
    parts = {
        "cli.md": adaclip_docgen.cli_reference(),
        "parameters.md": adaclip_docgen.parameter_table() + "\n",
        "datasets.md": adaclip_docgen.dataset_table() + "\n",
    }
    for name, text in parts.items():
        _write_if_changed(source / GENERATED / name, text)
    for notebook in sorted((PROJECT_ROOT / "notebooks").glob("*.ipynb")):
        _write_if_changed(source / NOTEBOOK_PAGES / notebook.name, _notebook_page(notebook))


def setup(app: Sphinx) -> dict[str, Any]:
    """Register the generation step."""
    app.connect("builder-inited", write_generated)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
