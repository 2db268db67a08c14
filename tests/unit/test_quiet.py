"""quiet_loggers: the named loggers and their descendants hold back lower records, then get their levels back."""

from __future__ import annotations

import logging

import pytest

from anomalib_adaclip.quiet import quiet_loggers


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
