"""The notebooks in notebooks/: committed without outputs, and every one executes in its tiny mode.

Each notebook has one cell tagged ``parameters``. As papermill does, the test inserts a cell right after it that sets
``TINY = True`` (a tiny random CLIP on generated images: offline, seconds) and points the outputs into a temporary
folder, then executes the notebook with nbclient on a kernel of this interpreter. A notebook that no longer runs
fails the suite, so they cannot rot. All three run in the default suite.
"""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest

from tests.conftest import PROJECT_ROOT

NOTEBOOKS = sorted((PROJECT_ROOT / "notebooks").glob("*.ipynb"))
IDS = [path.stem for path in NOTEBOOKS]
CELL_TIMEOUT_S = 600
# The quick start runs in the default suite; training and the benchmark (about 40 s together on 2 cores) with -m slow,
# where the code they show is also run by tests/integration/test_training.py and test_benchmark.py.
EXECUTED = [
    pytest.param(path, id=path.stem, marks=() if path.stem.startswith("01_") else pytest.mark.slow)
    for path in NOTEBOOKS
]


def test_there_are_the_three_notebooks() -> None:
    assert [path.name for path in NOTEBOOKS] == [
        "01_zero_shot_quickstart.ipynb",
        "02_training.ipynb",
        "03_benchmark.ipynb",
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_committed_notebook_has_no_outputs_and_one_parameters_cell(path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name} cell {index} has outputs: strip them before committing"
            assert cell.execution_count is None, f"{path.name} cell {index} has an execution count"
    tagged = [cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: exactly one cell must be tagged 'parameters'"
    assert tagged[0].cell_type == "code" and "TINY = " in tagged[0].source
    assert 'os.environ.get("ADACLIP_NOTEBOOK_TINY", "0") == "1"' in tagged[0].source
    assert notebook.metadata.kernelspec.name == "python3"


def with_injected_parameters(notebook: nbformat.NotebookNode, parameters: dict[str, object]) -> None:
    """Insert a cell setting ``parameters`` right after the cell tagged ``parameters`` (papermill's convention)."""
    index = next(i for i, cell in enumerate(notebook.cells) if "parameters" in cell.metadata.get("tags", []))
    source = "# Injected by tests/test_notebooks.py\n" + "\n".join(
        f"{name} = {value!r}" for name, value in parameters.items()
    )
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata["tags"] = ["injected-parameters"]
    notebook.cells.insert(index + 1, cell)


@pytest.mark.parametrize("path", EXECUTED)
def test_notebook_runs_in_tiny_mode(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("ipykernel", reason="executing notebooks needs ipykernel (pip install -e '.[test]')")
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    parameters: dict[str, object] = {"TINY": True, "OUTPUT_DIR": str(tmp_path / "results")}
    if any("DEVICE = " in cell.source for cell in notebook.cells if "parameters" in cell.metadata.get("tags", [])):
        parameters["DEVICE"] = "cpu"
    with_injected_parameters(notebook, parameters)
    # The kernel is a child process: it inherits this environment (this checkout first on the path, no downloads).
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    client = NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=CELL_TIMEOUT_S,
        resources={"metadata": {"path": str(tmp_path)}},  # the kernel's working directory
    )
    client.execute()  # raises CellExecutionError, with the failing cell and its traceback, when a cell fails
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [output for output in outputs if output.output_type == "error"]
    images = [output for output in outputs if "image/png" in output.get("data", {})]
    assert images, f"{path.name} drew no figure"
    assert not list(PROJECT_ROOT.joinpath("notebooks").glob("results")), "a notebook wrote into the repository"
