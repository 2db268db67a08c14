"""The CLI reference lists every subcommand and every option the code has, and nothing else.

The reference is generated from the parsers while the site builds (``adaclip_docgen.cli_reference``). These tests
compare it with what the command line itself says: the subcommands of ``anomalib-adaclip --help`` and of
:data:`~anomalib_adaclip.cli.COMMANDS`, and the options each parser's ``--help`` prints.
"""

from __future__ import annotations

import argparse
import re

import pytest

from tests.docs.pages import docgen, site_pages

PROGRAM = "anomalib-adaclip"
HEADING = re.compile(r"^#{2,3} `([^`]+)`$", re.MULTILINE)


@pytest.fixture(scope="module")
def reference() -> str:
    return docgen().cli_reference()


def sections(reference: str) -> dict[str, str]:
    """Each command's section of the reference: command line -> its text (up to the next command's heading)."""
    found = list(HEADING.finditer(reference))
    return {
        match.group(1): reference[match.end() : found[index + 1].start() if index + 1 < len(found) else None]
        for index, match in enumerate(found)
    }


def help_options(parser: argparse.ArgumentParser) -> set[str]:
    """The option flags a parser's ``--help`` lists (``-c``, ``--config``, ``--model.backbone``, ...)."""
    flags = set()
    for line in parser.format_help().splitlines():
        match = re.match(r"^ {2}(-\S.*?)(?: {2,}|$)", line)
        if match:
            flags |= {part.split()[0].split("=")[0] for part in match.group(1).split(", ")}
    return flags


def table_options(section: str) -> set[str]:
    """The flags in the first column of a section's option tables."""
    rows = re.findall(r"^\| (.*?) \|", section, re.MULTILINE)
    return {flag for row in rows for flag in re.findall(r"`(-[^`\s]+)", row)}


def missing_options(parser: argparse.ArgumentParser, section: str) -> set[str]:
    return help_options(parser) - table_options(section)


def test_every_subcommand_has_its_section_and_nothing_else_does(reference: str) -> None:
    from anomalib_adaclip.cli import COMMANDS, command_parsers

    documented = {line.removeprefix(f"{PROGRAM} ") for line in sections(reference) if line.startswith(PROGRAM)}
    assert documented == {*command_parsers(), "predict"}
    assert {line.split()[0] for line in command_parsers()} == set(COMMANDS), (
        "a subcommand of COMMANDS has no parser in cli.dispatch.command_parsers (or the reverse)"
    )


def test_the_subcommand_table_is_what_help_prints(reference: str, capsys: pytest.CaptureFixture[str]) -> None:
    from anomalib_adaclip.cli.dispatch import print_commands

    print_commands()
    printed = set(re.findall(r"^ {2}([a-z][\w-]*) ", capsys.readouterr().out, re.MULTILINE))
    table = reference.split("| Subcommand | What it does |", 1)[1].split("\n\n", 1)[0]
    listed = set(re.findall(r"^\| \[`([a-z][\w-]*)`\]", table, re.MULTILINE))
    assert listed == printed
    assert len(listed) >= 8


def test_every_option_of_every_command_is_in_its_table(reference: str) -> None:
    from anomalib_adaclip.benchmark.speed import build_parser as speed_parser
    from anomalib_adaclip.cli import command_parsers

    documented = sections(reference)
    parsers = {f"{PROGRAM} {line}": build for line, build in command_parsers().items()}
    parsers["python -m anomalib_adaclip.benchmark.speed"] = speed_parser
    for line, build in parsers.items():
        parser = build()
        assert parser.prog == line, f"the parser of {line!r} calls itself {parser.prog!r}"
        assert line in documented, f"the CLI reference has no section for {line!r}"
        options = help_options(parser)
        assert options, line
        assert not options - table_options(documented[line]), f"{line}: options missing from the reference"
        assert not table_options(documented[line]) - options, f"{line}: the reference lists options it does not take"


def test_predict_documents_its_own_option(reference: str) -> None:
    from anomalib_adaclip.cli.predict import RESUME_FLAG

    assert RESUME_FLAG in table_options(sections(reference)[f"{PROGRAM} predict"])


def test_a_missing_option_is_caught() -> None:
    """The check itself: an option the section does not list is reported, one it lists is not."""
    parser = argparse.ArgumentParser(prog="demo-command")
    parser.add_argument("-c", "--config")
    parser.add_argument("--new-option", help="added without documentation")
    section = (
        "| Option | Default | Meaning |\n| --- | --- | --- |\n"
        "| `-h`, `--help` | off | help |\n| `-c`, `--config` | | x |\n"
    )
    assert missing_options(parser, section) == {"--new-option"}
    assert not missing_options(parser, section + "| `--new-option` | | documented |\n")


def test_option_tables_of_the_guides_name_options_that_exist() -> None:
    """The guides' own option tables (quick start, demo, benchmark, speed) show options the commands still take."""
    from anomalib_adaclip.benchmark.speed import build_parser as speed_parser
    from anomalib_adaclip.cli import command_parsers
    from anomalib_adaclip.cli.predict import RESUME_FLAG

    known = {RESUME_FLAG} | help_options(speed_parser())
    for build in command_parsers().values():
        known |= help_options(build())
    tables = 0
    for path in site_pages():
        for table in re.findall(r"^\| Option \|.*?(?=\n\n|\n?$)", path.read_text(), re.MULTILINE | re.DOTALL):
            tables += 1
            unknown = table_options(table) - known
            assert not unknown, f"{path.name} documents options no command takes: {sorted(unknown)}"
    assert tables >= 4
