"""Imports go one way (CONTRIBUTING.md's module map): nothing imports the command line; the model, no layer above it."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import PROJECT_ROOT

PACKAGE = PROJECT_ROOT / "anomalib_adaclip"


def imported_modules(path: Path) -> set[str]:
    """The absolute names of the package's modules that ``path`` imports (relative imports resolved)."""
    module = ".".join(path.relative_to(PROJECT_ROOT).with_suffix("").parts)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            names.add(target)
            names.update(f"{target}.{alias.name}" for alias in node.names)
    return {name for name in names if name.split(".")[0] == "anomalib_adaclip"}


def layer_of(path: Path) -> str:
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def test_nothing_outside_the_command_line_imports_it() -> None:
    offenders = {}
    for path in PACKAGE.rglob("*.py"):
        if layer_of(path) in {"cli", "__main__"}:  # the command line itself and the `python -m` entry point
            continue
        names = [name for name in imported_modules(path) if name.startswith("anomalib_adaclip.cli")]
        if names:
            offenders[str(path.relative_to(PROJECT_ROOT))] = sorted(names)
    assert not offenders, f"modules outside cli/ that import cli/: {offenders}"


def test_the_model_imports_no_layer_above_it() -> None:
    above = ("components", "data", "training", "benchmark", "lightning_model", "cli", "demo")
    offenders = {}
    for path in (PACKAGE / "model").rglob("*.py"):
        names = [name for name in imported_modules(path) if name.split(".")[1:2] and name.split(".")[1] in above]
        if names:
            offenders[str(path.relative_to(PROJECT_ROOT))] = sorted(names)
    assert not offenders, f"model/ imports from layers above it: {offenders}"
