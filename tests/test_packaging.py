"""The project installs as one package (`pip install -e .`): every console command it declares runs."""
from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from modelcheck import REPO

SCRIPTS = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]


@pytest.mark.parametrize("command", sorted(SCRIPTS))
def test_console_command_runs(command, tmp_path):
    # From another directory, so the command finds the package through the installation, not the cwd.
    exe = Path(sys.executable).parent / command
    result = subprocess.run([str(exe), "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage:" in result.stdout


def test_no_path_hacks():
    offenders = [str(p.relative_to(REPO)) for folder in ("server", "client", "modelprep", "tests")
                 for p in (REPO / folder).rglob("*.py") if "sys.path.insert" in p.read_text()
                 and p.name != "test_packaging.py"]
    assert not offenders


def test_a_command_names_itself_in_its_one_line_error(tmp_path):
    exe = Path(sys.executable).parent / "llm-download-model"
    result = subprocess.run([str(exe), "--model", "no-such-model"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith("llm-download-model: error: unknown model 'no-such-model'")
    assert len(result.stderr.strip().splitlines()) == 1
