"""The generated parts of the documentation: the CLI reference, the ``AdaCLIP`` parameter table, the data set table.

Each is Markdown produced from the code at build time (``adaclip_sphinx.py`` writes them to ``reference/_generated/``,
and the pages include them), so they cannot drift from it. ``tests/docs/`` imports this module to check what it
produces. It imports the package, never Sphinx.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import re
import typing
from collections.abc import Callable
from typing import Any

from anomalib_adaclip import AdaCLIP
from anomalib_adaclip import config as config_module
from anomalib_adaclip.benchmark.speed import build_parser as speed_parser
from anomalib_adaclip.cli import COMMANDS, command_parsers
from anomalib_adaclip.cli.dispatch import PREDICT_HELP
from anomalib_adaclip.cli.predict import RESUME_FLAG
from anomalib_adaclip.data.paper_datasets import PAPER_DATASETS

__all__ = [
    "TASKS",
    "argument_groups",
    "cli_reference",
    "dataset_table",
    "descriptions",
    "docstring_arguments",
    "parameter_rows",
    "parameter_table",
    "render_default",
]

TASKS = {"both": "image + pixel", "image": "image only", "pixel": "pixel only"}
PROGRAM = "anomalib-adaclip"
MAX_USAGE_LINES = 12
# anomalib's own subcommands, which anomalib-adaclip hands to anomalib's CLI with AdaCLIP registered.
ANOMALIB_SUBCOMMANDS = ("install", "fit", "validate", "test", "train", "predict", "export", "benchmark")


def _cell(text: str) -> str:
    return " ".join(text.replace("|", "\\|").split())


def _markdown(text: str) -> str:
    """Turn reStructuredText literals (``x``) and cross-references (:class:`~a.B`) into Markdown code (`x`, `a.B`).

    Outside code, option names become code and angle brackets (``<results_dir>/v<N>``) are escaped, so that Markdown
    reads them neither as a dash nor as HTML.
    """
    text = re.sub(r":[a-z]+:`~?\.?([^`]+)`", r"`\1`", text).replace("``", "`")
    parts = text.split("`")
    parts[::2] = [_prose(part) for part in parts[::2]]
    return _cell("`".join(parts))


def _prose(text: str) -> str:
    """Text outside code: options as code (``--config``: no typographic dash), angle brackets escaped."""
    text = text.replace("<", "&lt;")  # "<name>" would open an HTML tag; ">" alone is harmless
    return re.sub(r"(?<![\w&;-])(--[A-Za-z][\w.+-]*\w|-[A-Za-z](?![\w-]))", r"`\1`", text)


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
    if isinstance(value, tuple):
        value = list(value)
    if dataclasses.is_dataclass(value):  # a nested group at its defaults: its fields are the rows below it
        return "`{}`"
    if isinstance(value, str | int | float | bool | list | dict) or value is None:
        return f"`{json.dumps(value)}`"
    return f"`{value!r}`"


def argument_groups() -> dict[str, type]:
    """``AdaCLIP``'s settings groups: argument name -> its frozen dataclass (the dataclass its annotation names).

    Each group documents its fields once, in its ``Attributes:``; ``AdaCLIP``'s ``Args:`` document the arguments
    themselves. A new group (a new argument annotated with a config dataclass) is picked up without a change here.
    """
    groups = {}
    for name, parameter in inspect.signature(AdaCLIP.__init__, eval_str=True).parameters.items():
        members = typing.get_args(parameter.annotation) or (parameter.annotation,)
        dataclass = next((member for member in members if dataclasses.is_dataclass(member)), None)
        if dataclass is not None and dataclass.__module__ == config_module.__name__:
            groups[name] = dataclass
    return groups


def descriptions() -> dict[str, str]:
    """Each ``AdaCLIP`` argument's description (``AdaCLIP``'s ``Args:``) and each group field's (``group.field``)."""
    described = docstring_arguments(AdaCLIP)
    for group, config in argument_groups().items():
        described |= {f"{group}.{name}": text for name, text in docstring_arguments(config, "Attributes:").items()}
        for field in dataclasses.fields(config):
            nested = field_default(field)
            if dataclasses.is_dataclass(nested):
                inner = docstring_arguments(type(nested), "Attributes:")
                described |= {f"{group}.{field.name}.{name}": text for name, text in inner.items()}
    return described


def field_default(field: dataclasses.Field) -> Any:
    """A field's default, the factory's value for a field with a ``default_factory`` (a nested group)."""
    if field.default is dataclasses.MISSING and field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


def _type_name(annotation: Any) -> str:
    text = annotation if isinstance(annotation, str) else repr(annotation)
    return _cell(text.replace("typing.", "").replace("anomalib_adaclip.config.", ""))


def parameter_rows() -> list[tuple[str, str, Any]]:
    """Every setting of ``AdaCLIP`` in constructor order, ``(name, type, default)``; each group before its fields."""
    rows = []
    groups = argument_groups()
    for name, parameter in inspect.signature(AdaCLIP.__init__).parameters.items():
        if name == "self":
            continue
        rows.append((name, _type_name(parameter.annotation), parameter.default))
        if name in groups:
            for field in dataclasses.fields(groups[name]):
                default = field_default(field)
                rows.append((f"{name}.{field.name}", _type_name(field.type), default))
                if dataclasses.is_dataclass(default):  # a nested group (rarity.scoring): each of its fields too
                    rows += [
                        (f"{name}.{field.name}.{inner.name}", _type_name(inner.type), field_default(inner))
                        for inner in dataclasses.fields(default)
                    ]
    return rows


