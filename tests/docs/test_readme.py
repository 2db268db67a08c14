"""The README's parameter table of ``AdaCLIP`` is generated from the constructor, so it cannot drift from the code.

The table between the markers ``<!-- adaclip-parameters:start -->`` and ``<!-- adaclip-parameters:end -->`` lists every
argument of ``AdaCLIP.__init__`` with its type, its actual default and its description: the model's hyper-parameters
from the ``Attributes:`` of ``AdaCLIPConfig`` and the few-shot settings from those of ``FewShotConfig`` (where they
are documented once), the others from ``AdaCLIP``'s ``Args:``. When the constructor or a docstring changes,
regenerate it with::

    python tests/docs/test_readme.py --update
"""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import json
import re
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script (--update): the checkout's root makes `tests` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.docs.readme_sections import read_section, write_section

PROJECT_ROOT = Path(__file__).resolve().parents[2]
README = PROJECT_ROOT / "README.md"
START = "<!-- adaclip-parameters:start -->"
END = "<!-- adaclip-parameters:end -->"
UPDATE_COMMAND = "python tests/docs/test_readme.py --update"


def _adaclip() -> type:
    sys.path.insert(0, str(PROJECT_ROOT))  # when run as a script from a checkout
    from anomalib_adaclip import AdaCLIP

    return AdaCLIP


def docstring_arguments(target: type, section: str = "Args:") -> dict[str, str]:
    """A section (``Args:``, ``Attributes:``) of a Google-style class docstring: name -> description on one line."""
    lines = inspect.cleandoc(target.__doc__ or "").splitlines()
    start = lines.index(section) + 1
    arguments: dict[str, str] = {}
    current = None
    for line in lines[start:]:
        if line and not line.startswith(" "):
            break  # the next section
        match = re.match(r"^ {4}(\w+):\s*(.*)$", line)
        if match:
            current = match.group(1)
            arguments[current] = match.group(2)
        elif current is not None and line.strip():
            arguments[current] += " " + line.strip()
    return arguments


def render_default(value: Any) -> str:
    """A default as it is written in YAML configs and JSON (``null``, ``true``, ``"SD"``, ``4.0``)."""
    if isinstance(value, str | int | float | bool | list | dict) or value is None:
        return f"`{json.dumps(value)}`"
    return f"`{value!r}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _markdown(text: str) -> str:
    """reStructuredText literals (``x``) and Sphinx cross-references (:class:`~a.B`) as Markdown code (`x`, `a.B`)."""
    text = re.sub(r":[a-z]+:`~?([^`]+)`", r"`\1`", text)
    return _cell(text.replace("``", "`"))


def descriptions() -> dict[str, str]:
    """Each argument's description: the configs' (AdaCLIP, few-shot, mutual groups) for their fields, AdaCLIP's else."""
    from anomalib_adaclip import AdaCLIPConfig
    from anomalib_adaclip.config import FewShotConfig, MutualGroupConfig

    return {
        **docstring_arguments(AdaCLIPConfig, "Attributes:"),
        **docstring_arguments(FewShotConfig, "Attributes:"),
        **docstring_arguments(MutualGroupConfig, "Attributes:"),
        **docstring_arguments(_adaclip()),
    }


def parameter_table() -> str:
    """The Markdown table of every ``AdaCLIP`` constructor argument: name, type, default, description."""
    adaclip = _adaclip()
    described = descriptions()
    rows = ["| Argument | Type | Default | Meaning |", "| --- | --- | --- | --- |"]
    for name, parameter in inspect.signature(adaclip.__init__).parameters.items():
        if name == "self":
            continue
        annotation = parameter.annotation if isinstance(parameter.annotation, str) else repr(parameter.annotation)
        description = described.get(name, "")
        rows.append(
            f"| `{name}` | `{_cell(annotation)}` | {render_default(parameter.default)} | {_markdown(description)} |"
        )
    return "\n".join(rows)


def readme_table(text: str) -> str:
    """The table between the markers of the README."""
    return read_section(text, START, END, "the AdaCLIP parameter table")


def test_parameter_table_lists_every_argument_with_its_actual_default() -> None:
    adaclip = _adaclip()
    table = readme_table(README.read_text())
    rows = {}
    for line in table.splitlines()[2:]:
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]]
        rows[cells[0].strip("`")] = cells
    parameters = {name: p for name, p in inspect.signature(adaclip.__init__).parameters.items() if name != "self"}
    assert list(rows) == list(parameters), f"the README table's arguments differ from AdaCLIP's: {UPDATE_COMMAND}"
    for name, parameter in parameters.items():
        assert rows[name][2] == render_default(parameter.default), (
            f"README gives {name} the default {rows[name][2]}, the code {parameter.default!r}: {UPDATE_COMMAND}"
        )
        assert rows[name][3], (
            f"README has no description of {name}: document it in AdaCLIP's or AdaCLIPConfig's docstring"
        )


def test_parameter_table_is_the_generated_one() -> None:
    assert readme_table(README.read_text()) == parameter_table(), (
        f"the AdaCLIP docstring or signature changed: {UPDATE_COMMAND}"
    )


