"""The README is the front page: short, with the set-up commands first, and nothing the site does not also say.

Everything else it held moved into the documentation site (``docs/source/``); ``test_site.py`` checks the pages.
"""

from __future__ import annotations

import re

from tests.conftest import PROJECT_ROOT
from tests.docs.pages import README, SITE, code_blocks, documents, headings

MAX_LINES = 400
LOCAL_LINK = re.compile(r"\]\((?!https?://|#)([^)#\s]+)(#[^)]*)?\)")


def test_readme_is_a_front_page_of_at_most_400_lines() -> None:
    assert len(README.read_text().splitlines()) <= MAX_LINES


def test_readme_keeps_its_sections() -> None:
    found = [line for line in headings(README.read_text()) if line.startswith("## ")]
    assert found == [
        "## What AdaCLIP is",
        "## What this package adds",
        "## Quick example",
        "## Released checkpoints",
        "## License and citation",
    ]


def test_set_up_commands_open_the_readme() -> None:
    text = README.read_text()
    block = (
        '```bash\npip install -e . && anomalib-adaclip quickstart\npip install -e ".[test]" && python -m pytest\n```'
    )
    assert block in text
    assert text.index(block) < text.index("\n## ")


def test_every_local_link_of_the_readme_resolves() -> None:
    targets = [match.group(1) for match in LOCAL_LINK.finditer(README.read_text())]
    assert any(target.startswith("docs/source/") for target in targets), "the README links no page of the site"
    missing = sorted({target for target in targets if not (PROJECT_ROOT / target).exists()})
    assert not missing, f"the README links files that do not exist: {missing}"


def test_feature_table_is_the_site_front_page_table() -> None:
    """The same features with links to the same pages, in the README and on the site's front page."""

    def table(text: str) -> list[str]:
        rows = text.split("| Feature | Documentation |", 1)[1].split("\n\n", 1)[0].strip().splitlines()
        return rows[1:]

    readme_rows = table(README.read_text())
    site_rows = [
        row.replace("](", "](docs/source/").replace("docs/source/development/contributing.md", "CONTRIBUTING.md")
        for row in table((SITE / "index.md").read_text())
    ]
    assert readme_rows == site_rows
    assert len(readme_rows) >= 10


def _normalised_lines(text: str) -> list[str]:
    """Lines with links reduced to their text and surrounding space dropped, headings' ``#`` dropped."""
    lines = []
    for raw in text.splitlines():
        line = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", raw).strip().lstrip("#").strip()
        if line:
            lines.append(line)
    return lines


def _paragraphs(text: str) -> list[str]:
    return [paragraph for paragraph in re.split(r"\n\s*\n", text) if paragraph.strip()]


def test_nothing_in_the_readme_that_the_site_does_not_say() -> None:
    """Every line of the README is on some page, except headings, the feature table and paragraphs pointing there."""
    site_lines = {line for path in documents()[1:] for line in _normalised_lines(path.read_text())}
    text = README.read_text()
    unsaid = []
    for paragraph in _paragraphs(text):
        if paragraph.lstrip().startswith("#") or paragraph.lstrip().startswith("| Feature"):
            continue
        if "](docs/source/" in paragraph or "](docs/" in paragraph:
            continue  # a pointer into the site, not a statement of its own
        unsaid += [line for line in _normalised_lines(paragraph) if line not in site_lines]
    assert not unsaid, f"the README says what no page of the site says: {unsaid}"


def test_readme_code_runs_as_the_site_shows_it() -> None:
    """The README's code blocks are copies of blocks on the site's pages (where the site's checks cover them)."""
    site_blocks = {source for path in documents()[1:] for _, source in code_blocks(path.read_text())}
    for language, source in code_blocks(README.read_text()):
        if language in ("python", "bash"):
            assert source in site_blocks, f"a {language} block of the README is on no page:\n{source}"
