"""The documentation site's pages (``docs/source/``) and the README: what they show exists and their code parses.

The site itself is built with warnings as errors by ``.ci/run`` (``sphinx-build -W``), which checks every link,
anchor, toctree and API entry; these tests are the cheap checks of what the pages claim, run in the default suite.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import runpy
import shutil
from pathlib import Path

import pytest
import yaml

from tests.conftest import PROJECT_ROOT
from tests.docs.pages import README, SITE, code_blocks, documents, headings, site_pages

DOCUMENTS = documents()
IDS = [str(path.relative_to(PROJECT_ROOT)) for path in DOCUMENTS]
ANOMALIB_SUBCOMMANDS = {"install", "fit", "validate", "test", "train", "predict", "export"}
# Every section the README had before the site existed, and the page it moved to (moved, not lost).
MOVED_SECTIONS = {
    "What AdaCLIP is": "explanations/how_it_works.md",
    "Installation": "get-started/installation.md",
    "Quick start": "get-started/quickstart.md",
    "Demo": "get-started/demo.md",
    "Using AdaCLIP in anomalib": "guides/anomalib.md",
    "Parameters": "reference/parameters.md",
    "Zero-shot in production": "guides/production.md",
    "Few-shot: a few normal images": "guides/few_shot.md",
    "Input handling": "guides/inputs.md",
    "Determinism": "guides/inputs.md",
    "Weights": "guides/weights.md",
    "Released checkpoints": "guides/weights.md",
    "Training": "guides/training.md",
    "Benchmarking": "guides/benchmarking.md",
    "The paper's 14 data sets": "guides/datasets.md",
    "Reproducing the paper's tables": "guides/benchmarking.md",
    "Notebooks": "notebooks/index.md",
    "Export": "guides/export.md",
    "Published accuracy": "explanations/accuracy.md",
    "Performance": "explanations/performance.md",
    "Precision": "explanations/precision.md",
    "Limitations": "explanations/limitations.md",
    "Architecture": "development/architecture.md",
    "Tests": "development/tests.md",
    "License and citation": "license.md",
}


def test_every_former_readme_section_has_its_page() -> None:
    for title, page in MOVED_SECTIONS.items():
        titles = [line.lstrip("#").strip() for line in headings((SITE / page).read_text())]
        assert title in titles, f"{title!r} is no longer in {page}"


def test_the_other_works_pages_exist_under_their_agreed_names() -> None:
    index = (SITE / "index.md").read_text()
    for page in ("guides/mutual_scoring", "guides/concurrency", "guides/verified_weights", "guides/shipped_configs"):
        assert (SITE / f"{page}.md").is_file()
        assert f"\n{page}\n" in index, f"{page} is in no toctree of index.md"


def _shell_lines(text: str) -> list[str]:
    """The lines of the shell code blocks, continuation lines joined."""
    lines = []
    for language, source in code_blocks(text):
        if language not in ("bash", "sh", "shell"):
            continue
        for line in source.splitlines():
            if lines and lines[-1].endswith("\\"):
                lines[-1] = lines[-1][:-1] + line.strip()
            else:
                lines.append(line.strip())
    return lines


def test_the_pages_show_every_own_subcommand() -> None:
    from anomalib_adaclip.cli import COMMANDS

    shown = set()
    for path in DOCUMENTS:
        text = path.read_text()
        shown |= {word for line in _shell_lines(text) for word in re.findall(r"anomalib-adaclip ([a-z][\w-]*)", line)}
    assert set(COMMANDS) <= shown, f"no page shows {sorted(set(COMMANDS) - shown)} at work"


@pytest.mark.parametrize("path", DOCUMENTS, ids=IDS)
def test_every_command_shown_exists(path: Path) -> None:
    from anomalib_adaclip.cli import COMMANDS

    text = path.read_text()
    commands = [word for line in _shell_lines(text) for word in re.findall(r"anomalib-adaclip ([a-z][\w-]*)", line)]
    commands += re.findall(r"`anomalib-adaclip ([a-z][\w-]*)", text)
    unknown = {command for command in commands if command not in COMMANDS and command not in ANOMALIB_SUBCOMMANDS}
    assert not unknown, f"{path.name} shows anomalib-adaclip subcommands that do not exist: {sorted(unknown)}"
    anomalib_commands = set(re.findall(r"(?:^|[\s`])anomalib ([a-z]+) --", text))
    assert anomalib_commands <= ANOMALIB_SUBCOMMANDS, anomalib_commands
    modules = set(re.findall(r"python -m ([\w.]+)", text)) - {"pytest"}
    missing = {module for module in modules if importlib.util.find_spec(module) is None}
    assert not missing, f"{path.name} runs modules that do not exist: {sorted(missing)}"


@pytest.mark.parametrize("path", DOCUMENTS, ids=IDS)
def test_every_project_file_named_exists(path: Path) -> None:
    text = re.sub(r"\]\([^)]*\)", "]", path.read_text())  # link targets: checked by Sphinx and test_readme.py
    text = re.sub(r"```\{toctree\}.*?```", "", text, flags=re.S)  # toctree entries are pages, checked by Sphinx
    paths = set(re.findall(r"(?<![\w/.])((?:configs|notebooks|tests|anomalib_adaclip|docs)/[\w./-]*\w)", text))
    paths = {name.split("::")[0] for name in paths if "<" not in name and "..." not in name}
    paths -= {"docs/_build/html", "docs/_build/html/index.html"}  # what the documented build writes
    missing = sorted(name for name in paths if not (PROJECT_ROOT / name).exists())
    assert not missing, f"{path.name} names files that do not exist: {missing}"


@pytest.mark.parametrize("path", sorted((PROJECT_ROOT / "notebooks").glob("*.ipynb")), ids=lambda path: path.name)
def test_every_project_file_a_notebook_names_exists(path: Path) -> None:
    notebook = json.loads(path.read_text())
    text = "\n".join("".join(cell["source"]) for cell in notebook["cells"] if cell["cell_type"] == "markdown")
    paths = set(re.findall(r"(?<![\w/.])((?:configs|notebooks|tests|anomalib_adaclip|docs)/[\w./-]*\w)", text))
    missing = sorted(name for name in paths if "<" not in name and not (PROJECT_ROOT / name).exists())
    assert not missing, f"{path.name} names files that do not exist: {missing}"


@pytest.mark.parametrize("path", DOCUMENTS, ids=IDS)
def test_lists_of_the_subcommands_are_complete(path: Path) -> None:
    """A sentence listing the own subcommands ("subcommands (`quickstart`, ...)") lists all of them."""
    from anomalib_adaclip.cli import COMMANDS

    for listing in re.findall(r"subcommands \(([^)]*)\)", " ".join(path.read_text().split())):
        names = set(re.findall(r"`([a-z][\w-]*)`", listing))
        if len(names) >= 3:
            assert set(COMMANDS) <= names, f"{path.name} lists the subcommands without {sorted(set(COMMANDS) - names)}"


def test_the_cli_package_docstring_names_every_subcommand_module() -> None:
    import anomalib_adaclip.cli
    from anomalib_adaclip.cli import COMMANDS

    docstring = anomalib_adaclip.cli.__doc__ or ""
    for name in COMMANDS:
        assert f".{name.replace('-', '_')}`" in docstring or f"``{name}``" in docstring, name


@pytest.mark.parametrize("path", DOCUMENTS, ids=IDS)
def test_code_blocks_parse(path: Path) -> None:
    for language, source in code_blocks(path.read_text()):
        if language == "python":
            ast.parse(source, filename=str(path))
        elif language == "yaml":
            yaml.safe_load(source)


@pytest.mark.parametrize("path", DOCUMENTS, ids=IDS)
def test_no_placeholders_or_merge_conflicts(path: Path) -> None:
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        assert "TODO" not in line, f"{path.name}:{number}: {line}"
        assert not re.match(r"^(<{7}|={7}|>{7})( |$)", line), f"{path.name}:{number}: merge conflict marker"


def test_headings_of_each_page_are_unique() -> None:
    for path in [README, *site_pages()]:
        found = [line for line in headings(path.read_text()) if not line.startswith("# ")]
        duplicates = sorted({line for line in found if found.count(line) > 1})
        assert not duplicates, f"{path.name} repeats headings (ambiguous anchors): {duplicates}"


def test_the_demo_page_shows_the_demo() -> None:
    text = (SITE / "get-started" / "demo.md").read_text()
    for needed in ("anomalib-adaclip demo", 'pip install -e ".[demo]"', "anomalib-adaclip demo --smoke"):
        assert needed in text, needed
    assert "```{figure} ../../images/demo.png" in text
    assert (PROJECT_ROOT / "docs" / "images" / "demo.png").is_file()


def test_the_build_needs_no_network_and_executes_no_notebook(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ADACLIP_DOCS_INTERSPHINX", raising=False)
    monkeypatch.setattr("sys.path", list(os.sys.path))  # conf.py prepends its folders
    config = runpy.run_path(str(SITE / "conf.py"))
    assert "sphinx.ext.intersphinx" not in config["extensions"]
    assert config["nb_execution_mode"] == "off"
    assert config["html_theme"] == "sphinx_book_theme"


def test_ci_and_read_the_docs_build_the_site_with_warnings_as_errors() -> None:
    ci = (PROJECT_ROOT / ".ci" / "run").read_text()
    assert '".[test,docs]"' in ci or '".[docs,test]"' in ci
    assert "sphinx-build -W --keep-going -b html docs/source" in ci
    rtd = yaml.safe_load((PROJECT_ROOT / ".readthedocs.yaml").read_text())
    assert rtd["sphinx"]["configuration"] == "docs/source/conf.py"
    assert rtd["sphinx"]["fail_on_warning"] is True
    assert {"method": "pip", "path": ".", "extra_requirements": ["docs"]} in rtd["python"]["install"]


def _code_block_page(folder: Path, with_site_css: bool) -> Path:
    """A page with the site's article markup, one 300-column code block and (or not) the site's ``custom.css``."""
    css = (SITE / "_static" / "custom.css").read_text() if with_site_css else ""
    line = "anomalib-adaclip predict " + " ".join(f"--option-{index} value" for index in range(20))
    page = folder / ("wrapped.html" if with_site_css else "plain.html")
    page.write_text(
        f"<html><head><style>{css}</style></head><body><main class='bd-main'><div class='bd-content'>"
        f"<div class='bd-article-container'><article class='bd-article'><div class='highlight'><pre>{line}</pre>"
        "</div></article></div></div></main></body></html>"
    )
    return folder


def test_code_blocks_are_not_cut_off_in_a_1400_pixel_window(tmp_path: Path) -> None:
    """The site's CSS wraps a code block wider than the window; without it the same block is cut off (so this can fail).

    The whole built site is checked the same way by ``tools/check_code_blocks.py`` after the build in ``.ci/run``.
    """
    if importlib.util.find_spec("playwright") is None:
        _browser_missing("playwright is not installed (pip install -e '.[test]')")
    if not (os.environ.get("ADACLIP_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")):
        _browser_missing("chromium not found: apt-get update && apt-get install -y chromium (.ci/run does this)")
    check = runpy.run_path(str(PROJECT_ROOT / "tools" / "check_code_blocks.py"))["cut_off_blocks"]
    wrapped, plain = tmp_path / "wrapped", tmp_path / "plain"
    wrapped.mkdir()
    plain.mkdir()
    assert check(_code_block_page(wrapped, with_site_css=True), width=1400) == (1, {})
    total, cut = check(_code_block_page(plain, with_site_css=False), width=1400)
    assert (total, list(cut)) == (1, ["plain.html"])


def _browser_missing(message: str) -> None:
    """Skip on a developer's machine; fail where ``CI`` is set, so that CI never passes without the browser check."""
    if os.environ.get("CI", "").strip().lower() not in {"", "0", "false", "no"}:
        pytest.fail(f"{message} (CI is set, so a missing browser fails the run)")
    pytest.skip(message)