def test_every_argument_is_documented_once() -> None:
    from anomalib_adaclip import AdaCLIPConfig
    from anomalib_adaclip.config import FewShotConfig, MutualGroupConfig

    adaclip = _adaclip()
    own, hyperparameters = set(docstring_arguments(adaclip)), set(docstring_arguments(AdaCLIPConfig, "Attributes:"))
    few_shot = set(docstring_arguments(FewShotConfig, "Attributes:"))
    mutual = set(docstring_arguments(MutualGroupConfig, "Attributes:"))
    parameters = set(inspect.signature(adaclip.__init__).parameters) - {"self"}
    assert not own & hyperparameters, "a hyper-parameter is documented in AdaCLIP too: AdaCLIPConfig owns it"
    assert not own & few_shot, "a few-shot setting is documented in AdaCLIP too: FewShotConfig owns it"
    assert not own & mutual, "a mutual-scoring setting is documented in AdaCLIP too: MutualGroupConfig owns it"
    assert not hyperparameters & few_shot
    assert own | hyperparameters | few_shot | mutual == parameters
    assert hyperparameters == {field.name for field in dataclasses.fields(AdaCLIPConfig)}
    assert few_shot == {field.name for field in dataclasses.fields(FewShotConfig)}
    assert mutual == {field.name for field in dataclasses.fields(MutualGroupConfig)}


def test_readme_keeps_its_sections() -> None:
    headings = [line for line in README.read_text().splitlines() if line.startswith("## ")]
    for section in (
        "## What AdaCLIP is",
        "## Installation",
        "## Quick start",
        "## Using AdaCLIP in anomalib",
        "## Zero-shot in production",
        "## Weights",
        "## Architecture",
        "## Training",
        "## Benchmarking",
        "## Notebooks",
        "## Export",
        "## Published accuracy",
        "## Performance",
        "## Limitations",
        "## Tests",
        "## License and citation",
    ):
        assert section in headings, section


def test_quick_start_shows_the_demo() -> None:
    text = README.read_text()
    quick_start = text.split("\n## Quick start\n", 1)[1].split("\n## ", 1)[0]
    assert "\n### Demo\n" in quick_start
    for needed in ("anomalib-adaclip demo", 'pip install -e ".[demo]"', "anomalib-adaclip demo --smoke"):
        assert needed in quick_start, needed
    assert "](docs/images/demo.png)" in quick_start
    assert (PROJECT_ROOT / "docs" / "images" / "demo.png").is_file()


def test_quick_start_commands_open_the_readme() -> None:
    text = README.read_text()
    block = (
        '```bash\npip install -e . && anomalib-adaclip quickstart\npip install -e ".[test]" && python -m pytest\n```'
    )
    assert block in text
    assert text.index(block) < text.index("\n## ")


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped (but ``-`` and ``_``), spaces as dashes."""
    text = heading.lstrip("#").strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _headings(text: str) -> list[str]:
    """The Markdown headings outside code blocks."""
    headings, in_code = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            in_code = not in_code
        elif not in_code and re.match(r"^#{1,6} ", line):
            headings.append(line)
    return headings


def test_every_heading_appears_once_and_every_link_resolves() -> None:
    text = README.read_text()
    slugs = [_slug(heading) for heading in _headings(text)]
    assert len(slugs) == len(set(slugs)), sorted({slug for slug in slugs if slugs.count(slug) > 1})
    links = set(re.findall(r"\]\(#([^)]+)\)", text))
    assert links, "the README links no section"
    assert links <= set(slugs), f"links to missing sections: {sorted(links - set(slugs))}"


def test_readme_holds_no_placeholders_or_merge_conflicts() -> None:
    for number, line in enumerate(README.read_text().splitlines(), start=1):
        assert "TODO" not in line, f"README.md:{number}: {line}"
        assert not re.match(r"^(<{7}|={7}|>{7})( |$)", line), f"README.md:{number}: merge conflict marker"


def _code_lines(text: str) -> list[str]:
    """The lines of the README's shell code blocks, continuation lines joined."""
    lines, in_shell = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            in_shell = line.strip() in ("```bash", "```sh", "```shell")
            continue
        if in_shell:
            if lines and lines[-1].endswith("\\"):
                lines[-1] = lines[-1][:-1] + line.strip()
            else:
                lines.append(line.strip())
    return lines


def test_every_command_shown_exists() -> None:
    from anomalib_adaclip.cli import COMMANDS

    anomalib_subcommands = {"install", "fit", "validate", "test", "train", "predict", "export"}
    text = README.read_text()
    commands = [word for line in _code_lines(text) for word in re.findall(r"anomalib-adaclip ([a-z][\w-]*)", line)]
    commands += re.findall(r"`anomalib-adaclip ([a-z][\w-]*)", text)
    assert {"quickstart", "demo", "train", "calibrate", "prompts", "benchmark"} <= set(commands)
    unknown = {command for command in commands if command not in COMMANDS and command not in anomalib_subcommands}
    assert not unknown, f"the README shows anomalib-adaclip subcommands that do not exist: {sorted(unknown)}"
    anomalib_commands = set(re.findall(r"(?:^|[\s`])anomalib ([a-z]+) --", text))
    assert anomalib_commands <= anomalib_subcommands, anomalib_commands
    modules = set(re.findall(r"python -m ([\w.]+)", text)) - {"pytest"}
    missing = {module for module in modules if importlib.util.find_spec(module) is None}
    assert not missing, f"the README runs modules that do not exist: {sorted(missing)}"


def test_every_project_file_named_exists() -> None:
    text = README.read_text()
    paths = set(re.findall(r"(?<![\w/.])((?:configs|notebooks|tests|anomalib_adaclip)/[\w./-]*\w)", text))
    paths = {path.split("::")[0] for path in paths if "<" not in path and "..." not in path}
    assert paths, "the README names no project file"
    missing = sorted(path for path in paths if not (PROJECT_ROOT / path).exists())
    assert not missing, f"the README names files that do not exist: {missing}"


def _update() -> None:
    write_section(README, START, END, parameter_table())
    print(f"Updated the AdaCLIP parameter table in {README}")


if __name__ == "__main__":
    if sys.argv[1:] != ["--update"]:
        sys.exit(f"usage: {UPDATE_COMMAND}")
    _update()
