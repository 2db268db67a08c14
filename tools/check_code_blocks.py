"""Count the code blocks of the built site that are cut off (wider than their box) in a browser window.

Usage: ``python tools/check_code_blocks.py docs/_build/html [--width 1400]``. Every page of the built site is opened in
headless chromium (Debian's, through playwright-python; ``ADACLIP_CHROMIUM`` names another executable) at the given
window width, and every ``pre`` whose content is wider than its box (``scrollWidth > clientWidth``) is listed. The
exit status is 1 when any is, so that the check can run after the site's build.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
CUT_OFF = """() => Array.from(document.querySelectorAll("pre"))
    .filter((pre) => pre.scrollWidth > pre.clientWidth + 1)
    .map((pre) => pre.textContent.split("\\n")[0].slice(0, 80))"""


def cut_off_blocks(site: Path, width: int = 1400, height: int = 900) -> tuple[int, dict[str, list[str]]]:
    """The number of ``pre`` elements on the site's pages, and the cut-off ones by page (their first lines)."""
    from playwright.sync_api import sync_playwright  # noqa: PLC0415 (only this check needs playwright)

    executable = os.environ.get("ADACLIP_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        msg = "chromium not found: apt-get install -y chromium, or set ADACLIP_CHROMIUM=/path/to/chromium"
        raise FileNotFoundError(msg)
    pages = sorted(
        path for path in site.rglob("*.html") if "_static" not in path.parts and "_modules" not in path.parts
    )
    found: dict[str, list[str]] = {}
    total = 0
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=LAUNCH_ARGS)
        page = browser.new_page(viewport={"width": width, "height": height})
        for path in pages:
            page.goto(path.resolve().as_uri())
            total += page.evaluate("() => document.querySelectorAll('pre').length")
            blocks = page.evaluate(CUT_OFF)
            if blocks:
                found[str(path.relative_to(site))] = blocks
        browser.close()
    return total, found


def main(argv: list[str] | None = None) -> int:
    """Print the cut-off code blocks of the built site; 1 when there is any."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("site", type=Path, help="the built site (sphinx-build's output folder)")
    parser.add_argument("--width", type=int, default=1400, help="the window width in pixels (default 1400)")
    args = parser.parse_args(argv)
    total, found = cut_off_blocks(args.site, args.width)
    cut = sum(len(blocks) for blocks in found.values())
    for page, blocks in found.items():
        for first_line in blocks:
            print(f"{page}: {first_line}")
    print(f"{cut} of {total} code blocks cut off at {args.width} px")
    return 1 if cut else 0


if __name__ == "__main__":
    sys.exit(main())
