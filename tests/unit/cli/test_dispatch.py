"""The ``anomalib-adaclip`` dispatcher: own subcommands get the remaining arguments, everything else goes to
anomalib's CLI (``predict`` with its arguments rewritten), and an unknown ``--config`` stops before either runs.

anomalib's CLI itself is replaced by a recorder here; the real console runs are in ``tests/integration/test_cli.py``
(which also checks the subcommand list against the documentation).
"""

from __future__ import annotations

import sys

import pytest

from anomalib_adaclip import quiet
from anomalib_adaclip.cli import anomalib_cli, dispatch


@pytest.fixture
def anomalib_argv(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Replace anomalib's CLI by a recorder of the ``sys.argv`` it would parse."""
    seen: list[list[str]] = []
    monkeypatch.setattr(anomalib_cli, "run", lambda before_instantiate=None: seen.append(list(sys.argv)))
    monkeypatch.setattr(sys, "argv", ["anomalib-adaclip"])
    return seen


def test_an_own_subcommand_gets_the_remaining_arguments_and_returns_its_exit_code(
    monkeypatch: pytest.MonkeyPatch, anomalib_argv: list[list[str]]
) -> None:
    calls: list[list[str]] = []
    monkeypatch.setitem(dispatch.COMMANDS, "echo", (lambda arguments: calls.append(arguments) or 7, "a test command"))
    assert dispatch.main(["echo", "a", "--b", "c"]) == 7
    assert calls == [["a", "--b", "c"]]
    assert anomalib_argv == []  # anomalib's CLI never ran


@pytest.mark.parametrize("command", sorted(dispatch.COMMANDS))
def test_every_own_subcommand_runs_with_the_logs_configured(monkeypatch: pytest.MonkeyPatch, command: str) -> None:
    """Each subcommand's log lines reach the console once, in anomalib's format: configured before the handler runs."""
    events: list[str] = []
    monkeypatch.setattr(quiet, "configure_logging", lambda: events.append("configured"))
    handler = (lambda arguments: events.append(f"ran {arguments}") or 0, "a test command")
    monkeypatch.setitem(dispatch.COMMANDS, command, handler)
    assert dispatch.main([command, "--x"]) == 0
    assert events == ["configured", "ran ['--x']"]


def test_other_commands_go_to_anomalib_unchanged(anomalib_argv: list[list[str]]) -> None:
    assert dispatch.main(["test", "--model", "AdaCLIP", "--data", "x"]) == 0
    assert anomalib_argv == [["anomalib-adaclip", "test", "--model", "AdaCLIP", "--data", "x"]]


def test_predict_is_rewritten_before_anomalib_parses_it(anomalib_argv: list[list[str]]) -> None:
    assert dispatch.main(["predict", "--data", "x", "--resume"]) == 0
    writer = '{"class_path": "anomalib_adaclip.components.PredictionCSVWriter", "init_args": {"resume": true}}'
    assert anomalib_argv == [
        [
            "anomalib-adaclip",
            "predict",
            "--return_predictions",
            "false",
            "--data",
            "x",
            f"--trainer.callbacks+={writer}",
        ]
    ]


def test_help_lists_the_own_subcommands_before_anomalibs_help(
    anomalib_argv: list[list[str]], capsys: pytest.CaptureFixture
) -> None:
    assert dispatch.main(["--help"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("AdaCLIP subcommands")
    names = [line.split()[0] for line in lines[1:] if line.startswith("  ")]
    assert names == [*sorted(dispatch.COMMANDS), "predict"]
    assert anomalib_argv == [["anomalib-adaclip", "--help"]]


@pytest.mark.parametrize("command", ["test", "benchmark", "train", "prompts"])
def test_an_unknown_config_stops_every_command_with_exit_code_2(
    command: str, anomalib_argv: list[list[str]], capsys: pytest.CaptureFixture
) -> None:
    assert dispatch.main([command, "--config", "no_such_config_anywhere"]) == 2
    message = capsys.readouterr().err
    assert message.startswith(f"anomalib-adaclip {command}: error: --config no_such_config_anywhere: ")
    assert "no_such_config_anywhere does not exist" in message
    assert anomalib_argv == []
