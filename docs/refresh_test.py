"""Every generated block in the docs shows exactly the results file it names, and the README's example
runs as written."""

import re
import subprocess
import sys

import pytest

from docs import refresh


def test_generated_blocks_match_their_files():
    assert refresh.stale() == [], "run python docs/refresh.py"


def test_every_block_names_a_file_that_exists():
    blocks = [m for page in refresh.pages() for m in refresh.BLOCK.finditer(page.read_text())]
    assert blocks, "the docs show no generated results at all"
    for match in blocks:
        assert (refresh.ROOT / match["path"]).is_file(), match["path"]


def test_a_stale_block_is_caught_and_refreshed(tmp_path, monkeypatch):
    (tmp_path / "docs").mkdir()
    (tmp_path / "results.md").write_text("| a | b |\n|---|---|\n| 1 | 2 |\n")
    page = tmp_path / "README.md"
    page.write_text("intro\n<!-- generated from results.md -->\n| old |\n<!-- end generated -->\nend\n")
    monkeypatch.setattr(refresh, "ROOT", tmp_path)
    assert refresh.stale() == ["README.md"]
    assert refresh.main([]) == 0
    assert page.read_text() == ("intro\n<!-- generated from results.md -->\n| a | b |\n|---|---|\n| 1 | 2 |\n"
                                "<!-- end generated -->\nend\n")
    assert refresh.stale() == [] and refresh.main(["--check"]) == 0
    (tmp_path / "results.md").write_text("new\n")
    assert refresh.main(["--check"]) == 1


def test_the_readme_example_runs():
    pytest.importorskip("torch")
    pytest.importorskip("jax")
    (example,) = re.findall(r"```python\n(.*?)```", (refresh.ROOT / "README.md").read_text(), re.S)[:1]
    assert len(example.splitlines()) <= 30
    done = subprocess.run([sys.executable, "-c", example], capture_output=True, text=True, timeout=300,
                          cwd=refresh.ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
