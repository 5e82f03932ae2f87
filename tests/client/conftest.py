"""Fixtures: a live server for the clients, and a way to run the client scripts as a user does."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.server.harness import start_server

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def live_server(fp32_model_dir, tmp_path_factory):
    s = start_server(fp32_model_dir, tmp_path_factory.mktemp("client-server"))
    yield s
    s.stop()


@pytest.fixture
def run_script(tmp_path):
    """Run client/SCRIPT.py, or a module (`python -m client.bench`), as a subprocess from an unrelated directory;
    returns the CompletedProcess."""

    def run(script: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        command = [str(ROOT / "client" / script)] if script.endswith(".py") else ["-m", script]
        return subprocess.run([sys.executable, *command, *map(str, args)], cwd=tmp_path,
                              env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True,
                              timeout=timeout)

    return run
