"""The layout table in docs/architecture.md matches the tree: every path it names exists, every top-level entry is
named."""
from __future__ import annotations

import re
import subprocess

from modelcheck import REPO


def layout_paths() -> set[str]:
    section = REPO.joinpath("docs", "architecture.md").read_text().split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return {path for row in rows for path in re.findall(r"`([^`\s]+)`", row.split("|")[1])}


def test_every_path_in_the_layout_table_exists():
    missing = sorted(p for p in layout_paths() if not (REPO / p).exists())
    assert not missing


def test_every_tracked_top_level_entry_and_package_is_in_the_table():
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    tops = {f.split("/")[0] + ("/" if "/" in f else "") for f in tracked if not f.startswith(".")}
    packages = {str(p.parent.relative_to(REPO)) + "/" for p in REPO.glob("*/**/__init__.py")
                if p.parent.parts[len(REPO.parts)] in ("server", "client", "modelprep")}
    named = {p if not (REPO / p).is_dir() or p.endswith("/") else p + "/" for p in layout_paths()}
    assert not sorted((tops | packages) - named)
