"""quiet_loggers: the named loggers and their descendants hold back lower records, then get their levels back."""

from __future__ import annotations

import logging

import pytest

from anomalib_adaclip.quiet import configure_logging, quiet_loggers


def test_named_loggers_and_their_descendants_are_quiet_then_restored(caplog: pytest.LogCaptureFixture) -> None:
    parent = logging.getLogger("quiet_test_package")
    child = logging.getLogger("quiet_test_package.module")
    child.setLevel(logging.DEBUG)  # a level of its own, as anomalib's CLI gives some of Lightning's loggers
    other = logging.getLogger("quiet_test_packages")  # a longer name, not a descendant
    caplog.set_level(logging.DEBUG)
    with quiet_loggers("quiet_test_package", level=logging.WARNING):
        child.info("held back")
        child.warning("let through")
        parent.info("held back too")
        other.info("not concerned")
    assert [record.getMessage() for record in caplog.records] == ["let through", "not concerned"]
    assert child.level == logging.DEBUG and parent.level == logging.NOTSET


def test_configure_logging_prints_each_line_once(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    # A bare root logger, as in a fresh ``anomalib-adaclip`` process (pytest's own capture handlers set aside).
    monkeypatch.setattr(logging.root, "handlers", [])
    monkeypatch.setattr(logging.root, "level", logging.WARNING)
    configure_logging()
    handlers = list(logging.root.handlers)
    try:
        logging.getLogger("anomalib_adaclip.test_quiet").info("printed once")
        configure_logging()  # a second call (quickstart, then anomalib's CLI) adds nothing
        assert logging.root.handlers == handlers and len(handlers) == 1
    finally:
        for handler in handlers:
            handler.close()
    captured = capsys.readouterr()
    lines = [line for line in (captured.out + captured.err).splitlines() if "printed once" in line]
    assert lines == [lines[0]] and lines[0].endswith("anomalib_adaclip.test_quiet - INFO - printed once")
