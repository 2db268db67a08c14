"""What the documentation tests read: the README, the site's pages, their code blocks, and the site's generators."""

from __future__ import annotations

import importlib.util
import re
import sys
from functools import cache
from pathlib import Path
from types import ModuleType

from tests.conftest import PROJECT_ROOT

__all__ = [
    "README",
    "SITE",
    "code_blocks",
    "docgen",
    "documents",
    "headings",
    "site_pages",
]

README = PROJECT_ROOT / "README.md"
SITE = PROJECT_ROOT / "docs" / "source"
GENERATOR = SITE / "_ext" / "adaclip_docgen.py"


def site_pages() -> list[Path]:
    """The site's own Markdown pages (not the parts its build generates)."""
    return sorted(path for path in SITE.rglob("*.md") if "_generated" not in path.parts)


def documents() -> list[Path]:
    """The README and every page of the site: what a reader reads."""
    return [README, *site_pages()]


def code_blocks(text: str) -> list[tuple[str, str]]:
    """The fenced code blocks of a Markdown text as (language, source); MyST directives' options are dropped."""
    blocks, language, lines = [], None, []
    for line in text.splitlines():
        stripped = line.strip()
        if language is None and stripped.startswith("```"):
            language = stripped[3:].strip()
            lines = []
        elif language is not None and stripped == "```":
            source = "\n".join(line for line in lines if not line.lstrip().startswith(":"))
            blocks.append((language, _dedent(source)))
            language = None
        elif language is not None:
            lines.append(line)
    return blocks


def _dedent(source: str) -> str:
    lines = source.splitlines()
    indents = [len(line) - len(line.lstrip()) for line in lines if line.strip()]
    cut = min(indents, default=0)
    return "\n".join(line[cut:] for line in lines)


def headings(text: str) -> list[str]:
    """The Markdown headings outside code blocks, with their ``#``."""
    found, in_code = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            in_code = not in_code
        elif not in_code and re.match(r"^#{1,6} ", line):
            found.append(line)
    return found


@cache
def docgen() -> ModuleType:
    """The site's generator module (``docs/source/_ext/adaclip_docgen.py``), imported from its file."""
    spec = importlib.util.spec_from_file_location("adaclip_docgen", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("adaclip_docgen", module)
    spec.loader.exec_module(module)
    return module
