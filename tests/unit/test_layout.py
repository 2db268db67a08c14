"""The tests mirror the package (CONTRIBUTING.md, "Tests"), and test modules are leaves.

Every module of ``anomalib_adaclip`` that defines a function or a class has its unit tests at
``tests/unit/<package>/test_<module>.py`` (a package's ``__init__.py`` with logic: ``test_<package>.py`` beside the
package's folder), so that the tests of a module are found without searching. Shared helpers live in
``tests/conftest.py`` and ``tests/helpers.py``: no test module imports from another test module.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import PROJECT_ROOT

PACKAGE = PROJECT_ROOT / "anomalib_adaclip"
UNIT = PROJECT_ROOT / "tests" / "unit"

# Modules whose tests live elsewhere on purpose. Keep this short: each entry says where and why.
ELSEWHERE_ON_PURPOSE = {
    # Every behaviour of train() is a Lightning run (fit, resume, DDP, checkpoint selection):
    # tests/integration/test_training.py.
    "training/train.py",
}

# Modules not mirrored yet: known debt, not a policy (empty now; it stays so). An entry names where the module's tests
# are; one whose mirrored test file exists (or whose module is gone) fails the test below.
NOT_YET_MIRRORED: set[str] = set()


def modules_with_logic() -> list[str]:
    """The package's modules (relative paths) that define a function or a class at their top level."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        if any(isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) for node in tree.body):
            found.append(path.relative_to(PACKAGE).as_posix())
    return found


def mirrored_test(module: str) -> Path:
    """``tests/unit/<package>/test_<module>.py``; for ``<package>/__init__.py``: ``test_<package>.py`` beside it."""
    path = Path(module)
    if path.name == "__init__.py":
        return UNIT / path.parent.parent / f"test_{path.parent.name}.py"
    return UNIT / path.parent / f"test_{path.stem}.py"


def test_every_module_with_logic_has_its_mirrored_unit_tests() -> None:
    missing = [
        f"{module} -> {mirrored_test(module).relative_to(PROJECT_ROOT)}"
        for module in modules_with_logic()
        if module not in ELSEWHERE_ON_PURPOSE | NOT_YET_MIRRORED and not mirrored_test(module).is_file()
    ]
    assert not missing, "modules without their unit tests (write them, see CONTRIBUTING.md's Tests):\n" + "\n".join(
        missing
    )


def test_the_exception_lists_hold_no_stale_entry() -> None:
    assert not ELSEWHERE_ON_PURPOSE & NOT_YET_MIRRORED
    modules = set(modules_with_logic())
    gone = sorted((ELSEWHERE_ON_PURPOSE | NOT_YET_MIRRORED) - modules)
    assert not gone, f"listed modules that no longer exist or have no logic: {gone}"
    mirrored = sorted(module for module in NOT_YET_MIRRORED if mirrored_test(module).is_file())
    assert not mirrored, f"these have their mirrored tests now; take them off NOT_YET_MIRRORED: {mirrored}"


def test_no_test_module_imports_another() -> None:
    offenders = {}
    for path in sorted((PROJECT_ROOT / "tests").rglob("test_*.py")):
        tree = ast.parse(path.read_text(), str(path))
        names = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        names |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        leaves = sorted(name for name in names if name.startswith("tests.") and name.rsplit(".", 1)[-1][:5] == "test_")
        if leaves:
            offenders[str(path.relative_to(PROJECT_ROOT))] = leaves
    assert not offenders, (
        f"test modules importing other test modules (move the helper to tests/helpers.py): {offenders}"
    )


def test_the_layout_rules_find_what_they_look_for() -> None:
    """The checks above are not vacuous: they see this package's modules and map them as documented."""
    modules = modules_with_logic()
    assert "lightning_model.py" in modules and "cli/dispatch.py" in modules and len(modules) > 50
    assert "cli/__init__.py" not in modules  # re-exports only
    assert mirrored_test("cli/dispatch.py") == UNIT / "cli" / "test_dispatch.py"
    assert mirrored_test("config.py") == UNIT / "test_config.py"
    assert mirrored_test("benchmark/published/__init__.py") == UNIT / "benchmark" / "test_published.py"
    assert mirrored_test("benchmark/speed/cli.py") == UNIT / "benchmark" / "speed" / "test_cli.py"