def parameter_table() -> str:
    """The Markdown table of every ``AdaCLIP`` setting (arguments, fields of the groups): type, default, meaning."""
    described = descriptions()
    rows = ["| Setting | Type | Default | Meaning |", "| --- | --- | --- | --- |"]
    for name, annotation, default in parameter_rows():
        rows.append(f"| `{name}` | `{annotation}` | {render_default(default)} | {_markdown(described.get(name, ''))} |")
    return "\n".join(rows)


def dataset_table() -> str:
    """One row per data set: module, categories, task, the paper's test counts, source, licence, size, preparation."""
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


def _visible_actions(parser: argparse.ArgumentParser) -> list[tuple[str, list[argparse.Action]]]:
    """The parser's options with a help text, by argument group (the groups in the parser's order)."""
    groups = []
    for group in parser._action_groups:  # argparse keeps no public list of its groups; sphinx-argparse reads it too
        actions = [action for action in group._group_actions if action.help != argparse.SUPPRESS]
        if actions:
            groups.append((group.title or "options", actions))
    return groups


def _default(action: argparse.Action) -> str:
    if action.required:
        return "required"
    if isinstance(action, argparse._StoreTrueAction | argparse._HelpAction | argparse._VersionAction):
        return "off"
    default = action.default
    if default is None or default == argparse.SUPPRESS or (isinstance(default, list) and not default):
        return ""
    if isinstance(default, str | int | float | bool | list):
        return f"`{json.dumps(default) if not isinstance(default, str) else default}`"
    return f"`{default}`"


def _help(action: argparse.Action, prog: str) -> str:
    text = action.help or ""
    if text in ("_EMPTY_HELP_",):  # jsonargparse's placeholder for an undocumented argument
        text = ""
    if "%(" in text:
        text = text % {**vars(action), "prog": prog, "default": action.default}
    if action.choices is not None and not isinstance(action.choices, dict):
        choices = ", ".join(f"`{choice}`" for choice in action.choices)
        text = f"{text} (one of {choices})" if text else f"one of {choices}"
    return _markdown(text)


def _flags(action: argparse.Action) -> str:
    if not action.option_strings:
        return f"`{action.metavar or action.dest}`"
    return ", ".join(f"`{flag}`" for flag in action.option_strings)


def parser_reference(parser: argparse.ArgumentParser, heading_level: int = 2) -> str:
    """One command's section: its usage, description, and every option with its default and help."""
    prog = parser.prog
    lines = [f"{'#' * heading_level} `{prog}`", ""]
    if parser.description:
        lines += [_markdown(parser.description), ""]
    usage = parser.format_usage().strip()
    if usage.count("\n") >= MAX_USAGE_LINES:  # jsonargparse's train: one line per option, all in the tables below
        usage = f"usage: {prog} [options]"
    lines += ["```text", usage, "```", ""]
    for title, actions in _visible_actions(parser):
        lines += [f"**{_cell(title[:1].upper() + title[1:])}**", ""]
        lines += ["| Option | Default | Meaning |", "| --- | --- | --- |"]
        lines += [f"| {_flags(action)} | {_default(action)} | {_help(action, prog)} |" for action in actions]
        lines.append("")
    if parser.epilog:
        lines += [_markdown(parser.epilog), ""]
    return "\n".join(lines)


def cli_reference(parsers: dict[str, Callable[[], argparse.ArgumentParser]] | None = None) -> str:
    """The CLI reference: every own subcommand of ``anomalib-adaclip`` with all its options, and the speed benchmark.

    Args:
        parsers: Command line -> parser factory. Defaults to :func:`anomalib_adaclip.cli.command_parsers`.

    Returns:
        The Markdown of the reference page's generated part.
    """
    parsers = command_parsers() if parsers is None else parsers
    lines = [
        "## Subcommands",
        "",
        f"`{PROGRAM} --help` prints this list; every other subcommand goes to anomalib's CLI, with `--model AdaCLIP` "
        "available.",
        "",
        "| Subcommand | What it does |",
        "| --- | --- |",
    ]
    for name, (_, help_text) in sorted(COMMANDS.items()):
        lines.append(f"| [`{name}`](#{_anchor(f'{PROGRAM} {name}')}) | {_markdown(help_text)} |")
    lines.append(f"| [`predict`](#{_anchor(f'{PROGRAM} predict')}) | {_markdown(PREDICT_HELP)} |")
    anomalib_commands = ", ".join(f"`{name}`" for name in ANOMALIB_SUBCOMMANDS if name not in COMMANDS)
    lines += [
        "",
        f"anomalib's subcommands ({anomalib_commands}) take anomalib's options (`{PROGRAM} <subcommand> --help`).",
        "",
    ]
    for line in sorted(parsers, key=lambda line: (line.split()[0], line)):
        lines.append(parser_reference(parsers[line](), heading_level=2))
    lines += [
        f"## `{PROGRAM} predict`",
        "",
        f"anomalib's `predict` with its options (`{PROGRAM} predict --help`), and two differences: the predictions "
        "are not kept in memory unless `--return_predictions true` asks for them, and one option of its own:",
        "",
        "| Option | Default | Meaning |",
        "| --- | --- | --- |",
        f"| `{RESUME_FLAG} [TABLE]` | off | carry on an interrupted run: append to the run's predictions table (or "
        "`TABLE`) and leave out the images that already have a row |",
        "",
        "## Speed benchmark",
        "",
        parser_reference(speed_parser(), heading_level=3),
    ]
    return "\n".join(lines).rstrip() + "\n"


def _anchor(heading: str) -> str:
    """MyST's (GitHub's) anchor of a heading: lower case, punctuation but ``-`` and ``_`` dropped, spaces as dashes."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
