"""compat.py: the one place that relies on private or unexported names of anomalib, Lightning and torch.

Its check fails with a message naming the dependency and its version when a reliance changes; the tested versions are
the ones pyproject pins; and no other module of the package uses such names.
"""

from __future__ import annotations

import ast
import re
from importlib.metadata import version

import pytest
from anomalib.post_processing import PostProcessor

from anomalib_adaclip import compat
from tests.conftest import PROJECT_ROOT

PACKAGE = PROJECT_ROOT / "anomalib_adaclip"
# The packages whose names count as public: anomalib's re-exporting packages, and Lightning's and torch's modules
# without an underscore in their path.
PUBLIC_ANOMALIB = {
    "anomalib",
    "anomalib.callbacks",
    "anomalib.cli",
    "anomalib.data",
    "anomalib.data.utils",
    "anomalib.deploy",
    "anomalib.engine",
    "anomalib.loggers",
    "anomalib.metrics",
    "anomalib.models",
    "anomalib.models.components",
    # the pipeline pieces anomalib's own benchmark is built from, exported by these packages' __all__ and documented in
    # anomalib's API reference (Pipelines): the benchmark's runner builds on them (issue 28)
    "anomalib.pipelines.components",
    "anomalib.pipelines.components.runners",
    "anomalib.post_processing",
    "anomalib.pre_processing",
    "anomalib.visualization",
    "anomalib.visualization.image",
}
# Private-looking names that are public API: namedtuple methods (underscored so as not to clash with fields).
NAMEDTUPLE_API = {"_asdict", "_replace", "_fields", "_make"}
# Call sites the scan flags that another change of issue 27 (item 3, the mutual-scoring rework) replaces: file ->
# the uses found there. Each entry must still be found (a stale one fails), so it is removed when its file is fixed.
PENDING = {
    "anomalib_adaclip/components/image_scoring.py": {
        "hook call on_predict_batch_end(None, ...)",
        "hook call on_predict_batch_start(None, ...)",
    },
    "anomalib_adaclip/components/mutual_groups.py": {"attribute chain predict_loop.setup_data"},
}


def _private_holders() -> set[str]:
    """Public attributes of Lightning's Trainer whose values are instances of private classes (``predict_loop``)."""
    from lightning.pytorch import Trainer

    trainer = Trainer(logger=False, enable_progress_bar=False, enable_checkpointing=False)
    holders = set()
    for name in dir(trainer):
        if name.startswith("_"):
            continue
        try:
            value = getattr(trainer, name)
        except Exception:  # properties that need a running fit raise: not holders
            continue
        if type(value).__name__.startswith("_"):
            holders.add(name)
    return holders


def test_every_reliance_holds_on_the_installed_versions() -> None:
    compat.check()


def test_a_changed_reliance_names_the_dependency_and_its_version(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(PostProcessor, "_normalize")
    with pytest.raises(compat.CompatibilityError) as caught:
        compat.check()
    message = str(caught.value)
    assert f"anomalib {version('anomalib')}" in message and "PostProcessor._normalize" in message
    assert "checked against anomalib 2.7.x" in message
    with pytest.raises(compat.CompatibilityError, match=r"anomalib\.data\.nowhere\.CATEGORIES of anomalib"):
        compat._unexported("anomalib", "anomalib.data.nowhere", "CATEGORIES")


def test_the_tested_versions_are_the_ones_pyproject_pins_and_the_ones_installed() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    requirements = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for package, tested in compat.TESTED_VERSIONS.items():
        major, minor = (int(part) for part in tested.split("."))
        pinned = [line for line in requirements if re.match(rf"{package}\s*[><=]", line)]
        assert pinned and f"<{major}.{minor + 1}" in pinned[0], (
            f"pyproject should pin {package} below {major}.{minor + 1} (compat.TESTED_VERSIONS says {tested}.x was "
            f"tested), got {pinned}"
        )
        installed = version(package)
        assert installed.startswith(f"{tested}."), (
            f"{package} {installed} is installed but compat.py was checked against {tested}.x: run this test file "
            f"and raise TESTED_VERSIONS and pyproject together (CONTRIBUTING.md, 'Dependencies')"
        )


def _private_uses(tree: ast.AST, holders: set[str] = frozenset()) -> set[str]:
    """Underscore attributes (the caller keeps the package's own), deep or underscore imports of the three, attribute
    chains through a ``holders`` attribute into a private class (``trainer.predict_loop.setup_data``), and Lightning
    hooks called by hand without a Trainer (``post_processor.on_predict_batch_end(None, ...)``)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) and node.value.attr in holders:
            found.add(f"attribute chain {node.value.attr}.{node.attr}")
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and re.fullmatch(r"on_\w+", node.func.attr)
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and node.args[0].value is None
        ):
            found.add(f"hook call {node.func.attr}(None, ...)")
        if isinstance(node, ast.Attribute) and re.fullmatch(r"_[a-z]\w*", node.attr):
            found.add(f"attribute {node.attr}")
        if isinstance(node, ast.ImportFrom) and node.module:
            root = node.module.split(".")[0]
            if root == "anomalib" and node.module not in PUBLIC_ANOMALIB:
                found.add(f"import from {node.module}")
            if root in {"lightning", "torch", "anomalib"} and (
                any(part.startswith("_") for part in node.module.split("."))
                or any(alias.name.startswith("_") for alias in node.names)
            ):
                found.add(f"private import from {node.module}")
    return found


def test_no_private_names_of_anomalib_lightning_or_torch_outside_compat() -> None:
    own = set()  # underscore names the package defines itself (its own helpers, attributes and methods)
    trees = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        trees[path] = tree
        if path.name == "compat.py":
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                own.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                own.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                own.add(node.id)
    offenders, stale = {}, {}
    holders = _private_holders()
    for path, tree in trees.items():
        if path.name == "compat.py":
            continue
        uses = {
            use
            for use in _private_uses(tree, holders)
            if not (use.startswith("attribute ") and use.split()[1] in own | NAMEDTUPLE_API)
        }
        name = str(path.relative_to(PROJECT_ROOT))
        pending = PENDING.get(name, set())
        if pending - uses:
            stale[name] = sorted(pending - uses)
        if uses - pending:
            offenders[name] = sorted(uses - pending)
    assert not offenders, f"private names of anomalib, Lightning or torch outside compat.py: {offenders}"
    assert not stale, f"fixed: remove these entries of PENDING: {stale}"


def test_the_scan_catches_chains_into_private_classes_and_hooks_called_without_a_trainer() -> None:
    holders = _private_holders()
    assert {"predict_loop", "fit_loop"} <= holders and "callbacks" not in holders
    code = "trainer.predict_loop.setup_data()\nmodule.pre_processor.on_predict_batch_start(None, module, batch, 0)\n"
    assert _private_uses(ast.parse(code), holders) == {
        "attribute chain predict_loop.setup_data",
        "hook call on_predict_batch_start(None, ...)",
    }
    public = "module.pre_processor.transform(images)\nmodule.post_processor.post_process_batch(batch)\n"
    assert _private_uses(ast.parse(public), holders) == set()
