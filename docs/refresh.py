"""`python docs/refresh.py`: copy every results file into the docs blocks that show it.

A generated block in a page (README.md, docs/*.md or docs/devices/*.md) is
    <!-- generated from PATH -->
    ...the content of PATH, a path from the repository root...
    <!-- end generated -->
The runs write the results files (each page names the command that wrote its file); this script only
copies, so a figure in the docs is always a run's. `--check` changes nothing and exits 1 if a block differs
from its file (docs/refresh_test.py runs that in the test suite)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"(<!-- generated from (?P<path>\S+) -->\n)(?P<body>.*?)(<!-- end generated -->)", re.S)


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
            *sorted((ROOT / "docs" / "devices").glob("*.md"))]


def refreshed(text: str) -> str:
    """The page's text with every generated block holding its file's current content."""
    def fill(match: re.Match) -> str:
        source = ROOT / match["path"]
        if not source.is_file():
            raise FileNotFoundError(f"a generated block shows {match['path']}, which does not exist")
        content = source.read_text()
        return match[1] + content + ("" if content.endswith("\n") else "\n") + match[4]

    return BLOCK.sub(fill, text)


def stale() -> list[str]:
    """Pages (relative paths) whose generated blocks differ from their files."""
    return [str(page.relative_to(ROOT)) for page in pages() if refreshed(page.read_text()) != page.read_text()]


def main(argv: list[str]) -> int:
    if argv == ["--check"]:
        out_of_date = stale()
        for page in out_of_date:
            print(f"{page}: a generated block differs from its file; run python docs/refresh.py")
        return 1 if out_of_date else 0
    for page in pages():
        text = page.read_text()
        new = refreshed(text)
        if new != text:
            page.write_text(new)
            print(f"refreshed {page.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
