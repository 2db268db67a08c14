"""Generated sections of the README: the text between a start and an end marker, read and rewritten.

The parameter table (``test_readme.py``) and the data set table (``test_readme_datasets.py``) are generated from the
code; their tests compare the README's section with the generated text, and ``--update`` rewrites it.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["read_section", "write_section"]


def read_section(text: str, start: str, end: str, what: str) -> str:
    """The text between ``start`` and ``end``, stripped.

    Raises:
        AssertionError: A marker is missing (named, with ``what`` the section holds).
    """
    if start not in text or end not in text:
        msg = f"README.md lacks the markers {start} ... {end} around {what}"
        raise AssertionError(msg)
    return text.split(start, 1)[1].split(end, 1)[0].strip()


def write_section(path: Path, start: str, end: str, content: str) -> None:
    """Replace the text between ``start`` and ``end`` in ``path`` with ``content``; the markers stay on own lines."""
    text = path.read_text()
    before, rest = text.split(start, 1)
    after = rest.split(end, 1)[1]
    path.write_text(f"{before}{start}\n{content}\n{end}{after}")
